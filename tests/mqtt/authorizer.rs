//! The custom authorizer: who is allowed, and exactly what the policy documents allow.

use super::fixture::populate;
use base64::Engine;
use drogue_mqtt_authorizer::{Config, IotAuthorizer};
use drogue_shared::runtime::EventContext;
use drogue_tests::Backend;
use drogue_tests::events::event;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

const ARN: &str = "arn:aws:lambda:eu-west-1:123456789012:function:mqtt-authorizer";

/// Hands a JSON request to the authorizer as the runtime does (typed in, JSON out).
trait HandleJson {
    async fn handle_json(&self, event: Value, context: &EventContext) -> anyhow::Result<Value>;
}

impl HandleJson for IotAuthorizer {
    async fn handle_json(&self, event: Value, context: &EventContext) -> anyhow::Result<Value> {
        let handler = |request, context: EventContext| {
            let authorizer = self.clone();
            async move { authorizer.handle(request, &context).await }
        };
        Ok(drogue_shared::runtime::handle_event(&handler, event, context.clone()).await?)
    }
}

fn context() -> EventContext {
    EventContext {
        function_arn: Some(ARN.into()),
    }
}

fn config() -> Config {
    Config {
        table: "unused".into(),
        oidc: None,
        admin_role: "drogue-admin".into(),
    }
}

fn request(username: &str, password: &str, client_id: &str) -> Value {
    let mut e = event("mqtt-authorizer-device.json");
    let mqtt = &mut e["protocolData"]["mqtt"];
    mqtt["username"] = json!(username);
    mqtt["password"] = json!(base64::engine::general_purpose::STANDARD.encode(password));
    mqtt["clientId"] = json!(client_id);
    e
}

/// Action -> resources (without the ARN prefix) allowed, from all documents.
fn allowed(response: &Value) -> BTreeMap<String, Vec<String>> {
    statements(response, "Allow")
}

/// Action -> resources (without the ARN prefix) denied, from all documents.
fn denied(response: &Value) -> BTreeMap<String, Vec<String>> {
    statements(response, "Deny")
}

fn statements(response: &Value, effect: &str) -> BTreeMap<String, Vec<String>> {
    let prefix = "arn:aws:iot:eu-west-1:123456789012:";
    let mut allowed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for document in response["policyDocuments"]
        .as_array()
        .expect("an array, never null")
    {
        let document: Value =
            serde_json::from_str(document.as_str().expect("documents are strings")).unwrap();
        assert_eq!(document["Version"], "2012-10-17");
        for statement in document["Statement"].as_array().unwrap() {
            assert!(
                statement["Effect"] == "Allow" || statement["Effect"] == "Deny",
                "{statement}"
            );
            if statement["Effect"] != effect {
                continue;
            }
            let entry = allowed
                .entry(statement["Action"].as_str().unwrap().to_owned())
                .or_default();
            for resource in statement["Resource"].as_array().unwrap() {
                entry.push(
                    resource
                        .as_str()
                        .unwrap()
                        .strip_prefix(prefix)
                        .expect("the function's account and region")
                        .to_owned(),
                );
            }
        }
    }
    allowed
}

fn expect_allowed(response: &Value) {
    assert_eq!(response["isAuthenticated"], true, "{response}");
    let principal = response["principalId"].as_str().unwrap();
    assert!(
        (1..=128).contains(&principal.len())
            && principal.chars().all(|c| c.is_ascii_alphanumeric()),
        "{principal}"
    );
    assert_eq!(response["disconnectAfterInSeconds"], 86400);
    assert_eq!(response["refreshAfterInSeconds"], 300);
}

fn expect_refused(response: &Value) {
    assert_eq!(response["isAuthenticated"], false, "{response}");
    assert_eq!(
        response["policyDocuments"],
        json!([]),
        "no policy, and never null"
    );
}

async fn authorizer() -> (IotAuthorizer, String, drogue_tests::TestStore) {
    let store = Backend::Embedded.store().await;
    let rita = populate(store.store.clone()).await;
    (
        IotAuthorizer::new(store.store.clone(), &config()),
        rita,
        store,
    )
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_device_gets_its_own_topics_only() {
    let (a, _, _store) = authorizer().await;
    let response = a
        .handle_json(event("mqtt-authorizer-device.json"), &context())
        .await
        .unwrap();
    expect_allowed(&response);
    let expected: BTreeMap<String, Vec<String>> = [
        ("iot:Connect", strs(&["client/device1@from-lambda"])),
        (
            "iot:Publish",
            strs(&[
                "topic/dt/from-lambda/device1/*",
                "topic/cmd/from-lambda/device1/*/res/*",
            ]),
        ),
        (
            "iot:Subscribe",
            strs(&["topicfilter/cmd/from-lambda/device1/*"]),
        ),
        ("iot:Receive", strs(&["topic/cmd/from-lambda/device1/*"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(allowed(&response), expected);

    // an alias as the client id, and a username with the client id naming the device
    let response = a
        .handle_json(
            request("device1@from-lambda", "hey-rodney", "alias-1@from-lambda"),
            &context(),
        )
        .await
        .unwrap();
    expect_allowed(&response);
    assert_eq!(
        allowed(&response)["iot:Connect"],
        strs(&["client/alias-1@from-lambda"])
    );
    let response = a
        .handle_json(request("alice", "pw", "user-dev@from-lambda"), &context())
        .await
        .unwrap();
    expect_allowed(&response);
    assert_eq!(
        allowed(&response)["iot:Publish"][0],
        "topic/dt/from-lambda/user-dev/*"
    );
}

#[tokio::test]
async fn a_gateway_gets_the_topics_of_the_devices_it_serves() {
    let (a, _, _store) = authorizer().await;
    let response = a
        .handle_json(
            request("gw@from-lambda", "gw", "gw@from-lambda"),
            &context(),
        )
        .await
        .unwrap();
    expect_allowed(&response);
    let allowed = allowed(&response);
    assert_eq!(
        allowed["iot:Publish"],
        strs(&[
            "topic/dt/from-lambda/gw/*",
            "topic/cmd/from-lambda/gw/*/res/*",
            "topic/dt/from-lambda/behind-1/*",
            "topic/cmd/from-lambda/behind-1/*/res/*",
            "topic/dt/from-lambda/behind-2/*",
            "topic/cmd/from-lambda/behind-2/*/res/*",
        ])
    );
    assert_eq!(
        allowed["iot:Subscribe"],
        strs(&[
            "topicfilter/cmd/from-lambda/gw/*",
            "topicfilter/cmd/from-lambda/behind-1/*",
            "topicfilter/cmd/from-lambda/behind-2/*"
        ])
    );
    assert!(
        !allowed["iot:Publish"].iter().any(|r| r.contains("device1")),
        "not a device it does not serve"
    );
}

#[tokio::test]
async fn applications_get_the_events_and_commands_of_what_they_may_read() {
    let (a, rita, _store) = authorizer().await;
    let response = a
        .handle_json(request("rita", &rita, "rita/integration"), &context())
        .await
        .unwrap();
    expect_allowed(&response);
    let expected: BTreeMap<String, Vec<String>> = [
        ("iot:Connect", strs(&["client/rita/integration"])),
        ("iot:Publish", strs(&["topic/command/from-lambda/*"])),
        (
            "iot:Subscribe",
            strs(&[
                "topicfilter/app/from-lambda",
                "topicfilter/$share/*/app/from-lambda",
            ]),
        ),
        ("iot:Receive", strs(&["topic/app/from-lambda"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(allowed(&response), expected, "nothing of other-app");
    // IoT's `*` spans levels: `$share/*/app/from-lambda` would admit
    // `$share/g/dt/other-app/dev/app/from-lambda`, which the denial takes back
    assert_eq!(
        denied(&response),
        [(
            "iot:Subscribe".to_owned(),
            strs(&["topicfilter/$share/*/*/app/*"])
        )]
        .into_iter()
        .collect::<BTreeMap<_, _>>()
    );

    let response = a
        .handle_json(event("mqtt-authorizer-application.json"), &context())
        .await
        .unwrap();
    expect_allowed(&response);
    assert_eq!(
        allowed(&response)["iot:Subscribe"],
        strs(&["topicfilter/app/*", "topicfilter/$share/*/app/*"]),
        "the administrator"
    );
}

/// The authorizer's answer to `user` connecting as `{user}/integration` with a new token
/// of its own; an allowed one.
async fn connect_with_a_token(
    store: &drogue_tests::TestStore,
    user: &drogue_shared::access::Principal,
) -> Value {
    let token = drogue_shared::access::create_token(store.store.as_ref(), user, None)
        .await
        .unwrap()
        .token;
    let client = format!("{}/integration", user.user);
    let response = IotAuthorizer::new(store.store.clone(), &config())
        .handle_json(request(&user.user, &token, &client), &context())
        .await
        .unwrap();
    expect_allowed(&response);
    response
}

/// A user who may read more applications than an IoT Core answer's 10 documents hold
/// connects with the first ones by name, not refused by IoT Core for too many documents.
#[tokio::test]
async fn a_user_of_many_applications_connects_with_the_first_an_iot_policy_holds() {
    use drogue_shared::access::Principal;
    use drogue_shared::access::authz::AccessControl;
    use drogue_shared::registry::Registry;
    let store = Backend::DynamoDb.store().await;
    populate(store.store.clone()).await;
    let bob = Principal::user("bob");
    let registry = Registry::new(store.store.clone(), AccessControl::default());
    // created out of order: the policy follows the names, not the creation
    let apps: Vec<String> = (0..90)
        .map(|i| format!("bobs-application-{i:02}"))
        .collect();
    for app in apps.iter().rev() {
        registry
            .create_application(
                &bob,
                serde_json::from_value(json!({"metadata": {"name": app}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let response = connect_with_a_token(&store, &bob).await;
    let documents = response["policyDocuments"].as_array().unwrap();
    assert!(
        (1..=10).contains(&documents.len()),
        "{} documents",
        documents.len()
    );
    let receive = &allowed(&response)["iot:Receive"];
    let held = receive.len();
    assert!((30..90).contains(&held), "{receive:?}");
    let first: Vec<String> = apps[..held]
        .iter()
        .map(|app| format!("topic/app/{app}"))
        .collect();
    assert_eq!(receive, &first, "the first ones by name");
    assert_eq!(allowed(&response)["iot:Subscribe"].len(), 2 * held);
    assert_eq!(allowed(&response)["iot:Publish"].len(), held);
    assert!(
        !receive
            .iter()
            .any(|r| r.contains("from-lambda") || r.contains("other-app")),
        "nothing of other tenants"
    );
}

/// A stranger who makes a user a member of many applications named to sort first cannot
/// push the user's own applications out of the user's IoT Core policy (nor, as before
/// the bound, have IoT Core refuse the user's connection for too many documents).
#[tokio::test]
async fn a_stranger_making_a_user_a_member_of_many_applications_leaves_the_users_own_in_its_policy()
{
    use drogue_shared::access::authz::AccessControl;
    use drogue_shared::access::{Principal, Role};
    use drogue_shared::model::AppName;
    use drogue_shared::registry::{MemberEntry, Members, Registry};
    let store = Backend::DynamoDb.store().await;
    populate(store.store.clone()).await;
    let registry = Registry::new(store.store.clone(), AccessControl::default());
    let input = |name: &str| serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    let bob = Principal::user("bob");
    let own = ["zz-bobs-0", "zz-bobs-1", "zz-bobs-2"];
    for app in own {
        registry.create_application(&bob, input(app)).await.unwrap();
    }
    let mallory = Principal::user("mallory");
    let theirs: Vec<String> = (0..80).map(|i| format!("aa-mallorys-{i:02}")).collect();
    for app in &theirs {
        registry
            .create_application(&mallory, input(app))
            .await
            .unwrap();
        let members = Members {
            resource_version: None,
            members: [("bob".to_owned(), MemberEntry { role: Role::Reader })].into(),
        };
        registry
            .set_members(&mallory, &AppName::parse(app).unwrap(), members)
            .await
            .unwrap();
    }
    let response = connect_with_a_token(&store, &bob).await;
    assert!(response["policyDocuments"].as_array().unwrap().len() <= 10);
    let receive = &allowed(&response)["iot:Receive"];
    let held = receive.len();
    assert!((30..83).contains(&held), "{receive:?}");
    // the user's own first, then the others by name, as many as fit
    let expected: Vec<String> = own
        .iter()
        .map(|app| app.to_string())
        .chain(theirs.iter().cloned())
        .take(held)
        .map(|app| format!("topic/app/{app}"))
        .collect();
    assert_eq!(receive, &expected);
}

#[tokio::test]
async fn refusals_carry_no_policy() {
    let (a, rita, _store) = authorizer().await;
    expect_refused(
        &a.handle_json(event("mqtt-authorizer-bad-password.json"), &context())
            .await
            .unwrap(),
    );
    for (username, password, client_id) in [
        ("device1@from-lambda", "hey-rodney", "someone-else"),
        ("device1@from-lambda", "hey-rodney", "gw@from-lambda"),
        ("device1@from-lambda", "hey-rodney", "device1@other-app"),
        ("device1@other-app", "hey-rodney", "device1@other-app"),
        ("nobody@from-lambda", "hey-rodney", "nobody@from-lambda"),
        ("alice", "pw", "device1@from-lambda"),
        ("rita", "drg_wrong", "rita/x"),
        ("eve", &rita, "eve/x"),
        // a user's client id lies in her own namespace: never a device's, nor another's
        ("rita", &rita, "device1@from-lambda"),
        ("rita", &rita, "rita-integration"),
        ("rita", &rita, "alice/integration"),
        ("rita", &rita, "rita/device1@from-lambda"),
        ("rita", &rita, "rita/*"),
    ] {
        let response = a
            .handle_json(request(username, password, client_id), &context())
            .await
            .unwrap();
        expect_refused(&response);
    }
    let mut no_password = request("device1@from-lambda", "", "device1@from-lambda");
    no_password["protocolData"]["mqtt"]
        .as_object_mut()
        .unwrap()
        .remove("password");
    expect_refused(&a.handle_json(no_password, &context()).await.unwrap());
}

#[tokio::test]
async fn an_unreachable_registry_is_an_error_not_a_decision() {
    use drogue_shared::store::dynamodb::DynamoStore;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let store = Arc::new(DynamoStore::new(
        drogue_tests::backend::dynamo_client(&endpoint),
        "gone",
    ));
    let a = IotAuthorizer::new(store, &config());
    assert!(
        a.handle_json(event("mqtt-authorizer-device.json"), &context())
            .await
            .is_err()
    );
}
