//! The endpoint on a random port over a fresh store and event log, with an application
//! and devices.

use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::events::EventSink;
use drogue_shared::events::log::EventLog;
use drogue_shared::model::{AppName, ResourceInput};
use drogue_shared::registry::Registry;
use drogue_shared::store::Store;
use drogue_tests::{Backend, TestStore};
use serde_json::{Value, json};
use std::sync::Arc;

pub struct Endpoint {
    pub base: String,
    pub client: reqwest::Client,
    pub log: EventLog,
    _store: TestStore,
    _dir: tempfile::TempDir,
}

fn input(value: Value) -> ResourceInput {
    serde_json::from_value(value).unwrap()
}

/// Creates `app1` with devices: `dev1` (password `secret`), `user-dev` (user `alice`),
/// `gw` (password `gw`) and `behind` (served by `gw`).
pub async fn populate(store: Arc<dyn Store>) {
    let registry = Registry::new(store, AccessControl::default());
    let mut admin = Principal::user("admin");
    admin.roles.push("drogue-admin".into());
    registry
        .create_application(&admin, input(json!({"metadata": {"name": "app1"}})))
        .await
        .unwrap();
    let app = AppName::parse("app1").unwrap();
    for (name, spec) in [
        (
            "dev1",
            json!({"authentication": {"credentials": [{"pass": "secret"}]}}),
        ),
        (
            "user-dev",
            json!({"authentication": {"credentials": [{"user": {"username": "alice", "password": "pw"}}]}}),
        ),
        (
            "gw",
            json!({"authentication": {"credentials": [{"pass": "gw"}]}}),
        ),
        ("behind", json!({"gatewaySelector": {"matchNames": ["gw"]}})),
    ] {
        registry
            .create_device(
                &admin,
                &app,
                input(json!({"metadata": {"name": name}, "spec": spec})),
            )
            .await
            .unwrap();
    }
}

/// Serves the endpoint over `store` and `sink` on a random loopback port.
pub async fn serve(store: Arc<dyn Store>, sink: Arc<dyn EventSink>) -> String {
    let router =
        drogue_http_endpoint::router(store, sink, drogue_http_endpoint::Settings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

impl Endpoint {
    pub async fn spawn(backend: Backend) -> Self {
        let store = backend.store().await;
        populate(store.store.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path().join("events.redb"), 1000).unwrap();
        let base = serve(store.store.clone(), Arc::new(log.clone())).await;
        Self {
            base,
            client: reqwest::Client::new(),
            log,
            _store: store,
            _dir: dir,
        }
    }

    /// POSTs to `path` (with its query) as `user:password`; the status.
    pub async fn publish(
        &self,
        path: &str,
        auth: Option<(&str, &str)>,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base)).body(body);
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The events logged for `app1`, oldest first.
    pub fn events(&self) -> Vec<Value> {
        self.log
            .read("app1", 0, 1000)
            .unwrap()
            .into_iter()
            .map(|e| serde_json::from_str(&e.json).unwrap())
            .collect()
    }
}
