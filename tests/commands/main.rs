//! Commands: the command store on both backends (order, at-most-once taking, expiry,
//! responses), waiting with and without in-process signals, and the MQTT publishers
//! (the local bus, and the IoT data plane against moto).

mod lambda;
mod publishers;
mod store;
mod waiting;

use drogue_tests::suite::{self, Case};
use drogue_tests::{Backend, TestStore};

fn cases() -> Vec<Case<TestStore>> {
    [store::CASES, waiting::CASES].concat()
}

#[tokio::test]
async fn commands_on_the_embedded_store() {
    suite::run("embedded", &cases(), || Backend::Embedded.store()).await;
}

#[tokio::test]
async fn commands_on_dynamodb() {
    suite::run("dynamodb", &cases(), || Backend::DynamoDb.store()).await;
}
