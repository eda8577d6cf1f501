//! An application with devices, a gateway and users, for the MQTT tests.

use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::model::AppName;
use drogue_shared::registry::Registry;
use drogue_shared::store::Store;
use serde_json::json;
use std::sync::Arc;

/// `from-lambda` with `device1` (password `hey-rodney`, its certificate
/// `testdata/pki/device1.pem`, alias `alias-1`), `gw`
/// (password `gw`) serving `behind-1` and `behind-2`; `other-app` with `device1`; the
/// administrator's fixture token; a reader `rita` of `from-lambda` with a token.
pub async fn populate(store: Arc<dyn Store>) -> String {
    let mut admin = Principal::user("admin");
    admin.roles.push("drogue-admin".into());
    drogue_tests::events::store_fixture_token(store.as_ref(), admin.roles.clone()).await;
    let registry = Registry::new(store.clone(), AccessControl::default());
    let input = |v| serde_json::from_value(v).unwrap();
    for app in ["from-lambda", "other-app"] {
        registry
            .create_application(&admin, input(json!({"metadata": {"name": app}})))
            .await
            .unwrap();
    }
    let pass = |p: &str| json!({"authentication": {"credentials": [{"pass": p}]}});
    // device1 also holds its client certificate (events/http-telemetry-mtls.json, the
    // just-in-time registration): a device uses certificates it holds
    let mut device1 = json!({"authentication": {"credentials": [
        {"pass": "hey-rodney"},
        {"cert": include_str!("../testdata/pki/device1.pem")}
    ]}});
    device1["alias"] = json!(["alias-1"]);
    for (app, name, spec) in [
        ("from-lambda", "device1", device1),
        ("from-lambda", "gw", pass("gw")),
        (
            "from-lambda",
            "behind-1",
            json!({"gatewaySelector": {"matchNames": ["gw"]}}),
        ),
        (
            "from-lambda",
            "behind-2",
            json!({"gatewaySelector": {"matchNames": ["gw"]}}),
        ),
        (
            "from-lambda",
            "user-dev",
            json!({"authentication": {"credentials": [{"user": {"username": "alice", "password": "pw"}}]}}),
        ),
        ("other-app", "device1", pass("other")),
    ] {
        registry
            .create_device(
                &admin,
                &AppName::parse(app).unwrap(),
                input(json!({"metadata": {"name": name}, "spec": spec})),
            )
            .await
            .unwrap();
    }
    let members = drogue_shared::registry::Members {
        resource_version: None,
        members: [(
            "rita".to_owned(),
            drogue_shared::registry::MemberEntry {
                role: drogue_shared::access::Role::Reader,
            },
        )]
        .into(),
    };
    registry
        .set_members(&admin, &AppName::parse("from-lambda").unwrap(), members)
        .await
        .unwrap();
    drogue_shared::access::create_token(store.as_ref(), &Principal::user("rita"), None)
        .await
        .unwrap()
        .token
}
