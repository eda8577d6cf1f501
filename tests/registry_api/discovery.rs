//! The discovery documents `drg login` reads.

use drogue_tests::{Backend, TestApp};

#[tokio::test]
async fn discovery_documents_name_every_endpoint() {
    let a = TestApp::spawn(Backend::Embedded).await;
    let public = a
        .send(
            a.client
                .get(format!("{}/.well-known/drogue-endpoints", a.base)),
        )
        .await;
    public.expect(200);
    let e = &public.body;
    assert_eq!(e["api"], a.base.as_str());
    assert_eq!(
        e["registry"]["url"],
        a.base.as_str(),
        "no trailing slash: drg appends one"
    );
    assert_eq!(e["http"]["url"], a.base.as_str());
    assert_eq!(e["command_url"], a.base.as_str());
    // the web console, and where the issuer sends its logins back
    assert_eq!(e["console"], format!("{}/", a.base));
    assert_eq!(e["redirect_url"], format!("{}/console/callback", a.base));
    let issuer = e["issuer_url"].as_str().unwrap();
    assert!(!issuer.ends_with('/'));

    let oidc = a
        .send(
            a.client
                .get(format!("{issuer}/.well-known/openid-configuration")),
        )
        .await;
    oidc.expect(200);
    assert_eq!(oidc.body["issuer"], issuer);
    for endpoint in ["authorization_endpoint", "token_endpoint", "jwks_uri"] {
        assert!(
            oidc.body[endpoint].as_str().unwrap().starts_with(issuer),
            "{endpoint}"
        );
    }
    a.send(a.client.post(oidc.body["token_endpoint"].as_str().unwrap()))
        .await
        .expect_error(400, "InvalidRequest");

    a.send(
        a.client
            .get(format!("{}/api/console/v1alpha1/info", a.base)),
    )
    .await
    .expect_error(401, "Unauthorized");
    let info = a.get("/api/console/v1alpha1/info").await;
    info.expect(200);
    assert_eq!(info.body["registry"]["url"], a.base.as_str());

    let version = a
        .send(
            a.client
                .get(format!("{}/.well-known/drogue-version", a.base)),
        )
        .await;
    version.expect(200);
    assert_eq!(version.body["version"], "0.11.0");
}
