//! What the integration tests share: stores on both backends (the embedded one in a
//! temporary directory, DynamoDB in moto's server with a fresh table per test), the
//! management API served on a random loopback port, and a runner that applies every
//! case of a suite to a backend.

pub mod api;
pub mod backend;
pub mod dynamo_proxy;
pub mod events;
pub mod ingest_reads;
pub mod issuer;
pub mod lambda;
pub mod libcoap;
pub mod pki;
pub mod sink;
pub mod suite;

pub use api::TestApp;
pub use backend::{Backend, TestStore};
