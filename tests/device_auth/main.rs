//! Device authentication against both stores: every credential form accepted and
//! refused, disabled and deleted objects, gateways, the password cache, and X.509 client
//! certificates (made here with rcgen) for every refusal case.

mod certificates;
mod fixture;
mod passwords;

use drogue_tests::Backend;
use drogue_tests::suite::{self, Case};
use fixture::Fixture;

fn cases() -> Vec<Case<Fixture>> {
    [passwords::CASES, certificates::CASES].concat()
}

#[tokio::test]
async fn device_auth_on_the_embedded_store() {
    suite::run("embedded", &cases(), || Fixture::new(Backend::Embedded)).await;
}

#[tokio::test]
async fn device_auth_on_dynamodb() {
    suite::run("dynamodb", &cases(), || Fixture::new(Backend::DynamoDb)).await;
}

#[tokio::test]
async fn an_unreachable_store_is_no_decision() {
    use drogue_shared::device_auth::{DeviceAuthRequest, DeviceAuthenticator, DeviceCredential};
    use drogue_shared::store::dynamodb::DynamoStore;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let store = DynamoStore::new(drogue_tests::backend::dynamo_client(&endpoint), "t");
    let auth = DeviceAuthenticator::new(std::sync::Arc::new(store));
    let result = auth
        .authenticate(DeviceAuthRequest {
            application: Some("app1".into()),
            credential: DeviceCredential::Password {
                device: "d".into(),
                password: "p".into(),
            },
            r#as: None,
        })
        .await;
    assert!(result.is_err(), "a store failure must not be a denial");
}
