//! The management API over real sockets, every case against both storage backends;
//! plus the discovery documents, the OpenAPI document and the Lambda entry.

mod applications;
mod bad_input;
mod completion;
mod devices;
mod discovery;
mod isolation;
mod lambda;
mod oidc;
mod openapi;
mod tokens;
mod unavailable;

use drogue_tests::suite::{self, Case};
use drogue_tests::{Backend, TestApp};

fn cases() -> Vec<Case<TestApp>> {
    [
        applications::CASES,
        devices::CASES,
        bad_input::CASES,
        tokens::CASES,
    ]
    .concat()
}

#[tokio::test]
async fn api_on_the_embedded_store() {
    suite::run("embedded", &cases(), || TestApp::spawn(Backend::Embedded)).await;
}

#[tokio::test]
async fn api_on_dynamodb() {
    suite::run("dynamodb", &cases(), || TestApp::spawn(Backend::DynamoDb)).await;
}
