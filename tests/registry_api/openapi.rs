//! The OpenAPI document and the router agree: every documented path and method is
//! served, and every served path is documented.

use drogue_tests::{Backend, TestApp};
use reqwest::Method;
use std::collections::BTreeSet;

fn documented() -> serde_json::Value {
    serde_json::from_str(drogue_registry::OPENAPI).expect("the OpenAPI document is JSON")
}

#[test]
fn every_route_is_documented_and_every_documented_path_is_routed() {
    let doc = documented();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routed: BTreeSet<String> = drogue_registry::routes()
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        documented.symmetric_difference(&routed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "paths in only one of the router and the OpenAPI document"
    );
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let a = TestApp::spawn(Backend::Embedded).await;
    let doc = documented();
    let mut tried = 0;
    for (path, operations) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{app}", "app")
            .replace("{device}", "device")
            .replace("{prefix}", "drg_aaaaaa")
            .replace("{user}", "someone");
        for method in operations.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let answer = a.send(a.request(method.clone(), &concrete)).await;
            assert_ne!(
                answer.status.as_u16(),
                405,
                "{method} {path} is documented but not routed"
            );
            let fallback = answer.body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no such resource"));
            assert!(!fallback, "{method} {path} is documented but not routed");
            tried += 1;
        }
    }
    assert!(tried >= 20, "only {tried} operations documented");
}
