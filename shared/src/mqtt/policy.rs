//! The least-privilege policy of an MQTT client, as AWS IoT Core takes it (one IAM-style
//! JSON document with `iot:*` actions on `client/`, `topic/` and `topicfilter/`
//! resources), and the same decisions for the local broker.
//!
//! Resource patterns use IoT policy wildcards, not MQTT ones: `*` matches any run of
//! characters. A subscription filter is checked as a string, so a client allowed
//! `cmd/app1/dev1/#` may not subscribe to `cmd/app1/+/#` or `cmd/#`.
//!
//! Locally a subscription filter is also checked by its structure: it must parse as a
//! [`TopicFilter`], and a `topicfilter` pattern's `*` stands for one whole level (the
//! group of `$share/*/...`, a device in `cmd/{app}/*/...`), except as the last level,
//! where it stands for one or more levels. So `$share/*/app/app1` admits
//! `$share/g/app/app1` but not `$share/g/dt/app2/dev1/app/app1`, which IoT's `*` (any
//! run of characters) would. For IoT Core the policy carries explicit `Deny` statements
//! for what its `*` would admit beyond that (see [`Policy::deny`]).
//!
//! Names put into a pattern are written with [`literal`]: a `*`, `?` or `$` in a name
//! stands there as the policy variable IoT Core reads as that character (`${*}`, `${?}`,
//! `${$}`), so no name is read as a wildcard or as a policy variable (`${iot:ClientId}`),
//! and [`glob`] reads those the same way.

use super::filter::TopicFilter;
use serde_json::{Value, json};
use std::borrow::Cow;

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Connect,
    Publish,
    Subscribe,
    Receive,
}

impl Action {
    fn iot(self) -> &'static str {
        match self {
            Self::Connect => "iot:Connect",
            Self::Publish => "iot:Publish",
            Self::Subscribe => "iot:Subscribe",
            Self::Receive => "iot:Receive",
        }
    }

    /// The kind of IoT resource the action applies to.
    fn resource_kind(self) -> &'static str {
        match self {
            Self::Connect => "client",
            Self::Publish | Self::Receive => "topic",
            Self::Subscribe => "topicfilter",
        }
    }
}

/// Allowed actions on resource patterns (client ids, topics, topic filters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    allowed: Vec<(Action, String)>,
    denied: Vec<(Action, String)>,
    /// The applications (name, `uid`) the policy was decided for: its patterns name
    /// applications, and a later application of the same name (deleted and made again,
    /// perhaps by a stranger) is not one of them. Not part of an IoT document.
    decided_for: Vec<(String, String)>,
    /// The device (application, name, `uid`) whose own connection the policy was decided
    /// for: a later device of that name (deleted and made again) is another one. Not part
    /// of an IoT document.
    device: Option<(String, String, String)>,
}

impl Policy {
    pub fn allow(&mut self, action: Action, pattern: impl Into<String>) -> &mut Self {
        let pattern = pattern.into();
        if !self.allowed.contains(&(action, pattern.clone())) {
            self.allowed.push((action, pattern));
        }
        self
    }

    /// Denies an action on a resource pattern, whatever is allowed (IoT policies: an
    /// explicit `Deny` overrides every `Allow`).
    pub fn deny(&mut self, action: Action, pattern: impl Into<String>) -> &mut Self {
        let pattern = pattern.into();
        if !self.denied.contains(&(action, pattern.clone())) {
            self.denied.push((action, pattern));
        }
        self
    }

    /// Records that the policy's patterns naming `application` were decided for the
    /// application of that name with this `uid`.
    pub fn decided_for(
        &mut self,
        application: impl Into<String>,
        uid: impl Into<String>,
    ) -> &mut Self {
        let application = application.into();
        self.decided_for.retain(|(name, _)| *name != application);
        self.decided_for.push((application, uid.into()));
        self
    }

    /// The `uid` of the application of that name the policy was decided for, if it was
    /// decided for one (not for a wildcard, as an administrator's is).
    pub fn application_uid(&self, application: &str) -> Option<&str> {
        self.decided_for
            .iter()
            .find(|(name, _)| name == application)
            .map(|(_, uid)| uid.as_str())
    }

    /// Whether what belongs to the application `application` with `uid` (an event, a
    /// command) may reach the client, as far as the application's identity goes: not
    /// when the policy was decided for another application of that name. (Something
    /// with no `uid` recorded is told by its name alone.)
    pub fn admits_application(&self, application: &str, uid: Option<&str>) -> bool {
        match (self.application_uid(application), uid) {
            (Some(decided), Some(uid)) if !uid.is_empty() => decided == uid,
            _ => true,
        }
    }

    /// Records that the policy was decided for the connection of the device `name` of
    /// `application` with this `uid`.
    pub fn decided_for_device(
        &mut self,
        application: impl Into<String>,
        name: impl Into<String>,
        uid: impl Into<String>,
    ) -> &mut Self {
        self.device = Some((application.into(), name.into(), uid.into()));
        self
    }

    /// Whether a command for the device `name` of `application` with `uid` may reach the
    /// client, as far as the device's identity goes: not when the policy was decided for
    /// the connection of another device of that name (the one deleted before it was made
    /// again). A command with no `uid` recorded is told by its names alone.
    pub fn admits_device(&self, application: &str, name: &str, uid: &str) -> bool {
        match &self.device {
            Some((decided_app, decided_name, decided))
                if decided_app == application && decided_name == name && !uid.is_empty() =>
            {
                decided == uid
            }
            _ => true,
        }
    }

    /// Whether `action` on `resource` (a client id, topic or topic filter) is allowed.
    /// A topic filter must also be a valid filter, admitted by an allowed pattern level
    /// by level (see the module's documentation).
    pub fn allows(&self, action: Action, resource: &str) -> bool {
        if self
            .denied
            .iter()
            .any(|(a, pattern)| *a == action && glob(pattern, resource))
        {
            return false;
        }
        if action == Action::Subscribe {
            let Ok(filter) = TopicFilter::parse(resource) else {
                return false;
            };
            return self
                .patterns(action)
                .any(|pattern| glob(pattern, resource) && admits_filter(pattern, &filter));
        }
        self.allowed
            .iter()
            .any(|(a, pattern)| *a == action && glob(pattern, resource))
    }

    /// The patterns allowed for an action.
    pub fn patterns(&self, action: Action) -> impl Iterator<Item = &str> {
        self.allowed
            .iter()
            .filter(move |(a, _)| *a == action)
            .map(|(_, p)| p.as_str())
    }

    /// The policy as IoT Core policy documents (JSON strings), for the custom authorizer:
    /// the denials, then one statement per action with its resources, split so that each
    /// document stays under IoT's 2,048 characters (IoT Core evaluates the documents
    /// together: a `Deny` in any of them overrides every `Allow`).
    pub fn to_iot_documents(&self, partition: &str, region: &str, account: &str) -> Vec<String> {
        const LIMIT: usize = 1900;
        let mut documents = Vec::new();
        let mut statements: Vec<Value> = Vec::new();
        let mut size = 60;
        let denials = [
            Action::Connect,
            Action::Publish,
            Action::Subscribe,
            Action::Receive,
        ]
        .into_iter()
        .flat_map(|action| {
            self.denied
                .iter()
                .filter(move |(a, _)| *a == action)
                .map(move |(_, p)| (action, p.as_str(), "Deny"))
        });
        let allowances = [
            Action::Connect,
            Action::Publish,
            Action::Subscribe,
            Action::Receive,
        ]
        .into_iter()
        .flat_map(|action| self.patterns(action).map(move |p| (action, p, "Allow")));
        let mut entries = denials.chain(allowances).peekable();
        while let Some((action, _, effect)) = entries.peek().copied() {
            let mut resources: Vec<String> = Vec::new();
            while let Some((_, pattern, _)) =
                entries.next_if(|(a, _, e)| *a == action && *e == effect)
            {
                let arn = format!(
                    "arn:{partition}:iot:{region}:{account}:{}/{pattern}",
                    action.resource_kind()
                );
                // as the document's JSON writes it (a `"` or `\` in a name counts twice)
                let written = serde_json::to_string(&arn).map_or(arn.len(), |s| s.len());
                if size + written + 80 > LIMIT {
                    if !resources.is_empty() {
                        statements.push(statement(effect, action, std::mem::take(&mut resources)));
                    }
                    documents.push(document(std::mem::take(&mut statements)));
                    size = 60;
                }
                size += written + 1;
                resources.push(arn);
            }
            if !resources.is_empty() {
                size += 60;
                statements.push(statement(effect, action, resources));
            }
        }
        if !statements.is_empty() {
            documents.push(document(statements));
        }
        documents
    }
}

fn statement(effect: &str, action: Action, resources: Vec<String>) -> Value {
    json!({"Effect": effect, "Action": action.iot(), "Resource": resources})
}

/// Whether a `topicfilter` pattern admits a filter level by level: `$share/{group}/`
/// against `$share/{group}/`, then each level of the pattern against one level of the
/// filter (`*` and `?` within the level), a last level `*` against one or more levels.
fn admits_filter(pattern: &str, filter: &TopicFilter<'_>) -> bool {
    let pattern_levels = match (
        pattern.strip_prefix(super::filter::SHARE_PREFIX),
        filter.group(),
    ) {
        (Some(shared), Some(group)) => match shared.split_once('/') {
            Some((group_pattern, rest)) if glob(group_pattern, group) => rest,
            _ => return false,
        },
        (None, None) => pattern,
        _ => return false,
    };
    let pattern_levels: Vec<&str> = pattern_levels.split('/').collect();
    let levels: Vec<&str> = filter.levels().collect();
    let (last, fixed) = pattern_levels
        .split_last()
        .expect("split gives one at least");
    if *last == "*" {
        levels.len() > fixed.len()
            && fixed
                .iter()
                .zip(&levels)
                .all(|(pattern, level)| glob(pattern, level))
    } else {
        levels.len() == pattern_levels.len()
            && pattern_levels
                .iter()
                .zip(&levels)
                .all(|(pattern, level)| glob(pattern, level))
    }
}

fn document(statements: Vec<Value>) -> String {
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// A name as it stands in a resource pattern, matching itself alone: each `*`, `?` and
/// `$` written as the IoT policy variable that stands for that character (`${*}`, `${?}`,
/// `${$}`). Without it IoT Core would read an alias `line-*` as a wildcard, and a device
/// name holding `${iot:ClientId}` as a policy variable.
pub fn literal(name: &str) -> Cow<'_, str> {
    if !name.contains(['*', '?', '$']) {
        return Cow::Borrowed(name);
    }
    let mut written = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        if matches!(c, '*' | '?' | '$') {
            written.push_str("${");
            written.push(c);
            written.push('}');
        } else {
            written.push(c);
        }
    }
    Cow::Owned(written)
}

/// One step of a pattern: a character, any run of characters, or any one.
#[derive(Clone, Copy)]
enum Step {
    Char(char),
    Run,
    One,
}

/// The step of a pattern at a byte offset, and where the next one starts: `${*}`, `${?}`
/// and `${$}` are their characters (see [`literal`]).
fn step(pattern: &str, i: usize) -> Option<(Step, usize)> {
    let rest = &pattern[i..];
    if let [b'$', b'{', c @ (b'*' | b'?' | b'$'), b'}', ..] = rest.as_bytes() {
        return Some((Step::Char(char::from(*c)), i + 4));
    }
    let c = rest.chars().next()?;
    let next = i + c.len_utf8();
    Some(match c {
        '*' => (Step::Run, next),
        '?' => (Step::One, next),
        c => (Step::Char(c), next),
    })
}

/// IoT policy matching: `*` any run of characters, `?` one character, `${*}`, `${?}` and
/// `${$}` those characters themselves. Walks both strings in place (by byte offsets at
/// character boundaries): no allocation, as the broker checks every delivery with it.
pub fn glob(pattern: &str, text: &str) -> bool {
    // the character at a byte offset, and where the next one starts
    fn at(s: &str, i: usize) -> Option<(char, usize)> {
        s[i..].chars().next().map(|c| (c, i + c.len_utf8()))
    }
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while let Some((tc, tnext)) = at(text, ti) {
        match step(pattern, pi) {
            Some((Step::One, pnext)) => {
                pi = pnext;
                ti = tnext;
            }
            Some((Step::Char(pc), pnext)) if pc == tc => {
                pi = pnext;
                ti = tnext;
            }
            Some((Step::Run, pnext)) => {
                star = Some(pnext);
                mark = ti;
                pi = pnext;
            }
            _ => match star {
                Some(after) => {
                    pi = after;
                    mark = at(text, mark).map_or(text.len(), |(_, next)| next);
                    ti = mark;
                }
                None => return false,
            },
        }
    }
    pattern[pi..].bytes().all(|c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_name_matches_itself_alone_here_and_in_an_iot_document() {
        assert!(matches!(literal("dev-1"), Cow::Borrowed("dev-1")));
        assert_eq!(literal("line-*"), "line-${*}");
        assert_eq!(literal("a?b$c"), "a${?}b${$}c");
        assert_eq!(literal("${iot:ClientId}"), "${$}{iot:ClientId}");
        for name in [
            "line-*",
            "a?b",
            "${iot:ClientId}",
            "${*}",
            "m$2",
            "*",
            "é$?",
        ] {
            let pattern = format!("dt/app1/{}/*", literal(name));
            assert!(glob(&pattern, &format!("dt/app1/{name}/t")), "{pattern}");
            for other in ["line-7", "axb", "dev1", "m$22", "${$}", "x", "é$x", ""] {
                assert!(
                    !glob(&pattern, &format!("dt/app1/{other}/t")),
                    "{pattern} matches {other}"
                );
            }
        }
        // a pattern's own wildcards still are
        assert!(glob("dt/${*}/*", "dt/*/x"));
        assert!(!glob("dt/${*}/*", "dt/a/x"));
        assert!(glob("dt/?${?}", "dt/a?"));
        assert!(!glob("dt/?${?}", "dt/ab"));
        // an incomplete escape is characters
        assert!(glob("a${*", "a${bc"));
        assert!(glob("a${x}", "a${x}"));

        let mut policy = Policy::default();
        policy.allow(
            Action::Publish,
            format!("dt/app1/{}/*", literal("v${iot:ClientId}")),
        );
        let documents = policy.to_iot_documents("aws", "eu-west-1", "123456789012");
        assert!(
            documents[0].contains("topic/dt/app1/v${$}{iot:ClientId}/*"),
            "{documents:?}"
        );
        assert!(!documents[0].contains("${iot"), "{documents:?}");
    }

    #[test]
    fn a_policy_decided_for_a_device_admits_only_that_ones_commands_of_its_name() {
        let mut policy = Policy::default();
        assert!(
            policy.admits_device("app1", "d1", "u1"),
            "decided for no device"
        );
        policy.decided_for_device("app1", "d1", "u1");
        assert!(policy.admits_device("app1", "d1", "u1"));
        assert!(!policy.admits_device("app1", "d1", "u2"));
        // unknown uid: by the names alone
        assert!(policy.admits_device("app1", "d1", ""));
        // other devices (those a gateway serves), and devices of another application
        assert!(policy.admits_device("app1", "d2", "u2"));
        assert!(policy.admits_device("app2", "d1", "u2"));
    }

    #[test]
    fn a_policy_decided_for_an_application_admits_only_that_one_of_its_name() {
        let mut policy = Policy::default();
        policy
            .allow(Action::Receive, "app/app1")
            .decided_for("app1", "u1");
        assert!(policy.admits_application("app1", Some("u1")));
        assert!(!policy.admits_application("app1", Some("u2")));
        // not known: by the name alone
        assert!(policy.admits_application("app1", None));
        assert!(policy.admits_application("app1", Some("")));
        // decided for no application of that name (a wildcard)
        assert!(policy.admits_application("app2", Some("u2")));
        // decided again
        policy.decided_for("app1", "u2");
        assert!(policy.admits_application("app1", Some("u2")));
        assert!(!policy.admits_application("app1", Some("u1")));
        // not part of what IoT Core is given
        let mut plain = Policy::default();
        plain.allow(Action::Receive, "app/app1");
        assert_eq!(
            policy.to_iot_documents("aws", "eu-west-1", "1"),
            plain.to_iot_documents("aws", "eu-west-1", "1")
        );
    }

    #[test]
    fn globs_match_as_iot_policies_do() {
        assert!(glob("dt/app1/dev1/*", "dt/app1/dev1/telemetry"));
        assert!(glob("dt/app1/dev1/*", "dt/app1/dev1/a/b"));
        assert!(!glob("dt/app1/dev1/*", "dt/app1/dev10/telemetry"));
        assert!(!glob("dt/app1/dev1/*", "dt/app1/dev1"));
        assert!(glob(
            "cmd/app1/dev1/*/res/*",
            "cmd/app1/dev1/reboot/res/id/200"
        ));
        assert!(!glob("cmd/app1/dev1/*/res/*", "cmd/app1/dev1/reboot"));
        assert!(glob("a?c", "abc"));
        assert!(glob("*", ""));
        assert!(!glob("app/app1", "app/app10"));
        // `?` is one character, not one byte; `*` runs over characters
        assert!(glob("app/?", "app/é"));
        assert!(!glob("app/?", "app/éé"));
        assert!(glob("app/*é", "app/ééé"));
        assert!(glob("*ü*", "grün"));
        assert!(!glob("*ü*", "gruen"));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob("a*b*c", "aXbYbZ"));
        assert!(glob("**", "x"));
        assert!(!glob("", "x"));
        assert!(glob("", ""));
    }

    /// The matching of characters as vectors (as `glob` did before it stopped
    /// allocating): both agree on every short pattern and text.
    #[test]
    fn globs_agree_with_matching_by_characters() {
        fn by_chars(pattern: &str, text: &str) -> bool {
            let (p, t): (Vec<char>, Vec<char>) =
                (pattern.chars().collect(), text.chars().collect());
            let (mut pi, mut ti) = (0, 0);
            let (mut star, mut mark) = (None, 0);
            while ti < t.len() {
                if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
                    pi += 1;
                    ti += 1;
                } else if pi < p.len() && p[pi] == '*' {
                    star = Some(pi);
                    mark = ti;
                    pi += 1;
                } else if let Some(s) = star {
                    pi = s + 1;
                    mark += 1;
                    ti = mark;
                } else {
                    return false;
                }
            }
            p[pi..].iter().all(|c| *c == '*')
        }
        fn words(alphabet: &[char], max: usize) -> Vec<String> {
            let mut all = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                    .collect();
                all.extend(last.iter().cloned());
            }
            all
        }
        let texts = words(&['a', 'b', 'é'], 4);
        for pattern in words(&['a', 'é', '*', '?'], 4) {
            for text in &texts {
                assert_eq!(
                    glob(&pattern, text),
                    by_chars(&pattern, text),
                    "{pattern:?} {text:?}"
                );
            }
        }
    }

    #[test]
    fn filters_are_strings_not_wildcards() {
        let mut policy = Policy::default();
        policy.allow(Action::Subscribe, "cmd/app1/dev1/#");
        assert!(policy.allows(Action::Subscribe, "cmd/app1/dev1/#"));
        for wider in ["cmd/app1/+/#", "cmd/#", "#", "cmd/+/dev1/#"] {
            assert!(!policy.allows(Action::Subscribe, wider), "{wider}");
        }
        assert!(
            !policy.allows(Action::Publish, "cmd/app1/dev1/#"),
            "other actions are not implied"
        );
    }

    #[test]
    fn documents_are_iot_policies_and_never_empty_or_null() {
        let mut policy = Policy::default();
        policy
            .allow(Action::Connect, "dev1@app1")
            .allow(Action::Publish, "dt/app1/dev1/*");
        let docs = policy.to_iot_documents("aws", "eu-west-1", "123456789012");
        assert_eq!(docs.len(), 1);
        let doc: Value = serde_json::from_str(&docs[0]).unwrap();
        assert_eq!(doc["Version"], "2012-10-17");
        assert_eq!(doc["Statement"][0]["Action"], "iot:Connect");
        assert_eq!(
            doc["Statement"][0]["Resource"][0],
            "arn:aws:iot:eu-west-1:123456789012:client/dev1@app1"
        );
        assert_eq!(
            doc["Statement"][1]["Resource"][0],
            "arn:aws:iot:eu-west-1:123456789012:topic/dt/app1/dev1/*"
        );

        let mut big = Policy::default();
        for i in 0..200 {
            big.allow(Action::Publish, format!("dt/app1/device-number-{i}/*"));
        }
        let docs = big.to_iot_documents("aws", "eu-west-1", "123456789012");
        assert!(docs.len() > 1);
        assert!(
            docs.iter().all(|d| d.len() <= 2048),
            "IoT takes documents of at most 2,048 characters"
        );
        let resources: usize = docs
            .iter()
            .map(|d| {
                let doc: Value = serde_json::from_str(d).unwrap();
                doc["Statement"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["Resource"].as_array().unwrap().len())
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(resources, 200, "every resource is in one of the documents");

        // JSON writes a `"` or `\` in a name as two characters
        let mut quoted = Policy::default();
        for i in 0..40 {
            quoted.allow(
                Action::Publish,
                format!("dt/app1/{}{i}/*", "\"\\".repeat(20)),
            );
        }
        let docs = quoted.to_iot_documents("aws", "eu-west-1", "123456789012");
        assert!(
            docs.iter().all(|d| d.len() <= 2048),
            "IoT takes documents of at most 2,048 characters: {:?}",
            docs.iter().map(String::len).collect::<Vec<_>>()
        );
    }
}
