//! OIDC bearer tokens, against a fake issuer on loopback: each kind of token accepted or
//! refused as it should be, keys cached and refreshed on rotation, and the API's answers.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use drogue_registry::Settings;
use drogue_shared::access::Authentication;
use drogue_shared::access::oidc::{OidcConfig, OidcVerifier};
use drogue_tests::issuer::{TestIssuer, TestKey};
use drogue_tests::{Backend, TestApp};
use serde_json::{Value, json};
use std::time::Duration;

fn verifier(issuer: &TestIssuer, audience: Option<&str>) -> OidcVerifier {
    let mut config = OidcConfig::new(&issuer.url, audience.map(Into::into));
    config.refresh_interval = Duration::ZERO;
    OidcVerifier::new(config)
}

async fn allowed(v: &OidcVerifier, token: &str) -> bool {
    matches!(v.verify(token).await.unwrap(), Authentication::Allow(_))
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

#[tokio::test]
async fn tokens_are_accepted_or_refused_as_they_should_be() {
    let issuer = TestIssuer::start(&[("k1", TestKey::Rsa1), ("e1", TestKey::Ec1)]).await;
    let v = verifier(&issuer, Some("drogue"));
    let base = issuer.claims("alice");
    let now = chrono::Utc::now().timestamp();
    let sign = |claims: &Value| issuer.sign("k1", TestKey::Rsa1, claims);

    // realm roles and the roles of the audience's client count; those of other clients
    // (here `drg`, the client the token was made for) do not
    let valid = sign(&with(
        base.clone(),
        json!({"realm_access": {"roles": ["drogue-user"]}, "resource_access": {"drg": {"roles": ["drogue-admin"]}, "drogue": {"roles": ["manager"]}}}),
    ));
    match v.verify(&valid).await.unwrap() {
        Authentication::Allow(p) => {
            assert_eq!(p.user, "alice");
            assert_eq!(p.name.as_deref(), Some("alice-name"));
            assert_eq!(p.roles, ["drogue-user", "manager"]);
        }
        other => panic!("a valid token is refused: {other:?}"),
    }
    assert!(
        allowed(&v, &issuer.sign("e1", TestKey::Ec1, &base)).await,
        "ES256 keys work"
    );
    assert!(
        allowed(&v, &sign(&with(base.clone(), json!({"exp": now - 10})))).await,
        "within the leeway"
    );

    let refused = [
        (
            "expired",
            sign(&with(base.clone(), json!({"exp": now - 120}))),
        ),
        (
            "not yet valid",
            sign(&with(base.clone(), json!({"nbf": now + 120}))),
        ),
        (
            "wrong issuer",
            sign(&with(
                base.clone(),
                json!({"iss": "https://elsewhere/realms/test"}),
            )),
        ),
        (
            "wrong audience",
            sign(&with(base.clone(), json!({"aud": "other", "azp": "other"}))),
        ),
        (
            "no subject",
            sign(&with(base.clone(), json!({"sub": null}))),
        ),
        ("no expiry", sign(&with(base.clone(), json!({"exp": null})))),
        ("wrong signature", issuer.sign("k1", TestKey::Rsa2, &base)),
        (
            "signed by the EC key, named as the RSA key",
            issuer.sign("k1", TestKey::Ec1, &base),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in &refused {
        assert!(!allowed(&v, token).await, "{what} must be refused");
    }

    // alg none: no signature at all
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": "k1"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(base.to_string());
    assert!(
        !allowed(&v, &format!("{header}.{payload}.")).await,
        "alg none must be refused"
    );

    // HS256 with the RSA public key as the HMAC secret
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some("k1".into());
    let public = include_bytes!("../testdata/oidc/rsa1.pub.pem");
    let confused =
        jsonwebtoken::encode(&hs, &base, &jsonwebtoken::EncodingKey::from_secret(public)).unwrap();
    assert!(
        !allowed(&v, &confused).await,
        "HS256 with the public key must be refused"
    );

    // the audience may be in azp
    let azp = sign(&with(
        base.clone(),
        json!({"aud": "account", "azp": "drogue"}),
    ));
    assert!(allowed(&v, &azp).await);
    let anywhere = verifier(&issuer, None);
    assert!(
        allowed(
            &anywhere,
            &sign(&with(base.clone(), json!({"aud": "other"})))
        )
        .await
    );
}

#[tokio::test]
async fn keys_are_cached_and_refreshed_when_the_issuer_rotates_them() {
    let issuer = TestIssuer::start(&[("k1", TestKey::Rsa1)]).await;
    let mut config = OidcConfig::new(&issuer.url, None);
    config.refresh_interval = Duration::from_millis(300);
    let v = OidcVerifier::new(config);
    let claims = issuer.claims("bob");

    let first = issuer.sign("k1", TestKey::Rsa1, &claims);
    for _ in 0..20 {
        assert!(allowed(&v, &first).await);
    }
    assert_eq!(
        issuer.fetches(),
        1,
        "keys are fetched once, not per request"
    );

    let rotated = issuer.sign("k2", TestKey::Rsa2, &claims);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!allowed(&v, &rotated).await, "k2 is not published yet");
    assert_eq!(issuer.fetches(), 2, "an unknown kid makes it look again");
    assert!(!allowed(&v, &rotated).await);
    assert_eq!(
        issuer.fetches(),
        2,
        "but not again within the refresh interval"
    );

    issuer.publish(&[("k1", TestKey::Rsa1), ("k2", TestKey::Rsa2)]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(allowed(&v, &rotated).await, "the rotated key is found");
    assert!(allowed(&v, &first).await);
    assert_eq!(issuer.fetches(), 3);
}

#[tokio::test]
async fn cognito_groups_and_usernames_are_read() {
    let issuer = TestIssuer::start(&[("k1", TestKey::Rsa1)]).await;
    let v = verifier(&issuer, Some("app-client"));
    let claims = with(
        issuer.claims("8f2c-uuid"),
        json!({"aud": null, "azp": null, "client_id": "app-client", "token_use": "id", "cognito:groups": ["drogue-admin"], "cognito:username": "carol", "preferred_username": null}),
    );
    let claims = with(claims, json!({"aud": "app-client"}));
    match v
        .verify(&issuer.sign("k1", TestKey::Rsa1, &claims))
        .await
        .unwrap()
    {
        Authentication::Allow(p) => {
            assert_eq!(p.user, "8f2c-uuid");
            assert_eq!(p.name.as_deref(), Some("carol"));
            assert_eq!(p.roles, ["drogue-admin"]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_api_takes_bearer_tokens_and_refuses_bad_ones() {
    let issuer = TestIssuer::start(&[("k1", TestKey::Rsa1)]).await;
    let settings = Settings {
        oidc: Some(OidcConfig::new(&issuer.url, Some("drogue".into()))),
        ..Settings::default()
    };
    let a = TestApp::spawn_with(Backend::Embedded, settings).await;
    let apps = format!("{}/api/registry/v1alpha1/apps", a.base);
    let alice = issuer.sign("k1", TestKey::Rsa1, &issuer.claims("alice"));

    let created = a
        .send(
            a.client
                .post(&apps)
                .bearer_auth(&alice)
                .json(&json!({"metadata": {"name": "alices"}})),
        )
        .await;
    created.expect(201);
    let listed = a.send(a.client.get(&apps).bearer_auth(&alice)).await;
    listed.expect(200);
    assert_eq!(listed.body[0]["metadata"]["name"], "alices");
    let whoami = a
        .send(
            a.client
                .get(format!("{}/api/admin/v1alpha1/user/whoami", a.base))
                .bearer_auth(&alice),
        )
        .await;
    assert_eq!(
        whoami.body,
        json!({"id": "alice", "name": "alice-name", "roles": []})
    );

    let expired = issuer.sign(
        "k1",
        TestKey::Rsa1,
        &with(
            issuer.claims("alice"),
            json!({"exp": chrono::Utc::now().timestamp() - 600}),
        ),
    );
    let forbidden = json!({"error": "Forbidden", "message": "Forbidden"});
    for request in [
        a.client.get(&apps).bearer_auth(&expired),
        a.client.get(&apps).bearer_auth("junk"),
        a.client
            .get(&apps)
            .bearer_auth(&alice)
            .query(&[("username", "admin"), ("api_key", a.token.as_str())]),
    ] {
        let answer = a.send(request).await;
        answer.expect(403);
        assert_eq!(answer.body, forbidden);
    }

    // a token made by an OIDC user acts as that user, under its name too
    let made = a
        .send(
            a.client
                .post(format!("{}/api/tokens/v1alpha1", a.base))
                .bearer_auth(&alice),
        )
        .await;
    made.expect(200);
    let token = made.body["token"].as_str().unwrap();
    for user in ["alice", "alice-name"] {
        let listed = a
            .send(a.client.get(&apps).basic_auth(user, Some(token)))
            .await;
        listed.expect(200);
        assert_eq!(listed.body.as_array().unwrap().len(), 1, "{user}");
    }
}

/// The finding "OIDC roles": a role named like the administrator role on any client of
/// the realm made its holder an administrator. Only the configured client's roles count.
#[tokio::test]
async fn only_the_audience_client_s_roles_make_an_administrator() {
    let issuer = TestIssuer::start(&[("k1", TestKey::Rsa1)]).await;
    let settings = Settings {
        oidc: Some(OidcConfig::new(&issuer.url, Some("drogue".into()))),
        ..Settings::default()
    };
    let a = TestApp::spawn_with(Backend::Embedded, settings).await;
    let apps = format!("{}/api/registry/v1alpha1/apps", a.base);
    let bob = a.token_for("bob").await;
    a.send(
        a.client
            .post(&apps)
            .basic_auth("bob", Some(&bob))
            .json(&json!({"metadata": {"name": "bobs"}})),
    )
    .await
    .expect(201);

    let as_admin_of = |client: &str| {
        issuer.sign(
            "k1",
            TestKey::Rsa1,
            &with(
                issuer.claims("mallory"),
                json!({"resource_access": {client: {"roles": ["drogue-admin"]}}}),
            ),
        )
    };
    let whoami = format!("{}/api/admin/v1alpha1/user/whoami", a.base);
    let bobs = format!("{apps}/bobs");

    // admin of another client of the realm: an ordinary user here
    let elsewhere = as_admin_of("other-client");
    let me = a.send(a.client.get(&whoami).bearer_auth(&elsewhere)).await;
    me.expect(200);
    assert_eq!(
        me.body["roles"],
        json!([]),
        "other clients' roles are ignored"
    );
    a.send(a.client.get(&bobs).bearer_auth(&elsewhere))
        .await
        .expect_error(404, "NotFound");
    let listed = a.send(a.client.get(&apps).bearer_auth(&elsewhere)).await;
    listed.expect(200);
    assert_eq!(listed.body, json!([]), "sees no one else's application");
    a.send(
        a.client
            .post(format!("{}/api/admin/v1alpha1/users/bob/tokens", a.base))
            .bearer_auth(&elsewhere),
    )
    .await
    .expect_error(403, "Forbidden");

    // the same role on the configured client (the audience): administrator
    let here = as_admin_of("drogue");
    let me = a.send(a.client.get(&whoami).bearer_auth(&here)).await;
    assert_eq!(me.body["roles"], json!(["drogue-admin"]));
    a.send(a.client.get(&bobs).bearer_auth(&here))
        .await
        .expect(200);
    let listed = a.send(a.client.get(&apps).bearer_auth(&here)).await;
    assert_eq!(listed.body[0]["metadata"]["name"], "bobs");
}

#[tokio::test]
async fn an_unreachable_issuer_gives_503_and_no_issuer_refuses_bearer_tokens() {
    let issuer = TestIssuer::start(&[("k1", TestKey::Rsa1)]).await;
    let token = issuer.sign("k1", TestKey::Rsa1, &issuer.claims("alice"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}/realms/test", closed.local_addr().unwrap());
    drop(closed);
    let settings = Settings {
        oidc: Some(OidcConfig::new(gone, None)),
        ..Settings::default()
    };
    let a = TestApp::spawn_with(Backend::Embedded, settings).await;
    let apps = format!("{}/api/registry/v1alpha1/apps", a.base);
    a.send(a.client.get(&apps).bearer_auth(&token))
        .await
        .expect_error(503, "ServiceUnavailable");

    let plain = TestApp::spawn(Backend::Embedded).await;
    let apps = format!("{}/api/registry/v1alpha1/apps", plain.base);
    plain
        .send(plain.client.get(&apps).bearer_auth(&token))
        .await
        .expect_error(403, "Forbidden");
}
