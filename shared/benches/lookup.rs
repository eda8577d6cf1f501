//! Device lookup by (application, device) on the embedded store, with 10,000 devices in
//! 10 applications, each with credentials and aliases; the access token check; and the
//! check of an OIDC bearer token whose key is cached.
//!
//! `cargo bench -p drogue-shared --bench lookup`

use criterion::{Criterion, criterion_group, criterion_main};
use drogue_shared::access::authz::AccessControl;
use drogue_shared::access::{self, Principal};
use drogue_shared::model::{AppName, DeviceName, ResourceInput};
use drogue_shared::registry::Registry;
use drogue_shared::store::embedded::EmbeddedStore;
use drogue_shared::store::{DeviceStore, Store};
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;

fn input(value: serde_json::Value) -> ResourceInput {
    serde_json::from_value(value).unwrap()
}

fn lookup(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("bench.redb")).unwrap();
    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let registry = Registry::new(shared.clone(), AccessControl::default());
    let owner = Principal::user("bench");
    let token = rt.block_on(async {
        for a in 0..10 {
            let app = format!("app{a}");
            registry
                .create_application(&owner, input(json!({"metadata": {"name": app}})))
                .await
                .unwrap();
            let app = AppName::parse(&app).unwrap();
            for d in 0..1000 {
                let spec = json!({
                    "alias": [format!("alias-{d}")],
                    "authentication": {"credentials": [{"pass": {"sha512": "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1"}}]},
                    "gatewaySelector": {"matchNames": ["gw"]}
                });
                registry
                    .create_device(&owner, &app, input(json!({"metadata": {"name": format!("device-{d:04}")}, "spec": spec})))
                    .await
                    .unwrap();
            }
        }
        access::create_token(shared.as_ref(), &owner, None).await.unwrap().token
    });

    let app = AppName::parse("app7").unwrap();
    let device = DeviceName::parse("device-0542").unwrap();
    c.bench_function("embedded get_device (10k devices)", |b| {
        b.to_async(&rt).iter(|| async {
            let found = store
                .get_device(black_box(&app), black_box(&device))
                .await
                .unwrap();
            black_box(found.unwrap());
        })
    });
    c.bench_function("access token check (embedded)", |b| {
        b.to_async(&rt).iter(|| async {
            let decision = access::authenticate(shared.as_ref(), "bench", black_box(&token))
                .await
                .unwrap();
            assert!(matches!(decision, access::Authentication::Allow(_)));
        })
    });
}

fn bearer(c: &mut Criterion) {
    use drogue_shared::access::oidc::{OidcConfig, OidcVerifier};
    use drogue_tests::issuer::{TestIssuer, TestKey};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (verifier, token) = rt.block_on(async {
        let issuer = TestIssuer::start(&[("k1", TestKey::Rsa1)]).await;
        let verifier = OidcVerifier::new(OidcConfig::new(&issuer.url, Some("drogue".into())));
        let token = issuer.sign("k1", TestKey::Rsa1, &issuer.claims("alice"));
        assert!(matches!(
            verifier.verify(&token).await.unwrap(),
            access::Authentication::Allow(_)
        ));
        (verifier, token)
    });
    c.bench_function("OIDC bearer check (RS256, key cached)", |b| {
        b.to_async(&rt).iter(|| async {
            let decision = verifier.verify(black_box(&token)).await.unwrap();
            assert!(matches!(decision, access::Authentication::Allow(_)));
        })
    });
}

criterion_group!(benches, lookup, bearer);
criterion_main!(benches);
