//! The isolation matrix: every user and role against every registry, members and token
//! endpoint, on both backends. A read that should be denied answers 404, a write 403
//! (404 when even reading is denied), and nothing denied changes anything.

use drogue_tests::{Backend, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

/// The users: the administrator (`admin`, with the administrator role), the owners of
/// `alpha` and `bravo`, the three roles on `alpha`, and a stranger.
const USERS: [&str; 7] = ["admin", "alice", "bob", "rita", "manny", "ada", "sam"];

/// What a user may do on `alpha`.
fn level(user: &str) -> u8 {
    match user {
        "admin" | "alice" => 4, // owner (or administrator)
        "ada" => 3,             // admin
        "manny" => 2,           // manager
        "rita" => 1,            // reader
        _ => 0,                 // bob, sam: nothing
    }
}

struct Matrix {
    app: TestApp,
    tokens: Vec<(String, String)>,
    tried: usize,
}

impl Matrix {
    fn token(&self, user: &str) -> &str {
        &self.tokens.iter().find(|(u, _)| u == user).unwrap().1
    }

    async fn call(
        &mut self,
        user: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.tried += 1;
        let mut request = self
            .app
            .client
            .request(method, format!("{}{path}", self.app.base))
            .basic_auth(user, Some(self.token(user)));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = self.app.send(request).await;
        (answer.status.as_u16(), answer.body)
    }

    async fn get(&mut self, user: &str, path: &str) -> (u16, Value) {
        self.call(user, Method::GET, path, None).await
    }

    /// Calls as `user` and checks the status: `ok` when allowed at `needed`, else 403 if
    /// the user may read `alpha`, else `hidden`.
    async fn expect(
        &mut self,
        user: &str,
        needed: u8,
        (ok, hidden): (u16, u16),
        method: Method,
        path: &str,
        body: Option<Value>,
    ) {
        let expected = if level(user) >= needed {
            ok
        } else if level(user) >= 1 {
            403
        } else {
            hidden
        };
        let (status, answer) = self.call(user, method.clone(), path, body).await;
        assert_eq!(status, expected, "{user} {method} {path}: {answer}");
    }
}

async fn setup(backend: Backend) -> Matrix {
    let app = TestApp::spawn(backend).await;
    let mut tokens = vec![("admin".to_owned(), app.token.clone())];
    for user in &USERS[1..] {
        tokens.push((user.to_string(), app.token_for(user).await));
    }
    let mut m = Matrix {
        app,
        tokens,
        tried: 0,
    };
    for (owner, name) in [("alice", "alpha"), ("bob", "bravo")] {
        let apps = "/api/registry/v1alpha1/apps";
        assert_eq!(
            m.call(
                owner,
                Method::POST,
                apps,
                Some(json!({"metadata": {"name": name}}))
            )
            .await
            .0,
            201
        );
        let devices = format!("{apps}/{name}/devices");
        assert_eq!(
            m.call(
                owner,
                Method::POST,
                &devices,
                Some(json!({"metadata": {"name": "d1"}}))
            )
            .await
            .0,
            201
        );
    }
    for user in USERS {
        let body = json!({"metadata": {"name": format!("del-{user}")}});
        let path = "/api/registry/v1alpha1/apps/alpha/devices";
        assert_eq!(m.call("alice", Method::POST, path, Some(body)).await.0, 201);
    }
    let members = json!({"members": {"rita": {"role": "reader"}, "manny": {"role": "manager"}, "ada": {"role": "admin"}}});
    let path = "/api/admin/v1alpha1/apps/alpha/members";
    assert_eq!(
        m.call("alice", Method::PUT, path, Some(members)).await.0,
        204
    );
    m
}

async fn run(backend: Backend) {
    let mut m = setup(backend).await;
    let bravo_before = m
        .get("bob", "/api/registry/v1alpha1/apps/bravo/devices/d1")
        .await
        .1;
    let apps = "/api/registry/v1alpha1/apps";
    let alpha = format!("{apps}/alpha");
    let admin = "/api/admin/v1alpha1/apps/alpha";

    for user in USERS {
        // reads
        m.expect(user, 1, (200, 404), Method::GET, &alpha, None)
            .await;
        m.expect(
            user,
            1,
            (200, 404),
            Method::GET,
            &format!("{alpha}/devices"),
            None,
        )
        .await;
        m.expect(
            user,
            1,
            (200, 404),
            Method::GET,
            &format!("{alpha}/devices/d1"),
            None,
        )
        .await;
        m.expect(
            user,
            1,
            (200, 404),
            Method::GET,
            &format!("{alpha}/devices?labels=x"),
            None,
        )
        .await;
        // reads through the 0.3.0 paths
        for path in [
            "/api/v1/apps/alpha",
            "/api/v1/apps/alpha/devices",
            "/api/v1/apps/alpha/devices/d1",
        ] {
            m.expect(user, 1, (200, 404), Method::GET, path, None).await;
        }
        // writes
        let labelled = json!({"metadata": {"name": "alpha", "labels": {"by": user}}});
        m.expect(user, 2, (204, 404), Method::PUT, &alpha, Some(labelled))
            .await;
        let device = json!({"metadata": {"name": format!("made-by-{user}")}});
        m.expect(
            user,
            2,
            (201, 404),
            Method::POST,
            &format!("{alpha}/devices"),
            Some(device),
        )
        .await;
        let changed = json!({"metadata": {"name": "d1", "labels": {"by": user}}});
        m.expect(
            user,
            2,
            (204, 404),
            Method::PUT,
            &format!("{alpha}/devices/d1"),
            Some(changed),
        )
        .await;
        m.expect(
            user,
            2,
            (204, 404),
            Method::DELETE,
            &format!("{alpha}/devices/del-{user}"),
            None,
        )
        .await;
        // administration
        m.expect(
            user,
            3,
            (200, 404),
            Method::GET,
            &format!("{admin}/members"),
            None,
        )
        .await;
        let members = json!({"members": {"rita": {"role": "reader"}, "manny": {"role": "manager"}, "ada": {"role": "admin"}}});
        m.expect(
            user,
            3,
            (204, 404),
            Method::PUT,
            &format!("{admin}/members"),
            Some(members),
        )
        .await;
        // ownership
        let offer = json!({"newUser": "nobody"});
        m.expect(
            user,
            4,
            (204, 404),
            Method::PUT,
            &format!("{admin}/transfer-ownership"),
            Some(offer),
        )
        .await;
        m.expect(
            user,
            4,
            (204, 404),
            Method::DELETE,
            &format!("{admin}/transfer-ownership"),
            None,
        )
        .await;
        m.expect(
            user,
            4,
            (404, 404),
            Method::GET,
            &format!("{admin}/transfer-ownership"),
            None,
        )
        .await;
    }

    // what each user lists
    for (user, expected) in [
        ("admin", vec!["alpha", "bravo"]),
        ("alice", vec!["alpha"]),
        ("bob", vec!["bravo"]),
        ("rita", vec!["alpha"]),
        ("manny", vec!["alpha"]),
        ("ada", vec!["alpha"]),
        ("sam", vec![]),
    ] {
        let (status, body) = m.get(user, apps).await;
        assert_eq!(status, 200);
        let names: Vec<&str> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, expected, "{user} lists");
        let (_, body) = m.get(user, &format!("{apps}?labels=by")).await;
        assert!(
            body.as_array().unwrap().len() <= expected.len(),
            "{user} lists with a selector"
        );
    }

    // the owner of alpha is a stranger to bravo
    for (method, path) in [
        (Method::GET, format!("{apps}/bravo")),
        (Method::GET, format!("{apps}/bravo/devices")),
        (Method::GET, format!("{apps}/bravo/devices/d1")),
        (Method::PUT, format!("{apps}/bravo/devices/d1")),
        (Method::DELETE, format!("{apps}/bravo/devices/d1")),
        (Method::DELETE, format!("{apps}/bravo")),
        (
            Method::GET,
            "/api/admin/v1alpha1/apps/bravo/members".to_owned(),
        ),
        (
            Method::PUT,
            "/api/admin/v1alpha1/apps/bravo/members".to_owned(),
        ),
        (
            Method::PUT,
            "/api/admin/v1alpha1/apps/bravo/accept-ownership".to_owned(),
        ),
    ] {
        let body =
            (method == Method::PUT).then(|| json!({"metadata": {"name": "d1"}, "members": {}}));
        let (status, answer) = m.call("alice", method.clone(), &path, body).await;
        assert_eq!(status, 404, "alice {method} {path}: {answer}");
    }
    let (status, _) = m
        .call(
            "alice",
            Method::POST,
            &format!("{apps}/bravo/devices"),
            Some(json!({"metadata": {"name": "x"}})),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        m.get("bob", &format!("{apps}/bravo/devices/d1")).await.1,
        bravo_before,
        "nothing of bravo changed"
    );

    // denied writes left nothing behind
    for user in ["bob", "sam", "rita"] {
        let (status, _) = m
            .get("alice", &format!("{alpha}/devices/made-by-{user}"))
            .await;
        assert_eq!(status, 404, "{user}'s device was not made");
        let (status, _) = m.get("alice", &format!("{alpha}/devices/del-{user}")).await;
        assert_eq!(status, 200, "{user} did not delete");
    }
    let (_, app) = m.get("alice", &alpha).await;
    assert!(
        ["admin", "alice", "manny", "ada"]
            .contains(&app["metadata"]["labels"]["by"].as_str().unwrap())
    );

    // deleting an application takes its admin
    for user in USERS {
        let name = format!("victim-{user}");
        m.call(
            "alice",
            Method::POST,
            apps,
            Some(json!({"metadata": {"name": name}})),
        )
        .await;
        let members = json!({"members": {"rita": {"role": "reader"}, "manny": {"role": "manager"}, "ada": {"role": "admin"}}});
        m.call(
            "alice",
            Method::PUT,
            &format!("/api/admin/v1alpha1/apps/{name}/members"),
            Some(members),
        )
        .await;
        m.expect(
            user,
            3,
            (204, 404),
            Method::DELETE,
            &format!("{apps}/{name}"),
            None,
        )
        .await;
        let (status, _) = m.get("alice", &format!("{apps}/{name}")).await;
        assert_eq!(
            status,
            if level(user) >= 3 { 404 } else { 200 },
            "after {user}'s delete"
        );
    }

    // tokens: each user sees and deletes only their own
    let prefixes: Vec<(String, String)> = m
        .tokens
        .iter()
        .map(|(u, t)| (u.clone(), t[..10].to_owned()))
        .collect();
    for user in USERS {
        let (status, body) = m.get(user, "/api/tokens/v1alpha1").await;
        assert_eq!(status, 200);
        let own: Vec<&str> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["prefix"].as_str().unwrap())
            .collect();
        let mine = &prefixes.iter().find(|(u, _)| u == user).unwrap().1;
        assert_eq!(own, [mine.as_str()], "{user} lists only their token");
        for (other, prefix) in prefixes.iter().filter(|(u, _)| u != user) {
            let (status, _) = m
                .call(
                    user,
                    Method::DELETE,
                    &format!("/api/tokens/v1alpha1/{prefix}"),
                    None,
                )
                .await;
            assert_eq!(status, 404, "{user} deletes {other}'s token");
        }
    }
    for user in USERS {
        assert_eq!(m.get(user, apps).await.0, 200, "{user}'s token still works");
    }

    // ownership moves only when the new owner accepts
    let offer = json!({"newUser": "bob"});
    assert_eq!(
        m.call(
            "alice",
            Method::PUT,
            &format!("{admin}/transfer-ownership"),
            Some(offer)
        )
        .await
        .0,
        204
    );
    assert_eq!(
        m.call(
            "sam",
            Method::PUT,
            &format!("{admin}/accept-ownership"),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(m.get("bob", &alpha).await.0, 404, "an offer grants nothing");
    assert_eq!(
        m.call(
            "bob",
            Method::PUT,
            &format!("{admin}/accept-ownership"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(m.get("bob", &alpha).await.0, 200);
    assert_eq!(
        m.get("alice", &alpha).await.0,
        404,
        "the old owner has no access left"
    );
    assert_eq!(m.get("rita", &alpha).await.0, 200, "members stay");

    eprintln!("isolation matrix ({backend:?}): {} requests", m.tried);
    assert!(m.tried >= 240, "only {} requests tried", m.tried);
}

#[tokio::test]
async fn isolation_on_the_embedded_store() {
    run(Backend::Embedded).await;
}

#[tokio::test]
async fn isolation_on_dynamodb() {
    run(Backend::DynamoDb).await;
}

/// Readers see a device's credentials without their secrets (password hashes, pre-shared
/// keys), in a single device and in lists; whoever may change the device sees them.
async fn readers_see_no_secrets(backend: Backend) {
    let mut m = setup(backend).await;
    let device = "/api/registry/v1alpha1/apps/alpha/devices/d2";
    let spec = json!({"authentication": {"credentials": [
        {"pass": "hey-rodney"},
        {"user": {"username": "u", "password": "two"}},
        {"psk": {"key": "c2VjcmV0"}}
    ]}});
    let body = json!({"metadata": {"name": "d2"}, "spec": spec});
    let created = m
        .call(
            "alice",
            Method::POST,
            "/api/registry/v1alpha1/apps/alpha/devices",
            Some(body),
        )
        .await;
    assert_eq!(created.0, 201);
    let secrets = |v: &Value| {
        let text = v.to_string();
        text.contains("$6$") || text.contains("c2VjcmV0")
    };
    for user in ["alice", "ada", "manny", "admin"] {
        let (status, got) = m.get(user, device).await;
        assert_eq!(status, 200);
        assert!(secrets(&got), "{user} may change the device: {got}");
    }
    let (status, got) = m.get("rita", device).await;
    assert_eq!(status, 200);
    assert!(!secrets(&got), "the reader sees no secret: {got}");
    assert_eq!(
        got["spec"]["authentication"]["credentials"][1]["user"]["username"],
        "u"
    );
    let (status, list) = m
        .get("rita", "/api/registry/v1alpha1/apps/alpha/devices")
        .await;
    assert_eq!(status, 200);
    assert!(list.as_array().unwrap().len() > 1);
    assert!(!secrets(&list), "nor in lists: {list}");
}

#[tokio::test]
async fn readers_see_no_secrets_on_the_embedded_store() {
    readers_see_no_secrets(Backend::Embedded).await;
}

#[tokio::test]
async fn readers_see_no_secrets_on_dynamodb() {
    readers_see_no_secrets(Backend::DynamoDb).await;
}

/// A user owns at most the quota's applications (429 beyond, nothing made); others and
/// administrators are not held back by it, and a deleted application frees its place.
async fn application_quota(backend: Backend) {
    let settings = drogue_registry::Settings {
        quotas: drogue_shared::registry::Quotas {
            applications_per_user: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let app = TestApp::spawn_with(backend, settings).await;
    let (alice, bob) = (app.token_for("alice").await, app.token_for("bob").await);
    let apps = format!("{}/api/registry/v1alpha1/apps", app.base);
    let app = &app;
    let apps = &apps;
    let create = |user: &'static str, token: String, name: &'static str| async move {
        let request = app
            .client
            .post(apps)
            .basic_auth(user, Some(token))
            .json(&json!({"metadata": {"name": name}}));
        app.send(request).await
    };
    create("alice", alice.clone(), "a1").await.expect(201);
    create("alice", alice.clone(), "a2").await.expect(201);
    create("alice", alice.clone(), "a3")
        .await
        .expect_error(429, "QuotaExceeded");
    create("bob", bob.clone(), "b1").await.expect(201);
    for name in ["x1", "x2", "x3"] {
        app.post(
            "/api/registry/v1alpha1/apps",
            &json!({"metadata": {"name": name}}),
        )
        .await
        .expect(201);
    }
    let gone = app
        .client
        .delete(format!("{apps}/a1"))
        .basic_auth("alice", Some(alice.clone()));
    app.send(gone).await.expect(204);
    create("alice", alice.clone(), "a3").await.expect(201);
    let listed = app
        .send(app.client.get(apps).basic_auth("alice", Some(alice)))
        .await;
    assert_eq!(listed.body.as_array().unwrap().len(), 2, "{}", listed.body);
}

#[tokio::test]
async fn application_quota_on_the_embedded_store() {
    application_quota(Backend::Embedded).await;
}

#[tokio::test]
async fn application_quota_on_dynamodb() {
    application_quota(Backend::DynamoDb).await;
}
