//! The command use-cases over a real embedded store and event log.

use super::*;
use crate::events::log::EventLog;
use crate::model::{Application, Device};
use crate::store::embedded::EmbeddedStore;
use crate::store::{ApplicationStore, StoredApplication};
use serde_json::{Value, json};

fn resource(name: &str, application: Option<&str>, spec: Value) -> Application {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "application": application,
            "uid": format!("uid-of-{name}"),
            "creationTimestamp": Utc::now(),
            "generation": 1,
            "resourceVersion": "1"
        },
        "spec": spec,
    }))
    .unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<EmbeddedStore>,
    service: CommandService,
    events: EventLog,
    app: Arc<Application>,
}

/// `app1` with `d1`, `d2`, `gw` (serving `d1`) and the disabled `off`, in a real
/// embedded store; events go to a real event log.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("db")).unwrap());
    let events = EventLog::open(dir.path().join("events"), 1000).unwrap();
    let app = resource("app1", None, json!({}));
    store
        .create_application(&StoredApplication {
            app: app.clone(),
            owner: "alice".into(),
            members: Default::default(),
            transfer_owner: None,
        })
        .await
        .unwrap();
    let app_name = AppName::parse("app1").unwrap();
    for (name, spec) in [
        ("d1", json!({"gatewaySelector": {"matchNames": ["gw"]}})),
        ("d2", json!({})),
        ("gw", json!({})),
        ("off", json!({"core": {"disabled": true}})),
    ] {
        store
            .create_device(&app_name, &resource(name, Some("app1"), spec))
            .await
            .unwrap();
    }
    Setup {
        service: CommandService::new(store.clone()).with_signals(Signals::default()),
        store,
        events,
        app: Arc::new(app),
        _dir: dir,
    }
}

fn drop_off<'a>(device: &'a str, name: &'a str) -> DropOff<'a> {
    DropOff {
        application: "app1",
        application_uid: None,
        device,
        name,
        content_type: None,
        payload: b"1".to_vec(),
        ttl_seconds: 60,
    }
}

impl Setup {
    fn device(&self, name: &str) -> Arc<Device> {
        Arc::new(resource(name, Some("app1"), json!({})))
    }

    /// `sender` answering for `device`.
    fn by(&self, sender: &str, device: &str) -> Authenticated {
        Authenticated {
            application: self.app.clone(),
            sender: self.device(sender),
            credentials: Arc::new([]),
            device: self.device(device),
        }
    }
}

fn answer<'a>(by: &'a Authenticated, request: &'a str, status: u16) -> Answer<'a> {
    Answer {
        by,
        request,
        status,
        content_type: Some("application/json"),
        payload: br#"{"ok":true}"#,
        instance: "drogue",
        received: Utc::now(),
    }
}

#[tokio::test]
async fn a_drop_off_reaches_the_device_it_names() {
    let s = setup().await;
    let command = s.service.submit(drop_off("d1", "reboot")).await.unwrap();
    assert_eq!(
        (command.application.as_str(), command.device.as_str()),
        ("app1", "d1")
    );
    assert_eq!(command.device_uid, "uid-of-d1", "bound to this very device");
    assert_eq!(
        command.expires - command.created,
        chrono::Duration::seconds(60)
    );
    let got = s
        .service
        .wait_for_command("app1", &s.device("d1"), Duration::ZERO)
        .await
        .unwrap()
        .expect("the command");
    assert_eq!(got, command);
}

#[tokio::test]
async fn drop_offs_break_no_rule() {
    let s = setup().await;
    for name in ["", "a/b", "+", "a+b", "#", "x#"] {
        assert!(
            matches!(
                s.service.submit(drop_off("d1", name)).await,
                Err(CommandError::InvalidName)
            ),
            "{name:?}"
        );
    }
    for ttl in [0, crate::commands::MAX_TTL_SECONDS + 1] {
        let request = DropOff {
            ttl_seconds: ttl,
            ..drop_off("d1", "x")
        };
        assert!(matches!(
            s.service.submit(request).await,
            Err(CommandError::InvalidTtl)
        ));
    }
    let large = DropOff {
        payload: vec![0; MAX_PAYLOAD + 1],
        ..drop_off("d1", "x")
    };
    assert!(matches!(
        s.service.submit(large).await,
        Err(CommandError::PayloadTooLarge(MAX_PAYLOAD))
    ));
    for device in ["nobody", "Not A Name", ""] {
        assert!(
            matches!(
                s.service.submit(drop_off(device, "x")).await,
                Err(CommandError::NoSuchDevice(_))
            ),
            "{device:?}"
        );
    }
    let other_app = DropOff {
        application: "app2",
        application_uid: None,
        ..drop_off("d1", "x")
    };
    assert!(matches!(
        s.service.submit(other_app).await,
        Err(CommandError::NoSuchDevice(_))
    ));
    assert!(matches!(
        s.service.submit(drop_off("off", "x")).await,
        Err(CommandError::NotTakingCommands(_))
    ));
    // nothing was kept for anyone
    for device in ["d1", "off"] {
        assert!(
            s.store
                .take_command("app1", device, Utc::now())
                .await
                .unwrap()
                .is_none()
        );
    }
}

/// The sender was authorized for app1 (its uid); app1 is then deleted and made anew by
/// a stranger, with a device of the same name, before the command's device is read: the
/// command is refused, and nothing is kept for the stranger's device.
#[tokio::test]
async fn a_command_for_an_application_made_anew_since_its_authorization_is_refused() {
    let s = setup().await;
    let name = AppName::parse("app1").unwrap();
    let authorized = s.app.metadata.uid.clone();
    let previous = s.store.get_application(&name).await.unwrap().unwrap();
    s.store.delete_application(&previous).await.unwrap();
    let mut anew = resource("app1", None, json!({}));
    anew.metadata.uid = "uid-of-the-strangers-app1".into();
    s.store
        .create_application(&StoredApplication {
            app: anew.clone(),
            owner: "mallory".into(),
            members: Default::default(),
            transfer_owner: None,
        })
        .await
        .unwrap();
    let mut device = resource("d2", Some("app1"), json!({}));
    device.metadata.uid = "uid-of-the-strangers-d2".into();
    s.store.create_device(&name, &device).await.unwrap();
    // (and one that takes no commands: refused the same, nothing of it told)
    let mut off = resource("off", Some("app1"), json!({"core": {"disabled": true}}));
    off.metadata.uid = "uid-of-the-strangers-off".into();
    s.store.create_device(&name, &off).await.unwrap();
    for device in ["d2", "off"] {
        let late = DropOff {
            application_uid: Some(&authorized),
            ..drop_off(device, "x")
        };
        assert!(
            matches!(
                s.service.submit(late).await,
                Err(CommandError::NoSuchDevice(_))
            ),
            "{device}"
        );
    }
    assert!(
        s.store
            .take_command("app1", "d2", Utc::now())
            .await
            .unwrap()
            .is_none(),
        "nothing kept for the stranger's device"
    );
    // a sender authorized for the application made anew drops off to its device
    let current = DropOff {
        application_uid: Some(&anew.metadata.uid),
        ..drop_off("d2", "x")
    };
    s.service.submit(current).await.unwrap();
}

#[tokio::test]
async fn a_device_being_deleted_takes_no_commands() {
    let s = setup().await;
    let app = AppName::parse("app1").unwrap();
    let mut dying = resource("dying", Some("app1"), json!({}));
    dying.metadata.finalizers = vec!["test".into()];
    s.store.create_device(&app, &dying).await.unwrap();
    let mut deleting = dying.clone();
    deleting.metadata.deletion_timestamp = Some(Utc::now());
    deleting.metadata.resource_version = "2".into();
    s.store
        .update_device(&app, &dying, &deleting)
        .await
        .unwrap();
    assert!(matches!(
        s.service.submit(drop_off("dying", "x")).await,
        Err(CommandError::NotTakingCommands(_))
    ));
}

#[tokio::test]
async fn answers_come_from_the_commands_device_once() {
    let s = setup().await;
    let command = s.service.submit(drop_off("d1", "read")).await.unwrap();
    let id = command.id.as_str();

    // another device, or a device of another application, knows no such command
    let d2 = s.by("d2", "d2");
    assert!(matches!(
        s.service.answer(answer(&d2, id, 200), &s.events).await,
        Err(CommandError::NoSuchCommand(_))
    ));
    let mut elsewhere = s.by("d1", "d1");
    elsewhere.application = Arc::new(resource("app2", None, json!({})));
    assert!(matches!(
        s.service
            .answer(answer(&elsewhere, id, 200), &s.events)
            .await,
        Err(CommandError::NoSuchCommand(_))
    ));
    // a later device of the same name neither
    let mut later = s.by("d1", "d1");
    let mut d1 = resource("d1", Some("app1"), json!({}));
    d1.metadata.uid = "a-later-d1".into();
    later.device = Arc::new(d1);
    assert!(matches!(
        s.service.answer(answer(&later, id, 200), &s.events).await,
        Err(CommandError::NoSuchCommand(_))
    ));
    let d1 = s.by("d1", "d1");
    for status in [0, 99, 600] {
        assert!(matches!(
            s.service.answer(answer(&d1, id, status), &s.events).await,
            Err(CommandError::InvalidStatus)
        ));
    }
    let not_json = Answer {
        payload: b"{not json",
        ..answer(&d1, id, 200)
    };
    assert!(matches!(
        s.service.answer(not_json, &s.events).await,
        Err(CommandError::InvalidPayload(_))
    ));
    assert!(
        s.service
            .wait_for_response(id, Duration::ZERO)
            .await
            .unwrap()
            .is_none(),
        "no refused answer is recorded"
    );
    assert_eq!(s.events.last_sequence("app1").unwrap(), 0);

    // the gateway answers for d1: recorded, with its event
    let gw = s.by("gw", "d1");
    let answered = s.service.answer(answer(&gw, id, 201), &s.events).await;
    assert_eq!(answered.unwrap().id, command.id);
    let response = s
        .service
        .wait_for_response(id, Duration::ZERO)
        .await
        .unwrap()
        .expect("the response");
    assert_eq!((response.status, response.responder.as_str()), (201, "gw"));
    let logged = s.events.read("app1", 0, 10).unwrap();
    assert_eq!(logged.len(), 1);
    let event: Value = serde_json::from_str(&logged[0].json).unwrap();
    assert_eq!(event["type"], "io.drogue.command.response.v1");
    assert_eq!(event["subject"], "read");
    assert_eq!(event["requestid"], id);
    assert_eq!(event["status"], 201);
    assert_eq!(event["device"], "d1");

    // and once only
    assert!(matches!(
        s.service.answer(answer(&d1, id, 200), &s.events).await,
        Err(CommandError::AlreadyAnswered(_))
    ));
    assert_eq!(s.events.read("app1", 0, 10).unwrap().len(), 1);
}

#[tokio::test]
async fn the_store_ports_come_from_a_whole_store_too() {
    let s = setup().await;
    let whole: Arc<dyn Store> = s.store.clone();
    let service = CommandService::new(whole);
    let command = service.submit(drop_off("d2", "x")).await.unwrap();
    assert_eq!(service.command(&command.id).await.unwrap(), Some(command));
}

/// A command for a device whose gateway names an external endpoint goes there, and to
/// neither MQTT nor the inbox; a cloud's sender refuses a loopback endpoint.
#[tokio::test]
async fn commands_for_devices_behind_an_external_system_go_there() {
    use axum::routing::post;
    let s = setup().await;
    let (seen, mut received) = tokio::sync::mpsc::unbounded_channel::<(String, Value)>();
    let stand_in = axum::Router::new().route(
        "/devices/{device}/down/replace",
        post(
            move |axum::extract::Path(device): axum::extract::Path<String>,
                  axum::Json(body): axum::Json<Value>| async move {
                seen.send((device, body)).unwrap();
                "{}"
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, stand_in).await });
    let app = AppName::parse("app1").unwrap();
    for (name, spec) in [
        (
            "ttn-gw",
            json!({"commands": [{"external": {"type": "ttnv3", "url": format!("http://{addr}/devices")}}]}),
        ),
        (
            "lora",
            json!({"gatewaySelector": {"matchNames": ["ttn-gw"]}}),
        ),
    ] {
        s.store
            .create_device(&app, &resource(name, Some("app1"), spec))
            .await
            .unwrap();
    }

    let err = s
        .service
        .submit(drop_off("lora", "port:3"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommandError::External(external::ExternalError::Forbidden(_))
        ),
        "{err}"
    );
    let test_bed = s
        .service
        .clone()
        .with_external_sender(ExternalSender::allowing_private_addresses());
    test_bed.submit(drop_off("lora", "port:3")).await.unwrap();
    let (device, body) = received.recv().await.unwrap();
    assert_eq!(device, "lora");
    assert_eq!(
        body,
        json!({"downlinks": [{"f_port": 3, "frm_payload": "MQ=="}]})
    );
    let lora = Arc::new(resource("lora", Some("app1"), json!({})));
    assert!(
        test_bed
            .wait_for_command("app1", &lora, Duration::from_millis(100))
            .await
            .unwrap()
            .is_none(),
        "nothing waits in the inbox"
    );
    // other devices' commands go on as before
    test_bed.submit(drop_off("d2", "reboot")).await.unwrap();
}

type Stranger = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The embedded store, with a stranger's move between two reads: the first read of the
/// device `at` first runs `between` (once).
struct Between {
    store: Arc<EmbeddedStore>,
    at: &'static str,
    between: std::sync::Mutex<Option<Stranger>>,
}

#[async_trait::async_trait]
impl DeviceStore for Between {
    async fn get_device(
        &self,
        app: &AppName,
        device: &DeviceName,
    ) -> crate::store::StoreResult<Option<Device>> {
        if device.as_str() == self.at {
            let between = self.between.lock().unwrap().take();
            if let Some(between) = between {
                between.await;
            }
        }
        self.store.get_device(app, device).await
    }
    async fn get_application_device(
        &self,
        app: &AppName,
        device: &DeviceName,
    ) -> crate::store::StoreResult<Option<(StoredApplication, Option<Device>)>> {
        self.store.get_application_device(app, device).await
    }
    async fn list_devices(&self, app: &AppName) -> crate::store::StoreResult<Vec<Device>> {
        self.store.list_devices(app).await
    }
    async fn devices_served_by(
        &self,
        app: &AppName,
        gateway: &str,
    ) -> crate::store::StoreResult<Vec<DeviceName>> {
        self.store.devices_served_by(app, gateway).await
    }
    async fn find_device_by_claim(
        &self,
        app: &AppName,
        claim: &crate::model::Claim,
    ) -> crate::store::StoreResult<Option<DeviceName>> {
        self.store.find_device_by_claim(app, claim).await
    }
    async fn create_device_limited(
        &self,
        app: &AppName,
        device: &Device,
        limits: crate::store::DeviceLimits,
    ) -> crate::store::StoreResult<()> {
        self.store.create_device_limited(app, device, limits).await
    }
    async fn count_devices(&self, app: &AppName) -> crate::store::StoreResult<u64> {
        self.store.count_devices(app).await
    }
    async fn count_owned_devices(&self, user: &str) -> crate::store::StoreResult<u64> {
        self.store.count_owned_devices(user).await
    }
    async fn update_device(
        &self,
        app: &AppName,
        previous: &Device,
        next: &Device,
    ) -> crate::store::StoreResult<()> {
        self.store.update_device(app, previous, next).await
    }
    async fn delete_device(
        &self,
        app: &AppName,
        previous: &Device,
    ) -> crate::store::StoreResult<()> {
        self.store.delete_device(app, previous).await
    }
}

/// The sender was authorized for app1 (its uid) and the command's device, behind the
/// gateway `gw`, was read; app1 is then deleted and made anew by a stranger, whose own
/// `gw` sends commands to an external endpoint of hers, before the gateway is read: the
/// command is refused as for an unknown device and nothing of it reaches her endpoint.
/// Without the stranger's move, the same command goes to the inbox.
#[tokio::test]
async fn a_command_is_not_sent_through_a_gateway_of_an_application_made_anew() {
    use axum::routing::post;
    let s = setup().await;
    let (seen, mut received) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stand_in = axum::Router::new().route(
        "/devices/{device}/down/replace",
        post(
            move |axum::extract::Path(device): axum::extract::Path<String>| async move {
                seen.send(device).unwrap();
                "{}"
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, stand_in).await });
    let authorized = s.app.metadata.uid.clone();
    let stranger = {
        let store = s.store.clone();
        async move {
            let name = AppName::parse("app1").unwrap();
            let previous = store.get_application(&name).await.unwrap().unwrap();
            store.delete_application(&previous).await.unwrap();
            let mut anew = resource("app1", None, json!({}));
            anew.metadata.uid = "uid-of-the-strangers-app1".into();
            store
                .create_application(&StoredApplication {
                    app: anew,
                    owner: "mallory".into(),
                    members: Default::default(),
                    transfer_owner: None,
                })
                .await
                .unwrap();
            let spec = json!({"commands": [{"external": {"type": "ttnv3", "url": format!("http://{addr}/devices")}}]});
            let mut gw = resource("gw", Some("app1"), spec);
            gw.metadata.uid = "uid-of-the-strangers-gw".into();
            store.create_device(&name, &gw).await.unwrap();
        }
    };
    let service = |between: Option<Stranger>| {
        CommandService::new(CommandPorts {
            applications: s.store.clone(),
            devices: Arc::new(Between {
                store: s.store.clone(),
                at: "gw",
                between: std::sync::Mutex::new(between),
            }),
            commands: s.store.clone(),
        })
        .with_signals(Signals::default())
        .with_external_sender(ExternalSender::allowing_private_addresses())
    };
    let command = || DropOff {
        application_uid: Some(&authorized),
        ..drop_off("d1", "open")
    };

    // without the stranger, through the gateway that takes commands from the inbox
    let sent = service(None).submit(command()).await.unwrap();
    assert_eq!(sent.device_uid, "uid-of-d1");
    assert!(
        s.store
            .take_command("app1", "d1", Utc::now())
            .await
            .unwrap()
            .is_some()
    );

    let refused = service(Some(Box::pin(stranger))).submit(command()).await;
    assert!(
        matches!(refused, Err(CommandError::NoSuchDevice(ref d)) if d == "d1"),
        "{refused:?}"
    );
    assert!(
        s.store
            .get_device(
                &AppName::parse("app1").unwrap(),
                &DeviceName::parse("gw").unwrap()
            )
            .await
            .unwrap()
            .is_some_and(|gw| gw.metadata.uid == "uid-of-the-strangers-gw"),
        "the stranger's move was made between the reads"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), received.recv())
            .await
            .is_err(),
        "nothing reached the stranger's endpoint"
    );
}
