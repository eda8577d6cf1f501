//! The storage conformance suite: every case runs against the embedded store and
//! against DynamoDB (moto), and both must behave the same.

mod applications;
mod devices;
mod dynamodb;
mod fixtures;
mod tokens;

use drogue_tests::suite::{self, Case};
use drogue_tests::{Backend, TestStore};

fn cases() -> Vec<Case<TestStore>> {
    [applications::CASES, devices::CASES, tokens::CASES].concat()
}

#[tokio::test]
async fn embedded_store_conforms() {
    suite::run("embedded", &cases(), || Backend::Embedded.store()).await;
}

#[tokio::test]
async fn dynamodb_store_conforms() {
    suite::run("dynamodb", &cases(), || Backend::DynamoDb.store()).await;
}
