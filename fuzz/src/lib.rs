//! The bodies of the fuzz targets: every parser that takes outside input, each checked
//! for panics and for the properties it must keep.
//!
//! The same functions serve the `cargo fuzz` targets (`fuzz/fuzz_targets/`) and the
//! corpus replay that runs with the workspace's tests
//! (`functions/http-endpoint/tests/fuzz_corpus.rs`), so only crates that test has may be
//! used here.
//!
//! Inputs are bytes split at newlines into fields (the last field takes the rest), so
//! that seeds are readable and the fuzzer's mutations stay meaningful.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cloudevents::{AttributesReader, Event};
use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::commands::CommandService;
use drogue_shared::device_auth::DeviceAuthenticator;
use drogue_shared::events::{EventSink, SinkError, StructuredEvent};
use drogue_shared::http::CallerCredentials;
use drogue_shared::model::credentials::{Password, TypedPassword};
use drogue_shared::model::device_spec::{self, Credential};
use drogue_shared::model::trust_anchors::{self, AnchorStatus};
use drogue_shared::model::{AppName, DeviceName, LabelSelector, ResourceInput};
use drogue_shared::mqtt::TopicFilter;
use drogue_shared::mqtt::authorizer::{
    ConnectDecision, Covered, MqttAuthorizer, MqttConnect, MqttIdentity, application_client_id,
    application_policy, device_topics_policy,
};
use drogue_shared::mqtt::policy::{glob, literal};
use drogue_shared::mqtt::topics::{self, filter_matches, subscribed_application};
use drogue_shared::mqtt::{Action, DeviceMessage, Ingested, MqttIngest};
use drogue_shared::registry::Registry;
use drogue_shared::store::StoredToken;
use drogue_shared::store::embedded::EmbeddedStore;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

/// The first `n - 1` newline-separated fields of `data`, then the rest (fewer when the
/// input is shorter).
fn fields(data: &[u8], n: usize) -> Vec<String> {
    data.splitn(n, |b| *b == b'\n')
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

fn field(fields: &[String], i: usize) -> &str {
    fields.get(i).map(String::as_str).unwrap_or_default()
}

/// The application (and device, where the scheme names one) a topic belongs to.
fn owner_of(topic: &str) -> Option<(&str, Option<&str>)> {
    let mut levels = topic.split('/');
    let kind = levels.next()?;
    let app = levels.next()?;
    match kind {
        "app" => Some((app, None)),
        "dt" | "cmd" | "command" => Some((app, levels.next())),
        _ => None,
    }
}

/// `app \n device \n filter \n topic`: MQTT filter matching, IoT policy globs, topic
/// parsing, and the confinement of the application and device policies.
///
/// Properties: a client receives nothing of another application (nor a device anything
/// of another device): whenever a filter it may subscribe to matches a topic it may
/// receive, that topic is its own; it may publish on its own topics only.
pub fn topic_filter(data: &[u8]) {
    let f = fields(data, 4);
    let app = AppName::parse(field(&f, 0)).map_or_else(|_| "app1".to_owned(), |a| a.to_string());
    let device =
        DeviceName::parse(field(&f, 1)).map_or_else(|_| "dev1".to_owned(), |d| d.to_string());
    let (filter, topic) = (field(&f, 2), field(&f, 3));

    let matches = filter_matches(filter, topic);
    let _ = glob(filter, topic);
    // a name written as a literal matches itself alone
    assert_eq!(glob(&literal(filter), topic), filter == topic);
    let parsed = topics::parse(topic);
    if let Some(subscribed) = subscribed_application(filter) {
        assert!(!subscribed.is_empty() && !subscribed.contains('/'));
        assert!(filter_matches(
            filter,
            &topics::application_events(subscribed)
        ));
    }
    let valid = TopicFilter::parse(filter).is_ok();
    if valid && !filter.contains(['+', '#']) && !filter.starts_with("$share/") {
        assert_eq!(
            matches,
            filter == topic,
            "a filter without wildcards is the topic"
        );
    }
    if let Some(published) = &parsed {
        let (a, d) = match published {
            topics::Published::Telemetry { app, device, .. }
            | topics::Published::CommandResponse { app, device, .. }
            | topics::Published::Command { app, device, .. } => (*app, *device),
        };
        assert_eq!(owner_of(topic), Some((a, Some(d))));
    }

    let application = application_policy("alice/c", std::slice::from_ref(&app));
    let client_ids = [format!("{device}@{app}")];
    let device_policy = device_topics_policy(
        &app,
        Covered::Devices(std::slice::from_ref(&device)),
        &client_ids,
    );
    let own_app = |t: &str| owner_of(t).is_none_or(|(a, _)| a == app);
    let own_device = |t: &str| owner_of(t).is_none_or(|(a, d)| a == app && d == Some(&device));

    for (policy, own) in [
        (&application, &own_app as &dyn Fn(&str) -> bool),
        (&device_policy, &own_device),
    ] {
        // the subscription alone, whatever receiving allows: its filter is decided by
        // structure, so it reaches no topic of another application or device
        if policy.allows(Action::Subscribe, filter) {
            assert!(valid, "{filter} is no valid filter");
            if matches {
                assert!(
                    own(topic),
                    "{filter} reaches {topic} (app {app}, device {device})"
                );
            }
        }
        if policy.allows(Action::Receive, topic) {
            assert!(own(topic), "receives {topic} (app {app}, device {device})");
        }
        if policy.allows(Action::Publish, topic) {
            assert!(own(topic), "publishes {topic} (app {app}, device {device})");
        }
    }
    // what the device may publish is, when the ingest reads it, its own telemetry or
    // answers (an empty channel or a longer answer topic is refused by the ingest)
    if device_policy.allows(Action::Publish, topic) {
        assert!(!matches!(parsed, Some(topics::Published::Command { .. })));
    }
}

/// `selector \n label=value \n ...`: label selector parsing and matching.
pub fn label_selector(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (selector, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let labels: BTreeMap<String, String> = rest
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let parsed = LabelSelector::parse(selector);
    let all = LabelSelector::parse_all(text.lines());
    if let Ok(parsed) = &parsed {
        let matched = parsed.matches(&labels);
        if parsed.is_empty() {
            assert!(matched, "the empty selector matches everything");
        }
        if !selector.trim().is_empty() {
            assert_eq!(LabelSelector::parse_all([selector]).as_ref(), Ok(parsed));
        }
    }
    if let Ok(all) = all {
        let _ = all.matches(&labels);
    }
    for (k, v) in &labels {
        // only keys and values a selector can spell
        let plain = |s: &str| !s.contains(|c: char| c.is_whitespace() || "=!(),".contains(c));
        if k.is_empty() || !plain(k) || !plain(v) {
            continue;
        }
        if let Ok(equals) = LabelSelector::parse(&format!("{k}={v}")) {
            assert!(equals.matches(&labels), "{k}={v} against {labels:?}");
            let exists = LabelSelector::parse(k).expect("the key of k=v parses alone");
            assert!(exists.matches(&labels));
            let absent = LabelSelector::parse(&format!("!{k}")).expect("!k parses");
            assert!(!absent.matches(&labels));
            if let Ok(set) = LabelSelector::parse(&format!("{k} in ({v})")) {
                assert!(set.matches(&labels));
            }
            if let Ok(other) = LabelSelector::parse(&format!("{k}!={v}")) {
                assert!(!other.matches(&labels));
            }
        }
    }
}

/// `authorization \n authorization \n query \n password`: the management API's
/// credentials (Basic, Bearer, `?username=&api_key=`, `?token=`), access token prefixes,
/// and plain password checks.
pub fn basic_auth(data: &[u8]) {
    let f = fields(data, 4);
    let mut headers = HeaderMap::new();
    for value in [field(&f, 0), field(&f, 1)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.append(header::AUTHORIZATION, value);
        }
    }
    let query = field(&f, 2);
    let credentials = CallerCredentials::from_request(&headers, Some(query));
    let debug = format!("{credentials:?}");
    match &credentials {
        CallerCredentials::AccessToken { user, .. } => {
            assert_eq!(debug, format!("AccessToken({user}, redacted)"));
        }
        CallerCredentials::Bearer(_) => assert_eq!(debug, "Bearer(redacted)"),
        CallerCredentials::None => {
            assert!(headers.is_empty(), "a header is never ignored");
        }
        CallerCredentials::Invalid => {}
    }
    if headers.len() == 1 && !query.contains('=') {
        let value = headers[header::AUTHORIZATION].to_str().unwrap_or_default();
        if let CallerCredentials::AccessToken { user, token } = &credentials {
            assert!(!user.is_empty() && !token.is_empty());
            let encoded = value.trim().split_once(' ').map(|(_, e)| e.trim());
            let decoded = STANDARD.decode(encoded.unwrap_or_default()).unwrap();
            assert_eq!(decoded, format!("{user}:{token}").into_bytes());
        }
    }

    let candidate = field(&f, 3);
    if let Some(prefix) = drogue_shared::access::token_format::prefix_of(candidate) {
        assert!(candidate.starts_with(prefix) && prefix.starts_with("drg_"));
    }
    let stored = Password::Bare("hey-rodney".into());
    assert_eq!(stored.verify(candidate), candidate == "hey-rodney");
    let typed = Password::Typed(TypedPassword::Plain(candidate.to_owned()));
    assert!(candidate.is_empty() || typed.verify(candidate));
}

/// A device `spec` (JSON): credentials, aliases, gateways, claims, preparation for
/// storage and redaction; and the JSON of a whole resource as the registry reads it.
///
/// Properties: a prepared spec holds no plain password, its sections read back within
/// their limits, preparing it again changes nothing, and redaction leaves no secret.
pub fn device_spec(data: &[u8]) {
    let _ = serde_json::from_slice::<ResourceInput>(data);
    let Ok(Value::Object(spec)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = device_spec::credentials(&spec);
    let _ = device_spec::claims(&spec);
    let mut redacted = spec.clone();
    device_spec::redact_secrets(&mut redacted);
    assert_no_secrets(&redacted);
    let Ok(prepared) = device_spec::prepare_device_spec(spec) else {
        return;
    };
    let credentials = device_spec::credentials(&prepared).expect("prepared credentials read");
    assert!(credentials.len() <= 2 * device_spec::MAX_CREDENTIALS);
    for credential in &credentials {
        if let Credential::Password(p) | Credential::UsernamePassword { password: p, .. } =
            credential
        {
            assert!(!p.is_plain(), "a prepared spec holds a plain password");
        }
    }
    let aliases = device_spec::aliases(&prepared).expect("prepared aliases read");
    assert!(aliases.iter().all(|a| !a.is_empty()));
    let gateways = device_spec::gateways(&prepared).expect("prepared gateways read");
    assert!(gateways.len() <= device_spec::MAX_GATEWAYS);
    assert!(gateways.iter().all(|g| DeviceName::parse(g).is_ok()));
    let claims = device_spec::claims(&prepared).expect("prepared claims read");
    assert!(claims.len() <= device_spec::MAX_CLAIMS);
    let again = device_spec::prepare_device_spec(prepared.clone()).expect("prepares again");
    assert_eq!(again, prepared, "preparing a prepared spec changes it");
    let mut redacted = prepared;
    device_spec::redact_secrets(&mut redacted);
    assert_no_secrets(&redacted);
}

/// Every password and pre-shared key left in a redacted spec is the placeholder.
fn assert_no_secrets(redacted: &Map<String, Value>) {
    let Ok(credentials) = device_spec::credentials(redacted) else {
        return;
    };
    for credential in credentials {
        match credential {
            Credential::Password(p) | Credential::UsernamePassword { password: p, .. } => {
                let secret = match &p {
                    Password::Bare(s)
                    | Password::Typed(
                        TypedPassword::Plain(s)
                        | TypedPassword::Bcrypt(s)
                        | TypedPassword::Sha512(s),
                    ) => s,
                };
                assert_eq!(secret, device_spec::REDACTED, "a secret is left: {p:?}");
            }
            Credential::PreSharedKey(psk) => {
                if let Some(key) = psk.get("key") {
                    assert_eq!(key, device_spec::REDACTED);
                }
            }
            Credential::Certificate(_) => {}
        }
    }
}

/// An application `spec` (JSON) with its trust anchors, and the input itself as a
/// trust anchor certificate (base64 of PEM or DER, as the API takes it).
pub fn application_spec(data: &[u8]) {
    let _ = serde_json::from_slice::<ResourceInput>(data);
    if let Ok(Value::Object(spec)) = serde_json::from_slice::<Value>(data) {
        if let Ok(Some(anchors)) = trust_anchors::evaluate(&spec) {
            assert!(anchors.len() <= trust_anchors::MAX_TRUST_ANCHORS);
        }
        let _ = trust_anchors::anchor_certificates(&spec);
        let _ = trust_anchors::valid_subjects(&spec);
    }
    let encoded = STANDARD.encode(data);
    let spec = json!({"trustAnchors": {"anchors": [{"certificate": encoded}]}});
    let spec = spec.as_object().expect("an object");
    let anchors = trust_anchors::evaluate(spec)
        .expect("a well-formed section")
        .expect("one anchor");
    assert_eq!(anchors.len(), 1);
    if let AnchorStatus::Valid {
        certificate,
        not_before,
        not_after,
        ..
    } = &anchors[0]
    {
        assert_eq!(certificate, &encoded);
        let _ = (not_before, not_after);
        assert!(trust_anchors::certificate_from_base64(certificate).is_some());
        assert_eq!(trust_anchors::anchor_certificates(spec).len(), 1);
        let status =
            json!({"trustAnchors": {"anchors": [serde_json::to_value(&anchors[0]).unwrap()]}});
        let subjects = trust_anchors::valid_subjects(status.as_object().unwrap());
        assert_eq!(subjects.len(), 1);
    }
}

/// The access token of the user `alice` in [`Cloud`].
pub const ALICE_TOKEN: &str = "drg_fuzz01_abcdefghij0123456789ABCDEFGHIJ303iUZ";
/// Every secret [`Cloud`] holds: nothing else may authenticate.
pub const SECRETS: [&str; 5] = [
    "hey-rodney",
    "user1-secret",
    "gw-secret",
    "other-secret",
    ALICE_TOKEN,
];

/// A sink that keeps the last events.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.0.lock().expect("not poisoned"))
    }
}

impl EventSink for Recorder {
    /// Every structured event must read back as a CloudEvent.
    fn publish_structured<'a, 'f>(
        &'a self,
        event: StructuredEvent,
    ) -> Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let event = event.to_event().expect("a structured event reads back");
            self.0.lock().expect("not poisoned").push(event);
            Ok(())
        })
    }
}

/// An embedded store with two tenants, as the MQTT and HTTP targets meet it:
///
/// - `alice` (token [`ALICE_TOKEN`]) owns `app1`: `device1` (password `hey-rodney`,
///   alias `alias1`, username `user1`/`user1-secret`, unique), `gateway1` (`gw-secret`)
///   and `device2`, whose gateway is `gateway1` (no credentials of its own);
/// - `bob` owns `app2`: `device1` (`other-secret`).
pub struct Cloud {
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    authorizer: MqttAuthorizer,
    ingest: MqttIngest,
    router: axum::Router,
    sink: Arc<Recorder>,
}

impl Cloud {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(EmbeddedStore::open(dir.path().join("fuzz.redb")).expect("a store"));
        let sink = Arc::new(Recorder::default());
        runtime.block_on(async {
            let registry = Registry::new(store.clone(), AccessControl::default());
            let input = |v| serde_json::from_value::<ResourceInput>(v).expect("an input");
            for (owner, app, devices) in [
                (
                    "alice",
                    "app1",
                    vec![
                        json!({"metadata": {"name": "device1"}, "spec": {
                            "alias": ["alias1"],
                            "authentication": {"credentials": [
                                {"pass": "hey-rodney"},
                                {"user": {"username": "user1", "password": "user1-secret", "unique": true}},
                            ]}}}),
                        json!({"metadata": {"name": "gateway1"}, "spec": {
                            "authentication": {"credentials": [{"pass": "gw-secret"}]}}}),
                        json!({"metadata": {"name": "device2"}, "spec": {
                            "gatewaySelector": {"matchNames": ["gateway1"]}}}),
                    ],
                ),
                (
                    "bob",
                    "app2",
                    vec![json!({"metadata": {"name": "device1"}, "spec": {
                        "authentication": {"credentials": [{"pass": "other-secret"}]}}})],
                ),
            ] {
                let owner = Principal::user(owner);
                registry
                    .create_application(&owner, input(json!({"metadata": {"name": app}})))
                    .await
                    .expect("an application");
                for device in devices {
                    registry
                        .create_device(&owner, &AppName::parse(app).unwrap(), input(device))
                        .await
                        .expect("a device");
                }
            }
            use drogue_shared::store::TokenStore;
            store
                .create_token(&StoredToken {
                    prefix: "drg_fuzz01".into(),
                    user: "alice".into(),
                    name: None,
                    roles: Vec::new(),
                    hash: drogue_shared::access::token_format::hash(ALICE_TOKEN),
                    created: chrono::Utc::now(),
                    description: None,
                    expires: None,
                })
                .await
                .expect("a token");
        });
        let registry = Registry::new(store.clone(), AccessControl::default());
        let devices = DeviceAuthenticator::new(store.clone()).with_password_check_threads(1);
        Self {
            authorizer: MqttAuthorizer::new(devices.clone(), registry, None),
            ingest: MqttIngest::new(
                devices,
                sink.clone(),
                CommandService::new(store.clone()),
                "drogue",
            ),
            router: drogue_http_endpoint::router(store, sink.clone(), Default::default()),
            sink,
            runtime,
            _dir: dir,
        }
    }
}

impl Default for Cloud {
    fn default() -> Self {
        Self::new()
    }
}

/// `client id \n username \n password \n certificate (DER)`: an MQTT CONNECT through
/// the authorizer (the same decision as IoT Core's custom authorizer), and the
/// application client id rule.
///
/// Whether the client connected. Properties: only a secret of [`Cloud`] connects; the client id is one the policy
/// allows; a device's policy names its own application only, an application client's
/// only the applications its user may read (`app1` for `alice`); an application client id
/// is never a device's.
pub fn mqtt_connect(cloud: &Cloud, data: &[u8]) -> bool {
    let f = fields(data, 4);
    let client_id = field(&f, 0).to_owned();
    let username = f.get(1).filter(|u| !u.is_empty()).cloned();
    let password = f.get(2).map(|p| p.as_bytes().to_vec());
    let certificates = f
        .get(3)
        .filter(|c| !c.is_empty())
        .map(|_| vec![data.splitn(4, |b| *b == b'\n').nth(3).unwrap().to_vec()]);

    if let Some(user) = &username
        && application_client_id(user, &client_id).is_ok()
    {
        assert!(client_id.starts_with(&format!("{user}/")) && client_id.len() <= 128);
        let device_like = client_id
            .rsplit_once('@')
            .is_some_and(|(_, app)| AppName::parse(app).is_ok());
        assert!(!device_like, "{client_id} could be a device's client id");
    }

    let connect = MqttConnect {
        client_id: client_id.clone(),
        username,
        password,
        certificates: certificates.clone(),
    };
    let decision = cloud.runtime.block_on(cloud.authorizer.connect(&connect));
    let Ok(ConnectDecision::Allow(authorized)) = decision else {
        return false;
    };
    assert!(
        certificates.is_none(),
        "no trust anchor, yet a certificate connected"
    );
    let password = String::from_utf8_lossy(connect.password.as_deref().unwrap_or_default());
    assert!(
        SECRETS.contains(&password.as_ref()),
        "connected with {password:?}"
    );
    let policy = &authorized.policy;
    assert!(policy.allows(Action::Connect, &client_id));
    match &authorized.identity {
        MqttIdentity::Device {
            application,
            device,
        } => {
            let app = &application.metadata.name;
            assert!(
                client_id.ends_with(&format!("@{app}")),
                "{client_id} for {app}"
            );
            let secret_of = |app_name: &str, device_name: &str| {
                *app == app_name && device.metadata.name == device_name
            };
            assert!(match password.as_ref() {
                "hey-rodney" | "user1-secret" => secret_of("app1", "device1"),
                "gw-secret" => secret_of("app1", "gateway1"),
                "other-secret" => secret_of("app2", "device1"),
                _ => false,
            });
            for action in [Action::Publish, Action::Subscribe, Action::Receive] {
                for pattern in policy.patterns(action) {
                    assert!(
                        pattern.starts_with(&format!("dt/{app}/"))
                            || pattern.starts_with(&format!("cmd/{app}/")),
                        "{pattern} for a device of {app}"
                    );
                }
            }
        }
        MqttIdentity::Application { principal } => {
            assert_eq!(password, ALICE_TOKEN);
            assert_eq!(principal.user, "alice");
            for action in [Action::Publish, Action::Subscribe, Action::Receive] {
                for pattern in policy.patterns(action) {
                    assert!(
                        ["app/app1", "$share/*/app/app1", "command/app1/*"].contains(&pattern),
                        "{pattern} for alice"
                    );
                }
            }
        }
    }
    true
}

/// `client id \n topic \n content type \n payload`: an MQTT PUBLISH of a device as the
/// ingest takes it (IoT Core's rule or the local broker, after the policy allowed it):
/// topic parsing, device resolution, CloudEvents of telemetry and command responses.
///
/// Whether the message was accepted. Properties: an accepted message is an event of the sender's application, for the
/// device its topic names (or a device it is a gateway of), with the topic's channel as
/// subject; a JSON content type carries valid JSON.
pub fn mqtt_publish(cloud: &Cloud, data: &[u8]) -> bool {
    let f = fields(data, 4);
    let (client_id, topic) = (field(&f, 0), field(&f, 1));
    let content_type = f.get(2).filter(|c| !c.is_empty()).map(String::as_str);
    let payload = data.splitn(4, |b| *b == b'\n').nth(3).unwrap_or_default();
    let message = DeviceMessage {
        topic,
        client_id,
        payload,
        content_type,
        received: chrono::Utc::now(),
        sequenced: None,
        sender_uid: None,
    };
    cloud.sink.take();
    let result = cloud
        .runtime
        .block_on(cloud.ingest.device_message(&message));
    let events = cloud.sink.take();
    let Ok(Ingested::Accepted) = result else {
        assert!(events.is_empty(), "a refused message made an event");
        return false;
    };
    assert_eq!(events.len(), 1);
    let event = &events[0];
    let (_, sender_app) = client_id.rsplit_once('@').expect("a device client id");
    let ext = |name: &str| event.extension(name).map(|v| v.to_string());
    assert_eq!(ext("application").as_deref(), Some(sender_app));
    let Some(published) = topics::parse(topic) else {
        panic!("accepted an unknown topic {topic}");
    };
    match published {
        topics::Published::Telemetry {
            app,
            device,
            channel,
            ..
        } => {
            assert_eq!(app, sender_app);
            assert_eq!(event.subject(), Some(channel));
            // the topic may name the device by an alias or unique username
            let named = match device {
                "alias1" | "user1" => "device1",
                device => device,
            };
            assert_eq!(ext("device").as_deref(), Some(named));
        }
        topics::Published::CommandResponse { app, .. } => assert_eq!(app, sender_app),
        topics::Published::Command { .. } => panic!("accepted a command from a device"),
    }
    if content_type.is_some_and(drogue_shared::events::is_json) {
        assert!(serde_json::from_slice::<Value>(payload).is_ok());
        assert_eq!(event.datacontenttype(), Some("application/json"));
    }
    let _ = drogue_shared::events::to_json(event);
    true
}

/// An HTTP request to the device endpoint: `METHOD target` on the first line, then
/// `name: value` header lines, an empty line and the body.
///
/// The status, if the input makes a request. Properties: nothing answers 500; a publish succeeds only with a secret of [`Cloud`]
/// in its `Authorization` header, and makes at most one event, of an application of
/// that secret's owner.
pub fn http_endpoint(cloud: &Cloud, data: &[u8]) -> Option<u16> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &b""[..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let (method, target) = request_line
        .split_once(' ')
        .unwrap_or(("POST", request_line));
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return None;
    };
    let target = without_command_wait(target);
    let mut request = Request::builder()
        .method(method.clone())
        .uri(target.as_str());
    let mut authorizations = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim_start();
        if name.eq_ignore_ascii_case("authorization") {
            authorizations.push(value.to_owned());
        }
        request = request.header(name, value);
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return None;
    };
    let path = request.uri().path().to_owned();
    cloud.sink.take();
    let response = cloud
        .runtime
        .block_on(cloud.router.clone().oneshot(request))
        .expect("infallible");
    let events = cloud.sink.take();
    let status = response.status();
    assert_ne!(status.as_u16(), 500, "{request_line}");
    if method != Method::POST || !path.starts_with("/v1/") {
        return Some(status.as_u16());
    }
    assert!(events.len() <= 1);
    if status.is_success() {
        let secret = authorizations.first().and_then(|value| {
            let (_, encoded) = value.trim().split_once(' ')?;
            let decoded = STANDARD.decode(encoded.trim()).ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            Some(decoded.split_once(':')?.1.to_owned())
        });
        let secret = secret.unwrap_or_default();
        assert!(
            SECRETS.contains(&secret.as_str()),
            "{status} for {secret:?}"
        );
        let owner = if secret == "other-secret" {
            "app2"
        } else {
            "app1"
        };
        for event in &events {
            let app = event.extension("application").map(|v| v.to_string());
            assert_eq!(app.as_deref(), Some(owner));
        }
    } else {
        assert!(events.is_empty(), "{status} with an event");
    }
    Some(status.as_u16())
}

/// The request target with every command wait (`ct`, `commandTimeout`, `ttd`) that is a
/// number set to 0: a wait of up to 25 s per input would stall the fuzzer. Invalid
/// values stay, so their refusal is still exercised.
fn without_command_wait(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let waits = form_urlencoded::parse(query.as_bytes()).any(|(k, v)| {
        matches!(k.as_ref(), "ct" | "commandTimeout" | "ttd") && v.parse::<u64>().is_ok()
    });
    if !waits {
        return target.to_owned();
    }
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let v = match k.as_ref() {
            "ct" | "commandTimeout" | "ttd" if v.parse::<u64>().is_ok() => "0".into(),
            _ => v,
        };
        serializer.append_pair(&k, &v);
    }
    format!("{path}?{}", serializer.finish())
}
