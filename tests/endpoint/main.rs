//! The device HTTP endpoint over real sockets: every credential form and status code,
//! the events it writes (to the local log on both stores, and to Kinesis in moto), the
//! local log's durability, and the Lambda entry with API Gateway events.

mod forms;
mod kinesis;
mod lambda;
mod log;
mod setup;
mod statuses;

use drogue_tests::Backend;
use drogue_tests::suite::{self, Case};
use setup::Endpoint;

fn cases() -> Vec<Case<Endpoint>> {
    [forms::CASES, statuses::CASES].concat()
}

#[tokio::test]
async fn endpoint_on_the_embedded_store() {
    suite::run("embedded", &cases(), || Endpoint::spawn(Backend::Embedded)).await;
}

#[tokio::test]
async fn endpoint_on_dynamodb() {
    suite::run("dynamodb", &cases(), || Endpoint::spawn(Backend::DynamoDb)).await;
}
