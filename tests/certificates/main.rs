//! X.509 devices on AWS IoT Core, against moto's IoT control plane and DynamoDB: the
//! registry's trust anchors follow it into IoT Core as CA certificates (driven by the
//! table's stream records), and device certificates IoT Core registered are validated
//! just in time: activated with the device's policy, or revoked.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_iot::types::{CaCertificateStatus, CertificateStatus};
use drogue_cert_validator::anchors::{TrustAnchorSync, fingerprint};
use drogue_cert_validator::validator::{CertificateValidator, Location};
use drogue_shared::access::Principal;
use drogue_shared::access::authz::Authorizer;
use drogue_shared::model::AppName;
use drogue_shared::registry::Registry;
use drogue_shared::store::dynamodb::DynamoStore;
use drogue_tests::backend::{dynamo_client, iot_client, moto_url};
use drogue_tests::pki::TestCa;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

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
}

async fn setup() -> Setup {
    let table = format!("drogue-test-{}", uuid::Uuid::new_v4());
    let dynamo = dynamo_client(&moto_url());
    let store = DynamoStore::new(dynamo.clone(), &table);
    store.create_table().await.unwrap();
    let mut admin = Principal::user("admin");
    admin.roles.push(Authorizer::DEFAULT_ADMIN_ROLE.into());
    Setup {
        registry: Registry::new(Arc::new(store.clone()), Authorizer::default()),
        store,
        dynamo,
        table,
        iot: iot_client(&moto_url()),
        admin,
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

    /// A stream record of the application item's change, as Lambda delivers it.
    fn record(
        &self,
        before: Option<&HashMap<String, AttributeValue>>,
        after: Option<&HashMap<String, AttributeValue>>,
    ) -> Value {
        let mut event = fixture("trust-anchor-sync.json");
        let record = &mut event["Records"][0];
        let name = match (before, after) {
            (None, Some(_)) => "INSERT",
            (Some(_), Some(_)) => "MODIFY",
            _ => "REMOVE",
        };
        record["eventName"] = json!(name);
        let change = &mut record["dynamodb"];
        let item = after.or(before).unwrap();
        change["Keys"] = json!({"pk": {"S": item["pk"].as_s().unwrap()}, "sk": {"S": "#APP"}});
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
    let sync = TrustAnchorSync::new(s.iot.clone(), s.store.clone());
    let (ca1, ca2) = (
        TestCa::new("app1", "Anchor One"),
        TestCa::new("app1", "Anchor Two"),
    );

    // an application with a trust anchor: registered, active
    s.create_app("app1", &[&ca1]).await;
    let created = s.app_item("app1").await.unwrap();
    let out = sync.handle(s.record(None, Some(&created))).await.unwrap();
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
        (known.certificate_id.as_str(), known.application.as_str()),
        (first.as_str(), "app1")
    );

    // the same record again changes nothing
    let again = sync.handle(s.record(None, Some(&created))).await.unwrap();
    assert_eq!(again["registered"], json!([first]));

    // a second anchor is added, the first removed
    s.set_anchors("app1", &[&ca2]).await;
    let changed = s.app_item("app1").await.unwrap();
    let out = sync
        .handle(s.record(Some(&created), Some(&changed)))
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
        .handle(s.record(Some(&changed), Some(&changed)))
        .await
        .unwrap();
    assert_eq!(out, json!({"registered": [], "deregistered": []}));

    // the application goes away: so does its anchor
    s.registry
        .delete_application(
            &s.admin,
            &AppName::parse("app1").unwrap(),
            Default::default(),
        )
        .await
        .unwrap();
    let out = sync.handle(s.record(Some(&changed), None)).await.unwrap();
    assert_eq!(out["deregistered"], json!([second]));
    assert_eq!(s.ca_status(&second).await, None);
    // and again: nothing to do
    let out = sync.handle(s.record(Some(&changed), None)).await.unwrap();
    assert_eq!(out["deregistered"], json!([]));

    // the fixture, a record as Lambda delivers it
    let out = sync
        .handle(fixture("trust-anchor-sync.json"))
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
        (known.certificate_id, known.application.as_str()),
        (id, "from-lambda")
    );

    // other items (devices, tokens) are no concern
    let mut device = s.record(None, Some(&changed));
    device["Records"][0]["dynamodb"]["NewImage"]["sk"] = json!({"S": "DEV#d1"});
    assert_eq!(
        sync.handle(device).await.unwrap(),
        json!({"registered": [], "deregistered": []})
    );
}

#[tokio::test]
async fn device_certificates_are_validated_just_in_time() {
    let s = setup().await;
    let sync = TrustAnchorSync::new(s.iot.clone(), s.store.clone());
    let validator =
        CertificateValidator::new(s.iot.clone(), Arc::new(s.store.clone()), "drogue-test").unwrap();
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
        let out = sync.handle(s.record(None, Some(&item))).await.unwrap();
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
    let out = validator.handle(event.clone(), &location).await.unwrap();
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
    assert_eq!(names, vec![format!("drogue-test-cert-{id}-0").as_str()]);
    let document = s
        .iot
        .get_policy()
        .policy_name(names[0])
        .send()
        .await
        .unwrap()
        .policy_document
        .unwrap();
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
        validator.handle(event, &location).await.unwrap()["outcome"],
        "unchanged"
    );
    assert_eq!(status(id).await, CertificateStatus::Active);

    // a gateway's certificate covers the devices behind it
    let (event, _) = registered(ca1.issue("app1", "gw", 2025, 2099).cert_pem, "app1").await;
    let out = validator.handle(event, &location).await.unwrap();
    let policy = s
        .iot
        .get_policy()
        .policy_name(out["policies"][0].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .policy_document
        .unwrap();
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
        let out = validator.handle(event, &location).await.unwrap();
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
    let out = validator.handle(event, &location).await.unwrap();
    assert_eq!(
        (out["outcome"].as_str(), out["application"].as_str()),
        (Some("activated"), Some("app2"))
    );
}

#[tokio::test]
async fn an_unreachable_registry_leaves_the_certificate_pending() {
    let s = setup().await;
    let broken = DynamoStore::new(dynamo_client("http://127.0.0.1:9"), "nowhere");
    let validator =
        CertificateValidator::new(s.iot.clone(), Arc::new(broken), "drogue-test").unwrap();
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
    assert!(validator.handle(event, &location).await.is_err());
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
    assert!(
        CertificateValidator::new(s.iot.clone(), Arc::new(s.store.clone()), "no spaces").is_err()
    );
}
