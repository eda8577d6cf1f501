//! Passwords, usernames, aliases, disabled and deleted objects, gateways, the cache.

use super::fixture::{Fixture, password, user};
use drogue_shared::model::{AppName, DeviceName};
use drogue_tests::suite::Case;

pub const CASES: &[Case<Fixture>] = &[
    (
        "another process's authenticator sees registry changes within its lookup time",
        |f| Box::pin(lookup_ttl(f)),
    ),
    (
        "a device's password is accepted, a wrong one refused",
        |f| Box::pin(passwords(f)),
    ),
    ("usernames follow Drogue Cloud's matching rules", |f| {
        Box::pin(usernames(f))
    }),
    ("aliases and unique usernames name the device", |f| {
        Box::pin(aliases(f))
    }),
    ("disabled and deleted objects are refused", |f| {
        Box::pin(unusable(f))
    }),
    ("a gateway acts only for devices that name it", |f| {
        Box::pin(gateways(f))
    }),
    (
        "the slow hash runs once per device and password until the device changes",
        |f| Box::pin(cache(f)),
    ),
    (
        "a lookup stays remembered through writes to other applications, not its own's",
        |f| Box::pin(lookups_by_application(f)),
    ),
    (
        "what authentication keeps: credentials parsed, one application object for its devices",
        |f| Box::pin(kept(f)),
    ),
];

/// The allowed authentication of `credential` in app1.
async fn authenticated(
    f: &Fixture,
    credential: drogue_shared::device_auth::DeviceCredential,
) -> drogue_shared::device_auth::Authenticated {
    match f.authenticate(Some("app1"), credential, None).await {
        drogue_shared::device_auth::DeviceAuthentication::Allow(a) => *a,
        drogue_shared::device_auth::DeviceAuthentication::Deny { reason } => panic!("{reason}"),
    }
}

async fn kept(f: Fixture) {
    use drogue_shared::model::device_spec::Credential;
    use std::sync::Arc;
    let pass = authenticated(&f, password("pass-dev", "secret")).await;
    // the device's credentials parsed, out of its spec; the rest of the spec kept
    assert!(matches!(&pass.credentials[..], [Credential::Password(_)]));
    assert!(!pass.sender.spec.contains_key("authentication"));
    let users = authenticated(&f, user("alice", "pw", None)).await;
    assert_eq!(users.sender.metadata.name, "user-dev");
    assert_eq!(users.credentials.len(), 3);
    // its names as the stored device's: a unique username is one, another username not
    let app1 = AppName::parse("app1").unwrap();
    let stored = f
        .store
        .store
        .get_device(&app1, &DeviceName::parse("user-dev").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        users.sender_claims(),
        drogue_shared::store::device_claims(&stored)
    );
    let claims = users.sender_claims();
    let names: Vec<&str> = claims.iter().map(|c| c.key()).collect();
    assert_eq!(names, ["alice", "user-dev"]);
    let bcrypt = authenticated(&f, password("bcrypt-dev", "secret")).await;
    assert!(!bcrypt.sender.spec.contains_key("credentials"));
    // a gateway's device: its own spec's gateways still there
    let gateway = f
        .authenticate(
            Some("app1"),
            password("gateway", "gw-secret"),
            Some("behind"),
        )
        .await;
    let drogue_shared::device_auth::DeviceAuthentication::Allow(gateway) = gateway else {
        panic!("the gateway acts for its device");
    };
    assert!(gateway.device.spec.contains_key("gatewaySelector"));
    assert_eq!(gateway.credentials.len(), 1, "the sender's (the gateway's)");
    // a pre-shared key (as DTLS reads it) and a pinned certificate
    let psk =
        serde_json::json!({"authentication": {"credentials": [{"psk": {"key": "c2VjcmV0"}}]}});
    f.device("app1", "psk-dev", psk).await;
    let drogue_shared::device_auth::DeviceAuthentication::Allow(psk) =
        f.auth.resolve("app1", "psk-dev", None).await.unwrap()
    else {
        panic!("the device resolves");
    };
    assert!(matches!(
        &psk.credentials[..],
        [Credential::PreSharedKey(_)]
    ));
    assert!(psk.sender.spec.is_empty());
    let held = f.ca1.issue("app1", "kept-pinned", 2025, 2030);
    let pinned = serde_json::json!({"authentication": {"credentials": [{"cert": held.cert_pem}]}});
    f.device("app1", "kept-pinned", pinned).await;
    let chain = drogue_shared::device_auth::DeviceCredential::Certificate {
        chain: vec![held.der.to_vec()],
    };
    let certified = authenticated(&f, chain).await;
    assert_eq!(certified.sender.metadata.name, "kept-pinned");
    assert!(matches!(
        &certified.credentials[..],
        [Credential::Certificate(_)]
    ));
    assert!(certified.sender.spec.is_empty());

    // devices looked up apart share their application's object, whatever their credential
    for other in [&users, &bcrypt, &gateway, &psk, &certified] {
        assert!(Arc::ptr_eq(&pass.application, &other.application));
    }
    // a new version of the application is a new object, shared from then on
    let name = AppName::parse("app1").unwrap();
    let app = f.registry.get_application(&f.admin, &name).await.unwrap();
    let mut changed = serde_json::to_value(&app).unwrap();
    changed["metadata"]["labels"] = serde_json::json!({"changed": "yes"});
    f.registry
        .update_application(&f.admin, &name, serde_json::from_value(changed).unwrap())
        .await
        .unwrap();
    let after = authenticated(&f, password("pass-dev", "secret")).await;
    assert!(!Arc::ptr_eq(&pass.application, &after.application));
    assert_eq!(after.application.metadata.labels["changed"], "yes");
    let after_bcrypt = authenticated(&f, password("bcrypt-dev", "secret")).await;
    assert!(Arc::ptr_eq(&after.application, &after_bcrypt.application));
}

async fn passwords(f: Fixture) {
    let app = Some("app1");
    assert_eq!(
        f.allowed(app, password("pass-dev", "secret"), None).await,
        ("pass-dev".into(), "pass-dev".into())
    );
    f.allowed(app, password("bcrypt-dev", "secret"), None).await;
    f.denied(app, password("pass-dev", "Secret"), None).await;
    f.denied(app, password("pass-dev", ""), None).await;
    f.denied(app, password("bcrypt-dev", "wrong"), None).await;
    f.denied(app, password("nobody", "secret"), None).await;
    f.denied(Some("app9"), password("pass-dev", "secret"), None)
        .await;
    f.denied(Some("Not A Name"), password("pass-dev", "secret"), None)
        .await;
    f.denied(None, password("pass-dev", "secret"), None).await;
    f.denied(Some("app2"), password("pass-dev", "secret"), None)
        .await;
}

async fn usernames(f: Fixture) {
    let app = Some("app1");
    f.allowed(app, user("alice", "pw", Some("user-dev")), None)
        .await;
    f.allowed(app, user("bob", "pw2", Some("user-dev")), None)
        .await;
    f.denied(app, user("bob", "pw", Some("user-dev")), None)
        .await;
    f.denied(app, user("carol", "pw", Some("user-dev")), None)
        .await;
    // the device's own name as username, with a pass entry
    f.allowed(app, user("pass-dev", "secret", Some("pass-dev")), None)
        .await;
    f.denied(app, user("other", "secret", Some("pass-dev")), None)
        .await;
    // a password alone: a user named like the device
    f.allowed(app, password("user-dev", "pw3"), None).await;
    f.denied(app, password("user-dev", "pw2"), None).await;
}

async fn aliases(f: Fixture) {
    let app = Some("app1");
    assert_eq!(
        f.allowed(app, password("alias-1", "secret"), None).await.0,
        "aliased"
    );
    assert_eq!(
        f.allowed(app, password("alice", "pw"), None).await.0,
        "user-dev",
        "a unique username names the device"
    );
    f.denied(app, password("bob", "pw2"), None).await;
}

async fn unusable(f: Fixture) {
    assert_eq!(
        f.denied(Some("app1"), password("disabled-dev", "secret"), None)
            .await,
        "disabled"
    );
    assert_eq!(
        f.denied(Some("off"), password("d", "secret"), None).await,
        "disabled"
    );
    assert_eq!(
        f.denied(Some("app1"), password("deleting-dev", "secret"), None)
            .await,
        "being deleted"
    );
}

async fn gateways(f: Fixture) {
    let app = Some("app1");
    let (sender, device) = f
        .allowed(app, password("gateway", "gw-secret"), Some("behind"))
        .await;
    assert_eq!((sender.as_str(), device.as_str()), ("gateway", "behind"));
    f.denied(app, password("gateway", "gw-secret"), Some("not-behind"))
        .await;
    f.denied(app, password("gateway", "gw-secret"), Some("nobody"))
        .await;
    f.denied(app, password("gateway", "wrong"), Some("behind"))
        .await;
    f.denied(app, password("pass-dev", "secret"), Some("behind"))
        .await;
    assert_eq!(
        f.allowed(app, password("gateway", "gw-secret"), Some("gateway"))
            .await
            .1,
        "gateway"
    );
}

async fn cache(f: Fixture) {
    let app = Some("app1");
    let before = f.auth.verified_passwords().slow_checks();
    for _ in 0..10 {
        f.allowed(app, password("pass-dev", "secret"), None).await;
    }
    assert_eq!(
        f.auth.verified_passwords().slow_checks() - before,
        1,
        "the hash ran once"
    );
    f.denied(app, password("pass-dev", "wrong"), None).await;
    assert_eq!(
        f.auth.verified_passwords().slow_checks() - before,
        2,
        "a wrong password is never cached"
    );

    // a change of the device (here: a new password) makes the cache forget it
    let name = (
        AppName::parse("app1").unwrap(),
        DeviceName::parse("pass-dev").unwrap(),
    );
    let mut device = f
        .registry
        .get_device(&f.admin, &name.0, &name.1)
        .await
        .unwrap()
        .unwrap();
    device.spec["authentication"] = serde_json::json!({"credentials": [{"pass": "changed"}]});
    let input = serde_json::from_value(serde_json::to_value(&device).unwrap()).unwrap();
    f.registry
        .update_device(&f.admin, &name.0, &name.1, input)
        .await
        .unwrap();
    f.denied(app, password("pass-dev", "secret"), None).await;
    f.allowed(app, password("pass-dev", "changed"), None).await;
    f.allowed(app, password("pass-dev", "changed"), None).await;
    assert_eq!(f.auth.verified_passwords().slow_checks() - before, 4);
}

async fn lookups_by_application(f: Fixture) {
    let app = Some("app1");
    f.allowed(app, password("pass-dev", "secret"), None).await;
    let read = f.auth.lookup_reads();
    f.allowed(app, password("pass-dev", "secret"), None).await;
    assert_eq!(f.auth.lookup_reads(), read, "remembered");
    // another application made, a device made in it: app1's lookup is still current
    f.app("other", serde_json::json!({})).await;
    f.device("other", "d1", serde_json::json!({})).await;
    f.allowed(app, password("pass-dev", "secret"), None).await;
    assert_eq!(f.auth.lookup_reads(), read, "another application's writes");
    // a write to app1 (another of its devices): read again, then remembered again
    f.device("app1", "sibling", serde_json::json!({})).await;
    f.allowed(app, password("pass-dev", "secret"), None).await;
    f.allowed(app, password("pass-dev", "secret"), None).await;
    assert_eq!(
        f.auth.lookup_reads(),
        read + 1,
        "its own application's write"
    );
}

/// The device `pass-dev` as authenticated now with the password "changed".
async fn device_after_change(
    auth: &drogue_shared::device_auth::DeviceAuthenticator,
) -> std::sync::Arc<drogue_shared::model::Device> {
    use drogue_shared::device_auth::{DeviceAuthRequest, DeviceAuthentication};
    let request = DeviceAuthRequest {
        application: Some("app1".into()),
        credential: password("pass-dev", "changed"),
        r#as: None,
    };
    match auth.authenticate(request).await.unwrap() {
        DeviceAuthentication::Allow(a) => a.device,
        DeviceAuthentication::Deny { reason } => panic!("{reason}"),
    }
}

async fn lookup_ttl(f: Fixture) {
    use drogue_shared::device_auth::{
        DeviceAuthRequest, DeviceAuthentication, DeviceAuthenticator,
    };
    use std::time::Duration;
    // an authenticator that shares no change counter with the registry, as on AWS
    let other =
        DeviceAuthenticator::new(f.store.store.clone()).with_lookup_ttl(Duration::from_millis(300));
    let attempt = |pw: &'static str| {
        let other = other.clone();
        async move {
            let request = DeviceAuthRequest {
                application: Some("app1".into()),
                credential: password("pass-dev", pw),
                r#as: None,
            };
            matches!(
                other.authenticate(request).await.unwrap(),
                DeviceAuthentication::Allow(_)
            )
        }
    };
    assert!(attempt("secret").await);
    // once the lookup time is over, an unchanged device is read again, and the objects
    // read before are kept (not a second copy for every connection holding them)
    let device = || {
        let other = other.clone();
        async move {
            let request = DeviceAuthRequest {
                application: Some("app1".into()),
                credential: password("pass-dev", "secret"),
                r#as: None,
            };
            match other.authenticate(request).await.unwrap() {
                DeviceAuthentication::Allow(a) => a.device,
                DeviceAuthentication::Deny { reason } => panic!("{reason}"),
            }
        }
    };
    let before = device().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(std::sync::Arc::ptr_eq(&before, &device().await));
    let name = (
        AppName::parse("app1").unwrap(),
        DeviceName::parse("pass-dev").unwrap(),
    );
    let mut device = f
        .registry
        .get_device(&f.admin, &name.0, &name.1)
        .await
        .unwrap()
        .unwrap();
    device.spec["authentication"] = serde_json::json!({"credentials": [{"pass": "changed"}]});
    let input = serde_json::from_value(serde_json::to_value(&device).unwrap()).unwrap();
    f.registry
        .update_device(&f.admin, &name.0, &name.1, input)
        .await
        .unwrap();
    assert!(
        attempt("secret").await,
        "within the lookup time the old password still works"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!attempt("secret").await, "after it, the change has arrived");
    assert!(
        !std::sync::Arc::ptr_eq(&before, &device_after_change(&other).await),
        "a changed device is a new object"
    );
    assert!(attempt("changed").await);
}
