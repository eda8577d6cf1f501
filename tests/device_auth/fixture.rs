//! Applications and devices for the authentication cases.

use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::device_auth::{
    DeviceAuthRequest, DeviceAuthentication, DeviceAuthenticator, DeviceCredential,
};
use drogue_shared::model::{AppName, DeleteOptions, DeviceName};
use drogue_shared::registry::{Changes, Registry};
use drogue_tests::pki::TestCa;
use drogue_tests::{Backend, TestStore};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct Fixture {
    pub auth: DeviceAuthenticator,
    pub registry: Registry,
    pub admin: Principal,
    pub ca1: TestCa,
    pub ca2: TestCa,
    pub store: TestStore,
}

/// Certificates are checked on 2026-06-01.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_272_000)
}

fn input(value: Value) -> drogue_shared::model::ResourceInput {
    serde_json::from_value(value).unwrap()
}

impl Fixture {
    pub async fn new(backend: Backend) -> Self {
        let store = backend.store().await;
        let mut admin = Principal::user("admin");
        admin.roles.push("drogue-admin".into());
        // the registry and the authenticator share a process, so a registry write makes
        // the authenticator look again at once
        let changes = Changes::default();
        let registry = Registry::new(store.store.clone(), AccessControl::default())
            .with_changes(changes.clone());
        let fixture = Self {
            auth: DeviceAuthenticator::with_clock(store.store.clone(), Arc::new(now()))
                .with_changes(changes),
            registry,
            admin,
            ca1: TestCa::new("app1", "App 1 CA"),
            ca2: TestCa::new("app2", "App 2 CA"),
            store,
        };
        fixture.populate().await;
        fixture
    }

    pub async fn app(&self, name: &str, spec: Value) {
        self.registry
            .create_application(
                &self.admin,
                input(json!({"metadata": {"name": name}, "spec": spec})),
            )
            .await
            .unwrap();
    }

    pub async fn device(&self, app: &str, name: &str, spec: Value) {
        self.device_with(app, json!({"name": name}), spec).await;
    }

    async fn device_with(&self, app: &str, metadata: Value, spec: Value) {
        self.registry
            .create_device(
                &self.admin,
                &AppName::parse(app).unwrap(),
                input(json!({"metadata": metadata, "spec": spec})),
            )
            .await
            .unwrap();
    }

    async fn populate(&self) {
        let pass = |p: &str| json!({"authentication": {"credentials": [{"pass": p}]}});
        self.app(
            "app1",
            json!({"trustAnchors": {"anchors": [{"certificate": self.ca1.anchor()}]}}),
        )
        .await;
        self.app(
            "app2",
            json!({"trustAnchors": {"anchors": [{"certificate": self.ca2.anchor()}]}}),
        )
        .await;
        self.app("off", json!({"core": {"disabled": true}})).await;
        self.device("off", "d", pass("secret")).await;

        self.device("app1", "pass-dev", pass("secret")).await;
        let bcrypt = bcrypt::hash("secret", 4).unwrap();
        self.device(
            "app1",
            "bcrypt-dev",
            json!({"credentials": {"credentials": [{"pass": {"bcrypt": bcrypt}}]}}),
        )
        .await;
        self.device(
            "app1",
            "user-dev",
            json!({"authentication": {"credentials": [
                {"user": {"username": "alice", "password": "pw", "unique": true}},
                {"user": {"username": "bob", "password": "pw2"}},
                {"user": {"username": "user-dev", "password": "pw3"}}
            ]}}),
        )
        .await;
        let mut aliased = pass("secret");
        aliased["alias"] = json!(["alias-1"]);
        self.device("app1", "aliased", aliased).await;
        let mut disabled = pass("secret");
        disabled["core"] = json!({"disabled": true});
        self.device("app1", "disabled-dev", disabled).await;
        self.device_with(
            "app1",
            json!({"name": "deleting-dev", "finalizers": ["hold"]}),
            pass("secret"),
        )
        .await;
        self.registry
            .delete_device(
                &self.admin,
                &AppName::parse("app1").unwrap(),
                &DeviceName::parse("deleting-dev").unwrap(),
                DeleteOptions::default(),
            )
            .await
            .unwrap();
        self.device("app1", "gateway", pass("gw-secret")).await;
        self.device(
            "app1",
            "behind",
            json!({"gatewaySelector": {"matchNames": ["gateway"]}}),
        )
        .await;
        self.device("app1", "not-behind", json!({})).await;

        self.device("app1", "device-1", json!({})).await;
        let subject = drogue_tests::pki::subject("app1", "certified-cert");
        self.device("app1", "certified", json!({"alias": [subject]}))
            .await;
        self.device("app2", "other-app-device", json!({})).await;
    }

    pub async fn authenticate(
        &self,
        application: Option<&str>,
        credential: DeviceCredential,
        r#as: Option<&str>,
    ) -> DeviceAuthentication {
        self.auth
            .authenticate(DeviceAuthRequest {
                application: application.map(Into::into),
                credential,
                r#as: r#as.map(Into::into),
            })
            .await
            .expect("the store answers")
    }

    /// Asserts an allow; the (sender, device) names.
    pub async fn allowed(
        &self,
        application: Option<&str>,
        credential: DeviceCredential,
        r#as: Option<&str>,
    ) -> (String, String) {
        match self.authenticate(application, credential, r#as).await {
            DeviceAuthentication::Allow(a) => (
                a.sender.metadata.name.clone(),
                a.device.metadata.name.clone(),
            ),
            DeviceAuthentication::Deny { reason } => panic!("refused: {reason}"),
        }
    }

    pub async fn denied(
        &self,
        application: Option<&str>,
        credential: DeviceCredential,
        r#as: Option<&str>,
    ) -> &'static str {
        match self.authenticate(application, credential, r#as).await {
            DeviceAuthentication::Allow(a) => {
                panic!("allowed {} when it should not be", a.sender.metadata.name)
            }
            DeviceAuthentication::Deny { reason } => reason,
        }
    }
}

pub fn password(device: &str, password: &str) -> DeviceCredential {
    DeviceCredential::Password {
        device: device.into(),
        password: password.into(),
    }
}

pub fn user(username: &str, password: &str, device: Option<&str>) -> DeviceCredential {
    DeviceCredential::UsernamePassword {
        username: username.into(),
        password: password.into(),
        device: device.map(Into::into),
    }
}
