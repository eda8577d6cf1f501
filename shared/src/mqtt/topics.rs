//! The MQTT topic scheme, the same on AWS IoT Core and on the local broker:
//!
//! | topic | who | what |
//! |---|---|---|
//! | `dt/{app}/{device}/{channel}[/...]` | devices publish | telemetry, into the event stream |
//! | `cmd/{app}/{device}/{command}` | devices subscribe to `cmd/{app}/{device}/#` | commands for the device |
//! | `cmd/{app}/{device}/{command}/res/{request}/{status}` | devices publish | the answer to a command |
//! | `app/{app}` | applications subscribe | the application's events (CloudEvents) |
//! | `command/{app}/{device}/{command}` | applications publish | a command for a device |

/// What a published topic means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published<'a> {
    Telemetry {
        app: &'a str,
        device: &'a str,
        channel: &'a str,
        suffix: Option<&'a str>,
    },
    CommandResponse {
        app: &'a str,
        device: &'a str,
        command: &'a str,
        request: &'a str,
        status: &'a str,
    },
    Command {
        app: &'a str,
        device: &'a str,
        command: &'a str,
    },
}

/// Reads a published topic; `None` for topics that mean nothing here.
pub fn parse(topic: &str) -> Option<Published<'_>> {
    let mut levels = topic.splitn(4, '/');
    let kind = levels.next()?;
    let (app, device, rest) = (levels.next()?, levels.next()?, levels.next()?);
    if app.is_empty() || device.is_empty() || rest.is_empty() {
        return None;
    }
    match kind {
        "dt" => {
            let (channel, suffix) = match rest.split_once('/') {
                Some((channel, suffix)) => (channel, Some(suffix)),
                None => (rest, None),
            };
            (!channel.is_empty()).then_some(Published::Telemetry {
                app,
                device,
                channel,
                suffix,
            })
        }
        "cmd" => {
            let parts: Vec<&str> = rest.split('/').collect();
            match parts.as_slice() {
                [command, "res", request, status] if !command.is_empty() && !request.is_empty() => {
                    Some(Published::CommandResponse {
                        app,
                        device,
                        command,
                        request,
                        status,
                    })
                }
                _ => None,
            }
        }
        "command" if !rest.contains('/') => Some(Published::Command {
            app,
            device,
            command: rest,
        }),
        _ => None,
    }
}

/// Drogue Cloud's own device topics (its MQTT endpoint's `drogue/v1` dialect), which the
/// local broker also takes so that existing Drogue firmware connects unchanged (IoT Core's
/// policies cannot map topics): a device publishes on `{channel}`, or as a gateway on
/// `{channel}/{device}`; it subscribes to `command/inbox/#` (its own commands and those
/// of the devices it serves), `command/inbox//#` (its own) or `command/inbox/{device}/#`
/// (a served device's), and receives them on `command/inbox//{command}` (its own) or
/// `command/inbox/{device}/{command}`.
pub mod drogue {
    /// A Drogue telemetry topic: `(channel, device acted for)`; `None` when the topic is
    /// not one (empty levels, more than two levels, `$` topics).
    pub fn publish(topic: &str) -> Option<(&str, Option<&str>)> {
        if topic.starts_with('$') {
            return None;
        }
        let mut levels = topic.split('/');
        let (channel, device) = (levels.next()?, levels.next());
        if channel.is_empty() || levels.next().is_some() || device.is_some_and(str::is_empty) {
            return None;
        }
        Some((channel, device))
    }

    /// Which commands a Drogue inbox filter asks for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Inbox<'a> {
        /// `command/inbox/#`, `command/inbox/+/#`: the device's and its served devices'.
        All,
        /// `command/inbox//#`: the device's own.
        Own,
        /// `command/inbox/{device}/#`: that (served) device's.
        Device(&'a str),
    }

    /// Reads a Drogue inbox filter.
    pub fn inbox(filter: &str) -> Option<Inbox<'_>> {
        match filter.split('/').collect::<Vec<_>>().as_slice() {
            ["command", "inbox", "#"] | ["command", "inbox", "+", "#"] => Some(Inbox::All),
            ["command", "inbox", "", "#"] => Some(Inbox::Own),
            ["command", "inbox", device, "#"] if !device.contains(['+', '#']) => {
                Some(Inbox::Device(device))
            }
            _ => None,
        }
    }

    /// The topic a command for `device` (`own`: the subscriber's own device) arrives on
    /// for a subscription to `inbox`; `None` when the subscription does not ask for it.
    pub fn inbox_topic(inbox: Inbox<'_>, own: bool, device: &str, command: &str) -> Option<String> {
        match inbox {
            Inbox::All | Inbox::Own if own => Some(format!("command/inbox//{command}")),
            Inbox::All => Some(format!("command/inbox/{device}/{command}")),
            Inbox::Own => None,
            Inbox::Device(name) => {
                (name == device).then(|| format!("command/inbox/{device}/{command}"))
            }
        }
    }
}

/// The topic an application's events are delivered on.
pub fn application_events(app: &str) -> String {
    // one allocation of the exact size (`format!` guesses a capacity, then grows it):
    // the log's writer routes every event through this
    let mut topic = String::with_capacity("app/".len() + app.len());
    topic.push_str("app/");
    topic.push_str(app);
    topic
}

/// The application a subscription filter asks the events of: `app/{app}` or
/// `$share/{group}/app/{app}` (no wildcard in `{app}`).
pub fn subscribed_application(filter: &str) -> Option<&str> {
    super::filter::TopicFilter::parse(filter)
        .ok()?
        .application()
}

/// Whether an MQTT topic filter matches a topic (`+` one level, `#` the rest); a string
/// that is no valid filter (see [`super::filter::TopicFilter`]) matches nothing.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    super::filter::TopicFilter::parse(filter).is_ok_and(|f| f.matches(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drogue_topics_are_read() {
        use drogue::{Inbox, inbox, inbox_topic, publish};
        assert_eq!(publish("temp"), Some(("temp", None)));
        assert_eq!(publish("temp/dev2"), Some(("temp", Some("dev2"))));
        for bad in [
            "",
            "/dev2",
            "temp/",
            "a/b/c",
            "$aws/things",
            "dt/app1/dev1/t",
        ] {
            assert_eq!(publish(bad), None, "{bad}");
        }
        assert_eq!(inbox("command/inbox/#"), Some(Inbox::All));
        assert_eq!(inbox("command/inbox/+/#"), Some(Inbox::All));
        assert_eq!(inbox("command/inbox//#"), Some(Inbox::Own));
        assert_eq!(inbox("command/inbox/dev2/#"), Some(Inbox::Device("dev2")));
        for other in [
            "command/inbox",
            "command/app1/dev1/x",
            "cmd/app1/dev1/#",
            "command/inbox/a+/#",
        ] {
            assert_eq!(inbox(other), None, "{other}");
        }
        assert_eq!(
            inbox_topic(Inbox::All, true, "dev1", "set").as_deref(),
            Some("command/inbox//set")
        );
        assert_eq!(
            inbox_topic(Inbox::All, false, "dev2", "set").as_deref(),
            Some("command/inbox/dev2/set")
        );
        assert_eq!(inbox_topic(Inbox::Own, false, "dev2", "set"), None);
        assert_eq!(
            inbox_topic(Inbox::Device("dev2"), false, "dev2", "set").as_deref(),
            Some("command/inbox/dev2/set")
        );
        assert_eq!(
            inbox_topic(Inbox::Device("dev2"), false, "dev3", "set"),
            None
        );
    }

    #[test]
    fn published_topics_are_read() {
        assert_eq!(
            parse("dt/app1/dev1/telemetry"),
            Some(Published::Telemetry {
                app: "app1",
                device: "dev1",
                channel: "telemetry",
                suffix: None
            })
        );
        assert_eq!(
            parse("dt/app1/dev1/state/room/1"),
            Some(Published::Telemetry {
                app: "app1",
                device: "dev1",
                channel: "state",
                suffix: Some("room/1")
            })
        );
        assert_eq!(
            parse("cmd/app1/dev1/reboot/res/abc/200"),
            Some(Published::CommandResponse {
                app: "app1",
                device: "dev1",
                command: "reboot",
                request: "abc",
                status: "200"
            })
        );
        assert_eq!(
            parse("command/app1/dev1/reboot"),
            Some(Published::Command {
                app: "app1",
                device: "dev1",
                command: "reboot"
            })
        );
        for nothing in [
            "dt/app1/dev1",
            "dt/app1//x",
            "cmd/app1/dev1/reboot",
            "command/app1/dev1/a/b",
            "other/a/b/c",
            "dt",
        ] {
            assert_eq!(parse(nothing), None, "{nothing}");
        }
    }

    #[test]
    fn an_applications_events_topic_is_app_and_its_name_in_one_exact_allocation() {
        for app in ["app1", "a", "my-app-with-a-long-name-0123456789", "ü-app"] {
            let topic = application_events(app);
            assert_eq!(topic, format!("app/{app}"));
            assert_eq!(topic.capacity(), topic.len());
            assert_eq!(subscribed_application(&topic), Some(app));
        }
    }

    #[test]
    fn filters_match_as_in_mqtt() {
        assert!(filter_matches("cmd/app1/dev1/#", "cmd/app1/dev1/reboot"));
        assert!(filter_matches("cmd/app1/+/+", "cmd/app1/dev1/reboot"));
        assert!(!filter_matches("cmd/app1/dev1/+", "cmd/app1/dev1/a/b"));
        assert!(filter_matches("app/app1", "app/app1"));
        assert!(filter_matches("$share/g/app/app1", "app/app1"));
        assert!(!filter_matches("app/app1", "app/app10"));
        assert_eq!(
            subscribed_application("$share/workers/app/app1"),
            Some("app1")
        );
        assert_eq!(subscribed_application("app/+"), None);
        assert_eq!(
            subscribed_application("$share/g/dt/app2/dev1/app/app1"),
            None
        );
        assert!(!filter_matches("cmd/#/x", "cmd/a/x"), "no valid filter");
        assert_eq!(subscribed_application("cmd/app1/#"), None);
    }
}
