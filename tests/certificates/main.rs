//! X.509 devices on AWS IoT Core, against moto's IoT control plane, DynamoDB and Kinesis:
//! the registry's trust anchors follow it into IoT Core as CA certificates (driven by the
//! table's stream records), device certificates IoT Core registered are validated just
//! in time (activated with the device's policy, or revoked), and revoked when their
//! device goes or changes; the same stream records become registry change events.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_iot::types::{CaCertificateStatus, CertificateStatus};
use drogue_iot_certificates::anchors::{TrustAnchorSync, fingerprint};
use drogue_iot_certificates::changes::RegistryChanges;
use drogue_iot_certificates::revocation::Revocation;
use drogue_iot_certificates::stream::StreamConsumer;
use drogue_iot_certificates::validator::{
    CertificateValidator, Location, NO_CLIENT_ID, TOO_MANY_DOCUMENTS,
};
use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::events::kinesis::KinesisSink;
use drogue_shared::model::AppName;
use drogue_shared::registry::Registry;
use drogue_shared::runtime;
use drogue_shared::store::dynamodb::DynamoStore;
use drogue_tests::backend::{
    dynamo_client, fresh_kinesis_stream, iot_client, kinesis_client, kinesis_records, moto_url,
};
use drogue_tests::pki::TestCa;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Hands a JSON batch to the stream consumer as the runtime does (typed in, JSON out).
trait HandleBatch {
    async fn handle_json(&self, event: Value) -> anyhow::Result<Value>;
}

impl HandleBatch for StreamConsumer {
    async fn handle_json(&self, event: Value) -> anyhow::Result<Value> {
        let handler = |event, _| {
            let consumer = self.clone();
            async move { consumer.handle(event).await }
        };
        Ok(runtime::handle_event(&handler, event, runtime::EventContext::default()).await?)
    }
}

/// Hands a JSON event to the validator as the runtime does (typed in, JSON out).
trait HandleRegistration {
    async fn handle_json(&self, event: Value, location: &Location) -> anyhow::Result<Value>;
}

impl HandleRegistration for CertificateValidator {
    async fn handle_json(&self, event: Value, location: &Location) -> anyhow::Result<Value> {
        let handler = |event, _| {
            let validator = self.clone();
            let location = location.clone();
            async move { validator.handle(event, &location).await }
        };
        Ok(runtime::handle_event(&handler, event, runtime::EventContext::default()).await?)
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

struct Setup {
    store: DynamoStore,
    dynamo: aws_sdk_dynamodb::Client,
    table: String,
    iot: aws_sdk_iot::Client,
    registry: Registry,
    admin: Principal,
    /// The stream's consumer, writing change events to `stream` in `kinesis`.
    consumer: StreamConsumer,
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
}

async fn setup() -> Setup {
    let table = format!("drogue-test-{}", uuid::Uuid::new_v4());
    let dynamo = dynamo_client(&moto_url());
    let store = DynamoStore::new(dynamo.clone(), &table);
    store.create_table().await.unwrap();
    let mut admin = Principal::user("admin");
    admin.roles.push(AccessControl::DEFAULT_ADMIN_ROLE.into());
    let iot = iot_client(&moto_url());
    let kinesis = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&kinesis).await;
    let sink = Arc::new(KinesisSink::new(kinesis.clone(), &stream));
    let consumer = StreamConsumer::new(
        TrustAnchorSync::new(iot.clone(), store.clone()),
        Revocation::new(iot.clone(), store.clone()),
        RegistryChanges::new(store.clone(), sink, "drogue-test"),
    );
    Setup {
        registry: Registry::new(Arc::new(store.clone()), AccessControl::default()),
        store,
        dynamo,
        table,
        iot,
        admin,
        consumer,
        kinesis,
        stream,
    }
}

/// An item as a stream record's image (DynamoDB JSON).
fn image(item: &HashMap<String, AttributeValue>) -> Value {
    item.iter()
        .map(|(k, v)| {
            let v = match v {
                AttributeValue::S(s) => json!({ "S": s }),
                AttributeValue::Bool(b) => json!({ "BOOL": b }),
                AttributeValue::N(n) => json!({ "N": n }),
                other => panic!("an unexpected attribute {other:?}"),
            };
            (k.clone(), v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

impl Setup {
    async fn app_item(&self, app: &str) -> Option<HashMap<String, AttributeValue>> {
        self.dynamo
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(format!("APP#{app}")))
            .key("sk", AttributeValue::S("#APP".into()))
            .send()
            .await
            .unwrap()
            .item
    }

    async fn item(&self, pk: &str, sk: &str) -> Option<HashMap<String, AttributeValue>> {
        self.dynamo
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .send()
            .await
            .unwrap()
            .item
    }

    async fn device_item(
        &self,
        app: &str,
        device: &str,
    ) -> Option<HashMap<String, AttributeValue>> {
        self.item(&format!("APP#{app}"), &format!("DEV#{device}"))
            .await
    }

    /// Every item of an application's partition whose sort key starts with `prefix`.
    async fn items(&self, app: &str, prefix: &str) -> Vec<HashMap<String, AttributeValue>> {
        self.dynamo
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", AttributeValue::S(format!("APP#{app}")))
            .expression_attribute_values(":prefix", AttributeValue::S(prefix.into()))
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default()
    }

    /// A stream record of an item's change, as Lambda delivers it.
    fn record(
        &self,
        before: Option<&HashMap<String, AttributeValue>>,
        after: Option<&HashMap<String, AttributeValue>>,
    ) -> Value {
        let mut event = fixture("trust-anchor-sync.json");
        let record = &mut event["Records"][0];
        record["eventID"] = json!(uuid::Uuid::new_v4().simple().to_string());
        let name = match (before, after) {
            (None, Some(_)) => "INSERT",
            (Some(_), Some(_)) => "MODIFY",
            _ => "REMOVE",
        };
        record["eventName"] = json!(name);
        let change = &mut record["dynamodb"];
        let item = after.or(before).unwrap();
        change["Keys"] = json!({"pk": {"S": item["pk"].as_s().unwrap()}, "sk": {"S": item["sk"].as_s().unwrap()}});
        let change = change.as_object_mut().unwrap();
        change.remove("NewImage");
        change.remove("OldImage");
        if let Some(after) = after {
            change.insert("NewImage".into(), image(after));
        }
        if let Some(before) = before {
            change.insert("OldImage".into(), image(before));
        }
        event
    }

    async fn create_app(&self, name: &str, anchors: &[&TestCa]) {
        let anchors: Vec<Value> = anchors
            .iter()
            .map(|ca| json!({"certificate": ca.anchor()}))
            .collect();
        let app =
            json!({"metadata": {"name": name}, "spec": {"trustAnchors": {"anchors": anchors}}});
        self.registry
            .create_application(&self.admin, serde_json::from_value(app).unwrap())
            .await
            .unwrap();
    }

    async fn set_anchors(&self, name: &str, anchors: &[&TestCa]) {
        let anchors: Vec<Value> = anchors
            .iter()
            .map(|ca| json!({"certificate": ca.anchor()}))
            .collect();
        let app =
            json!({"metadata": {"name": name}, "spec": {"trustAnchors": {"anchors": anchors}}});
        self.registry
            .update_application(
                &self.admin,
                &AppName::parse(name).unwrap(),
                serde_json::from_value(app).unwrap(),
            )
            .await
            .unwrap();
    }

    async fn create_device(&self, app: &str, device: Value) {
        self.registry
            .create_device(
                &self.admin,
                &AppName::parse(app).unwrap(),
                serde_json::from_value(device).unwrap(),
            )
            .await
            .unwrap();
    }

    async fn ca_status(&self, id: &str) -> Option<CaCertificateStatus> {
        match self
            .iot
            .describe_ca_certificate()
            .certificate_id(id)
            .send()
            .await
        {
            Ok(out) => out.certificate_description.unwrap().status,
            Err(e) => {
                assert_eq!(e.raw_response().unwrap().status().as_u16(), 404, "{e:?}");
                None
            }
        }
    }
}

fn ca_der(ca: &TestCa) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn trust_anchors_follow_the_registry_into_iot_core() {
    let s = setup().await;
    let sync = &s.consumer;
    let (ca1, ca2) = (
        TestCa::new("app1", "Anchor One"),
        TestCa::new("app1", "Anchor Two"),
    );

    // an application with a trust anchor: registered, active
    s.create_app("app1", &[&ca1]).await;
    let created = s.app_item("app1").await.unwrap();
    let out = sync
        .handle_json(s.record(None, Some(&created)))
        .await
        .unwrap();
    let first = out["registered"][0].as_str().unwrap().to_owned();
    assert_eq!(s.ca_status(&first).await, Some(CaCertificateStatus::Active));
    let described = s
        .iot
        .describe_ca_certificate()
        .certificate_id(&first)
        .send()
        .await
        .unwrap();
    let pem = described
        .certificate_description
        .unwrap()
        .certificate_pem
        .unwrap();
    use rustls_pki_types::pem::PemObject;
    assert_eq!(
        rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec(),
        ca_der(&ca1)
    );
    let known = s
        .store
        .registered_ca(&fingerprint(&ca_der(&ca1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            known.certificate_id.as_deref(),
            known.applications.as_slice()
        ),
        (Some(first.as_str()), ["app1".to_owned()].as_slice())
    );

    // the same record again changes nothing
    let again = sync
        .handle_json(s.record(None, Some(&created)))
        .await
        .unwrap();
    assert_eq!(again["registered"], json!([first]));

    // a second anchor is added, the first removed
    s.set_anchors("app1", &[&ca2]).await;
    let changed = s.app_item("app1").await.unwrap();
    let out = sync
        .handle_json(s.record(Some(&created), Some(&changed)))
        .await
        .unwrap();
    let second = out["registered"][0].as_str().unwrap().to_owned();
    assert_eq!(out["deregistered"], json!([first]));
    assert_eq!(s.ca_status(&first).await, None, "deleted");
    assert_eq!(
        s.ca_status(&second).await,
        Some(CaCertificateStatus::Active)
    );
    assert!(
        s.store
            .registered_ca(&fingerprint(&ca_der(&ca1)))
            .await
            .unwrap()
            .is_none()
    );

    // an unrelated change of the application leaves the anchor alone
    let out = sync
        .handle_json(s.record(Some(&changed), Some(&changed)))
        .await
        .unwrap();
    assert_eq!(
        (&out["registered"], &out["deregistered"]),
        (&json!([]), &json!([]))
    );

    // the application goes away: so does its anchor
    s.registry
        .delete_application(
            &s.admin,
            &AppName::parse("app1").unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    let out = sync
        .handle_json(s.record(Some(&changed), None))
        .await
        .unwrap();
    assert_eq!(out["deregistered"], json!([second]));
    assert_eq!(s.ca_status(&second).await, None);
    // and again: nothing to do
    let out = sync
        .handle_json(s.record(Some(&changed), None))
        .await
        .unwrap();
    assert_eq!(out["deregistered"], json!([]));

    // the fixture, a record as Lambda delivers it
    let out = sync
        .handle_json(fixture("trust-anchor-sync.json"))
        .await
        .unwrap();
    let id = out["registered"][0].as_str().unwrap().to_owned();
    assert_eq!(s.ca_status(&id).await, Some(CaCertificateStatus::Active));
    let lambda_ca = std::fs::read(format!(
        "{}/testdata/pki/lambda-ca.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let lambda_ca = rustls_pki_types::CertificateDer::from_pem_slice(&lambda_ca).unwrap();
    let known = s
        .store
        .registered_ca(&fingerprint(&lambda_ca))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (known.certificate_id, known.applications),
        (Some(id), vec!["from-lambda".to_owned()])
    );

    // other items (devices, tokens) are no concern
    let mut device = s.record(None, Some(&changed));
    device["Records"][0]["dynamodb"]["NewImage"]["sk"] = json!({"S": "DEV#d1"});
    let out = sync.handle_json(device).await.unwrap();
    assert_eq!(
        (&out["registered"], &out["deregistered"]),
        (&json!([]), &json!([]))
    );
}

#[tokio::test]
async fn device_certificates_are_validated_just_in_time() {
    let s = setup().await;
    let sync = &s.consumer;
    let validator =
        CertificateValidator::new(s.iot.clone(), s.store.clone(), "drogue-test").unwrap();
    let location = Location {
        partition: "aws".into(),
        region: "us-east-1".into(),
    };
    let (ca1, ca2) = (
        TestCa::new("app1", "App 1 CA"),
        TestCa::new("app2", "App 2 CA"),
    );
    s.create_app("app1", &[&ca1]).await;
    s.create_app("app2", &[&ca2]).await;
    for (app, device) in [
        (
            "app1",
            json!({"metadata": {"name": "device-1"}, "spec": {"alias": ["dev-one"]}}),
        ),
        ("app1", json!({"metadata": {"name": "dev2"}, "spec": {}})),
        ("app1", json!({"metadata": {"name": "gw"}, "spec": {}})),
        (
            "app1",
            json!({"metadata": {"name": "behind"}, "spec": {"gatewaySelector": {"matchNames": ["gw"]}}}),
        ),
        (
            "app2",
            json!({"metadata": {"name": "device-1"}, "spec": {}}),
        ),
    ] {
        s.create_device(app, device).await;
    }
    let mut ca_ids = HashMap::new();
    for app in ["app1", "app2"] {
        let item = s.app_item(app).await.unwrap();
        let out = sync.handle_json(s.record(None, Some(&item))).await.unwrap();
        ca_ids.insert(app, out["registered"][0].as_str().unwrap().to_owned());
    }

    // IoT Core registers a device certificate at its first connection; then the event
    let registered = |cert_pem: String, ca: &'static str| {
        let (iot, ca_id) = (s.iot.clone(), ca_ids[ca].clone());
        async move {
            let ca_pem = iot
                .describe_ca_certificate()
                .certificate_id(&ca_id)
                .send()
                .await
                .unwrap()
                .certificate_description
                .unwrap()
                .certificate_pem
                .unwrap();
            let out = iot
                .register_certificate()
                .certificate_pem(cert_pem)
                .ca_certificate_pem(ca_pem)
                .status(CertificateStatus::PendingActivation)
                .send()
                .await
                .unwrap();
            let mut event = fixture("iot-certificate-registered.json");
            event["certificateId"] = json!(out.certificate_id.unwrap());
            event["caCertificateId"] = json!(ca_id);
            (event, out.certificate_arn.unwrap())
        }
    };
    let status = |id: String| {
        let iot = s.iot.clone();
        async move {
            iot.describe_certificate()
                .certificate_id(id)
                .send()
                .await
                .unwrap()
                .certificate_description
                .unwrap()
                .status
                .unwrap()
        }
    };

    // a valid certificate: activated, with the device's policy attached
    let (event, arn) = registered(ca1.issue("app1", "device-1", 2025, 2099).cert_pem, "app1").await;
    let id = event["certificateId"].as_str().unwrap().to_owned();
    let out = validator
        .handle_json(event.clone(), &location)
        .await
        .unwrap();
    assert_eq!(out["outcome"], "activated", "{out}");
    assert_eq!(
        (out["application"].as_str(), out["device"].as_str()),
        (Some("app1"), Some("device-1"))
    );
    assert_eq!(status(id.clone()).await, CertificateStatus::Active);
    let attached = s
        .iot
        .list_attached_policies()
        .target(&arn)
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = attached
        .policies()
        .iter()
        .filter_map(|p| p.policy_name())
        .collect();
    assert_eq!(names, vec![validator.policy_name(&id, "app1", 0).as_str()]);
    let document = s.policy_document(names[0]).await;
    let document: Value = serde_json::from_str(&document).unwrap();
    let text = document.to_string();
    for allowed in [
        "arn:aws:iot:us-east-1:123456789012:client/device-1@app1",
        "arn:aws:iot:us-east-1:123456789012:client/dev-one@app1",
        "arn:aws:iot:us-east-1:123456789012:topic/dt/app1/device-1/*",
        "arn:aws:iot:us-east-1:123456789012:topicfilter/cmd/app1/device-1/*",
    ] {
        assert!(text.contains(allowed), "{allowed} in {text}");
    }
    for other in ["dev2", "app2", "behind"] {
        assert!(!text.contains(other), "{other} in {text}");
    }
    // the same event again (a retry) leaves it so
    assert_eq!(
        validator.handle_json(event, &location).await.unwrap()["outcome"],
        "unchanged"
    );
    assert_eq!(status(id).await, CertificateStatus::Active);

    // a gateway's certificate covers the devices behind it
    let (event, _) = registered(ca1.issue("app1", "gw", 2025, 2099).cert_pem, "app1").await;
    let out = validator.handle_json(event, &location).await.unwrap();
    let policy = s
        .policy_document(out["policies"][0].as_str().unwrap())
        .await;
    assert!(policy.contains("topic/dt/app1/behind/*"), "{policy}");

    // expired, by another application's CA (the issuer names the application), of an
    // unknown device: revoked
    for (cert, ca, why) in [
        (ca1.issue("app1", "device-1", 2000, 2001), "app1", "expired"),
        (
            ca2.issue("app1", "dev2", 2025, 2099),
            "app2",
            "app2's CA, for a device of app1",
        ),
        (
            ca1.issue("app1", "device-9", 2025, 2099),
            "app1",
            "unknown device",
        ),
        (
            ca2.issue("app2", "nobody", 2025, 2099),
            "app2",
            "unknown device of app2",
        ),
    ] {
        let (event, arn) = registered(cert.cert_pem, ca).await;
        let id = event["certificateId"].as_str().unwrap().to_owned();
        let out = validator.handle_json(event, &location).await.unwrap();
        assert_eq!(out["outcome"], "revoked", "{why}: {out}");
        assert_eq!(status(id).await, CertificateStatus::Revoked, "{why}");
        let attached = s
            .iot
            .list_attached_policies()
            .target(&arn)
            .send()
            .await
            .unwrap();
        assert!(attached.policies().is_empty(), "{why}");
    }
    // and the valid device of app2 gets app2's policy
    let (event, _) = registered(ca2.issue("app2", "device-1", 2025, 2099).cert_pem, "app2").await;
    let out = validator.handle_json(event, &location).await.unwrap();
    assert_eq!(
        (out["outcome"].as_str(), out["application"].as_str()),
        (Some("activated"), Some("app2"))
    );
}

#[tokio::test]
async fn an_unreachable_registry_leaves_the_certificate_pending() {
    let s = setup().await;
    let broken = DynamoStore::new(dynamo_client("http://127.0.0.1:9"), "nowhere");
    let validator = CertificateValidator::new(s.iot.clone(), broken, "drogue-test").unwrap();
    let ca = TestCa::new("app1", "Unreachable CA");
    let out = s
        .iot
        .register_certificate_without_ca()
        .certificate_pem(ca.issue("app1", "device-1", 2025, 2099).cert_pem)
        .status(CertificateStatus::PendingActivation)
        .send()
        .await
        .unwrap();
    let id = out.certificate_id.unwrap();
    let mut event = fixture("iot-certificate-registered.json");
    event["certificateId"] = json!(id);
    let location = Location {
        partition: "aws".into(),
        region: "us-east-1".into(),
    };
    assert!(validator.handle_json(event, &location).await.is_err());
    let described = s
        .iot
        .describe_certificate()
        .certificate_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.certificate_description.unwrap().status,
        Some(CertificateStatus::PendingActivation)
    );
    // a bad prefix is refused at start
    assert!(CertificateValidator::new(s.iot.clone(), s.store.clone(), "no spaces").is_err());
}

impl Setup {
    async fn update_device(&self, app: &str, device: Value) {
        let name = device["metadata"]["name"].as_str().unwrap().to_owned();
        self.registry
            .update_device(
                &self.admin,
                &AppName::parse(app).unwrap(),
                &drogue_shared::model::DeviceName::parse(&name).unwrap(),
                serde_json::from_value(device).unwrap(),
            )
            .await
            .unwrap();
    }

    /// Registers the CA certificates of the applications' anchors: their IoT ids.
    async fn register_anchors(&self, apps: &[&'static str]) -> HashMap<&'static str, String> {
        let mut ids = HashMap::new();
        for &app in apps {
            let item = self.app_item(app).await.unwrap();
            let out = self
                .consumer
                .handle_json(self.record(None, Some(&item)))
                .await
                .unwrap();
            ids.insert(app, out["registered"][0].as_str().unwrap().to_owned());
        }
        ids
    }

    /// A certificate of a CA as IoT Core registers it at the first connection, then
    /// validated (and activated): its id and ARN.
    async fn activate(
        &self,
        validator: &CertificateValidator,
        ca_id: &str,
        cert_pem: String,
    ) -> (String, String) {
        let (id, arn) = self.register(ca_id, cert_pem).await;
        self.validate(validator, ca_id, &id, &arn).await;
        (id, arn)
    }

    /// Registers a device certificate issued by a trust anchor (`ca_id`) as IoT Core does
    /// it for a device's first connection: pending activation.
    async fn register(&self, ca_id: &str, cert_pem: String) -> (String, String) {
        let ca_pem = self
            .iot
            .describe_ca_certificate()
            .certificate_id(ca_id)
            .send()
            .await
            .unwrap()
            .certificate_description
            .unwrap()
            .certificate_pem
            .unwrap();
        let out = self
            .iot
            .register_certificate()
            .certificate_pem(cert_pem)
            .ca_certificate_pem(ca_pem)
            .status(CertificateStatus::PendingActivation)
            .send()
            .await
            .unwrap();
        (out.certificate_id.unwrap(), out.certificate_arn.unwrap())
    }

    /// The validator's handling of a registered certificate: activated.
    async fn validate(&self, validator: &CertificateValidator, ca_id: &str, id: &str, arn: &str) {
        let out = self.judged(validator, ca_id, id).await;
        assert_eq!(out["outcome"], "activated", "{out}");
        assert_eq!(self.state(id, arn).await.0, CertificateStatus::Active);
    }

    /// The validator's answer to a registered certificate's event.
    async fn judged(&self, validator: &CertificateValidator, ca_id: &str, id: &str) -> Value {
        let mut event = fixture("iot-certificate-registered.json");
        event["certificateId"] = json!(id);
        event["caCertificateId"] = json!(ca_id);
        let location = Location {
            partition: "aws".into(),
            region: "us-east-1".into(),
        };
        validator.handle_json(event, &location).await.unwrap()
    }

    /// A certificate's status and the names of the policies attached to it.
    async fn state(&self, id: &str, arn: &str) -> (CertificateStatus, Vec<String>) {
        let status = self
            .iot
            .describe_certificate()
            .certificate_id(id)
            .send()
            .await
            .unwrap()
            .certificate_description
            .unwrap()
            .status
            .unwrap();
        let attached = self
            .iot
            .list_attached_policies()
            .target(arn)
            .send()
            .await
            .unwrap();
        let names = attached
            .policies()
            .iter()
            .filter_map(|p| p.policy_name().map(str::to_owned))
            .collect();
        (status, names)
    }

    /// Whether IoT Core still knows a policy.
    async fn policy_exists(&self, name: &str) -> bool {
        self.iot.get_policy().policy_name(name).send().await.is_ok()
    }

    /// A policy's document as IoT Core keeps it.
    async fn policy_document(&self, name: &str) -> String {
        self.iot
            .get_policy()
            .policy_name(name)
            .send()
            .await
            .unwrap()
            .policy_document
            .unwrap()
    }
}

#[tokio::test]
async fn certificates_are_revoked_when_their_device_goes_or_changes() {
    let s = setup().await;
    let validator =
        CertificateValidator::new(s.iot.clone(), s.store.clone(), "drogue-rev").unwrap();
    let (ca1, ca2) = (
        TestCa::new("app1", "Revocation CA 1"),
        TestCa::new("app2", "Revocation CA 2"),
    );
    s.create_app("app1", &[&ca1]).await;
    s.create_app("app2", &[&ca2]).await;
    let pinned = ca1.issue("app1", "pinned", 2025, 2099);
    for (app, device) in [
        ("app1", json!({"metadata": {"name": "gone"}, "spec": {}})),
        ("app1", json!({"metadata": {"name": "off"}, "spec": {}})),
        ("app1", json!({"metadata": {"name": "kept"}, "spec": {}})),
        (
            "app1",
            json!({"metadata": {"name": "pinned"}, "spec": {"authentication": {"credentials": [
                {"cert": pinned.cert_pem}, {"pass": "first"}
            ]}}}),
        ),
        ("app1", json!({"metadata": {"name": "gw"}, "spec": {}})),
        (
            "app1",
            json!({"metadata": {"name": "behind"}, "spec": {"gatewaySelector": {"matchNames": ["gw"]}}}),
        ),
        ("app2", json!({"metadata": {"name": "other"}, "spec": {}})),
    ] {
        s.create_device(app, device).await;
    }
    let cas = s.register_anchors(&["app1", "app2"]).await;
    let mut certs = HashMap::new();
    for (app, device) in [
        ("app1", "gone"),
        ("app1", "off"),
        ("app1", "kept"),
        ("app1", "gw"),
        ("app2", "other"),
    ] {
        let ca = if app == "app1" { &ca1 } else { &ca2 };
        let issued = ca.issue(app, device, 2025, 2099).cert_pem;
        certs.insert(device, s.activate(&validator, &cas[app], issued).await);
    }
    certs.insert(
        "pinned",
        s.activate(&validator, &cas["app1"], pinned.cert_pem.clone())
            .await,
    );
    // each activation is recorded for its device, with what its policy covers
    let recorded = s.items("app1", "IOTCERT#gw#").await;
    assert_eq!(recorded.len(), 1);
    let record: Value = serde_json::from_str(recorded[0]["data"].as_s().unwrap()).unwrap();
    assert_eq!(record["certificateId"], json!(certs["gw"].0));
    assert_eq!(record["covers"], json!(["behind"]));
    let revoked = |device: &str| {
        let (id, arn) = certs[device].clone();
        let s = &s;
        async move {
            let (status, attached) = s.state(&id, &arn).await;
            status == CertificateStatus::Revoked && attached.is_empty()
        }
    };
    let active = |device: &str| {
        let (id, arn) = certs[device].clone();
        let s = &s;
        async move {
            let (status, attached) = s.state(&id, &arn).await;
            status == CertificateStatus::Active && attached.len() == 1
        }
    };

    // a device deleted: its certificate revoked, its policy detached and deleted
    let before = s.device_item("app1", "gone").await.unwrap();
    s.registry
        .delete_device(
            &s.admin,
            &AppName::parse("app1").unwrap(),
            &drogue_shared::model::DeviceName::parse("gone").unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    let deleted = s.record(Some(&before), None);
    let out = s.consumer.handle_json(deleted.clone()).await.unwrap();
    assert_eq!(out["revoked"], json!([certs["gone"].0]), "{out}");
    assert_eq!(out["batchItemFailures"], json!([]));
    assert!(revoked("gone").await);
    let policy = validator.policy_name(&certs["gone"].0, "app1", 0);
    assert!(!s.policy_exists(&policy).await, "{policy} deleted");
    assert!(s.items("app1", "IOTCERT#gone#").await.is_empty());
    // the same record again changes nothing
    let out = s.consumer.handle_json(deleted).await.unwrap();
    assert_eq!(out["revoked"], json!([]));
    assert!(revoked("gone").await);

    // a device disabled: likewise; enabled again, its certificate stays revoked
    let before = s.device_item("app1", "off").await.unwrap();
    s.update_device(
        "app1",
        json!({"metadata": {"name": "off"}, "spec": {"core": {"disabled": true}}}),
    )
    .await;
    let disabled = s.device_item("app1", "off").await.unwrap();
    let out = s
        .consumer
        .handle_json(s.record(Some(&before), Some(&disabled)))
        .await
        .unwrap();
    assert_eq!(out["revoked"], json!([certs["off"].0]), "{out}");
    assert!(revoked("off").await);
    s.update_device(
        "app1",
        json!({"metadata": {"name": "off"}, "spec": {"core": {"disabled": false}}}),
    )
    .await;
    let enabled = s.device_item("app1", "off").await.unwrap();
    let out = s
        .consumer
        .handle_json(s.record(Some(&disabled), Some(&enabled)))
        .await
        .unwrap();
    assert_eq!(out["revoked"], json!([]));
    assert!(revoked("off").await);

    // a device that keeps its certificate credential keeps its certificate
    let before = s.device_item("app1", "pinned").await.unwrap();
    s.update_device(
        "app1",
        json!({"metadata": {"name": "pinned"}, "spec": {"authentication": {"credentials": [
            {"cert": pinned.cert_pem}, {"pass": "second"}
        ]}}}),
    )
    .await;
    let after = s.device_item("app1", "pinned").await.unwrap();
    let out = s
        .consumer
        .handle_json(s.record(Some(&before), Some(&after)))
        .await
        .unwrap();
    assert_eq!(out["revoked"], json!([]));
    assert!(active("pinned").await);
    // and loses it with the credential (another certificate pinned in its place)
    let replacement = ca1.issue("app1", "pinned", 2025, 2099).cert_pem;
    s.update_device(
        "app1",
        json!({"metadata": {"name": "pinned"}, "spec": {"authentication": {"credentials": [
            {"cert": replacement}, {"pass": "second"}
        ]}}}),
    )
    .await;
    let replaced = s.device_item("app1", "pinned").await.unwrap();
    let out = s
        .consumer
        .handle_json(s.record(Some(&after), Some(&replaced)))
        .await
        .unwrap();
    assert_eq!(out["revoked"], json!([certs["pinned"].0]), "{out}");
    assert!(revoked("pinned").await);

    // a device leaves its gateway: the gateway's certificate, whose policy covers it,
    // is revoked
    let before = s.device_item("app1", "behind").await.unwrap();
    s.update_device("app1", json!({"metadata": {"name": "behind"}, "spec": {}}))
        .await;
    let after = s.device_item("app1", "behind").await.unwrap();
    let out = s
        .consumer
        .handle_json(s.record(Some(&before), Some(&after)))
        .await
        .unwrap();
    assert_eq!(out["revoked"], json!([certs["gw"].0]), "{out}");
    assert!(revoked("gw").await);

    // untouched devices keep theirs
    assert!(active("kept").await);
    assert!(active("other").await);

    // the application deleted: its records go with its partition, and so do the
    // certificates left (the stream's REMOVE records of the records, then of the
    // application)
    let records = s.items("app1", "IOTCERT#").await;
    assert_eq!(records.len(), 1, "only kept's certificate is left");
    let app = s.app_item("app1").await.unwrap();
    s.registry
        .delete_application(
            &s.admin,
            &AppName::parse("app1").unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    assert!(s.items("app1", "IOTCERT#").await.is_empty());
    let out = s
        .consumer
        .handle_json(s.record(Some(&records[0]), None))
        .await
        .unwrap();
    assert_eq!(out["revoked"], json!([certs["kept"].0]), "{out}");
    assert!(revoked("kept").await);
    let out = s
        .consumer
        .handle_json(s.record(Some(&app), None))
        .await
        .unwrap();
    assert_eq!(out["revoked"], json!([]));
    assert!(
        active("other").await,
        "another application's certificate stays"
    );
}

#[tokio::test]
async fn a_certificate_is_revoked_when_its_device_loses_a_name_it_held() {
    let s = setup().await;
    let validator =
        CertificateValidator::new(s.iot.clone(), s.store.clone(), "drogue-names").unwrap();
    let ca = TestCa::new("names", "Names CA");
    s.create_app("names", &[&ca]).await;
    s.create_device(
        "names",
        json!({"metadata": {"name": "sensor"}, "spec": {"alias": ["line-1"]}}),
    )
    .await;
    s.create_device("names", json!({"metadata": {"name": "plain"}, "spec": {}}))
        .await;
    let cas = s.register_anchors(&["names"]).await;
    let issue = |cn: &str| ca.issue("names", cn, 2025, 2099).cert_pem;
    let status = |(id, arn): &(String, String)| {
        let (id, arn) = (id.clone(), arn.clone());
        let s = &s;
        async move { s.state(&id, &arn).await.0 }
    };
    let change = async |spec: Value| {
        let before = s.device_item("names", "sensor").await.unwrap();
        s.update_device(
            "names",
            json!({"metadata": {"name": "sensor"}, "spec": spec}),
        )
        .await;
        let after = s.device_item("names", "sensor").await.unwrap();
        let record = s.record(Some(&before), Some(&after));
        let out = s.consumer.handle_json(record.clone()).await.unwrap();
        (out, record)
    };
    // one certificate names the device by its alias, one another device
    let by_alias = s.activate(&validator, &cas["names"], issue("line-1")).await;
    let other = s.activate(&validator, &cas["names"], issue("plain")).await;

    // a name gained: nothing revoked; a certificate validated now may connect under it
    let (out, _) = change(json!({"alias": ["line-1", "line-2"]})).await;
    assert_eq!(out["revoked"], json!([]), "{out}");
    let by_name = s.activate(&validator, &cas["names"], issue("sensor")).await;
    let policy = validator.policy_name(&by_name.0, "names", 0);
    let document = s.policy_document(&policy).await;
    assert!(document.contains("client/line-2@names"), "{document}");

    // line-2 lost: the certificate whose policy lets it connect as line-2 is revoked,
    // though it names the device by its name; the one validated before line-2 is kept
    let (out, _) = change(json!({"alias": ["line-1"]})).await;
    assert_eq!(out["revoked"], json!([by_name.0]), "{out}");
    assert_eq!(status(&by_name).await, CertificateStatus::Revoked);
    assert_eq!(status(&by_alias).await, CertificateStatus::Active);

    // an update that keeps the names revokes nothing
    let (out, _) = change(json!({"alias": ["line-1"], "labels": {}})).await;
    assert_eq!(out["revoked"], json!([]), "{out}");

    // line-1 lost: the certificate naming the device by it goes; the same record again
    // changes nothing
    let (out, record) = change(json!({})).await;
    assert_eq!(out["revoked"], json!([by_alias.0]), "{out}");
    assert_eq!(status(&by_alias).await, CertificateStatus::Revoked);
    let out = s.consumer.handle_json(record).await.unwrap();
    assert_eq!(out["revoked"], json!([]), "{out}");
    assert!(s.items("names", "IOTCERT#sensor#").await.is_empty());
    assert_eq!(status(&other).await, CertificateStatus::Active);

    // a record written before the names were kept is taken to hold them all
    s.update_device(
        "names",
        json!({"metadata": {"name": "sensor"}, "spec": {"alias": ["line-3"]}}),
    )
    .await;
    let older = s.activate(&validator, &cas["names"], issue("sensor")).await;
    let mut item = s.items("names", "IOTCERT#sensor#").await.remove(0);
    let mut data: Value = serde_json::from_str(item["data"].as_s().unwrap()).unwrap();
    assert_eq!(data["names"], json!(["line-3", "sensor"]));
    data.as_object_mut().unwrap().remove("names");
    item.insert("data".into(), AttributeValue::S(data.to_string()));
    s.dynamo
        .put_item()
        .table_name(&s.table)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    let (out, _) = change(json!({"alias": ["line-4"]})).await;
    assert_eq!(out["revoked"], json!([older.0]), "{out}");
}

#[tokio::test]
async fn a_name_iot_core_would_read_as_a_pattern_or_variable_is_kept_from_a_certificates_policy() {
    let s = setup().await;
    let validator =
        CertificateValidator::new(s.iot.clone(), s.store.clone(), "drogue-wild").unwrap();
    let ca = TestCa::new("wild", "Wild CA");
    s.create_app("wild", &[&ca]).await;
    s.create_device(
        "wild",
        json!({"metadata": {"name": "sensor"}, "spec": {"alias": [
            "line-*", "line-?", "${iot:ClientId}", "line-1", "meter$2", "x".repeat(130)
        ]}}),
    )
    .await;
    let cas = s.register_anchors(&["wild"]).await;
    let cert = s
        .activate(
            &validator,
            &cas["wild"],
            ca.issue("wild", "line-1", 2025, 2099).cert_pem,
        )
        .await;
    let document = s
        .policy_document(&validator.policy_name(&cert.0, "wild", 0))
        .await;
    // a `$` as IoT Core's policy variable for it (`${$}`): `${iot:ClientId}` is no
    // variable; names with a wildcard are left out: as a pattern line-* would let the
    // certificate connect as line-7@wild, another device's client id
    for client in ["line-1", "sensor", "${$}{iot:ClientId}", "meter${$}2"] {
        assert!(
            document.contains(&format!("client/{client}@wild\"")),
            "{client}: {document}"
        );
    }
    assert!(!document.contains("line-*"), "{document}");
    assert!(!document.contains("line-?"), "{document}");
    assert!(!document.contains("line-${"), "{document}");
    assert!(!document.contains("${iot"), "{document}");
    // a name longer than a client id may be is left out
    assert!(!document.contains(&"x".repeat(130)), "{document}");
    let item = s.items("wild", "IOTCERT#sensor#").await.remove(0);
    let data: Value = serde_json::from_str(item["data"].as_s().unwrap()).unwrap();
    assert_eq!(
        data["names"],
        json!(["${iot:ClientId}", "line-1", "meter$2", "sensor"])
    );

    // a device name in the topics as itself too
    s.create_device(
        "wild",
        json!({"metadata": {"name": "v${iot:ClientId}"}, "spec": {}}),
    )
    .await;
    let cert = s
        .activate(
            &validator,
            &cas["wild"],
            ca.issue("wild", "v${iot:ClientId}", 2025, 2099).cert_pem,
        )
        .await;
    let document = s
        .policy_document(&validator.policy_name(&cert.0, "wild", 0))
        .await;
    for resource in [
        "client/v${$}{iot:ClientId}@wild",
        "topic/dt/wild/v${$}{iot:ClientId}/*",
        "topicfilter/cmd/wild/v${$}{iot:ClientId}/*",
    ] {
        assert!(document.contains(resource), "{resource}: {document}");
    }
    assert!(!document.contains("${iot"), "{document}");

    // a device left with no name that makes a client id is refused: its certificate
    // could connect under nothing
    let long = "y".repeat(130);
    s.create_device("wild", json!({"metadata": {"name": long}, "spec": {}}))
        .await;
    let (id, arn) = s
        .register(&cas["wild"], ca.issue("wild", &long, 2025, 2099).cert_pem)
        .await;
    let out = s.judged(&validator, &cas["wild"], &id).await;
    assert_eq!(out["outcome"], "revoked", "{out}");
    assert_eq!(out["reason"], NO_CLIENT_ID, "{out}");
    assert_eq!(
        s.state(&id, &arn).await,
        (CertificateStatus::Revoked, Vec::new())
    );

    // a device whose own names take more documents than a certificate holds policies
    // (each `$` written as `${$}`) is refused, and says why
    let aliases: Vec<String> = (0..32)
        .map(|i| format!("{}{i:0>3}", "$".repeat(120)))
        .collect();
    s.create_device(
        "wild",
        json!({"metadata": {"name": "many"}, "spec": {"alias": aliases}}),
    )
    .await;
    let (id, arn) = s
        .register(&cas["wild"], ca.issue("wild", "many", 2025, 2099).cert_pem)
        .await;
    let out = s.judged(&validator, &cas["wild"], &id).await;
    assert_eq!(out["outcome"], "revoked", "{out}");
    assert_eq!(out["reason"], TOO_MANY_DOCUMENTS, "{out}");
    assert_eq!(
        s.state(&id, &arn).await,
        (CertificateStatus::Revoked, Vec::new())
    );
}

#[tokio::test]
async fn a_retried_validation_replaces_what_an_earlier_attempt_granted() {
    let s = setup().await;
    let validator =
        CertificateValidator::new(s.iot.clone(), s.store.clone(), "drogue-retry").unwrap();
    let ca = TestCa::new("retry", "Retry CA");
    s.create_app("retry", &[&ca]).await;
    s.create_device(
        "retry",
        json!({"metadata": {"name": "sensor"}, "spec": {"alias": ["line-1"]}}),
    )
    .await;
    let cas = s.register_anchors(&["retry"]).await;
    let (id, arn) = s
        .register(
            &cas["retry"],
            ca.issue("retry", "sensor", 2025, 2099).cert_pem,
        )
        .await;
    // an earlier attempt, for the device as it was before a change (an alias it lost
    // since, more documents): its policies made and attached, its record refused
    let stale = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": "iot:Connect",
        "Resource": "arn:aws:iot:us-east-1:123456789012:client/line-9@retry"}]})
    .to_string();
    let earlier = [
        validator.policy_name(&id, "retry", 0),
        validator.policy_name(&id, "retry", 1),
        validator.policy_name(&id, "gone", 0),
    ];
    for policy in earlier {
        s.iot
            .create_policy()
            .policy_name(&policy)
            .policy_document(&stale)
            .send()
            .await
            .unwrap();
        s.iot
            .attach_policy()
            .policy_name(&policy)
            .target(&arn)
            .send()
            .await
            .unwrap();
    }

    s.validate(&validator, &cas["retry"], &id, &arn).await;
    let first = validator.policy_name(&id, "retry", 0);
    let document = s.policy_document(&first).await;
    assert!(document.contains("client/line-1@retry"), "{document}");
    assert!(!document.contains("line-9"), "{document}");
    assert_eq!(s.state(&id, &arn).await.1, std::slice::from_ref(&first));
    assert!(
        !s.policy_exists(&validator.policy_name(&id, "retry", 1))
            .await,
        "the leftover policy is deleted"
    );
    // and so is another application's, which refuses the certificate now (its owner
    // disabled the device meanwhile)
    assert!(
        !s.policy_exists(&validator.policy_name(&id, "gone", 0))
            .await
    );

    // the grant taken back leaves nothing that passes for another application's
    let before = s.device_item("retry", "sensor").await.unwrap();
    s.registry
        .delete_device(
            &s.admin,
            &AppName::parse("retry").unwrap(),
            &drogue_shared::model::DeviceName::parse("sensor").unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    let out = s
        .consumer
        .handle_json(s.record(Some(&before), None))
        .await
        .unwrap();
    assert_eq!(out["revoked"], json!([id]), "{out}");
    assert_eq!(
        s.state(&id, &arn).await,
        (CertificateStatus::Revoked, Vec::new())
    );
    // the replaced policy keeps no old version, so revocation could delete it
    assert!(!s.policy_exists(&first).await);
}

#[tokio::test]
async fn disabling_an_application_revokes_its_certificates() {
    let s = setup().await;
    let validator =
        CertificateValidator::new(s.iot.clone(), s.store.clone(), "drogue-app").unwrap();
    let ca = TestCa::new("app3", "Application Revocation CA");
    s.create_app("app3", &[&ca]).await;
    s.create_device("app3", json!({"metadata": {"name": "d1"}, "spec": {}}))
        .await;
    let cas = s.register_anchors(&["app3"]).await;
    let (id, arn) = s
        .activate(
            &validator,
            &cas["app3"],
            ca.issue("app3", "d1", 2025, 2099).cert_pem,
        )
        .await;
    // the application disabled (its devices cannot authenticate any more)
    let before = s.app_item("app3").await.unwrap();
    let anchors: Vec<Value> = vec![json!({"certificate": ca.anchor()})];
    let app = json!({"metadata": {"name": "app3"}, "spec": {
        "trustAnchors": {"anchors": anchors}, "core": {"disabled": true}
    }});
    s.registry
        .update_application(
            &s.admin,
            &AppName::parse("app3").unwrap(),
            serde_json::from_value(app).unwrap(),
        )
        .await
        .unwrap();
    let after = s.app_item("app3").await.unwrap();
    let out = s
        .consumer
        .handle_json(s.record(Some(&before), Some(&after)))
        .await
        .unwrap();
    assert_eq!(out["revoked"], json!([id]), "{out}");
    assert_eq!(
        s.state(&id, &arn).await,
        (CertificateStatus::Revoked, vec![])
    );
    assert!(s.items("app3", "IOTCERT#").await.is_empty());
}

#[tokio::test]
async fn a_failing_record_is_reported_with_those_after_it() {
    let s = setup().await;
    // an application item whose stored JSON cannot be read, then a good one
    let mut event = fixture("trust-anchor-sync.json");
    let good = event["Records"][0].clone();
    let mut bad = good.clone();
    bad["dynamodb"]["NewImage"]["data"] = json!({"S": "{not json"});
    bad["dynamodb"]["SequenceNumber"] = json!("100");
    let mut after = good.clone();
    after["dynamodb"]["SequenceNumber"] = json!("200");
    let mut first = good.clone();
    first["dynamodb"]["SequenceNumber"] = json!("50");
    event["Records"] = json!([first, bad, after]);
    let out = s.consumer.handle_json(event).await.unwrap();
    assert_eq!(
        out["batchItemFailures"],
        json!([{"itemIdentifier": "100"}, {"itemIdentifier": "200"}])
    );
    // the first record was handled: its anchor registered, its change event written
    assert_eq!(out["registered"].as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(kinesis_records(&s.kinesis, &s.stream).await.len(), 1);
}

/// Several applications (of different owners) hold the same CA certificate: IoT Core
/// takes it once and keeps it until the last of them drops it; a device certificate
/// that a device of each accepts gets each application's own policy, and losing one
/// application's device takes only that application's policy away.
#[tokio::test]
async fn applications_share_a_trust_anchor_on_iot_core() {
    let s = setup().await;
    let validator =
        CertificateValidator::new(s.iot.clone(), s.store.clone(), "drogue-shared").unwrap();
    let ca = TestCa::new("shared", "Shared CA");
    let fp = fingerprint(&ca_der(&ca));
    s.create_app("app1", &[&ca]).await;
    // another owner's application with the same CA certificate
    let app2 = json!({"metadata": {"name": "app2"}, "spec": {"trustAnchors": {"anchors": [{"certificate": ca.anchor()}]}}});
    s.registry
        .create_application(
            &Principal::user("stranger"),
            serde_json::from_value(app2).unwrap(),
        )
        .await
        .unwrap();
    let ids = s.register_anchors(&["app1", "app2"]).await;
    assert_eq!(ids["app1"], ids["app2"], "registered once");
    let ca_id = ids["app1"].clone();
    assert_eq!(s.ca_status(&ca_id).await, Some(CaCertificateStatus::Active));
    let holders = || async {
        s.store
            .registered_ca(&fp)
            .await
            .unwrap()
            .map(|known| known.applications)
    };
    assert_eq!(
        holders().await,
        Some(vec!["app1".to_owned(), "app2".to_owned()])
    );

    // dev1 in both applications, only1 in app1 alone
    s.create_device("app1", json!({"metadata": {"name": "dev1"}, "spec": {}}))
        .await;
    s.create_device("app1", json!({"metadata": {"name": "only1"}, "spec": {}}))
        .await;
    s.registry
        .create_device(
            &Principal::user("stranger"),
            &AppName::parse("app2").unwrap(),
            serde_json::from_value(json!({"metadata": {"name": "dev1"}, "spec": {}})).unwrap(),
        )
        .await
        .unwrap();

    // a certificate both accept: active, with each application's own policy
    let (id, arn) = s
        .activate(
            &validator,
            &ca_id,
            ca.issue("shared", "dev1", 2025, 2099).cert_pem,
        )
        .await;
    let (status, mut attached) = s.state(&id, &arn).await;
    attached.sort();
    let mut expected = vec![
        validator.policy_name(&id, "app1", 0),
        validator.policy_name(&id, "app2", 0),
    ];
    expected.sort();
    assert_eq!((status, attached), (CertificateStatus::Active, expected));
    for (app, other) in [("app1", "app2"), ("app2", "app1")] {
        let document = s
            .iot
            .get_policy()
            .policy_name(validator.policy_name(&id, app, 0))
            .send()
            .await
            .unwrap()
            .policy_document
            .unwrap();
        assert!(
            document.contains(&format!("client/dev1@{app}")),
            "{document}"
        );
        assert!(!document.contains(other), "{other} in {document}");
        assert_eq!(s.items(app, "IOTCERT#dev1#").await.len(), 1, "{app}");
    }

    // app2's device goes: only app2's policy is taken away, the certificate stays active
    let before = s.device_item("app2", "dev1").await.unwrap();
    s.registry
        .delete_device(
            &Principal::user("stranger"),
            &AppName::parse("app2").unwrap(),
            &drogue_shared::model::DeviceName::parse("dev1").unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    s.consumer
        .handle_json(s.record(Some(&before), None))
        .await
        .unwrap();
    assert_eq!(
        s.state(&id, &arn).await,
        (
            CertificateStatus::Active,
            vec![validator.policy_name(&id, "app1", 0)]
        )
    );
    assert!(
        !s.policy_exists(&validator.policy_name(&id, "app2", 0))
            .await
    );
    assert!(s.items("app2", "IOTCERT#").await.is_empty());
    assert_eq!(s.items("app1", "IOTCERT#dev1#").await.len(), 1);

    // and app1's: now the certificate is revoked
    let before = s.device_item("app1", "dev1").await.unwrap();
    s.registry
        .delete_device(
            &s.admin,
            &AppName::parse("app1").unwrap(),
            &drogue_shared::model::DeviceName::parse("dev1").unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    s.consumer
        .handle_json(s.record(Some(&before), None))
        .await
        .unwrap();
    assert_eq!(
        s.state(&id, &arn).await,
        (CertificateStatus::Revoked, Vec::new())
    );

    // a certificate only app1 accepts gets app1's policy alone
    let (only, only_arn) = s
        .activate(
            &validator,
            &ca_id,
            ca.issue("shared", "only1", 2025, 2099).cert_pem,
        )
        .await;
    assert_eq!(
        s.state(&only, &only_arn).await,
        (
            CertificateStatus::Active,
            vec![validator.policy_name(&only, "app1", 0)]
        )
    );

    // app1 drops the anchor: IoT Core keeps it for app2
    let before = s.app_item("app1").await.unwrap();
    s.set_anchors("app1", &[]).await;
    let after = s.app_item("app1").await.unwrap();
    let out = s
        .consumer
        .handle_json(s.record(Some(&before), Some(&after)))
        .await
        .unwrap();
    assert_eq!(out["deregistered"], json!([]), "{out}");
    assert_eq!(s.ca_status(&ca_id).await, Some(CaCertificateStatus::Active));
    assert_eq!(holders().await, Some(vec!["app2".to_owned()]));
    // and app1's grant of the certificate it activated through that anchor goes
    assert_eq!(out["revoked"], json!([only]), "{out}");
    assert_eq!(
        s.state(&only, &only_arn).await,
        (CertificateStatus::Revoked, Vec::new())
    );
    assert!(s.items("app1", "IOTCERT#").await.is_empty());
    // app1 takes it again, then app2 is deleted: still held by app1
    s.set_anchors("app1", &[&ca]).await;
    let again = s.app_item("app1").await.unwrap();
    let out = s
        .consumer
        .handle_json(s.record(Some(&after), Some(&again)))
        .await
        .unwrap();
    assert_eq!(out["registered"], json!([ca_id]), "the same registration");
    let app2_item = s.app_item("app2").await.unwrap();
    s.registry
        .delete_application(
            &Principal::user("stranger"),
            &AppName::parse("app2").unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    let out = s
        .consumer
        .handle_json(s.record(Some(&app2_item), None))
        .await
        .unwrap();
    assert_eq!(out["deregistered"], json!([]), "{out}");
    assert_eq!(s.ca_status(&ca_id).await, Some(CaCertificateStatus::Active));
    assert_eq!(holders().await, Some(vec!["app1".to_owned()]));
    // the last holder drops it: deregistered, and forgotten
    let before = again;
    s.set_anchors("app1", &[]).await;
    let after = s.app_item("app1").await.unwrap();
    let out = s
        .consumer
        .handle_json(s.record(Some(&before), Some(&after)))
        .await
        .unwrap();
    assert_eq!(out["deregistered"], json!([ca_id]), "{out}");
    assert_eq!(s.ca_status(&ca_id).await, None);
    assert_eq!(holders().await, None);
}

/// A deregistration that marked the anchor and then failed (IoT Core unreachable, the
/// function ended) is finished by its record's retry, even when another application
/// holds the anchor meanwhile: the mark never stays for good.
#[tokio::test]
async fn an_unfinished_deregistration_is_finished_by_its_retry() {
    let s = setup().await;
    let fingerprint = format!("{:064x}", uuid::Uuid::new_v4().as_u128());
    s.store.hold_ca(&fingerprint, "app-x").await.unwrap();
    s.store
        .set_registered_ca_id(&fingerprint, "ca-id-1")
        .await
        .unwrap();
    // the last holder goes: marked, then the deregistration fails before it ends
    let marked = s.store.release_ca(&fingerprint, "app-x").await.unwrap();
    assert!(marked.is_some_and(|ca| ca.deleting));
    // another application takes the anchor meanwhile: refused while the mark stands
    let held = s.store.hold_ca(&fingerprint, "app-y").await.unwrap();
    assert!(held.deleting);
    // the retried record of app-x resumes the deregistration
    let resumed = s.store.release_ca(&fingerprint, "app-x").await.unwrap();
    assert_eq!(
        resumed.and_then(|ca| ca.certificate_id).as_deref(),
        Some("ca-id-1")
    );
    s.store.deregistered_ca(&fingerprint).await.unwrap();
    // app-y's retry registers it anew
    let again = s.store.hold_ca(&fingerprint, "app-y").await.unwrap();
    assert!(!again.deleting);
    assert_eq!(again.certificate_id, None);
}

/// IoT Core attaches at most 10 policies to a certificate: with eleven applications
/// accepting it, the ten that took the anchor first get theirs, the last one none, and
/// the certificate is active.
#[tokio::test]
async fn applications_that_took_an_anchor_first_get_the_certificates_policies() {
    let s = setup().await;
    let validator =
        CertificateValidator::new(s.iot.clone(), s.store.clone(), "drogue-many").unwrap();
    let ca = TestCa::new("many", "Many CA");
    // created in this order; the name order is the reverse
    const APPS: [&str; 11] = [
        "m10", "m09", "m08", "m07", "m06", "m05", "m04", "m03", "m02", "m01", "m00",
    ];
    for app in APPS {
        s.create_app(app, &[&ca]).await;
        s.create_device(app, json!({"metadata": {"name": "dev1"}, "spec": {}}))
            .await;
    }
    let ids = s.register_anchors(&APPS).await;
    let (id, arn) = s
        .activate(
            &validator,
            &ids["m10"],
            ca.issue("many", "dev1", 2025, 2099).cert_pem,
        )
        .await;
    let (status, mut attached) = s.state(&id, &arn).await;
    attached.sort();
    let mut expected: Vec<String> = APPS[..10]
        .iter()
        .map(|app| validator.policy_name(&id, app, 0))
        .collect();
    expected.sort();
    assert_eq!((status, attached), (CertificateStatus::Active, expected));
    assert!(
        s.items("m00", "IOTCERT#").await.is_empty(),
        "the last application has no grant recorded"
    );
    assert!(!s.policy_exists(&validator.policy_name(&id, "m00", 0)).await);
    assert_eq!(s.items("m10", "IOTCERT#dev1#").await.len(), 1);
}
