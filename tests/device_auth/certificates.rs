//! X.509 client certificates: accepted when issued by the application's trust anchor
//! and valid now; refused when expired, not yet valid, issued by another CA or another
//! application's, self-signed, or for no known device.

use super::fixture::Fixture;
use drogue_shared::device_auth::DeviceCredential;
use drogue_tests::pki::{self, TestCa};
use drogue_tests::suite::Case;

pub const CASES: &[Case<Fixture>] = &[
    ("a certificate from the application's CA is accepted", |f| {
        Box::pin(accepted(f))
    }),
    (
        "expired, early, foreign and self-signed certificates are refused",
        |f| Box::pin(refused(f)),
    ),
    (
        "only devices without credentials or with the certificate pinned use certificates",
        |f| Box::pin(pinned(f)),
    ),
    (
        "a certificate several applications accept needs its application",
        |f| Box::pin(shared(f)),
    ),
    (
        "a disabled device never falls through to a stranger's device of the same name",
        |f| Box::pin(no_fall_through(f)),
    ),
];

/// The owner's device is disabled and a stranger holding the same CA has a device of the
/// same name: a certificate naming no application is refused, not authenticated as the
/// stranger's device.
async fn no_fall_through(f: Fixture) {
    let anchors =
        serde_json::json!({"trustAnchors": {"anchors": [{"certificate": f.ca1.anchor()}]}});
    f.app("stranger", anchors).await;
    f.device("stranger", "device-9", serde_json::json!({}))
        .await;
    f.device(
        "app1",
        "device-9",
        serde_json::json!({"core": {"disabled": true}}),
    )
    .await;
    let issued = f.ca1.issue("app1", "device-9", 2025, 2030);
    // both claim it: refused (before, the disabled device was passed over and the
    // stranger's authenticated)
    assert_eq!(
        f.denied(None, cert(&issued.der), None).await,
        drogue_shared::device_auth::AMBIGUOUS
    );
    // only the owner's claims it: refused as disabled
    f.device(
        "app1",
        "device-8",
        serde_json::json!({"core": {"disabled": true}}),
    )
    .await;
    let only_owner = f.ca1.issue("app1", "device-8", 2025, 2030);
    assert_eq!(
        f.denied(None, cert(&only_owner.der), None).await,
        "disabled"
    );
    // the stranger's device when the device names the stranger's application itself
    assert_eq!(
        f.allowed(Some("stranger"), cert(&issued.der), None).await.0,
        "device-9"
    );
}

/// Another application holds app1's CA too: a certificate that names no application is
/// authenticated while only one application has a device for it, refused as ambiguous
/// when both have; naming the application always works.
async fn shared(f: Fixture) {
    let anchors =
        serde_json::json!({"trustAnchors": {"anchors": [{"certificate": f.ca1.anchor()}]}});
    f.app("shared", anchors).await;
    let issued = f.ca1.issue("app1", "device-1", 2025, 2030);
    assert_eq!(f.allowed(None, cert(&issued.der), None).await.0, "device-1");
    f.device("shared", "device-1", serde_json::json!({})).await;
    assert_eq!(
        f.denied(None, cert(&issued.der), None).await,
        drogue_shared::device_auth::AMBIGUOUS
    );
    for app in ["app1", "shared"] {
        assert_eq!(
            f.allowed(Some(app), cert(&issued.der), None).await.0,
            "device-1"
        );
    }
    assert_eq!(
        f.denied(Some("app2"), cert(&issued.der), None).await,
        "the application does not trust the certificate's issuer"
    );
}

async fn pinned(f: Fixture) {
    let password_only =
        serde_json::json!({"authentication": {"credentials": [{"pass": "secret"}]}});
    f.device("app1", "password-only", password_only).await;
    let of_password_only = f.ca1.issue("app1", "password-only", 2025, 2030);
    assert_eq!(
        f.denied(None, cert(&of_password_only.der), None).await,
        "the device does not authenticate with certificates"
    );
    let held = f.ca1.issue("app1", "pinned", 2025, 2030);
    let spec = serde_json::json!({"authentication": {"credentials": [
        {"pass": "secret"},
        {"cert": held.cert_pem}
    ]}});
    f.device("app1", "pinned", spec).await;
    assert_eq!(f.allowed(None, cert(&held.der), None).await.0, "pinned");
    let another = f.ca1.issue("app1", "pinned", 2025, 2030);
    assert_eq!(
        f.denied(None, cert(&another.der), None).await,
        "the certificate is not one the device holds"
    );
}

fn cert(der: &[u8]) -> DeviceCredential {
    DeviceCredential::Certificate {
        chain: vec![der.to_vec()],
    }
}

async fn accepted(f: Fixture) {
    let by_cn = f.ca1.issue("app1", "device-1", 2025, 2030);
    assert_eq!(
        f.allowed(None, cert(&by_cn.der), None).await.0,
        "device-1",
        "the common name names the device"
    );
    assert_eq!(
        f.allowed(Some("app1"), cert(&by_cn.der), None).await.0,
        "device-1"
    );
    let by_subject = f.ca1.issue("app1", "certified-cert", 2025, 2030);
    assert_eq!(
        f.allowed(None, cert(&by_subject.der), None).await.0,
        "certified",
        "an alias holds the subject"
    );
}

async fn refused(f: Fixture) {
    let invalid = "the certificate is not valid for the application";
    let expired = f.ca1.issue("app1", "device-1", 2020, 2021);
    assert_eq!(f.denied(None, cert(&expired.der), None).await, invalid);
    let early = f.ca1.issue("app1", "device-1", 2090, 2100);
    assert_eq!(f.denied(None, cert(&early.der), None).await, invalid);

    let other_app = f.ca2.issue("app1", "device-1", 2025, 2030);
    assert_eq!(
        f.denied(Some("app1"), cert(&other_app.der), None).await,
        "the application does not trust the certificate's issuer"
    );
    f.denied(None, cert(&other_app.der), None).await;
    let other_apps_device = f.ca2.issue("app2", "other-app-device", 2025, 2030);
    f.allowed(None, cert(&other_apps_device.der), None).await;
    f.denied(Some("app1"), cert(&other_apps_device.der), None)
        .await;

    let unknown_ca = TestCa::new("app9", "Unknown CA").issue("app1", "device-1", 2025, 2030);
    assert_eq!(
        f.denied(None, cert(&unknown_ca.der), None).await,
        "no application trusts the certificate's issuer"
    );
    // a CA of the same name, but another key
    let impostor = TestCa::new("app1", "App 1 CA").issue("app1", "device-1", 2025, 2030);
    assert_eq!(f.denied(None, cert(&impostor.der), None).await, invalid);
    let self_signed = pki::self_signed("app1", "device-1");
    f.denied(None, cert(&self_signed.der), None).await;

    let nobody = f.ca1.issue("app1", "nobody", 2025, 2030);
    f.denied(None, cert(&nobody.der), None).await;
    f.denied(None, DeviceCredential::Certificate { chain: vec![] }, None)
        .await;
    f.denied(None, cert(b"not a certificate"), None).await;
}
