//! DynamoDB requests per ingested message, counted between the real `http-endpoint` and
//! `mqtt-ingest` binaries and moto by a proxy (`drogue_tests::dynamo_proxy`): warm, a
//! message costs at most one read request (one BatchGetItem of the application and the
//! device, one read unit) and no write; with the lookup cache, a device's further
//! messages cost none. Every message reaches the stream, once. A registry change reaches
//! a warm function within the cache's TTL.

use drogue_shared::model::AppName;
use drogue_shared::model::DeviceName;
use drogue_tests::ingest_reads::{
    APP, CountedFunction, GATEWAY, Ingest, Measured, Registered, Sender, device_name, measure,
    password_of, register,
};
use drogue_tests::lambda::binaries;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const MESSAGES: usize = 50;

fn binary(ingest: Ingest) -> &'static Path {
    binaries()
        .get(ingest.binary())
        .unwrap_or_else(|| panic!("no binary {}", ingest.binary()))
        .as_path()
}

fn device(i: usize) -> Sender {
    Sender {
        device: device_name(i),
        r#as: None,
    }
}

/// Every message reached the stream, once.
fn nothing_lost(case: &str, measured: &Measured) {
    assert_eq!(
        (measured.events, measured.distinct),
        (MESSAGES + 1, MESSAGES + 1),
        "{case}: events in the stream (all, different)"
    );
}

async fn reads_per_message(ingest: Ingest) {
    // device-0 sends alone; device-1..=MESSAGES+1 send one message each
    let registered = register(MESSAGES + 2).await;
    let binary = binary(ingest);
    let n = MESSAGES as u64;

    // cache off: every message reads the registry, once
    let off = [("DROGUE_DEVICE_CACHE_TTL", "0")];
    let measured = measure(binary, ingest, &registered, &[device(0)], MESSAGES, &off).await;
    println!("{ingest:?}, cache off: {measured:?}");
    assert!(measured.first.reads <= 1, "cold: {:?}", measured.first);
    assert_eq!(measured.first.writes, 0, "cold: {:?}", measured.first);
    assert_eq!(measured.warm.reads, n, "one read per message: {measured:?}");
    assert!(measured.warm.read_units <= n as f64, "{measured:?}");
    assert_eq!(measured.warm.writes, 0, "{measured:?}");
    assert_eq!(measured.warm.requests, n, "nothing else: {measured:?}");
    nothing_lost("cache off", &measured);

    // a new device each message, with the default cache: each misses it, once
    let senders: Vec<Sender> = (1..=MESSAGES + 1).map(device).collect();
    let measured = measure(binary, ingest, &registered, &senders, MESSAGES, &[]).await;
    println!("{ingest:?}, a new device each message: {measured:?}");
    assert_eq!(measured.warm.reads, n, "{measured:?}");
    assert!(measured.warm.read_units <= n as f64, "{measured:?}");
    assert_eq!(measured.warm.writes, 0, "{measured:?}");
    nothing_lost("new devices", &measured);

    // with the cache (a TTL longer than the run): nothing after the first
    let on = [("DROGUE_DEVICE_CACHE_TTL", "300")];
    let measured = measure(binary, ingest, &registered, &[device(0)], MESSAGES, &on).await;
    println!("{ingest:?}, cached: {measured:?}");
    assert!(measured.first.reads <= 1, "cold: {:?}", measured.first);
    assert_eq!(measured.warm.requests, 0, "{measured:?}");
    nothing_lost("cached", &measured);

    // a gateway for its devices: its own lookup and the device's, each at most one read
    let gateway = Sender {
        device: GATEWAY.into(),
        r#as: Some(device_name(0)),
    };
    let measured = measure(
        binary,
        ingest,
        &registered,
        std::slice::from_ref(&gateway),
        MESSAGES,
        &off,
    )
    .await;
    println!("{ingest:?}, gateway, cache off: {measured:?}");
    assert_eq!(measured.warm.reads, 2 * n, "{measured:?}");
    assert!(measured.warm.read_units <= 2.0 * n as f64, "{measured:?}");
    assert_eq!(measured.warm.writes, 0, "{measured:?}");
    nothing_lost("gateway, cache off", &measured);
    let measured = measure(binary, ingest, &registered, &[gateway], MESSAGES, &on).await;
    println!("{ingest:?}, gateway, cached: {measured:?}");
    assert_eq!(measured.warm.requests, 0, "{measured:?}");
    nothing_lost("gateway, cached", &measured);
}

#[tokio::test]
async fn http_endpoint_reads_per_message() {
    reads_per_message(Ingest::Http).await;
}

#[tokio::test]
async fn mqtt_ingest_reads_per_message() {
    reads_per_message(Ingest::Mqtt).await;
}

/// The cache's TTL in the tests of invalidation.
const TTL: Duration = Duration::from_secs(2);
/// What a change may take beyond the TTL: the invocations polling for it.
const SLACK: Duration = Duration::from_millis(1500);

/// Sends until the answer is `accepted` (or `!accepted`), for at most TTL + SLACK after
/// `since`; how long that took.
async fn until(
    function: &CountedFunction,
    sender: &Sender,
    password: &str,
    accepted: bool,
    since: Instant,
) -> Duration {
    let mut n = 1000;
    loop {
        n += 1;
        let (answer, body) = function.send_with(sender, password, n).await;
        let elapsed = since.elapsed();
        if answer == accepted {
            return elapsed;
        }
        assert!(
            elapsed <= TTL + SLACK,
            "{:?}: still {body} after {elapsed:?} (TTL {TTL:?})",
            function.ingest
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_with_ttl(ingest: Ingest, registered: &Registered) -> CountedFunction {
    let ttl = TTL.as_secs().to_string();
    CountedFunction::start(
        binary(ingest),
        ingest,
        registered,
        &[("DROGUE_DEVICE_CACHE_TTL", ttl.as_str())],
    )
    .await
}

async fn delete(registered: &Registered, device: &str) {
    registered
        .registry
        .delete_device(
            &registered.admin,
            &AppName::parse(APP).unwrap(),
            &DeviceName::parse(device).unwrap(),
            serde_json::from_value(json!({})).unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_new_password_and_a_deleted_device_reach_the_http_endpoint_within_the_ttl() {
    let registered = register(1).await;
    let function = start_with_ttl(Ingest::Http, &registered).await;
    let sender = device(0);
    let old = password_of(&sender.device);
    function.send(&sender, 0).await;
    function.send(&sender, 1).await;
    assert_eq!(
        function.proxy.counts().reads,
        1,
        "the second message is answered from the cache"
    );

    registered
        .registry
        .update_device(
            &registered.admin,
            &AppName::parse(APP).unwrap(),
            &DeviceName::parse(&sender.device).unwrap(),
            serde_json::from_value(json!({
                "metadata": {"name": sender.device, "application": APP},
                "spec": {"authentication": {"credentials": [{"pass": "a-new-one"}]}},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let changed = Instant::now();
    let refused = until(&function, &sender, &old, false, changed).await;
    let accepted = until(&function, &sender, "a-new-one", true, changed).await;
    println!("the old password refused after {refused:?}, the new one accepted after {accepted:?}");

    delete(&registered, &sender.device).await;
    let deleted = Instant::now();
    let refused = until(&function, &sender, "a-new-one", false, deleted).await;
    println!("the deleted device refused after {refused:?}");
}

#[tokio::test]
async fn a_deleted_device_reaches_the_mqtt_ingest_within_the_ttl() {
    let registered = register(1).await;
    let function = start_with_ttl(Ingest::Mqtt, &registered).await;
    let sender = device(0);
    function.send(&sender, 0).await;
    function.send(&sender, 1).await;
    assert_eq!(
        function.proxy.counts().reads,
        1,
        "the second message is answered from the cache"
    );
    delete(&registered, &sender.device).await;
    let deleted = Instant::now();
    let refused = until(&function, &sender, "", false, deleted).await;
    println!("the deleted device refused after {refused:?}");
}
