//! The sections of a device's `spec` that this project understands: credentials,
//! aliases and gateways. Everything else in a spec is kept as the client sent it.

use super::claims::Claim;
pub use super::credentials::Credential;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most aliases plus unique usernames a device may hold (each is a uniqueness claim
/// written in the same transaction as the device).
pub const MAX_CLAIMS: usize = 32;
/// Most credentials a device may hold.
pub const MAX_CREDENTIALS: usize = 32;
/// Most gateways a device may have (each is an index entry written with the device).
pub const MAX_GATEWAYS: usize = 16;

/// Why a device spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// The two places credentials may be written, the preferred one first.
const CREDENTIAL_SECTIONS: [&str; 2] = ["authentication", "credentials"];

#[derive(Serialize, Deserialize)]
struct CredentialsSection {
    #[serde(default)]
    credentials: Vec<Credential>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// `spec.alias`: a list of names (Drogue Cloud 0.11), or `{"aliases": [...]}` (earlier).
#[derive(Deserialize)]
#[serde(untagged)]
enum AliasSection {
    List(Vec<String>),
    Object {
        #[serde(default)]
        aliases: Vec<String>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GatewaySelector {
    #[serde(default)]
    match_names: Vec<String>,
}

/// An external command endpoint, as a device's `spec.commands[].external` holds it (see
/// `commands::external` for how commands are sent there).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExternalEndpoint {
    #[serde(default)]
    pub r#type: Option<String>,
    pub url: String,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

/// The external endpoint types commands can be sent to (`None`: Drogue's plain body).
pub const EXTERNAL_TYPES: [&str; 3] = ["ttn", "ttnv2", "ttnv3"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandTarget {
    external: ExternalEndpoint,
}

/// The external command endpoints a device's spec names (`spec.commands`, in order).
pub fn command_endpoints(spec: &Map<String, Value>) -> Result<Vec<ExternalEndpoint>, SpecError> {
    match spec.get("commands").filter(|v| !v.is_null()) {
        None => Ok(Vec::new()),
        Some(value) => Vec::<CommandTarget>::deserialize(value)
            .map(|targets| targets.into_iter().map(|t| t.external).collect())
            .map_err(|e| SpecError(format!("spec.commands: {e}"))),
    }
}

/// Checks what can be checked of an external endpoint without reaching it: an `http` or
/// `https` URL, a known type, a method and header names and values HTTP allows.
fn check_endpoint(endpoint: &ExternalEndpoint) -> Result<(), String> {
    let url = reqwest::Url::parse(&endpoint.url).map_err(|e| format!("url: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("url: must be an http or https URL with a host".into());
    }
    if let Some(ty) = &endpoint.r#type
        && !EXTERNAL_TYPES.contains(&ty.as_str())
    {
        return Err(format!("type: {ty:?} is none of {EXTERNAL_TYPES:?}"));
    }
    if !endpoint.method.is_empty()
        && reqwest::Method::from_bytes(endpoint.method.as_bytes()).is_err()
    {
        return Err(format!(
            "method: {:?} is not an HTTP method",
            endpoint.method
        ));
    }
    for (name, value) in &endpoint.headers {
        reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("headers: {name:?} is not a header name"))?;
        reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| format!("headers: the value of {name:?} is not a header value"))?;
    }
    Ok(())
}

/// The most external command endpoints one device names.
pub const MAX_COMMAND_ENDPOINTS: usize = 4;

/// Checks a device spec and makes it fit for storage: every plain password is hashed.
pub fn prepare_device_spec(mut spec: Map<String, Value>) -> Result<Map<String, Value>, SpecError> {
    for section in CREDENTIAL_SECTIONS {
        let Some(value) = spec.get_mut(section) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let parsed: CredentialsSection = serde_json::from_value(value.take())
            .map_err(|e| SpecError(format!("spec.{section}: {e}")))?;
        if parsed.credentials.len() > MAX_CREDENTIALS {
            return Err(SpecError(format!(
                "spec.{section}: at most {MAX_CREDENTIALS} credentials are allowed"
            )));
        }
        let credentials = parsed
            .credentials
            .into_iter()
            .map(|c| {
                if let Credential::UsernamePassword { username, .. } = &c
                    && username.is_empty()
                {
                    return Err(SpecError(format!(
                        "spec.{section}: usernames must not be empty"
                    )));
                }
                c.into_stored()
                    .map_err(|e| SpecError(format!("spec.{section}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        *value = serde_json::to_value(CredentialsSection {
            credentials,
            rest: parsed.rest,
        })
        .expect("credentials serialize");
    }
    let aliases = aliases(&spec)?;
    if aliases.iter().any(String::is_empty) {
        return Err(SpecError("spec.alias: aliases must not be empty".into()));
    }
    let gateways = gateways(&spec)?;
    if let Some(bad) = gateways
        .iter()
        .find(|g| super::DeviceName::parse(g).is_err())
    {
        return Err(SpecError(format!(
            "spec.gatewaySelector: {bad:?} cannot be a device name"
        )));
    }
    if gateways.len() > MAX_GATEWAYS {
        return Err(SpecError(format!(
            "spec.gatewaySelector: a device may have at most {MAX_GATEWAYS} gateways"
        )));
    }
    let endpoints = command_endpoints(&spec)?;
    if endpoints.len() > MAX_COMMAND_ENDPOINTS {
        return Err(SpecError(format!(
            "spec.commands: at most {MAX_COMMAND_ENDPOINTS} endpoints are allowed"
        )));
    }
    for endpoint in &endpoints {
        check_endpoint(endpoint).map_err(|e| SpecError(format!("spec.commands: {e}")))?;
    }
    if claims(&spec)?.len() > MAX_CLAIMS {
        return Err(SpecError(format!(
            "a device may hold at most {MAX_CLAIMS} aliases and unique usernames"
        )));
    }
    Ok(spec)
}

/// What readers see in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// The spec as a user who may only read it sees it: every password hash (bcrypt,
/// SHA-512-crypt) and pre-shared key replaced by [`REDACTED`], keeping the credentials'
/// kinds, usernames and certificates. Offline guessing needs the hashes; readers get none.
pub fn redact_secrets(spec: &mut Map<String, Value>) {
    fn redact_password(password: &mut Value) {
        match password {
            Value::Object(typed) => {
                for value in typed.values_mut() {
                    *value = Value::String(REDACTED.into());
                }
            }
            other => *other = Value::String(REDACTED.into()),
        }
    }
    for section in CREDENTIAL_SECTIONS {
        let Some(Value::Array(credentials)) =
            spec.get_mut(section).and_then(|s| s.get_mut("credentials"))
        else {
            continue;
        };
        for credential in credentials.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(password) = credential.get_mut("pass") {
                redact_password(password);
            }
            if let Some(password) = credential
                .get_mut("user")
                .and_then(|user| user.get_mut("password"))
            {
                redact_password(password);
            }
            if let Some(Value::Object(psk)) = credential.get_mut("psk")
                && let Some(key) = psk.get_mut("key")
            {
                *key = Value::String(REDACTED.into());
            }
        }
    }
    // external command endpoints' headers carry their API keys
    if let Some(Value::Array(targets)) = spec.get_mut("commands") {
        for headers in targets.iter_mut().filter_map(|t| {
            t.get_mut("external")
                .and_then(|e| e.get_mut("headers"))
                .and_then(Value::as_object_mut)
        }) {
            for value in headers.values_mut() {
                *value = Value::String(REDACTED.into());
            }
        }
    }
}

/// Every credential of a device, from both sections.
pub fn credentials(spec: &Map<String, Value>) -> Result<Vec<Credential>, SpecError> {
    let mut all = Vec::new();
    for section in CREDENTIAL_SECTIONS {
        if let Some(value) = spec.get(section).filter(|v| !v.is_null()) {
            let parsed = CredentialsSection::deserialize(value)
                .map_err(|e| SpecError(format!("spec.{section}: {e}")))?;
            all.extend(parsed.credentials);
        }
    }
    Ok(all)
}

/// Every credential of a device, as [`credentials`] reads them, and the spec without the
/// sections that held them (`authentication`, `credentials`): the form authentication
/// keeps a device in, where the sections' JSON objects would take about ten times the
/// room of the credentials themselves. One unreadable section gives no credentials at
/// all, from either section (both are taken out all the same), as [`credentials`]'
/// error does for its callers. A spec left empty is a new empty map: a map emptied by
/// removals keeps its first node (about 630 bytes), a new one has none.
pub fn take_credentials(spec: &mut Map<String, Value>) -> Vec<Credential> {
    let all = credentials(spec).unwrap_or_default();
    for section in CREDENTIAL_SECTIONS {
        spec.remove(section);
    }
    if spec.is_empty() {
        *spec = Map::new();
    }
    all
}

/// The aliases of a device (`spec.alias.aliases`).
pub fn aliases(spec: &Map<String, Value>) -> Result<Vec<String>, SpecError> {
    match spec.get("alias").filter(|v| !v.is_null()) {
        Some(value) => match AliasSection::deserialize(value) {
            Ok(AliasSection::List(aliases) | AliasSection::Object { aliases }) => Ok(aliases),
            Err(_) => Err(SpecError(
                "spec.alias: expected a list of strings, such as [\"alias1\"]".into(),
            )),
        },
        None => Ok(Vec::new()),
    }
}

/// The devices that may act as gateways for a device (`spec.gatewaySelector.matchNames`).
pub fn gateways(spec: &Map<String, Value>) -> Result<Vec<String>, SpecError> {
    match spec.get("gatewaySelector").filter(|v| !v.is_null()) {
        Some(value) => GatewaySelector::deserialize(value)
            .map(|s| s.match_names)
            .map_err(|e| SpecError(format!("spec.gatewaySelector: {e}"))),
        None => Ok(Vec::new()),
    }
}

/// The names, besides its own, that a device holds within its application: its aliases
/// and unique usernames, without repeats.
pub fn claims(spec: &Map<String, Value>) -> Result<Vec<Claim>, SpecError> {
    claims_with(spec, &credentials(spec)?)
}

/// As [`claims`], with the device's credentials given apart (for a spec they were taken
/// out of, see [`take_credentials`]).
pub fn claims_with(
    spec: &Map<String, Value>,
    credentials: &[Credential],
) -> Result<Vec<Claim>, SpecError> {
    let mut claims: Vec<Claim> = aliases(spec)?.into_iter().map(Claim::Alias).collect();
    for credential in credentials {
        if let Credential::UsernamePassword {
            username,
            unique: true,
            ..
        } = credential
        {
            claims.push(Claim::Username(username.clone()));
        }
    }
    Ok(super::claims::without_repeats(claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn external_command_endpoints_are_checked_and_their_headers_redacted() {
        let good = json!({"commands": [{"external": {"type": "ttnv3", "url": "https://eu1.cloud.thethings.network/api/v3/as/applications/a/devices", "headers": {"Authorization": "Bearer NNSXS.secret"}}}]});
        let prepared = prepare_device_spec(spec(good)).unwrap();
        assert_eq!(command_endpoints(&prepared).unwrap().len(), 1);
        for bad in [
            json!({"commands": [{"external": {"url": "file:///etc/passwd"}}]}),
            json!({"commands": [{"external": {"url": "not a url"}}]}),
            json!({"commands": [{"external": {"url": "https://x.example", "type": "mqtt"}}]}),
            json!({"commands": [{"external": {"url": "https://x.example", "method": "G E T"}}]}),
            json!({"commands": [{"external": {"url": "https://x.example", "headers": {"a b": "c"}}}]}),
            json!({"commands": [{"external": {"url": "https://x.example", "headers": {"a": "c\nd"}}}]}),
            json!({"commands": [{"internal": {}}]}),
            json!({"commands": {"external": {"url": "https://x.example"}}}),
            json!({"commands": [{"external": {"url": "https://x.example"}}, {"external": {"url": "https://x.example"}}, {"external": {"url": "https://x.example"}}, {"external": {"url": "https://x.example"}}, {"external": {"url": "https://x.example"}}]}),
        ] {
            let err = prepare_device_spec(spec(bad.clone())).unwrap_err();
            assert!(err.0.starts_with("spec.commands"), "{bad}: {err:?}");
        }
        let mut shown = prepared.clone();
        redact_secrets(&mut shown);
        assert_eq!(
            shown["commands"][0]["external"]["headers"]["Authorization"],
            REDACTED
        );
        assert_eq!(
            shown["commands"][0]["external"]["url"],
            prepared["commands"][0]["external"]["url"]
        );
    }

    fn spec(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn plain_passwords_in_both_sections_are_hashed() {
        let prepared = prepare_device_spec(spec(json!({
            "authentication": {"credentials": [{"pass": "one"}, {"user": {"username": "u", "password": {"plain": "two"}}}]},
            "credentials": {"credentials": [{"pass": "three"}]},
            "other": {"kept": true}
        })))
        .unwrap();
        let text = Value::Object(prepared.clone()).to_string();
        for secret in ["one", "two", "three"] {
            assert!(
                !text.contains(&format!("\"{secret}\"")),
                "{secret} leaked: {text}"
            );
        }
        assert_eq!(prepared["other"], json!({"kept": true}));
        let all = credentials(&prepared).unwrap();
        assert_eq!(all.len(), 3);
        assert!(matches!(&all[0], Credential::Password(p) if p.verify("one")));
    }

    #[test]
    fn claims_are_aliases_and_unique_usernames() {
        let s = spec(json!({
            "alias": ["b", "a", "a"],
            "authentication": {"credentials": [
                {"user": {"username": "u1", "password": "p", "unique": true}},
                {"user": {"username": "u2", "password": "p"}}
            ]}
        }));
        assert_eq!(
            claims(&s).unwrap(),
            [
                Claim::Alias("a".into()),
                Claim::Alias("b".into()),
                Claim::Username("u1".into())
            ]
        );
    }

    #[test]
    fn wrong_types_are_refused_with_the_section_named() {
        for (bad, section) in [
            (json!({"alias": "a"}), "spec.alias"),
            (
                json!({"gatewaySelector": {"matchNames": [1]}}),
                "spec.gatewaySelector",
            ),
            (
                json!({"authentication": {"credentials": [{"pass": 5}]}}),
                "spec.authentication",
            ),
            (
                json!({"credentials": {"credentials": {"pass": "x"}}}),
                "spec.credentials",
            ),
        ] {
            let err = prepare_device_spec(spec(bad)).unwrap_err();
            assert!(err.0.starts_with(section), "{err}");
        }
    }

    #[test]
    fn too_many_claims_are_refused() {
        let aliases: Vec<String> = (0..=MAX_CLAIMS).map(|i| format!("a{i}")).collect();
        assert!(prepare_device_spec(spec(json!({"alias": aliases}))).is_err());
    }

    #[test]
    fn the_earlier_alias_object_form_is_read_too() {
        let s = spec(json!({"alias": {"aliases": ["x"]}}));
        assert_eq!(aliases(&s).unwrap(), ["x"]);
    }

    #[test]
    fn readers_see_no_secrets() {
        let mut spec = prepare_device_spec(
            serde_json::from_value(serde_json::json!({
                "authentication": {"credentials": [
                    {"pass": "one"},
                    {"user": {"username": "u", "password": {"plain": "two"}, "unique": true}},
                    {"psk": {"key": "c2VjcmV0"}},
                    {"cert": "PEM"}
                ]},
                "credentials": {"credentials": [{"pass": "three"}]},
                "other": {"pass": "kept"}
            }))
            .unwrap(),
        )
        .unwrap();
        redact_secrets(&mut spec);
        let text = serde_json::to_string(&spec).unwrap();
        assert!(
            !text.contains("$6$") && !text.contains("c2VjcmV0"),
            "{text}"
        );
        assert_eq!(
            spec["authentication"]["credentials"],
            serde_json::json!([
                {"pass": {"sha512": REDACTED}},
                {"user": {"username": "u", "password": {"sha512": REDACTED}, "unique": true}},
                {"psk": {"key": REDACTED}},
                {"cert": "PEM"}
            ])
        );
        assert_eq!(
            spec["credentials"]["credentials"],
            serde_json::json!([{"pass": {"sha512": REDACTED}}])
        );
        assert_eq!(spec["other"], serde_json::json!({"pass": "kept"}));
    }
}
