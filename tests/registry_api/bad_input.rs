//! Bad input gets a JSON error with the documented status, and changes nothing.

use drogue_tests::TestApp;
use drogue_tests::suite::Case;
use reqwest::Method;
use serde_json::json;

pub const CASES: &[Case<TestApp>] = &[
    ("malformed and mistyped bodies are refused with 400", |a| {
        Box::pin(malformed(a))
    }),
    ("oversize bodies are refused with 413", |a| {
        Box::pin(oversize(a))
    }),
    ("invalid names are refused", |a| Box::pin(names(a))),
    ("unknown routes and methods answer JSON", |a| {
        Box::pin(routes(a))
    }),
    ("credentials are required and checked", |a| {
        Box::pin(authentication(a))
    }),
];

const APPS: &str = "/api/registry/v1alpha1/apps";

async fn malformed(a: TestApp) {
    let raw = |method: Method, path: &str, body: &'static str| {
        a.send(
            a.request(method, path)
                .header("content-type", "application/json")
                .body(body),
        )
    };
    for body in [
        "{",
        "not json",
        "",
        "[]",
        "{\"metadata\": \"x\"}",
        "{\"spec\": {}}",
    ] {
        raw(Method::POST, APPS, body)
            .await
            .expect_error(400, "InvalidRequest");
    }
    for body in [
        json!({"metadata": {"name": "a", "labels": 5}}),
        json!({"metadata": {"name": "a", "labels": {"k": 1}}}),
        json!({"metadata": {"name": "a", "finalizers": "x"}}),
        json!({"metadata": {"name": 7}}),
        json!({"metadata": {"name": "a"}, "spec": []}),
        json!({"metadata": {}}),
    ] {
        a.post(APPS, &body)
            .await
            .expect_error(400, "InvalidRequest");
    }
    a.post(APPS, &json!({"metadata": {"name": "a"}}))
        .await
        .expect(201);
    raw(Method::PUT, &format!("{APPS}/a"), "{")
        .await
        .expect_error(400, "InvalidRequest");
    raw(
        Method::DELETE,
        &format!("{APPS}/a"),
        "{\"preconditions\": 5}",
    )
    .await
    .expect_error(400, "InvalidRequest");
    let listed = a.get(APPS).await;
    assert_eq!(
        listed.body.as_array().unwrap().len(),
        1,
        "nothing else was created"
    );
    assert_eq!(
        a.get(&format!("{APPS}/a")).await.body["metadata"]["generation"],
        0
    );
}

async fn oversize(a: TestApp) {
    let big = "x".repeat(70 * 1024);
    a.post(
        APPS,
        &json!({"metadata": {"name": "big"}, "spec": {"blob": big}}),
    )
    .await
    .expect_error(413, "PayloadTooLarge");
    a.get(&format!("{APPS}/big"))
        .await
        .expect_error(404, "NotFound");
    let fits = "x".repeat(60 * 1024);
    a.post(
        APPS,
        &json!({"metadata": {"name": "fits"}, "spec": {"blob": fits}}),
    )
    .await
    .expect(201);
}

async fn names(a: TestApp) {
    for bad in ["Upper", "-dash", "dash-", "under_score", "dot.ted", ""] {
        a.post(APPS, &json!({"metadata": {"name": bad}}))
            .await
            .expect_error(400, "InvalidRequest");
    }
    a.post(APPS, &json!({"metadata": {"name": "ok"}}))
        .await
        .expect(201);
    a.put(
        &format!("{APPS}/ok"),
        &json!({"metadata": {"name": "other"}}),
    )
    .await
    .expect_error(400, "InvalidRequest");
    a.get(&format!("{APPS}/Not_Valid"))
        .await
        .expect_error(404, "NotFound");
    let long = "d".repeat(300);
    a.post(
        &format!("{APPS}/ok/devices"),
        &json!({"metadata": {"name": long}}),
    )
    .await
    .expect_error(400, "InvalidRequest");
}

async fn routes(a: TestApp) {
    a.get("/api/registry/v1alpha1/nothing")
        .await
        .expect_error(404, "NotFound");
    a.send(a.request(Method::PATCH, APPS))
        .await
        .expect_error(405, "MethodNotAllowed");
}

async fn authentication(a: TestApp) {
    let url = format!("{}{APPS}", a.base);
    let anonymous = a.send(a.client.get(&url)).await;
    anonymous.expect_error(401, "Unauthorized");
    assert!(anonymous.headers.contains_key("www-authenticate"));

    let other = a.token_for("other").await;
    let forbidden = json!({"error": "Forbidden", "message": "Forbidden"});
    for request in [
        a.client
            .get(&url)
            .basic_auth("admin", Some("drg_wrong_token")),
        a.client.get(&url).basic_auth("admin", Some(&other)),
        a.client
            .get(&url)
            .basic_auth("admin", Some(format!("{}x", a.token))),
        a.client.get(&url).bearer_auth("some.jwt.token"),
        a.client.get(&url).header("authorization", "Basic !!!"),
        a.client
            .get(format!("{url}?username=admin&api_key={}", a.token))
            .basic_auth("admin", Some(&a.token)),
    ] {
        let answer = a.send(request).await;
        answer.expect(403);
        assert_eq!(answer.body, forbidden);
    }
    a.send(
        a.client
            .get(format!("{url}?username=admin&api_key={}", a.token)),
    )
    .await
    .expect(200);
    a.send(a.client.get(&url).basic_auth("other", Some(&other)))
        .await
        .expect(200);
}
