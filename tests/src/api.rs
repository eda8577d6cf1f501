//! The management API on a random loopback port, over a fresh store, with an
//! administrator token, and a client to call it.

use crate::backend::{Backend, TestStore};
use drogue_registry::Settings;
use drogue_shared::access::{self, Principal};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;

/// A running management API.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub user: String,
    pub token: String,
    pub store: TestStore,
}

/// An answer: status, headers and the body as JSON (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TestApp {
    /// Starts the API over a fresh store of `backend`, with a token for `admin`, who
    /// holds the administrator role.
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, Settings::default()).await
    }

    /// Starts the API with these settings.
    pub async fn spawn_with(backend: Backend, settings: Settings) -> Self {
        let store = backend.store().await;
        let admin = Principal {
            user: "admin".into(),
            name: None,
            roles: vec![settings.admin_role.clone()],
        };
        let new = access::create_token(store.store.as_ref(), &admin, None)
            .await
            .expect("a token is created");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = drogue_registry::router(store.store.clone(), settings);
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            base,
            client: reqwest::Client::new(),
            user: "admin".into(),
            token: new.token,
            store,
        }
    }

    /// A new token for another user, who holds no roles.
    pub async fn token_for(&self, user: &str) -> String {
        access::create_token(self.store.store.as_ref(), &Principal::user(user), None)
            .await
            .expect("a token is created")
            .token
    }

    /// A request as the administrator.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.token))
    }

    /// Sends a request and reads the answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    /// GET with a raw query string (empty: none).
    pub async fn get_query(&self, path: &str, query: &str) -> Answer {
        let path = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        self.get(&path).await
    }

    /// GET with query parameters, encoded.
    pub async fn get_with(&self, path: &str, params: &[(&str, &str)]) -> Answer {
        self.send(self.request(Method::GET, path).query(params))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.request(Method::DELETE, path)).await
    }
}

impl Answer {
    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected answer, body: {}",
            self.body
        );
        self
    }

    /// Asserts an error answer: status and the `error` kind of the JSON body.
    #[track_caller]
    pub fn expect_error(&self, status: u16, kind: &str) -> &Self {
        self.expect(status);
        assert_eq!(self.body["error"], kind, "body: {}", self.body);
        assert!(self.body["message"].is_string(), "body: {}", self.body);
        self
    }
}
