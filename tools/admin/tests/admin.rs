//! `drogue-admin` makes the first token of a deployment in its DynamoDB table (moto), and
//! the registry binary accepts it with the administrator role.

use std::process::Output;

fn admin(moto: &str, table: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_drogue-admin"))
        .arg("--table")
        .arg(table)
        .args(args)
        .env("AWS_ENDPOINT_URL", moto)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .expect("drogue-admin runs")
}

#[tokio::test]
async fn the_first_token_is_made_listed_and_revoked_with_aws_credentials() {
    let moto = std::env::var("DROGUE_TEST_MOTO_URL")
        .expect("DROGUE_TEST_MOTO_URL is not set: run the suite with `tests/run`");
    let store = drogue_tests::backend::fresh_dynamo_table().await;
    let table = store.table().to_owned();

    let made = admin(&moto, &table, &["create-token"]);
    assert!(made.status.success(), "{made:?}");
    let printed = String::from_utf8(made.stdout).unwrap();
    let (user, token) = printed.trim().split_once(':').expect("user:token");
    assert_eq!(user, "admin");
    assert!(token.starts_with("drg_"), "{token}");

    // the token is stored hashed, with the administrator role
    let principal = match drogue_shared::access::authenticate(&store, user, token)
        .await
        .unwrap()
    {
        drogue_shared::access::Authentication::Allow(principal) => principal,
        other => panic!("the new token is refused: {other:?}"),
    };
    assert_eq!(principal.roles, vec!["drogue-admin".to_owned()]);
    let stored = drogue_shared::store::TokenStore::list_tokens(&store, "admin")
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].hash.contains(token));

    let listed = admin(&moto, &table, &["list-tokens"]);
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.starts_with(&stored[0].prefix), "{listed}");
    assert!(listed.contains("made by drogue-admin"), "{listed}");
    assert!(!listed.contains(token), "listing shows no secret");

    // another user, with chosen roles
    let other = admin(
        &moto,
        &table,
        &[
            "create-token",
            "--user",
            "ops",
            "--role",
            "a",
            "--role",
            "b",
        ],
    );
    assert!(other.status.success());
    let other = String::from_utf8(other.stdout).unwrap();
    let (_, other_token) = other.trim().split_once(':').unwrap();
    match drogue_shared::access::authenticate(&store, "ops", other_token)
        .await
        .unwrap()
    {
        drogue_shared::access::Authentication::Allow(principal) => {
            assert_eq!(principal.roles, vec!["a".to_owned(), "b".to_owned()])
        }
        other => panic!("refused: {other:?}"),
    }

    let revoked = admin(&moto, &table, &["delete-token", &stored[0].prefix]);
    assert!(revoked.status.success(), "{revoked:?}");
    assert!(matches!(
        drogue_shared::access::authenticate(&store, user, token)
            .await
            .unwrap(),
        drogue_shared::access::Authentication::Deny { .. }
    ));
    let again = admin(&moto, &table, &["delete-token", &stored[0].prefix]);
    assert!(!again.status.success(), "a missing token is an error");
    assert!(String::from_utf8_lossy(&again.stderr).contains("has no token"));
}

#[test]
fn an_unreachable_table_is_a_clear_error() {
    let refused = admin("http://127.0.0.1:9", "nowhere", &["create-token"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("cannot make a token in table nowhere"),
        "{stderr}"
    );
}
