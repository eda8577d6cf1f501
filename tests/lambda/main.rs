//! Every function's real binary under the Lambda Runtime API (emulated here, see
//! `drogue_tests::lambda`), fed with each payload in `events/`, with DynamoDB, Kinesis and
//! IoT Core in moto: the proof that the Lambda entry points work, not only the handlers.

#[path = "../mqtt/fixture.rs"]
#[allow(dead_code)]
mod fixture;

mod dynamodb_reads;
mod fan_out;
mod kubernetes;
mod start;

use aws_sdk_iot::types::CertificateStatus;
use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::model::AppName;
use drogue_shared::registry::Registry;
use drogue_shared::store::CommandStore;
use drogue_shared::store::dynamodb::DynamoStore;
use drogue_tests::backend::{
    fresh_dynamo_table, fresh_kinesis_stream, iot_client, kinesis_client, kinesis_records, moto_url,
};
use drogue_tests::events::store_fixture_token;
use drogue_tests::events::{FIXTURE_TOKEN, event};
use drogue_tests::lambda::{Answer, FunctionProcess, RuntimeApi, lambda_environment, start_binary};
use serde_json::{Value, json};
use std::sync::Arc;

/// A function binary started against its own Runtime API.
struct Function {
    api: RuntimeApi,
    _process: FunctionProcess,
}

impl Function {
    async fn start(binary: &str, settings: &[(&str, &str)]) -> Self {
        let api = RuntimeApi::start(binary).await;
        let mut env = lambda_environment(&api, binary, &moto_url());
        env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let process = start_binary(binary, &env);
        Self {
            api,
            _process: process,
        }
    }

    async fn invoke(&self, fixture: &str) -> Answer {
        self.api.invoke(event(fixture)).await
    }

    /// An API Gateway event's answer: status and JSON body.
    async fn http(&self, fixture: &str) -> (u16, Value) {
        let answer = self.invoke(fixture).await.response();
        let status = answer["statusCode"]
            .as_u64()
            .expect("an API Gateway answer") as u16;
        let body = answer["body"]
            .as_str()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        (status, body)
    }
}

/// The fixtures' applications and devices, with `lambda-ca.pem` a trust anchor of
/// `from-lambda`.
async fn populated() -> DynamoStore {
    let store = fresh_dynamo_table().await;
    fixture::populate(Arc::new(store.clone())).await;
    let mut admin = Principal::user("admin");
    admin.roles.push(AccessControl::DEFAULT_ADMIN_ROLE.into());
    let anchor = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(include_str!("../testdata/pki/lambda-ca.pem"))
    };
    let app = json!({"metadata": {"name": "from-lambda"}, "spec": {"trustAnchors": {"anchors": [{"certificate": anchor}]}}});
    Registry::new(Arc::new(store.clone()), AccessControl::default())
        .update_application(
            &admin,
            &AppName::parse("from-lambda").unwrap(),
            serde_json::from_value(app).unwrap(),
        )
        .await
        .unwrap();
    store
}

#[tokio::test]
async fn registry() {
    let store = fresh_dynamo_table().await;
    store_fixture_token(&store, vec![AccessControl::DEFAULT_ADMIN_ROLE.into()]).await;
    // the HTTPS client Lambda functions use for AWS's own endpoints (Amazon's roots only;
    // moto answers plain HTTP, so this shows the client is built and works, not its roots)
    let f = Function::start(
        "registry",
        &[
            ("DROGUE_TABLE", store.table()),
            ("DROGUE_TLS_ROOTS", "amazon"),
        ],
    )
    .await;

    assert_eq!(f.http("registry-create-app.json").await.0, 201);
    let (status, listed) = f.http("registry-list-apps.json").await;
    assert_eq!(status, 200);
    assert_eq!(listed[0]["metadata"]["name"], "from-lambda");
    assert_eq!(f.http("registry-create-device.json").await.0, 201);
    let (status, device) = f.http("registry-get-device.json").await;
    assert_eq!(status, 200);
    assert_eq!(device["metadata"]["name"], "device1");
    assert!(
        device["spec"]["authentication"]["credentials"][0]["pass"]
            .get("sha512")
            .is_some(),
        "stored hashed: {device}"
    );
    assert_eq!(f.http("registry-delete-app.json").await.0, 204);
    assert_eq!(f.http("registry-get-device.json").await.0, 404);
}

#[tokio::test]
async fn http_endpoint() {
    let store = populated().await;
    let kinesis = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&kinesis).await;
    let f = Function::start(
        "http-endpoint",
        &[
            ("DROGUE_TABLE", store.table()),
            ("DROGUE_EVENT_STREAM", &stream),
        ],
    )
    .await;

    assert_eq!(f.http("http-telemetry-basic.json").await.0, 202);
    assert_eq!(f.http("http-telemetry-mtls.json").await.0, 202);
    let (status, body) = f.http("http-telemetry-bad-password.json").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("AuthenticationError"))
    );
    let records = kinesis_records(&kinesis, &stream).await;
    assert_eq!(records.len(), 2);
    let mtls: Value = serde_json::from_slice(&records[1].1).unwrap();
    assert_eq!(
        (mtls["device"].as_str(), mtls["subject"].as_str()),
        (Some("device1"), Some("state"))
    );
}

#[tokio::test]
async fn command() {
    let store = populated().await;
    let f = Function::start("command", &[("DROGUE_TABLE", store.table())]).await;
    assert_eq!(f.http("command-drop-off.json").await.0, 202);
    let taken = store
        .take_command("from-lambda", "device1", chrono::Utc::now())
        .await
        .unwrap()
        .expect("the command waits for the device");
    assert_eq!(taken.name, "reboot");

    // the same binary as the target of the command/# rule
    let rule = Function::start(
        "command",
        &[
            ("DROGUE_TABLE", store.table()),
            ("DROGUE_COMMAND_SOURCE", "mqtt"),
        ],
    )
    .await;
    assert_eq!(
        rule.invoke("mqtt-command.json").await.response()["outcome"],
        "accepted"
    );
    let taken = store
        .take_command("from-lambda", "device1", chrono::Utc::now())
        .await
        .unwrap()
        .expect("the command from MQTT waits for the device");
    assert_eq!(taken.payload, br#"{"delay":5}"#);
}

#[tokio::test]
async fn mqtt_authorizer() {
    let store = populated().await;
    let f = Function::start("mqtt-authorizer", &[("DROGUE_TABLE", store.table())]).await;
    for (fixture, allowed) in [
        ("mqtt-authorizer-device.json", true),
        ("mqtt-authorizer-application.json", true),
        ("mqtt-authorizer-bad-password.json", false),
    ] {
        let answer = f.invoke(fixture).await.response();
        assert_eq!(answer["isAuthenticated"], allowed, "{fixture}: {answer}");
        let documents = answer["policyDocuments"].as_array().expect("never null");
        assert_eq!(documents.is_empty(), !allowed, "{fixture}");
        let principal = answer["principalId"].as_str().unwrap();
        assert!(
            (1..=128).contains(&principal.len())
                && principal.chars().all(|c| c.is_ascii_alphanumeric()),
            "{principal}"
        );
    }
}

#[tokio::test]
async fn mqtt_ingest() {
    let store = populated().await;
    let kinesis = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&kinesis).await;
    let f = Function::start(
        "mqtt-ingest",
        &[
            ("DROGUE_TABLE", store.table()),
            ("DROGUE_EVENT_STREAM", &stream),
        ],
    )
    .await;
    for fixture in [
        "mqtt-ingest-telemetry.json",
        "mqtt-lifecycle-connected.json",
        "mqtt-lifecycle-disconnected.json",
    ] {
        assert_eq!(
            f.invoke(fixture).await.response()["outcome"],
            "accepted",
            "{fixture}"
        );
    }
    let types: Vec<String> = kinesis_records(&kinesis, &stream)
        .await
        .iter()
        .map(|(_, data)| {
            serde_json::from_slice::<Value>(data).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        types,
        [
            "io.drogue.event.v1",
            "io.drogue.connection.v1",
            "io.drogue.connection.v1"
        ]
    );
}

/// Removes a certificate from moto's IoT if an earlier run left it there.
async fn forget_certificate(iot: &aws_sdk_iot::Client, pem: &str) {
    let listed = iot.list_certificates().send().await.unwrap();
    for cert in listed.certificates() {
        let (Some(id), Some(arn)) = (cert.certificate_id(), cert.certificate_arn()) else {
            continue;
        };
        let described = iot
            .describe_certificate()
            .certificate_id(id)
            .send()
            .await
            .unwrap();
        if described
            .certificate_description
            .and_then(|d| d.certificate_pem)
            .as_deref()
            != Some(pem)
        {
            continue;
        }
        let attached = iot
            .list_attached_policies()
            .target(arn)
            .send()
            .await
            .unwrap();
        for policy in attached.policies() {
            iot.detach_policy()
                .policy_name(policy.policy_name().unwrap())
                .target(arn)
                .send()
                .await
                .unwrap();
        }
        iot.update_certificate()
            .certificate_id(id)
            .new_status(CertificateStatus::Inactive)
            .send()
            .await
            .unwrap();
        iot.delete_certificate()
            .certificate_id(id)
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn cert_validator() {
    let store = populated().await;
    let iot = iot_client(&moto_url());
    let pem = include_str!("../testdata/pki/device1.pem");
    forget_certificate(&iot, pem).await;
    let registered = iot
        .register_certificate_without_ca()
        .certificate_pem(pem)
        .status(CertificateStatus::PendingActivation)
        .send()
        .await
        .unwrap();
    let id = registered.certificate_id.unwrap();
    let mut registration = event("iot-certificate-registered.json");
    registration["certificateId"] = json!(id);

    let f = Function::start(
        "cert-validator",
        &[
            ("DROGUE_TABLE", store.table()),
            ("DROGUE_IOT_POLICY_PREFIX", "drogue-lambda-test"),
        ],
    )
    .await;
    let answer = f.api.invoke(registration).await.response();
    assert_eq!(answer["outcome"], "activated", "{answer}");
    assert_eq!(answer["device"], "device1");
    let status = iot
        .describe_certificate()
        .certificate_id(&id)
        .send()
        .await
        .unwrap()
        .certificate_description
        .unwrap()
        .status;
    assert_eq!(status, Some(CertificateStatus::Active));
    // the fixture as it is names a certificate IoT Core does not know: a function error
    assert!(matches!(
        f.invoke("iot-certificate-registered.json").await,
        Answer::Error(_)
    ));

    // the device deleted (its item's REMOVE record on the table's stream): the stream's
    // consumer revokes the certificate and detaches its policy
    let kinesis = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&kinesis).await;
    let sync = Function::start(
        "trust-anchor-sync",
        &[
            ("DROGUE_TABLE", store.table()),
            ("DROGUE_EVENT_STREAM", &stream),
        ],
    )
    .await;
    let answer = sync.invoke("registry-device-deleted.json").await.response();
    assert_eq!(answer["revoked"], json!([id]), "{answer}");
    let described = iot
        .describe_certificate()
        .certificate_id(&id)
        .send()
        .await
        .unwrap()
        .certificate_description
        .unwrap();
    assert_eq!(described.status, Some(CertificateStatus::Revoked));
    let attached = iot
        .list_attached_policies()
        .target(described.certificate_arn.unwrap())
        .send()
        .await
        .unwrap();
    assert!(attached.policies().is_empty());
    forget_certificate(&iot, pem).await;
}

#[tokio::test]
async fn trust_anchor_sync() {
    let store = fresh_dynamo_table().await;
    let kinesis = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&kinesis).await;
    let f = Function::start(
        "trust-anchor-sync",
        &[
            ("DROGUE_TABLE", store.table()),
            ("DROGUE_EVENT_STREAM", &stream),
        ],
    )
    .await;
    let answer = f.invoke("trust-anchor-sync.json").await.response();
    assert_eq!(
        answer["registered"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    assert_eq!(answer["batchItemFailures"], json!([]));
    let id = answer["registered"][0].as_str().unwrap();
    let described = iot_client(&moto_url())
        .describe_ca_certificate()
        .certificate_id(id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.certificate_description.unwrap().status,
        Some(aws_sdk_iot::types::CaCertificateStatus::Active)
    );
}

/// The structured JSON CloudEvents in a Kinesis stream: (partition key, event).
async fn stream_events(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<(String, Value)> {
    kinesis_records(kinesis, stream)
        .await
        .into_iter()
        .map(|(key, data)| (key, serde_json::from_slice(&data).unwrap()))
        .collect()
}

#[tokio::test]
async fn registry_change_events() {
    let store = fresh_dynamo_table().await;
    // the application the device records belong to, as the table holds it
    let mut item = event("trust-anchor-sync.json")["Records"][0]["dynamodb"]["NewImage"].clone();
    let item: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> = item
        .as_object_mut()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = match (v.get("S"), v.get("BOOL")) {
                (Some(s), _) => {
                    aws_sdk_dynamodb::types::AttributeValue::S(s.as_str().unwrap().into())
                }
                (_, Some(b)) => aws_sdk_dynamodb::types::AttributeValue::Bool(b.as_bool().unwrap()),
                _ => panic!("{v}"),
            };
            (k.clone(), v)
        })
        .collect();
    drogue_tests::backend::dynamo_client(&moto_url())
        .put_item()
        .table_name(store.table())
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    let kinesis = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&kinesis).await;
    let f = Function::start(
        "trust-anchor-sync",
        &[
            ("DROGUE_TABLE", store.table()),
            ("DROGUE_EVENT_STREAM", &stream),
            ("DROGUE_INSTANCE", "lambda-test"),
        ],
    )
    .await;

    // a device created, changed and deleted; a claim of it in between gives nothing
    let answer = f.invoke("registry-device-changes.json").await.response();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let events = stream_events(&kinesis, &stream).await;
    let changes: Vec<&str> = events
        .iter()
        .map(|(_, e)| e["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["created", "updated", "deleted"]);
    let fixture = event("registry-device-changes.json");
    for ((key, e), (record, generation)) in events.iter().zip([(0, 0), (2, 1), (3, 1)]) {
        assert_eq!(key, "from%2Dlambda/sensor%2D1");
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["type"], "io.drogue.registry.v1");
        assert_eq!(e["source"], "drogue://from-lambda/sensor%2D1");
        assert_eq!(e["subject"], "devices");
        assert_eq!(e["instance"], "lambda-test");
        assert_eq!(e["application"], "from-lambda");
        assert_eq!(e["applicationuid"], "0e6f5a2c-6f8e-4d9b-a1f4-1c7b8e2d9a10");
        assert_eq!(e["device"], "sensor-1");
        assert_eq!(e["deviceuid"], "5b0e2c7a-9d43-4f1e-8c6a-2e7f1d9b3a51");
        assert_eq!(e["sender"], "sensor-1");
        assert_eq!(e["partitionkey"], "from%2Dlambda/sensor%2D1");
        assert_eq!(e["datacontenttype"], "application/json");
        let record = &fixture["Records"][record];
        let seconds = record["dynamodb"]["ApproximateCreationDateTime"]
            .as_i64()
            .unwrap();
        let time = chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap();
        assert_eq!(time.timestamp(), seconds, "the time of the change");
        let image = record["dynamodb"]
            .get("NewImage")
            .or(record["dynamodb"].get("OldImage"))
            .unwrap();
        let stored: Value = serde_json::from_str(image["data"]["S"].as_str().unwrap()).unwrap();
        assert_eq!(
            e["data"],
            json!({
                "change": e["change"],
                "name": "sensor-1",
                "uid": "5b0e2c7a-9d43-4f1e-8c6a-2e7f1d9b3a51",
                "generation": generation,
                "resourceVersion": stored["metadata"]["resourceVersion"],
            })
        );
    }
    assert_eq!(
        answer["events"].as_array().map(Vec::len),
        Some(3),
        "{answer}"
    );
    // the same batch again (a retry) gives the same events: the same ids
    f.invoke("registry-device-changes.json").await.response();
    let again = stream_events(&kinesis, &stream).await;
    let ids = |events: &[(String, Value)]| -> Vec<String> {
        events
            .iter()
            .map(|(_, e)| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&again[3..]), ids(&events));

    // an application created, changed, its deletion pending, deleted; closing it to new
    // devices (the item changes, the resource does not) gives nothing
    let answer = f
        .invoke("registry-application-changes.json")
        .await
        .response();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let events = stream_events(&kinesis, &stream).await;
    let events = &events[6..];
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|(_, e)| {
            (
                e["change"].as_str().unwrap(),
                e["data"]["resourceVersion"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("created", "3f6b8d2e-1a4c-4e7f-9b2d-5c8e1f3a6b01"),
            ("updated", "3f6b8d2e-1a4c-4e7f-9b2d-5c8e1f3a6b02"),
            ("updated", "3f6b8d2e-1a4c-4e7f-9b2d-5c8e1f3a6b03"),
            ("deleted", "3f6b8d2e-1a4c-4e7f-9b2d-5c8e1f3a6b03"),
        ]
    );
    for (key, e) in events {
        assert_eq!(key, "change%2Dapp");
        assert_eq!(e["type"], "io.drogue.registry.v1");
        assert_eq!(e["source"], "drogue://change-app");
        assert_eq!(e["subject"], "applications");
        assert_eq!(e["application"], "change-app");
        assert_eq!(e["applicationuid"], "9e4d2b1a-7c3f-4a5e-b8d6-1f2a3c4e5d60");
        assert!(e.get("device").is_none(), "{e}");
        assert_eq!(e["data"]["name"], "change-app");
        assert_eq!(e["data"]["uid"], "9e4d2b1a-7c3f-4a5e-b8d6-1f2a3c4e5d60");
    }
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The token the tests put in the `drogue-internal` Secret the internal Services read.
const INTERNAL_TOKEN: &str = "test-internal-token-0123456789abcdef";

/// The event-triggered Services: they require [`INTERNAL_TOKEN`] on `$PORT`.
const INTERNAL_SERVICES: [&str; 5] = [
    "drogue-mqtt-ingest",
    "drogue-mqtt-command",
    "drogue-cert-validator",
    "drogue-trust-anchor-sync",
    "drogue-mqtt-authorizer",
];

/// Where a variable of a Service's `env` takes its value from.
#[derive(Debug, Clone, PartialEq)]
enum EnvSource {
    Value(String),
    /// `valueFrom.secretKeyRef`: the Secret's name and key.
    Secret {
        name: String,
        key: String,
    },
}

impl EnvSource {
    /// The value the test gives the variable: a Secret's is the test's stand-in for it.
    fn resolve(&self) -> String {
        match self {
            Self::Value(value) => value.clone(),
            Self::Secret { name, key } if name == "drogue-internal" && key == "token" => {
                INTERNAL_TOKEN.to_owned()
            }
            Self::Secret { name, key } => panic!("no test value for the Secret {name}, key {key}"),
        }
    }
}

/// A Knative Service of `infra/knative/services.yaml`.
struct Service {
    /// The binary it runs.
    binary: String,
    /// The `drogue` ConfigMap's data, then the Service's own `env`.
    env: Vec<(String, EnvSource)>,
    /// `metadata.labels`.
    labels: Value,
}

/// Knative Services by name.
type Services = std::collections::HashMap<String, Service>;

/// The YAML documents of a file of `infra/knative/`, as JSON.
fn knative_documents(file: &str) -> Vec<Value> {
    yaml_documents(&format!("infra/knative/{file}"))
}

/// The YAML documents of a file of the repository, as JSON.
fn yaml_documents(file: &str) -> Vec<Value> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let python = std::env::var("DROGUE_TEST_PYTHON").expect(
        "DROGUE_TEST_PYTHON names a Python with PyYAML; tests/run sets it up and exports it",
    );
    let output = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            &format!("{root}/{file}"),
        ])
        .output()
        .expect("python runs");
    assert!(output.status.success(), "{file}: {output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The Knative Services of `infra/knative/`.
fn knative_services() -> Services {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/knative");
    let documents = knative_documents;
    let config = documents("config.yaml");
    assert_eq!(config.len(), 1);
    assert_eq!(config[0]["kind"], "ConfigMap");
    assert_eq!(config[0]["metadata"]["name"], "drogue");
    let common: Vec<(String, EnvSource)> = config[0]["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let value = v.as_str().expect("string values").to_owned();
            (k.clone(), EnvSource::Value(value))
        })
        .collect();
    let dockerfile = std::fs::read_to_string(format!("{dir}/Dockerfile")).unwrap();
    documents("services.yaml")
        .into_iter()
        .map(|service| {
            assert_eq!(service["apiVersion"], "serving.knative.dev/v1");
            assert_eq!(service["kind"], "Service");
            let name = service["metadata"]["name"].as_str().unwrap().to_owned();
            let containers = service["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap();
            assert_eq!(containers.len(), 1, "{name}");
            let container = &containers[0];
            assert_eq!(
                container["envFrom"][0]["configMapRef"]["name"], "drogue",
                "{name} reads the common settings"
            );
            let command = container["command"][0].as_str().unwrap();
            let binary = command
                .strip_prefix("/usr/local/bin/")
                .unwrap_or_else(|| panic!("{name}: {command}"))
                .to_owned();
            assert!(
                dockerfile.contains(&format!("target/release/{binary}")),
                "the image holds {binary}"
            );
            let mut env = common.clone();
            for var in container["env"].as_array().into_iter().flatten() {
                let var_name = var["name"].as_str().unwrap().to_owned();
                let source = if let Some(reference) = var.pointer("/valueFrom/secretKeyRef") {
                    assert_ne!(
                        reference["optional"], true,
                        "{name}: {var_name} from a Secret that must exist"
                    );
                    EnvSource::Secret {
                        name: reference["name"].as_str().unwrap().to_owned(),
                        key: reference["key"].as_str().unwrap().to_owned(),
                    }
                } else {
                    assert!(
                        var.get("valueFrom").is_none(),
                        "{name}: {var_name}: only secretKeyRef is understood here: {var}"
                    );
                    EnvSource::Value(var["value"].as_str().unwrap_or_default().to_owned())
                };
                env.push((var_name, source));
            }
            let labels = service["metadata"]["labels"].clone();
            (
                name,
                Service {
                    binary,
                    env,
                    labels,
                },
            )
        })
        .collect()
}

/// A Knative Service's binary and the environment it runs with here: its manifest's, the
/// table and stream of the test in place of the manifest's ones, the test's token for the
/// `drogue-internal` Secret, AWS in moto, and `$PORT`.
fn service_environment(
    services: &Services,
    service: &str,
    table: &str,
    stream: &str,
    port: u16,
) -> (String, Vec<(String, String)>) {
    let Service { binary, env, .. } = services
        .get(service)
        .unwrap_or_else(|| panic!("no Knative Service {service}"));
    let mut env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| match k.as_str() {
            "DROGUE_TABLE" => (k.clone(), table.to_owned()),
            "DROGUE_EVENT_STREAM" => (k.clone(), stream.to_owned()),
            _ => (k.clone(), v.resolve()),
        })
        .collect();
    env.extend(
        [
            ("PORT", port.to_string()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_ENDPOINT_URL", moto_url()),
            ("RUST_LOG", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v)),
    );
    (binary.clone(), env)
}

/// A binary started with `env` (and nothing of the test's environment but `PATH` and
/// `HOME`), its output captured.
fn spawn_captured(binary: &str, env: &[(String, String)]) -> tokio::process::Child {
    let path = drogue_tests::lambda::binaries()
        .get(binary)
        .unwrap_or_else(|| panic!("no binary {binary} in the workspace"));
    let mut command = tokio::process::Command::new(path);
    command.env_clear();
    for var in ["PATH", "HOME"] {
        if let Ok(value) = std::env::var(var) {
            command.env(var, value);
        }
    }
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts")
}

/// Waits until something listens on `port` (panics if `child` exits first).
async fn wait_listening(service: &str, port: u16, child: &mut tokio::process::Child) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{service} exited ({status}) instead of listening on $PORT");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("{service} does not listen on $PORT");
}

/// Starts a Knative Service's binary with its manifest's environment (see
/// [`service_environment`]); the process and its base URL.
async fn serve_on_port(
    services: &Services,
    service: &str,
    table: &str,
    stream: &str,
) -> (FunctionProcess, String) {
    let port = free_port();
    let (binary, env) = service_environment(services, service, table, stream, port);
    let mut process = start_binary(&binary, &env);
    wait_listening(service, port, &mut process.child).await;
    (process, format!("http://127.0.0.1:{port}"))
}

/// `POST /` of an internal Service with an event fixture and `authorization` (if any).
async fn post_event(
    http: &reqwest::Client,
    base: &str,
    fixture: &str,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut request = http.post(format!("{base}/")).json(&event(fixture));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    request.send().await.unwrap()
}

/// An internal Service answers `POST /` 401 with a JSON error and a bearer challenge
/// without the shared token, with a wrong one, or with other credentials.
async fn refuses_without_the_token(http: &reqwest::Client, base: &str, fixture: &str) {
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{FIXTURE_TOKEN}"))
    };
    for authorization in [
        None,
        Some("Bearer wrong-token-wrong-token-wrong-token".to_owned()),
        Some(format!("Bearer {INTERNAL_TOKEN}x")),
        Some(format!("Bearer {}", &INTERNAL_TOKEN[1..])),
        Some(format!("Basic {basic}")),
        Some(INTERNAL_TOKEN.to_owned()),
    ] {
        let answer = post_event(http, base, fixture, authorization.as_deref()).await;
        assert_eq!(
            answer.status().as_u16(),
            401,
            "{fixture}, {authorization:?}"
        );
        let challenge = answer.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"], "Unauthorized", "{body}");
        assert!(body["message"].is_string(), "{body}");
    }
}

/// Each binary, started as its Knative Service in `infra/knative/` says, serves on
/// `$PORT`; every function binary has a Service. The event-triggered ones take the shared
/// token from the `drogue-internal` Secret, answer 401 without it (the event never reaching
/// the function) and work with it; the user-facing ones need no such token.
#[tokio::test]
async fn every_knative_service_serves_on_port() {
    let services = knative_services();
    let mut binaries: Vec<&str> = services.values().map(|s| s.binary.as_str()).collect();
    binaries.sort();
    binaries.dedup();
    assert_eq!(
        binaries,
        [
            "cert-validator",
            "command",
            "http-endpoint",
            "mqtt-authorizer",
            "mqtt-ingest",
            "registry",
            "trust-anchor-sync"
        ],
        "a Service for every function binary"
    );
    let token_source = EnvSource::Secret {
        name: "drogue-internal".into(),
        key: "token".into(),
    };
    for (name, service) in &services {
        let token = service
            .env
            .iter()
            .find(|(k, _)| k == "DROGUE_INTERNAL_TOKEN")
            .map(|(_, source)| source);
        let cluster_local = service.labels["networking.knative.dev/visibility"] == "cluster-local";
        let insecure = service
            .env
            .iter()
            .any(|(k, _)| k == "DROGUE_INTERNAL_INSECURE");
        assert!(!insecure, "{name} runs without the internal token");
        if INTERNAL_SERVICES.contains(&name.as_str()) {
            assert_eq!(token, Some(&token_source), "{name} reads the Secret");
        } else {
            assert_eq!(token, None, "{name} is user-facing");
            assert!(!cluster_local, "{name} is user-facing: public");
        }
        // only the authorizer's callers run in the cluster; IoT rules and EventBridge
        // call from AWS
        assert_eq!(
            cluster_local,
            name == "drogue-mqtt-authorizer",
            "{name}: cluster-local"
        );
    }
    let store = populated().await;
    let kinesis = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&kinesis).await;
    let table = store.table();
    let http = reqwest::Client::new();
    let (user, token) = ("admin", FIXTURE_TOKEN);

    let (_registry, base) = serve_on_port(&services, "drogue-registry", table, &stream).await;
    let listed = http
        .get(format!("{base}/api/registry/v1alpha1/apps"))
        .basic_auth(user, Some(token))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);
    let apps: Value = listed.json().await.unwrap();
    assert!(
        apps.as_array()
            .unwrap()
            .iter()
            .any(|a| a["metadata"]["name"] == "from-lambda")
    );

    let (_endpoint, base) = serve_on_port(&services, "drogue-http-endpoint", table, &stream).await;
    let published = http
        .post(format!("{base}/v1/telemetry"))
        .basic_auth("device1@from-lambda", Some("hey-rodney"))
        .json(&json!({"temp": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 202);

    let (_command, base) = serve_on_port(&services, "drogue-command", table, &stream).await;
    let dropped = http
        .post(format!(
            "{base}/api/command/v1alpha1/apps/from-lambda/devices/device1?command=ping"
        ))
        .basic_auth(user, Some(token))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(dropped.status().as_u16(), 202);
    let taken = store
        .take_command("from-lambda", "device1", chrono::Utc::now())
        .await
        .unwrap()
        .expect("the command waits for the device");
    assert_eq!(taken.name, "ping");

    // event functions take their event as POST /, with the shared token
    let bearer = format!("Bearer {INTERNAL_TOKEN}");
    let post = |base: String, fixture: &'static str| {
        let http = http.clone();
        let bearer = bearer.clone();
        async move {
            refuses_without_the_token(&http, &base, fixture).await;
            let answer = post_event(&http, &base, fixture, Some(&bearer)).await;
            assert_eq!(answer.status().as_u16(), 200, "{fixture}");
            answer.json::<Value>().await.unwrap()
        }
    };
    let (_authorizer, base) =
        serve_on_port(&services, "drogue-mqtt-authorizer", table, &stream).await;
    assert_eq!(
        post(base, "mqtt-authorizer-device.json").await["isAuthenticated"],
        true
    );
    let (_ingest, base) = serve_on_port(&services, "drogue-mqtt-ingest", table, &stream).await;
    let before = kinesis_records(&kinesis, &stream).await.len();
    refuses_without_the_token(&http, &base, "mqtt-ingest-telemetry.json").await;
    assert_eq!(
        kinesis_records(&kinesis, &stream).await.len(),
        before,
        "refused telemetry reaches no stream"
    );
    assert_eq!(
        post(base, "mqtt-ingest-telemetry.json").await["outcome"],
        "accepted"
    );
    assert_eq!(kinesis_records(&kinesis, &stream).await.len(), before + 1);
    let (_rule, base) = serve_on_port(&services, "drogue-mqtt-command", table, &stream).await;
    refuses_without_the_token(&http, &base, "mqtt-command.json").await;
    assert!(
        store
            .take_command("from-lambda", "device1", chrono::Utc::now())
            .await
            .unwrap()
            .is_none(),
        "a refused command is not queued"
    );
    assert_eq!(post(base, "mqtt-command.json").await["outcome"], "accepted");
    let (_sync, base) = serve_on_port(&services, "drogue-trust-anchor-sync", table, &stream).await;
    assert_eq!(
        post(base, "trust-anchor-sync.json").await["registered"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // an event that fails is a 500 with a JSON error
    let (_validator, base) =
        serve_on_port(&services, "drogue-cert-validator", table, &stream).await;
    refuses_without_the_token(&http, &base, "iot-certificate-registered.json").await;
    let failed = post_event(
        &http,
        &base,
        "iot-certificate-registered.json",
        Some(&bearer),
    )
    .await;
    assert_eq!(failed.status().as_u16(), 500);
    assert_eq!(
        failed.json::<Value>().await.unwrap()["error"],
        "FunctionError"
    );
}

/// The Services `infra/knative/eventing.yaml` binds to its Broker with a SinkBinding.
fn sink_bound_services() -> Vec<String> {
    let documents = knative_documents("eventing.yaml");
    let broker = documents
        .iter()
        .find(|d| d["kind"] == "Broker")
        .expect("a Broker");
    let broker = broker["metadata"]["name"].as_str().unwrap();
    let mut bound: Vec<String> = documents
        .iter()
        .filter(|d| d["kind"] == "SinkBinding")
        .map(|binding| {
            assert_eq!(binding["apiVersion"], "sources.knative.dev/v1");
            let subject = &binding["spec"]["subject"];
            assert_eq!(subject["apiVersion"], "serving.knative.dev/v1");
            assert_eq!(subject["kind"], "Service");
            let sink = &binding["spec"]["sink"]["ref"];
            assert_eq!(
                (sink["kind"].as_str(), sink["name"].as_str()),
                (Some("Broker"), Some(broker))
            );
            subject["name"].as_str().unwrap().to_owned()
        })
        .collect();
    bound.sort();
    bound
}

/// Starts a Knative Service's binary with its manifest's environment and `K_SINK` (as a
/// SinkBinding sets it), without `DROGUE_EVENT_STREAM` unless `keep_stream`.
async fn serve_with_sink(
    services: &Services,
    service: &str,
    table: &str,
    stream: &str,
    sink: &str,
    keep_stream: bool,
) -> (FunctionProcess, String) {
    let port = free_port();
    let (binary, mut env) = service_environment(services, service, table, stream, port);
    if !keep_stream {
        env.retain(|(k, _)| k != "DROGUE_EVENT_STREAM");
    }
    env.push(("K_SINK".into(), sink.to_owned()));
    let mut process = start_binary(&binary, &env);
    wait_listening(service, port, &mut process.child).await;
    (process, format!("http://127.0.0.1:{port}"))
}

/// With `K_SINK` set, as `infra/knative/eventing.yaml`'s SinkBindings set it for every
/// Service that writes events, each of them delivers its events there as binary-mode
/// CloudEvents (and not to Kinesis), needs no Kinesis stream, and a sink that does not
/// take an event makes the publish fail (503 on the device endpoint).
#[tokio::test]
async fn knative_services_deliver_events_to_k_sink() {
    use drogue_tests::sink::Receiver;
    use std::time::Duration;
    let services = knative_services();
    let mut writers: Vec<String> = services
        .iter()
        .filter(|(_, s)| s.env.iter().any(|(k, _)| k == "DROGUE_EVENT_STREAM"))
        .map(|(name, _)| name.clone())
        .collect();
    writers.sort();
    assert_eq!(
        writers,
        [
            "drogue-http-endpoint",
            "drogue-mqtt-ingest",
            "drogue-trust-anchor-sync"
        ]
    );
    assert_eq!(
        sink_bound_services(),
        writers,
        "a SinkBinding for every writer"
    );

    let store = populated().await;
    let kinesis = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&kinesis).await;
    let table = store.table();
    let http = reqwest::Client::new();
    let mut sink = Receiver::start().await;
    let within = Duration::from_secs(10);

    // the device endpoint with its manifest's stream and K_SINK: K_SINK wins
    let (_endpoint, base) = serve_with_sink(
        &services,
        "drogue-http-endpoint",
        table,
        &stream,
        sink.url(),
        true,
    )
    .await;
    let publish = |body: Vec<u8>, content_type: &'static str| {
        http.post(format!("{base}/v1/telemetry"))
            .basic_auth("device1@from-lambda", Some("hey-rodney"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let published = publish(br#"{"temp": 1}"#.to_vec(), "application/json")
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 202);
    let event = sink
        .next(within)
        .await
        .expect("the telemetry reaches K_SINK");
    assert_eq!(event.header("ce-specversion"), "1.0");
    assert!(
        uuid::Uuid::parse_str(event.header("ce-id")).is_ok(),
        "{event:?}"
    );
    assert_eq!(event.header("ce-type"), "io.drogue.event.v1");
    assert_eq!(event.header("ce-source"), "drogue://from-lambda/device1");
    assert_eq!(event.header("ce-subject"), "telemetry");
    assert_eq!(event.header("ce-application"), "from-lambda");
    assert_eq!(event.header("ce-device"), "device1");
    assert_eq!(event.header("ce-sender"), "device1");
    assert_eq!(event.header("ce-instance"), "drogue");
    assert!(
        chrono::DateTime::parse_from_rfc3339(event.header("ce-time")).is_ok(),
        "{event:?}"
    );
    assert_eq!(event.header("content-type"), "application/json");
    assert_eq!(
        serde_json::from_slice::<Value>(&event.body).unwrap(),
        json!({"temp": 1})
    );
    let bytes = vec![0u8, 0xff, 0x7f, b'x'];
    let published = publish(bytes.clone(), "application/octet-stream")
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 202);
    let event = sink
        .next(within)
        .await
        .expect("binary telemetry reaches K_SINK");
    assert_eq!(event.header("content-type"), "application/octet-stream");
    assert_eq!(event.body.to_vec(), bytes);
    assert!(
        kinesis_records(&kinesis, &stream).await.is_empty(),
        "nothing went to Kinesis"
    );
    // a sink that refuses: the device is told to come back later
    sink.answer(500);
    let refused = publish(b"{}".to_vec(), "application/json").await.unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    assert!(sink.next(within).await.is_some());
    sink.answer(202);

    // the event functions, without a Kinesis stream at all
    let bearer = format!("Bearer {INTERNAL_TOKEN}");
    let (_ingest, base) = serve_with_sink(
        &services,
        "drogue-mqtt-ingest",
        table,
        &stream,
        sink.url(),
        false,
    )
    .await;
    let answer = post_event(&http, &base, "mqtt-ingest-telemetry.json", Some(&bearer)).await;
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.json::<Value>().await.unwrap()["outcome"], "accepted");
    let event = sink
        .next(within)
        .await
        .expect("MQTT telemetry reaches K_SINK");
    assert_eq!(event.header("ce-type"), "io.drogue.event.v1");
    assert_eq!(event.header("ce-device"), "device1");
    assert_eq!(event.header("ce-subject"), "telemetry");
    assert_eq!(
        serde_json::from_slice::<Value>(&event.body).unwrap(),
        json!({"temp": 21.5})
    );

    let (_sync, base) = serve_with_sink(
        &services,
        "drogue-trust-anchor-sync",
        table,
        &stream,
        sink.url(),
        false,
    )
    .await;
    let answer = post_event(&http, &base, "trust-anchor-sync.json", Some(&bearer)).await;
    assert_eq!(answer.status().as_u16(), 200);
    let event = sink
        .next(within)
        .await
        .expect("the registry change reaches K_SINK");
    assert_eq!(event.header("ce-type"), "io.drogue.registry.v1");
    assert_eq!(event.header("ce-subject"), "applications");
    assert_eq!(event.header("ce-source"), "drogue://from-lambda");
    assert_eq!(event.header("ce-change"), "created");
    assert_eq!(event.header("content-type"), "application/json");
    let data: Value = serde_json::from_slice(&event.body).unwrap();
    assert_eq!(data["change"], "created");
    assert_eq!(data["name"], "from-lambda");
    assert!(kinesis_records(&kinesis, &stream).await.is_empty());
}

/// Each event-triggered Service started from its manifest without the Secret's token (and
/// no insecure flag) refuses to start, naming the variable; with
/// `DROGUE_INTERNAL_INSECURE=true` it starts (with a warning) and serves without a token;
/// with the token in a file (`DROGUE_INTERNAL_TOKEN_FILE`, a mounted Secret) it requires
/// that token.
#[tokio::test]
async fn internal_services_need_a_token_to_start() {
    let services = knative_services();
    let without_token = |service: &str, table: &str, stream: &str, port: u16| {
        let (binary, mut env) = service_environment(&services, service, table, stream, port);
        let before = env.len();
        env.retain(|(k, _)| k != "DROGUE_INTERNAL_TOKEN");
        assert_eq!(env.len(), before - 1, "{service} has the token variable");
        (binary, env)
    };
    for service in INTERNAL_SERVICES {
        let (binary, env) = without_token(service, "drogue-unused", "drogue-unused", free_port());
        let child = spawn_captured(&binary, &env);
        let output =
            tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
                .await
                .unwrap_or_else(|_| panic!("{service} started without a token"))
                .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{service}: {output:?}");
        assert!(
            stderr.contains("DROGUE_INTERNAL_TOKEN is not set"),
            "{service}: {stderr}"
        );
    }

    let store = populated().await;
    let kinesis = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&kinesis).await;
    let http = reqwest::Client::new();

    // insecure: starts, says so, serves anyone
    let port = free_port();
    let (binary, mut env) = without_token("drogue-mqtt-ingest", store.table(), &stream, port);
    env.push(("DROGUE_INTERNAL_INSECURE".into(), "true".into()));
    let mut child = spawn_captured(&binary, &env);
    wait_listening("drogue-mqtt-ingest", port, &mut child).await;
    let base = format!("http://127.0.0.1:{port}");
    let answer = post_event(&http, &base, "mqtt-ingest-telemetry.json", None).await;
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.json::<Value>().await.unwrap()["outcome"], "accepted");
    assert_eq!(kinesis_records(&kinesis, &stream).await.len(), 1);
    child.start_kill().unwrap();
    let output = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("DROGUE_INTERNAL_INSECURE=true")),
        "a warning at start: {log}"
    );

    // the token from a file, as a mounted Secret gives it (its final newline not part of it)
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{INTERNAL_TOKEN}\n")).unwrap();
    let port = free_port();
    let (binary, mut env) = without_token("drogue-mqtt-authorizer", store.table(), &stream, port);
    env.push((
        "DROGUE_INTERNAL_TOKEN_FILE".into(),
        file.path().to_str().unwrap().into(),
    ));
    let mut child = spawn_captured(&binary, &env);
    wait_listening("drogue-mqtt-authorizer", port, &mut child).await;
    let base = format!("http://127.0.0.1:{port}");
    refuses_without_the_token(&http, &base, "mqtt-authorizer-device.json").await;
    let answer = post_event(
        &http,
        &base,
        "mqtt-authorizer-device.json",
        Some(&format!("Bearer {INTERNAL_TOKEN}")),
    )
    .await;
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(
        answer.json::<Value>().await.unwrap()["isAuthenticated"],
        true
    );
}

/// Every payload in `events/` is fed to a binary by a test of this file.
#[test]
fn every_event_file_is_used() {
    let source = [include_str!("main.rs"), include_str!("fan_out.rs")].concat();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../events");
    let mut unused = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".json") && !source.contains(&format!("\"{name}\"")) {
            unused.push(name);
        }
    }
    assert!(
        unused.is_empty(),
        "events not fed to any binary: {unused:?}"
    );
}
