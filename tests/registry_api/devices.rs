//! Devices: credentials hashed on write, unique names, gateways, listing, the cascade.

use drogue_tests::TestApp;
use drogue_tests::suite::Case;
use serde_json::{Value, json};

pub const CASES: &[Case<TestApp>] = &[
    ("devices are created in existing applications only", |a| {
        Box::pin(create(a))
    }),
    ("passwords are never stored in plain text", |a| {
        Box::pin(passwords(a))
    }),
    (
        "names, aliases and unique usernames are unique per application",
        |a| Box::pin(uniqueness(a)),
    ),
    ("devices are listed by name, filtered and paged", |a| {
        Box::pin(listing(a))
    }),
    (
        "deleting an application deletes its devices and only them",
        |a| Box::pin(cascade(a)),
    ),
    ("device writes follow the metadata rules", |a| {
        Box::pin(updates(a))
    }),
];

const APPS: &str = "/api/registry/v1alpha1/apps";

async fn app(a: &TestApp, name: &str) {
    a.post(APPS, &json!({"metadata": {"name": name}}))
        .await
        .expect(201);
}

fn devices(app: &str) -> String {
    format!("{APPS}/{app}/devices")
}

async fn create(a: TestApp) {
    a.post(&devices("missing"), &json!({"metadata": {"name": "d"}}))
        .await
        .expect_error(404, "ReferenceNotFound");
    app(&a, "app1").await;
    let created = a
        .post(
            &devices("app1"),
            &json!({"metadata": {"name": "device 1", "application": "app1"}, "spec": {"gatewaySelector": {"matchNames": ["gw"]}}}),
        )
        .await;
    created.expect(201);
    assert_eq!(
        created.headers["location"].to_str().unwrap(),
        format!("{}{APPS}/app1/devices/device%201", a.base)
    );
    let got = a.get(&format!("{}/device%201", devices("app1"))).await;
    got.expect(200);
    assert_eq!(got.body["metadata"]["application"], "app1");
    assert_eq!(got.body["metadata"]["generation"], 0);
    assert_eq!(
        got.body["spec"]["gatewaySelector"]["matchNames"],
        json!(["gw"])
    );
    assert!(
        got.body["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready")
    );

    a.post(
        &devices("app1"),
        &json!({"metadata": {"name": "d", "application": "other"}}),
    )
    .await
    .expect_error(400, "InvalidRequest");
    a.post(&devices("app1"), &json!({"metadata": {"name": "a/b"}}))
        .await
        .expect_error(400, "InvalidRequest");
    a.get(&format!("{}/nope", devices("app1")))
        .await
        .expect_error(404, "NotFound");
    a.get(&format!("{}/d", devices("missing")))
        .await
        .expect_error(404, "NotFound");
    a.get(&devices("missing"))
        .await
        .expect_error(404, "NotFound");
}

fn stored_credentials(device: &Value) -> String {
    device["spec"].to_string()
}

async fn passwords(a: TestApp) {
    app(&a, "p").await;
    let bcrypt = "$2b$04$EGHOvHFVe4eJ4QhDjq4gHuq1J6GH0mgJ/.Cl/52UaGGSVpQbAS8Hi";
    let sha = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
    a.post(
        &devices("p"),
        &json!({"metadata": {"name": "d"}, "spec": {
            "authentication": {"credentials": [
                {"pass": "plain-one"},
                {"pass": {"plain": "plain-two"}},
                {"pass": {"bcrypt": bcrypt}},
                {"user": {"username": "u", "password": "plain-three", "unique": true}},
                {"psk": {"key": "bXlwc2s="}}
            ]},
            "credentials": {"credentials": [{"pass": "plain-four"}, {"pass": {"sha512": sha}}]}
        }}),
    )
    .await
    .expect(201);
    let device = a.get(&format!("{}/d", devices("p"))).await.body;
    let text = stored_credentials(&device);
    for plain in ["plain-one", "plain-two", "plain-three", "plain-four"] {
        assert!(!text.contains(plain), "{plain} is stored in clear: {text}");
    }
    let auth = &device["spec"]["authentication"]["credentials"];
    assert!(
        auth[0]["pass"]["sha512"]
            .as_str()
            .unwrap()
            .starts_with("$6$")
    );
    assert!(
        auth[1]["pass"]["sha512"]
            .as_str()
            .unwrap()
            .starts_with("$6$")
    );
    assert_eq!(
        auth[2]["pass"]["bcrypt"], bcrypt,
        "hashes are stored as given"
    );
    assert!(
        auth[3]["user"]["password"]["sha512"]
            .as_str()
            .unwrap()
            .starts_with("$6$")
    );
    assert_eq!(auth[3]["user"]["username"], "u");
    assert_eq!(auth[4]["psk"]["key"], "bXlwc2s=");
    assert_eq!(
        device["spec"]["credentials"]["credentials"][1]["pass"]["sha512"],
        sha
    );

    // a GET-modify-PUT round trip (as drg does) keeps the hashes as they are
    let mut labelled = device.clone();
    labelled["metadata"]["labels"] = json!({"k": "v"});
    a.put(&format!("{}/d", devices("p")), &labelled)
        .await
        .expect(204);
    let again = a.get(&format!("{}/d", devices("p"))).await.body;
    assert_eq!(again["spec"], device["spec"]);
    assert_eq!(again["metadata"]["generation"], 0);

    for bad in [
        json!({"pass": {"bcrypt": "not-a-hash"}}),
        json!({"pass": {"sha512": "$1$md5"}}),
        json!({"pass": ""}),
        json!({"token": "x"}),
        json!({"pass": 5}),
    ] {
        a.post(
            &devices("p"),
            &json!({"metadata": {"name": "bad"}, "spec": {"authentication": {"credentials": [bad]}}}),
        )
        .await
        .expect_error(400, "InvalidRequest");
    }
}

async fn uniqueness(a: TestApp) {
    app(&a, "u").await;
    app(&a, "v").await;
    let spec = json!({"alias": ["alias-1"], "authentication": {"credentials": [
        {"user": {"username": "user-1", "password": "p", "unique": true}}]}});
    a.post(
        &devices("u"),
        &json!({"metadata": {"name": "one"}, "spec": spec}),
    )
    .await
    .expect(201);
    for body in [
        json!({"metadata": {"name": "one"}}),
        json!({"metadata": {"name": "alias-1"}}),
        json!({"metadata": {"name": "two"}, "spec": {"alias": ["user-1"]}}),
        json!({"metadata": {"name": "two"}, "spec": {"alias": ["one"]}}),
        json!({"metadata": {"name": "two"}, "spec": {"credentials": {"credentials": [
            {"user": {"username": "alias-1", "password": "p", "unique": true}}]}}}),
    ] {
        a.post(&devices("u"), &body)
            .await
            .expect_error(409, "Conflict");
    }
    a.post(
        &devices("v"),
        &json!({"metadata": {"name": "one"}, "spec": {"alias": ["alias-1"]}}),
    )
    .await
    .expect(201);

    // moving an alias frees the old one
    let path = format!("{}/one", devices("u"));
    let mut moved = a.get(&path).await.body;
    moved["spec"]["alias"] = json!(["alias-2"]);
    a.put(&path, &moved).await.expect(204);
    a.post(&devices("u"), &json!({"metadata": {"name": "alias-1"}}))
        .await
        .expect(201);
    a.post(
        &devices("u"),
        &json!({"metadata": {"name": "x", "labels": {}}, "spec": {"alias": ["alias-2"]}}),
    )
    .await
    .expect_error(409, "Conflict");
}

async fn listing(a: TestApp) {
    app(&a, "l").await;
    for (name, labels) in [
        ("d3", json!({"floor": "1", "room": "a"})),
        ("d1", json!({"floor": "1"})),
        ("d2", json!({"floor": "2"})),
        ("d4", json!({})),
    ] {
        a.post(
            &devices("l"),
            &json!({"metadata": {"name": name, "labels": labels}}),
        )
        .await
        .expect(201);
    }
    let names = |body: &Value| -> Vec<String> {
        body.as_array()
            .unwrap()
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&a.get(&devices("l")).await.body),
        ["d1", "d2", "d3", "d4"]
    );
    for (selector, expected) in [
        ("floor=1", vec!["d1", "d3"]),
        ("floor!=1", vec!["d2"]),
        ("floor in (1,2),!room", vec!["d1", "d2"]),
        ("floor notin (2)", vec!["d1", "d3"]),
        ("room", vec!["d3"]),
    ] {
        assert_eq!(
            names(
                &a.get_with(&devices("l"), &[("labels", selector)])
                    .await
                    .body
            ),
            expected,
            "{selector}"
        );
    }
    assert_eq!(
        names(&a.get_query(&devices("l"), "limit=1&offset=2").await.body),
        ["d3"]
    );
}

async fn cascade(a: TestApp) {
    for name in ["gone", "kept"] {
        app(&a, name).await;
        for d in ["a", "b", "c"] {
            a.post(
                &devices(name),
                &json!({"metadata": {"name": d}, "spec": {"alias": [format!("{d}-alias")]}}),
            )
            .await
            .expect(201);
        }
    }
    a.delete(&format!("{APPS}/gone")).await.expect(204);
    a.get(&devices("gone")).await.expect_error(404, "NotFound");
    assert_eq!(
        a.get(&devices("kept")).await.body.as_array().unwrap().len(),
        3
    );
    app(&a, "gone").await;
    assert_eq!(
        a.get(&devices("gone")).await.body,
        json!([]),
        "a new application of the same name starts empty"
    );
    a.post(
        &devices("gone"),
        &json!({"metadata": {"name": "x"}, "spec": {"alias": ["a-alias"]}}),
    )
    .await
    .expect(201);
}

async fn updates(a: TestApp) {
    app(&a, "w").await;
    a.post(
        &devices("w"),
        &json!({"metadata": {"name": "d", "finalizers": ["f"]}, "spec": {"v": 1}}),
    )
    .await
    .expect(201);
    let path = format!("{}/d", devices("w"));
    let v0 = a.get(&path).await.body;
    let mut next = v0.clone();
    next["spec"] = json!({"v": 2});
    a.put(&path, &next).await.expect(204);
    assert_eq!(a.get(&path).await.body["metadata"]["generation"], 1);
    a.put(&path, &v0).await.expect_error(409, "Conflict");
    let mut renamed = next.clone();
    renamed["metadata"]["name"] = json!("other");
    a.put(&path, &renamed)
        .await
        .expect_error(400, "InvalidRequest");
    a.put(
        &format!("{}/none", devices("w")),
        &json!({"metadata": {"name": "none"}}),
    )
    .await
    .expect_error(404, "NotFound");

    a.delete(&path).await.expect(204);
    let marked = a.get(&path).await.body;
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let mut released = marked.clone();
    released["metadata"]["finalizers"] = json!([]);
    a.put(&path, &released).await.expect(204);
    a.get(&path).await.expect_error(404, "NotFound");
}
