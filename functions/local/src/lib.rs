//! The local runner: mounts every function on one HTTP listener over an embedded,
//! persistent store under a data directory, and bootstraps an administrator.

mod bootstrap;

use anyhow::Context;
use clap::Parser;
use drogue_registry::Settings;
use drogue_shared::access::authz::Authorizer;
use drogue_shared::access::oidc::OidcConfig;
use drogue_shared::store::embedded::EmbeddedStore;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Command-line options of `drogue-local`.
#[derive(Debug, Clone, Parser)]
#[command(name = "drogue-local", version, about)]
pub struct Config {
    /// Where the data is kept (created if missing).
    #[arg(long, env = "DROGUE_DATA_DIR", default_value = ".drogue")]
    pub data_dir: PathBuf,
    /// The address of the HTTP listener (management API and device endpoint).
    #[arg(long, env = "DROGUE_HTTP_BIND", default_value = "127.0.0.1:8080")]
    pub http_bind: SocketAddr,
    /// The URL clients reach the HTTP listener at, if not the one they used.
    #[arg(long, env = "DROGUE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// An OpenID Connect issuer (e.g. a Keycloak realm URL) whose bearer tokens are
    /// accepted besides access tokens.
    #[arg(long, env = "DROGUE_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The audience (`aud` or `azp`) bearer tokens must be for.
    #[arg(long, env = "DROGUE_OIDC_AUDIENCE", requires = "oidc_issuer")]
    pub oidc_audience: Option<String>,
    /// The role that may do everything; the bootstrapped administrator holds it.
    #[arg(long, env = "DROGUE_ADMIN_ROLE", default_value = Authorizer::DEFAULT_ADMIN_ROLE)]
    pub admin_role: String,
}

/// A started local runner.
pub struct Server {
    listener: TcpListener,
    router: axum::Router,
    admin: bootstrap::AdminCredentials,
}

impl Server {
    /// Opens the store, bootstraps the administrator and binds the listener.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.data_dir.display()
            )
        })?;
        let store = EmbeddedStore::open(config.data_dir.join("drogue.redb"))
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
        let admin = bootstrap::ensure_admin(&store, &config.data_dir, &config.admin_role).await?;
        let listener = TcpListener::bind(config.http_bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_bind))?;
        let settings = Settings {
            public_url: config.public_url.clone(),
            http_url: None,
            oidc: config
                .oidc_issuer
                .clone()
                .map(|issuer| OidcConfig::new(issuer, config.oidc_audience.clone())),
            admin_role: config.admin_role.clone(),
        };
        let router = drogue_registry::router(Arc::new(store), settings);
        tracing::info!(
            address = %listener.local_addr()?,
            data_dir = %config.data_dir.display(),
            "drogue-local is ready"
        );
        Ok(Self {
            listener,
            router,
            admin,
        })
    }

    /// Where the HTTP listener is bound.
    pub fn http_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bootstrapped administrator's `user:token`.
    pub fn admin_credentials(&self) -> (&str, &str) {
        (&self.admin.user, &self.admin.token)
    }

    /// Serves until `shutdown` completes.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        drogue_shared::runtime::serve(self.listener, self.router, shutdown).await
    }
}
