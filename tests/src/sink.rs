//! A CloudEvents receiver on a loopback port: it takes every `POST` (the sink of
//! `K_SINK`), keeps its headers and body, and answers with the status it is told.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// One request the receiver took.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// A header's value as text (empty when missing or not text).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// The receiver: served until dropped.
pub struct Receiver {
    url: String,
    status: Arc<Mutex<StatusCode>>,
    received: mpsc::UnboundedReceiver<Received>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Serves on a free loopback port, answering 202 until told otherwise.
    pub async fn start() -> Self {
        let status = Arc::new(Mutex::new(StatusCode::ACCEPTED));
        let (tx, received) = mpsc::unbounded_channel();
        let answer = status.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                let answer = answer.clone();
                async move {
                    let _ = tx.send(Received {
                        path: uri.path().to_owned(),
                        headers,
                        body,
                    });
                    *answer.lock().unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            status,
            received,
            server,
        }
    }

    /// Its URL (`http://127.0.0.1:<port>/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// From now on, answer with `status`.
    pub fn answer(&self, status: u16) {
        *self.status.lock().unwrap() = StatusCode::from_u16(status).unwrap();
    }

    /// The next request taken, within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Received> {
        tokio::time::timeout(within, self.received.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
