//! The access tokens API: a user's own tokens, shown once, stored hashed, revocable.

use chrono::{SecondsFormat, TimeDelta, Utc};
use drogue_shared::access::token_format as token;
use drogue_shared::store::StoredToken;
use drogue_tests::TestApp;
use drogue_tests::suite::Case;
use reqwest::Method;
use serde_json::json;

pub const CASES: &[Case<TestApp>] = &[
    ("administrators make tokens for other users", |a| {
        Box::pin(user_tokens(a))
    }),
    (
        "tokens are created, listed, used and revoked by their owner",
        |a| Box::pin(lifecycle(a)),
    ),
    (
        "tokens made with an expiry are refused once it has passed",
        |a| Box::pin(expiry(a)),
    ),
];

const TOKENS: &str = "/api/tokens/v1alpha1";

async fn lifecycle(a: TestApp) {
    let created = a
        .send(a.request(Method::POST, &format!("{TOKENS}?description=for%20ci")))
        .await;
    created.expect(200);
    let (prefix, secret) = (
        created.body["prefix"].as_str().unwrap().to_owned(),
        created.body["token"].as_str().unwrap().to_owned(),
    );
    assert_eq!(token::prefix_of(&secret), Some(prefix.as_str()));

    let stored = a.store.store.get_token(&prefix).await.unwrap().unwrap();
    assert_ne!(stored.hash, secret);
    assert!(
        !serde_json::to_string(&stored).unwrap().contains(&secret),
        "stored hashed"
    );

    let with_body = a.post(TOKENS, &json!({"description": "from a body"})).await;
    with_body.expect(200);

    let listed = a.get(TOKENS).await;
    listed.expect(200);
    let entries = listed.body.as_array().unwrap();
    assert_eq!(
        entries.len(),
        3,
        "the bootstrap token and two new ones: {entries:?}"
    );
    let entry = entries
        .iter()
        .find(|e| e["prefix"] == prefix.as_str())
        .unwrap();
    assert_eq!(entry["description"], "for ci");
    assert!(entry["created"].is_string());
    assert!(
        !listed.body.to_string().contains(&secret),
        "a list never shows a token"
    );

    let apps = format!("{}/api/registry/v1alpha1/apps", a.base);
    a.send(a.client.get(&apps).basic_auth("admin", Some(&secret)))
        .await
        .expect(200);

    // another user sees and deletes only their own
    let bob = a.token_for("bob").await;
    let as_bob = |method: Method, path: &str| {
        a.client
            .request(method, format!("{}{path}", a.base))
            .basic_auth("bob", Some(&bob))
    };
    let bobs = a.send(as_bob(Method::GET, TOKENS)).await;
    assert_eq!(bobs.body.as_array().unwrap().len(), 1);
    a.send(as_bob(Method::DELETE, &format!("{TOKENS}/{prefix}")))
        .await
        .expect_error(404, "NotFound");
    a.send(a.client.get(&apps).basic_auth("admin", Some(&secret)))
        .await
        .expect(200);

    a.delete(&format!("{TOKENS}/{prefix}")).await.expect(204);
    a.send(a.client.get(&apps).basic_auth("admin", Some(&secret)))
        .await
        .expect(403);
    a.delete(&format!("{TOKENS}/{prefix}"))
        .await
        .expect_error(404, "NotFound");
    a.send(a.client.get(format!("{}{TOKENS}", a.base)))
        .await
        .expect_error(401, "Unauthorized");
}

async fn user_tokens(a: TestApp) {
    let path = "/api/admin/v1alpha1/users/carol/tokens";
    let made = a
        .send(a.request(Method::POST, &format!("{path}?description=hers")))
        .await;
    made.expect(200);
    let token = made.body["token"].as_str().unwrap();
    let apps = format!("{}/api/registry/v1alpha1/apps", a.base);
    a.send(a.client.get(&apps).basic_auth("carol", Some(token)))
        .await
        .expect(200);
    // carol holds no roles: she cannot make tokens for others
    a.send(
        a.client
            .post(format!("{}{path}", a.base))
            .basic_auth("carol", Some(token)),
    )
    .await
    .expect_error(403, "Forbidden");
    a.send(a.request(Method::POST, "/api/admin/v1alpha1/users/a:b/tokens"))
        .await
        .expect_error(400, "InvalidRequest");
}

async fn expiry(a: TestApp) {
    let apps = format!("{}/api/registry/v1alpha1/apps", a.base);
    let create =
        |query: Vec<(&'static str, String)>| a.send(a.request(Method::POST, TOKENS).query(&query));
    let forbidden = json!({"error": "Forbidden", "message": "Forbidden"});

    // valid for two seconds: works, is listed with its expiry, then is refused
    let soon = Utc::now() + TimeDelta::seconds(2);
    let shown = soon.to_rfc3339_opts(SecondsFormat::Millis, true);
    let made = create(vec![
        ("description", "short-lived".into()),
        ("expires", shown.clone()),
    ])
    .await;
    made.expect(200);
    let (prefix, short) = (
        made.body["prefix"].as_str().unwrap().to_owned(),
        made.body["token"].as_str().unwrap().to_owned(),
    );
    a.send(a.client.get(&apps).basic_auth("admin", Some(&short)))
        .await
        .expect(200);
    let listed = a.get(TOKENS).await;
    let entry = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["prefix"] == prefix.as_str())
        .unwrap();
    assert_eq!(entry["expires"], shown.as_str());
    assert_eq!(entry["description"], "short-lived");
    let lasting = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["prefix"] != prefix.as_str())
        .unwrap();
    assert!(
        lasting.get("expires").is_none(),
        "a token made without an expiry shows none: {lasting}"
    );

    let wait = soon - Utc::now() + TimeDelta::milliseconds(100);
    tokio::time::sleep(wait.to_std().unwrap_or_default()).await;
    let refused = a
        .send(a.client.get(&apps).basic_auth("admin", Some(&short)))
        .await;
    refused.expect(403);
    assert_eq!(refused.body, forbidden);

    // an expiry in a JSON body, an hour away, with an offset: works
    let hour = (Utc::now() + TimeDelta::hours(1))
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339();
    let made = a.post(TOKENS, &json!({"expires": hour})).await;
    made.expect(200);
    let token = made.body["token"].as_str().unwrap();
    a.send(a.client.get(&apps).basic_auth("admin", Some(token)))
        .await
        .expect(200);

    // a token whose expiry passed long ago (as stored), whatever the user name
    let new = token::generate();
    a.store
        .store
        .create_token(&StoredToken {
            prefix: new.prefix.clone(),
            user: "admin".into(),
            name: Some("root".into()),
            roles: vec!["drogue-admin".into()],
            hash: token::hash(&new.token),
            created: Utc::now() - TimeDelta::days(2),
            description: None,
            expires: Some(Utc::now() - TimeDelta::days(1)),
        })
        .await
        .unwrap();
    for user in ["admin", "root"] {
        let answer = a
            .send(a.client.get(&apps).basic_auth(user, Some(&new.token)))
            .await;
        answer.expect(403);
        assert_eq!(answer.body, forbidden);
    }

    // an expiry in the past, or not a timestamp: nothing is made
    let before = a.get(TOKENS).await.body.as_array().unwrap().len();
    for expires in [
        (Utc::now() - TimeDelta::seconds(5)).to_rfc3339(),
        "tomorrow".into(),
        "3600".into(),
    ] {
        create(vec![("expires", expires)])
            .await
            .expect_error(400, "InvalidRequest");
    }
    assert_eq!(a.get(TOKENS).await.body.as_array().unwrap().len(), before);
}
