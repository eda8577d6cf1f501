//! Paging an application's devices over the management API, at a scale CI affords
//! (600 devices; `tests/bench/registry-paging.sh` measures 100,000): every page walk
//! returns every device once, in name order, the same in every walk; a selector pages
//! over exactly the labelled devices; bad paging parameters answer 400 with a JSON body.

use super::runner::LocalRunner;
use serde_json::{Value, json};
use std::sync::Arc;

const DEVICES: usize = 600;
const PATH: &str = "/api/registry/v1alpha1/apps/fleet/devices";

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list is a JSON array")
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The administrator, over one connection pool (a client per request would cost more
/// than the requests).
struct Admin {
    client: reqwest::Client,
    base: String,
    user: String,
    token: String,
}

impl Admin {
    fn of(server: &LocalRunner) -> Self {
        let credentials = server.admin_token();
        let (user, token) = credentials.split_once(':').unwrap();
        Self {
            client: reqwest::Client::new(),
            base: server.base.clone(),
            user: user.to_owned(),
            token: token.to_owned(),
        }
    }

    /// A GET: status and JSON body.
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.token))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A POST: the status.
    async fn post(&self, path: &str, body: &Value) -> u16 {
        self.client
            .post(format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.token))
            .json(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// Walks the pages of `query` (`limit` each): every name, and how many pages.
async fn walk(server: &Admin, query: &str, limit: usize) -> (Vec<String>, usize) {
    let (mut seen, mut pages) = (Vec::new(), 0);
    loop {
        let (status, page) = server
            .get(&format!(
                "{PATH}?{query}limit={limit}&offset={}",
                seen.len()
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        let got = names(&page);
        assert!(got.len() <= limit, "a page holds at most `limit` devices");
        if got.is_empty() {
            return (seen, pages);
        }
        seen.extend(got);
        pages += 1;
    }
}

#[tokio::test]
async fn pages_return_every_device_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let runner = LocalRunner::start(&dir.path().join("data")).await;
    let server = Arc::new(Admin::of(&runner));
    assert_eq!(
        server
            .post(
                "/api/registry/v1alpha1/apps",
                &json!({"metadata": {"name": "fleet"}})
            )
            .await,
        201
    );
    // created in a shuffled order (7 is prime to 600), by 8 clients at once
    let order: Vec<usize> = (0..DEVICES).map(|i| (i * 7 + 3) % DEVICES).collect();
    let mut tasks = Vec::new();
    for chunk in order.chunks(DEVICES / 8) {
        let (server, chunk) = (server.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for i in chunk {
                let mut labels = json!({"rack": format!("r{}", i % 4)});
                if i.is_multiple_of(25) {
                    labels["fw"] = json!("beta");
                }
                let device = json!({"metadata": {"name": format!("d{i:04}"), "labels": labels}});
                assert_eq!(server.post(PATH, &device).await, 201, "d{i:04}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let expected: Vec<String> = (0..DEVICES).map(|i| format!("d{i:04}")).collect();

    // unpaged (what `drg get devices` asks for): all of them, in order
    let (status, all) = server.get(PATH).await;
    assert_eq!(status, 200);
    assert_eq!(names(&all), expected);

    // walks of different page sizes: every device once, in order, the same each time
    for limit in [97, 250, DEVICES, 5_000] {
        let (seen, pages) = walk(&server, "", limit).await;
        assert_eq!(seen, expected, "limit {limit}");
        assert_eq!(pages, DEVICES.div_ceil(limit), "limit {limit}");
    }
    // a page is the slice of the whole list, whole devices as a single read shows them
    let (_, page) = server.get(&format!("{PATH}?limit=3&offset=434")).await;
    assert_eq!(
        page.as_array().unwrap()[..],
        all.as_array().unwrap()[434..437]
    );
    let (_, single) = server.get(&format!("{PATH}/d0435")).await;
    assert_eq!(page[1], single);

    // a selector pages over exactly the labelled devices
    let beta: Vec<String> = (0..DEVICES)
        .step_by(25)
        .map(|i| format!("d{i:04}"))
        .collect();
    let (_, listed) = server.get(&format!("{PATH}?labels=fw%3Dbeta")).await;
    assert_eq!(names(&listed), beta);
    let (seen, pages) = walk(&server, "labels=fw%3Dbeta&", 7).await;
    assert_eq!(seen, beta);
    assert_eq!(pages, beta.len().div_ceil(7));
    let racks: Vec<String> = (0..DEVICES)
        .filter(|i| i % 4 == 1 && !i.is_multiple_of(25))
        .map(|i| format!("d{i:04}"))
        .collect();
    let (seen, _) = walk(&server, "labels=rack%3Dr1&labels=%21fw&", 111).await;
    assert_eq!(seen, racks);

    // the edges: past the end, nothing; a limit of 0, nothing
    for query in [
        "offset=600",
        "offset=99999&limit=10",
        "limit=0",
        "labels=fw%3Dgamma",
    ] {
        let (status, page) = server.get(&format!("{PATH}?{query}")).await;
        assert_eq!((status, page), (200, json!([])), "{query}");
    }
    let (_, last) = server.get(&format!("{PATH}?offset=599&limit=10")).await;
    assert_eq!(names(&last), ["d0599"]);

    // bad parameters: 400 with a JSON error
    for query in [
        "limit=-1",
        "offset=abc",
        "limit=1.5",
        "offset=",
        "labels=a%20in%20(b",
    ] {
        let (status, body) = server.get(&format!("{PATH}?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "InvalidRequest", "{query}: {body}");
    }

    // another user pages nothing of it
    let made = runner
        .post_json("/api/admin/v1alpha1/users/eve/tokens", &json!({}))
        .await;
    let response = reqwest::Client::new()
        .get(format!("{}{PATH}?limit=10&offset=0", runner.base))
        .basic_auth("eve", made["token"].as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "NotFound");
}
