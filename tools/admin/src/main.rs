//! Administration of a deployed registry from a workstation, with the deployer's AWS
//! credentials: makes the first access token (of a user holding the administrator role),
//! lists a user's tokens and revokes one. Whoever may write the table is trusted already;
//! everybody else gets their tokens through the API.
//!
//!   drogue-admin --table <TableName> create-token [--user admin] [--role drogue-admin]
//!   drogue-admin --table <TableName> list-tokens [--user admin]
//!   drogue-admin --table <TableName> delete-token <prefix> [--user admin]

use anyhow::Context;
use clap::{Parser, Subcommand};
use drogue_shared::access::{self, Principal};
use drogue_shared::store::TokenStore;
use drogue_shared::store::dynamodb::{self, DynamoStore};

#[derive(Parser)]
#[command(
    version,
    about = "Access tokens of a deployed registry, straight in its table"
)]
struct Cli {
    /// The DynamoDB table (the stack's `TableName` output).
    #[arg(long, env = "DROGUE_TABLE")]
    table: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Makes an access token and prints it once as `user:token`.
    CreateToken {
        /// The user the token authenticates.
        #[arg(long, default_value = "admin")]
        user: String,
        /// Roles the token carries (repeatable); the default is the administrator role.
        #[arg(long = "role", default_value = "drogue-admin")]
        roles: Vec<String>,
        #[arg(long, default_value = "made by drogue-admin")]
        description: String,
    },
    /// Lists a user's tokens (prefix, creation time, description).
    ListTokens {
        #[arg(long, default_value = "admin")]
        user: String,
    },
    /// Revokes a user's token by its prefix.
    DeleteToken {
        prefix: String,
        #[arg(long, default_value = "admin")]
        user: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let aws = aws_config::load_from_env().await;
    let store = DynamoStore::new(dynamodb::client(&aws), &cli.table);
    match cli.command {
        Command::CreateToken {
            user,
            roles,
            description,
        } => {
            let owner = Principal {
                user: user.clone(),
                name: None,
                roles,
            };
            let new = access::create_token(&store, &owner, Some(description))
                .await
                .with_context(|| format!("cannot make a token in table {}", cli.table))?;
            println!("{user}:{}", new.token);
        }
        Command::ListTokens { user } => {
            let tokens = store
                .list_tokens(&user)
                .await
                .with_context(|| format!("cannot read table {}", cli.table))?;
            for token in tokens {
                println!(
                    "{}\t{}\t{}",
                    token.prefix,
                    token.created.to_rfc3339(),
                    token.description.unwrap_or_default()
                );
            }
        }
        Command::DeleteToken { prefix, user } => {
            let deleted = store
                .delete_token(&user, &prefix)
                .await
                .with_context(|| format!("cannot write table {}", cli.table))?;
            anyhow::ensure!(deleted, "{user} has no token {prefix}");
            println!("deleted {prefix}");
        }
    }
    Ok(())
}
