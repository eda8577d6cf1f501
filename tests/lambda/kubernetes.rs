//! The CoAP endpoint as `infra/kubernetes/coap-endpoint.yaml` deploys it: its binary,
//! started with the Deployment's environment (the `drogue` ConfigMap of
//! `infra/knative/config.yaml`, then the container's own `env`) and the DTLS Secret's
//! files where the Deployment mounts them, takes publishes over plain CoAP and over DTLS
//! with a pre-shared key into the Kinesis stream (moto); the Service exposes both UDP
//! ports.

use super::{knative_documents, yaml_documents};
use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::model::AppName;
use drogue_shared::registry::Registry;
use drogue_tests::backend::{
    fresh_dynamo_table, fresh_kinesis_stream, kinesis_client, kinesis_records, moto_url,
};
use drogue_tests::lambda::start_binary;
use drogue_tests::libcoap;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// A free loopback UDP port.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The one document of `kind`.
fn document<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = documents.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

/// `(name, containerPort, protocol)` of a container's or a Service's ports.
fn ports(list: &Value, port: &str) -> Vec<(String, u64, String)> {
    let mut ports: Vec<(String, u64, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p[port].as_u64().unwrap(),
                p["protocol"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    ports.sort();
    ports
}

#[tokio::test]
async fn the_coap_endpoint_serves_as_its_kubernetes_deployment() {
    let documents = yaml_documents("infra/kubernetes/coap-endpoint.yaml");
    let deployment = document(&documents, "Deployment");
    let service = document(&documents, "Service");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // the container listens on both UDP ports, and the Service forwards both
    let udp = |name: &str, port: u64| (name.to_owned(), port, "UDP".to_owned());
    assert_eq!(
        ports(&container["ports"], "containerPort"),
        [udp("coap", 5683), udp("coaps", 5684)]
    );
    assert_eq!(
        ports(&service["spec"]["ports"], "port"),
        [udp("coap", 5683), udp("coaps", 5684)]
    );
    for port in service["spec"]["ports"].as_array().unwrap() {
        assert_eq!(port["targetPort"], port["name"], "{port}");
    }
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // the binary the Dockerfile installs, in the Deployment's command
    let command = container["command"][0].as_str().unwrap();
    let binary = command.strip_prefix("/usr/local/bin/").unwrap();
    assert_eq!(binary, "coap-endpoint");
    let dockerfile = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/knative/Dockerfile"
    ))
    .unwrap();
    assert!(
        dockerfile.contains(&format!("target/release/{binary}")),
        "the image has {binary}"
    );

    // the DTLS Secret's files where the Deployment mounts them
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "coaps")
        .expect("the coaps volume is mounted");
    let mount_path = mount["mountPath"].as_str().unwrap();
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "coaps")
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "drogue-coaps");
    let secret = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    // a `kubernetes.io/tls` Secret's keys
    std::fs::write(secret.path().join("tls.crt"), certified.cert.pem()).unwrap();
    std::fs::write(
        secret.path().join("tls.key"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap();

    // the environment: the ConfigMap, then the container's env; the binds moved to free
    // loopback ports, the table and stream to this test's
    let store = fresh_dynamo_table().await;
    let kinesis = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&kinesis).await;
    let (coap_port, coaps_port) = (free_udp_port(), free_udp_port());
    let config = knative_documents("config.yaml");
    let mut env: Vec<(String, String)> = config[0]["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert!(
        container["envFrom"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["configMapRef"]["name"] == "drogue"),
        "the Deployment reads the drogue ConfigMap"
    );
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = var["value"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: a plain value"))
            .to_owned();
        let value = match name.as_str() {
            "DROGUE_COAP_BIND" => {
                assert_eq!(value, "0.0.0.0:5683");
                format!("127.0.0.1:{coap_port}")
            }
            "DROGUE_COAPS_BIND" => {
                assert_eq!(value, "0.0.0.0:5684");
                format!("127.0.0.1:{coaps_port}")
            }
            "DROGUE_EVENT_STREAM" => stream.clone(),
            _ => match value.strip_prefix(mount_path) {
                Some(file) => secret
                    .path()
                    .join(file.trim_start_matches('/'))
                    .display()
                    .to_string(),
                None => value,
            },
        };
        env.retain(|(k, _)| *k != name);
        env.push((name, value));
    }
    for (name, value) in [
        ("DROGUE_TABLE", store.table().to_owned()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_ENDPOINT_URL", moto_url()),
        ("RUST_LOG", "warn".into()),
    ] {
        env.retain(|(k, _)| k != name);
        env.push((name.to_owned(), value));
    }
    for file in ["DROGUE_COAPS_CERTIFICATE", "DROGUE_COAPS_KEY"] {
        let path = &env.iter().find(|(k, _)| k == file).expect(file).1;
        assert!(
            std::path::Path::new(path).is_file(),
            "{file} names a file of the Secret: {path}"
        );
    }

    // a device with a password and a pre-shared key
    let mut admin = Principal::user("admin");
    admin.roles.push(AccessControl::DEFAULT_ADMIN_ROLE.into());
    let registry = Registry::new(Arc::new(store.clone()), AccessControl::default());
    let app = AppName::parse("k8s-coap").unwrap();
    registry
        .create_application(
            &admin,
            serde_json::from_value(json!({"metadata": {"name": "k8s-coap"}})).unwrap(),
        )
        .await
        .unwrap();
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode("dev1-key");
    registry
        .create_device(
            &admin,
            &app,
            serde_json::from_value(json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": "secret"}, {"psk": {"key": key}}]}}})).unwrap(),
        )
        .await
        .unwrap();

    let mut process = start_binary(binary, &env);
    let plain = format!("coap://127.0.0.1:{coap_port}/v1/telemetry");
    let auth = libcoap::basic_option("dev1@k8s-coap", "secret");
    // a wrong password: 4.03, nothing published; tried until the process answers (the
    // socket is bound before serving), so that no publish is sent twice
    let wrong = libcoap::basic_option("dev1@k8s-coap", "wrong");
    let mut answer = None;
    for _ in 0..50 {
        let tried = libcoap::run(
            libcoap::PLAIN,
            2,
            &["-m", "post", "-O", &wrong, "-e", r#"{"n":0}"#, &plain],
        )
        .await;
        if tried.response.is_some() {
            answer = Some(tried);
            break;
        }
        if let Some(status) = process.child.try_wait().unwrap() {
            panic!("coap-endpoint exited ({status})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.expect("coap-endpoint answers");
    assert_eq!(answer.code(), Some("4.03"), "{}", answer.output);

    let answer = libcoap::run(
        libcoap::PLAIN,
        10,
        &["-m", "post", "-O", &auth, "-e", r#"{"n":1}"#, &plain],
    )
    .await;
    assert_eq!(answer.code(), Some("2.04"), "{}", answer.output);

    // over DTLS with the device's pre-shared key
    let secure = format!("coaps://127.0.0.1:{coaps_port}/v1/telemetry");
    let answer = libcoap::run(
        libcoap::DTLS,
        5,
        &[
            "-m",
            "post",
            "-u",
            "dev1@k8s-coap",
            "-k",
            "dev1-key",
            "-e",
            r#"{"n":2}"#,
            &secure,
        ],
    )
    .await;
    assert_eq!(answer.code(), Some("2.04"), "{}", answer.output);

    // both events in the stream, as the device's
    let records = kinesis_records(&kinesis, &stream).await;
    let mut numbers: Vec<u64> = records
        .iter()
        .map(|(_, data)| serde_json::from_slice::<Value>(data).unwrap())
        .inspect(|event| {
            assert_eq!(event["application"], "k8s-coap", "{event}");
            assert_eq!(event["device"], "dev1", "{event}");
        })
        .map(|event| event["data"]["n"].as_u64().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2]);
}
