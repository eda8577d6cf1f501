//! Applications: create, read, list, update, delete, with Drogue Cloud's metadata rules.

use base64::Engine;
use drogue_tests::TestApp;
use drogue_tests::suite::Case;
use serde_json::{Value, json};

pub const CASES: &[Case<TestApp>] = &[
    (
        "an application is created with server metadata and read back",
        |a| Box::pin(create_and_read(a)),
    ),
    (
        "generation follows the spec, resourceVersion every write",
        |a| Box::pin(generation(a)),
    ),
    ("stale writes conflict", |a| Box::pin(optimistic_locking(a))),
    ("finalizers hold a deleted application until removed", |a| {
        Box::pin(finalizers(a))
    }),
    ("applications are listed by name, filtered and paged", |a| {
        Box::pin(listing(a))
    }),
    ("trust anchors are evaluated into the status", |a| {
        Box::pin(trust_anchors(a))
    }),
    ("the 0.3.0 paths are aliases", |a| Box::pin(legacy_paths(a))),
];

const APPS: &str = "/api/registry/v1alpha1/apps";

async fn create_and_read(a: TestApp) {
    let created = a
        .post(
            APPS,
            &json!({"metadata": {"name": "app1", "creationTimestamp": "2001-01-01T00:00:00Z", "generation": 7,
                "uid": "mine", "resourceVersion": "mine", "labels": {"env": "test"}, "annotations": {"note": "x"}},
                "spec": {"custom": {"a": 1}}, "status": {"forged": true}}),
        )
        .await;
    created.expect(201);
    let location = created.headers["location"].to_str().unwrap();
    assert_eq!(location, format!("{}{APPS}/app1", a.base));

    let got = a.get(&format!("{APPS}/app1")).await;
    got.expect(200);
    let meta = &got.body["metadata"];
    assert_eq!(meta["name"], "app1");
    assert_eq!(meta["generation"], 0, "client-sent generation is ignored");
    assert_ne!(meta["uid"], "mine");
    assert_ne!(meta["resourceVersion"], "mine");
    assert!(uuid::Uuid::parse_str(meta["uid"].as_str().unwrap()).is_ok());
    assert!(
        !meta["creationTimestamp"]
            .as_str()
            .unwrap()
            .starts_with("2001")
    );
    assert_eq!(meta["labels"], json!({"env": "test"}));
    assert_eq!(meta["annotations"], json!({"note": "x"}));
    let keys: Vec<_> = meta.as_object().unwrap().keys().cloned().collect();
    for key in &keys {
        assert!(
            [
                "name",
                "uid",
                "creationTimestamp",
                "generation",
                "resourceVersion",
                "labels",
                "annotations"
            ]
            .contains(&key.as_str()),
            "unexpected metadata key {key}"
        );
    }
    assert_eq!(got.body["spec"], json!({"custom": {"a": 1}}));
    assert!(
        got.body["status"].get("forged").is_none(),
        "client-sent status is ignored"
    );
    let conditions = got.body["status"]["conditions"].as_array().unwrap();
    for kind in ["Ready", "KafkaReady"] {
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == kind && c["status"] == "True"),
            "{kind} in {conditions:?}"
        );
    }
    assert_eq!(created.body, got.body, "the created resource is returned");
    a.post(APPS, &json!({"metadata": {"name": "app1"}}))
        .await
        .expect_error(409, "Conflict");
    a.get(&format!("{APPS}/nope"))
        .await
        .expect_error(404, "NotFound");
}

async fn generation(a: TestApp) {
    a.post(APPS, &json!({"metadata": {"name": "g"}, "spec": {"v": 1}}))
        .await
        .expect(201);
    let path = format!("{APPS}/g");
    let v0 = a.get(&path).await.body;

    let mut labelled = v0.clone();
    labelled["metadata"]["labels"] = json!({"k": "v"});
    a.put(&path, &labelled).await.expect(204);
    let v1 = a.get(&path).await.body;
    assert_eq!(
        v1["metadata"]["generation"], 0,
        "a label change keeps the generation"
    );
    assert_ne!(
        v1["metadata"]["resourceVersion"],
        v0["metadata"]["resourceVersion"]
    );
    assert_eq!(v1["metadata"]["uid"], v0["metadata"]["uid"]);
    assert_eq!(
        v1["metadata"]["creationTimestamp"],
        v0["metadata"]["creationTimestamp"]
    );

    let mut respecced = v1.clone();
    respecced["spec"] = json!({"v": 2});
    a.put(&path, &respecced).await.expect(204);
    let v2 = a.get(&path).await.body;
    assert_eq!(v2["metadata"]["generation"], 1);
    assert_eq!(v2["spec"], json!({"v": 2}));

    a.put(&path, &v2).await.expect(204);
    let v3 = a.get(&path).await.body;
    assert_eq!(
        v3["metadata"]["resourceVersion"], v2["metadata"]["resourceVersion"],
        "an unchanged PUT writes nothing"
    );
}

async fn optimistic_locking(a: TestApp) {
    a.post(APPS, &json!({"metadata": {"name": "lock"}}))
        .await
        .expect(201);
    let path = format!("{APPS}/lock");
    let v0 = a.get(&path).await.body;
    let mut first = v0.clone();
    first["spec"] = json!({"writer": 1});
    a.put(&path, &first).await.expect(204);
    let mut second = v0.clone();
    second["spec"] = json!({"writer": 2});
    a.put(&path, &second).await.expect_error(409, "Conflict");
    assert_eq!(a.get(&path).await.body["spec"]["writer"], 1);

    let mut wrong_uid = a.get(&path).await.body;
    wrong_uid["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    wrong_uid["spec"] = json!({"writer": 3});
    a.put(&path, &wrong_uid).await.expect_error(409, "Conflict");

    let mut unlocked = a.get(&path).await.body;
    unlocked["metadata"]["resourceVersion"] = json!("");
    unlocked["metadata"]["uid"] = json!("");
    unlocked["spec"] = json!({"writer": 4});
    a.put(&path, &unlocked).await.expect(204);

    let current = a.get(&path).await.body;
    let delete = |pre: Value| {
        a.send(
            a.request(reqwest::Method::DELETE, &path)
                .json(&json!({"preconditions": pre})),
        )
    };
    delete(json!({"resourceVersion": "stale"}))
        .await
        .expect_error(409, "Conflict");
    delete(json!({"uid": "other"}))
        .await
        .expect_error(409, "Conflict");
    a.get(&path).await.expect(200);
    delete(json!({"uid": current["metadata"]["uid"], "resourceVersion": current["metadata"]["resourceVersion"]}))
        .await
        .expect(204);
    a.get(&path).await.expect_error(404, "NotFound");
    a.delete(&path).await.expect_error(404, "NotFound");
}

async fn finalizers(a: TestApp) {
    a.post(
        APPS,
        &json!({"metadata": {"name": "fin", "finalizers": ["keep"]}}),
    )
    .await
    .expect(201);
    let path = format!("{APPS}/fin");
    a.delete(&path).await.expect(204);
    let marked = a.get(&path).await;
    marked.expect(200);
    assert!(marked.body["metadata"]["deletionTimestamp"].is_string());
    a.delete(&path).await.expect_error(404, "NotFound");
    a.post(
        &format!("{path}/devices"),
        &json!({"metadata": {"name": "late"}}),
    )
    .await
    .expect_error(404, "ReferenceNotFound");

    let mut released = marked.body.clone();
    released["metadata"]["finalizers"] = json!([]);
    a.put(&path, &released).await.expect(204);
    a.get(&path).await.expect_error(404, "NotFound");
}

async fn listing(a: TestApp) {
    for (name, labels) in [
        ("delta", json!({"env": "prod", "tier": "db"})),
        ("alpha", json!({"env": "prod"})),
        ("charlie", json!({"env": "dev", "tier": "web"})),
        ("bravo", json!({})),
    ] {
        a.post(APPS, &json!({"metadata": {"name": name, "labels": labels}}))
            .await
            .expect(201);
    }
    let names = |body: &Value| -> Vec<String> {
        body.as_array()
            .expect("a bare JSON array")
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = |query: &'static str| a.get_query(APPS, query);
    assert_eq!(
        names(&list("").await.body),
        ["alpha", "bravo", "charlie", "delta"]
    );
    for (selector, expected) in [
        ("env=prod", vec!["alpha", "delta"]),
        ("env!=prod", vec!["charlie"]),
        ("env in (dev, prod),tier", vec!["charlie", "delta"]),
        ("env notin (prod)", vec!["charlie"]),
        ("tier", vec!["charlie", "delta"]),
        ("!tier", vec!["alpha", "bravo"]),
    ] {
        let got = a.get_with(APPS, &[("labels", selector)]).await;
        got.expect(200);
        assert_eq!(names(&got.body), expected, "selector {selector}");
    }
    assert_eq!(
        names(&list("limit=2&offset=1").await.body),
        ["bravo", "charlie"]
    );
    assert_eq!(names(&list("offset=10").await.body), Vec::<String>::new());
    list("limit=x").await.expect_error(400, "InvalidRequest");
    a.get_with(APPS, &[("labels", "a in b")])
        .await
        .expect_error(400, "InvalidRequest");
}

async fn trust_anchors(a: TestApp) {
    let pem = include_str!("../../shared/testdata/ca.pem");
    let valid = base64::engine::general_purpose::STANDARD.encode(pem);
    let invalid = base64::engine::general_purpose::STANDARD.encode("no certificate here");
    a.post(
        APPS,
        &json!({"metadata": {"name": "certs"}, "spec": {"trustAnchors": {"anchors": [
            {"certificate": valid}, {"certificate": invalid}]}}}),
    )
    .await
    .expect(201);
    let got = a.get(&format!("{APPS}/certs")).await.body;
    let anchors = &got["status"]["trustAnchors"]["anchors"];
    assert_eq!(anchors[0]["valid"]["subject"], "CN=Test CA");
    assert!(anchors[0]["valid"]["notBefore"].is_string());
    assert!(anchors[0]["valid"]["notAfter"].is_string());
    assert_eq!(anchors[1]["invalid"]["error"], "NoCertificateFound");

    // the same anchor in another application: no first-come claim on a CA subject
    a.post(
        APPS,
        &json!({"metadata": {"name": "certs2"}, "spec": {"trustAnchors": {"anchors": [{"certificate": valid}]}}}),
    )
    .await
    .expect(201);
    let got = a.get(&format!("{APPS}/certs2")).await.body;
    assert_eq!(
        got["status"]["trustAnchors"]["anchors"][0]["valid"]["subject"],
        "CN=Test CA"
    );
    a.post(
        APPS,
        &json!({"metadata": {"name": "bad"}, "spec": {"trustAnchors": {"anchors": 5}}}),
    )
    .await
    .expect_error(400, "InvalidRequest");
}

async fn legacy_paths(a: TestApp) {
    a.post("/api/v1/apps", &json!({"metadata": {"name": "old"}}))
        .await
        .expect(201);
    a.get(&format!("{APPS}/old")).await.expect(200);
    a.post(
        "/api/v1/apps/old/devices",
        &json!({"metadata": {"name": "d"}}),
    )
    .await
    .expect(201);
    a.get("/api/v1/apps/old/devices/d").await.expect(200);
    a.delete("/api/v1/apps/old").await.expect(204);
    a.get(&format!("{APPS}/old"))
        .await
        .expect_error(404, "NotFound");
}
