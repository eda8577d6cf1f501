//! A fake OpenID Connect issuer on loopback: a discovery document and a key set that a
//! test can change (key rotation), and tokens signed with the test keys.

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// One of the test keys in `tests/testdata/oidc`.
#[derive(Clone, Copy, Debug)]
pub enum TestKey {
    Rsa1,
    Rsa2,
    Ec1,
}

impl TestKey {
    pub fn pem(self) -> &'static [u8] {
        match self {
            Self::Rsa1 => include_bytes!("../testdata/oidc/rsa1.pem"),
            Self::Rsa2 => include_bytes!("../testdata/oidc/rsa2.pem"),
            Self::Ec1 => include_bytes!("../testdata/oidc/ec1.pem"),
        }
    }

    pub fn algorithm(self) -> Algorithm {
        match self {
            Self::Rsa1 | Self::Rsa2 => Algorithm::RS256,
            Self::Ec1 => Algorithm::ES256,
        }
    }

    pub fn encoding_key(self) -> EncodingKey {
        match self {
            Self::Rsa1 | Self::Rsa2 => EncodingKey::from_rsa_pem(self.pem()).unwrap(),
            Self::Ec1 => EncodingKey::from_ec_pem(self.pem()).unwrap(),
        }
    }

    /// The public key as a JWK with this `kid`.
    pub fn jwk(self, kid: &str) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.encoding_key(), self.algorithm()).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk
    }
}

struct Published {
    keys: RwLock<JwkSet>,
    fetches: AtomicUsize,
    issuer: String,
}

/// A running fake issuer.
#[derive(Clone)]
pub struct TestIssuer {
    pub url: String,
    published: Arc<Published>,
}

impl TestIssuer {
    /// Starts an issuer publishing these `(kid, key)`s.
    pub async fn start(keys: &[(&str, TestKey)]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/realms/test", listener.local_addr().unwrap());
        let published = Arc::new(Published {
            keys: RwLock::new(JwkSet { keys: vec![] }),
            fetches: AtomicUsize::new(0),
            issuer: url.clone(),
        });
        let router = axum::Router::new()
            .route(
                "/realms/test/.well-known/openid-configuration",
                get(discovery),
            )
            .route("/realms/test/protocol/openid-connect/certs", get(jwks))
            .with_state(published.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let issuer = Self { url, published };
        issuer.publish(keys);
        issuer
    }

    /// Replaces the published key set.
    pub fn publish(&self, keys: &[(&str, TestKey)]) {
        *self.published.keys.write().unwrap() = JwkSet {
            keys: keys.iter().map(|(kid, key)| key.jwk(kid)).collect(),
        };
    }

    /// How often the key set was fetched.
    pub fn fetches(&self) -> usize {
        self.published.fetches.load(Ordering::SeqCst)
    }

    /// Claims of a valid token for `sub`, issued now, valid for five minutes.
    pub fn claims(&self, sub: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.url, "sub": sub, "aud": "drogue", "azp": "drg",
            "iat": now, "nbf": now, "exp": now + 300,
            "preferred_username": format!("{sub}-name"),
        })
    }

    /// A token with these claims, signed with `key` and naming `kid`.
    pub fn sign(&self, kid: &str, key: TestKey, claims: &Value) -> String {
        let mut header = Header::new(key.algorithm());
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &key.encoding_key()).unwrap()
    }
}

async fn discovery(State(p): State<Arc<Published>>) -> Json<Value> {
    Json(json!({
        "issuer": p.issuer,
        "jwks_uri": format!("{}/protocol/openid-connect/certs", p.issuer),
        "authorization_endpoint": format!("{}/protocol/openid-connect/auth", p.issuer),
        "token_endpoint": format!("{}/protocol/openid-connect/token", p.issuer),
    }))
}

async fn jwks(State(p): State<Arc<Published>>) -> Json<JwkSet> {
    p.fetches.fetch_add(1, Ordering::SeqCst);
    Json(p.keys.read().unwrap().clone())
}
