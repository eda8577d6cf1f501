//! A write whose client goes away is carried out whole: its change is counted (and
//! announced) though no one waits for the answer any more.

use drogue_registry::Settings;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::access::{self, Principal};
use drogue_shared::registry::{Changes, Registry};
use drogue_tests::Backend;
use std::time::Duration;
use tower::ServiceExt;

#[tokio::test]
async fn a_write_dropped_by_its_client_is_carried_out_and_counted() {
    let store = Backend::Embedded.store().await;
    let settings = Settings::default();
    let admin = Principal {
        user: "admin".into(),
        name: None,
        roles: vec![settings.admin_role.clone()],
    };
    let token = access::create_token(store.store.as_ref(), &admin, None)
        .await
        .unwrap()
        .token;
    let changes = Changes::default();
    let registry = Registry::new(
        store.store.clone(),
        AccessControl::new(&settings.admin_role),
    )
    .with_changes(changes.clone());
    let router = drogue_registry::router_for(registry, settings, None);
    let app1 = changes.of("app1");
    let request = axum::http::Request::post("/api/registry/v1alpha1/apps")
        .header(
            "authorization",
            format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("admin:{token}")
                )
            ),
        )
        .header("content-type", "application/json")
        .body(axum::body::Body::from(r#"{"metadata":{"name":"app1"}}"#))
        .unwrap();
    // polled once, then dropped: the client is gone before any answer
    let mut answer = Box::pin(router.oneshot(request));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        std::future::Future::poll(answer.as_mut(), &mut cx).is_pending(),
        "no answer in the first poll"
    );
    drop(answer);
    tokio::time::timeout(Duration::from_secs(10), app1.changed_since(0))
        .await
        .expect("the write was carried out and counted");
    let name = drogue_shared::model::AppName::parse("app1").unwrap();
    assert!(
        drogue_shared::store::ApplicationStore::get_application(store.store.as_ref(), &name)
            .await
            .unwrap()
            .is_some()
    );
}
