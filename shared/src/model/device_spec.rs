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
    let mut claims: Vec<Claim> = aliases(spec)?.into_iter().map(Claim::Alias).collect();
    for credential in credentials(spec)? {
        if let Credential::UsernamePassword {
            username,
            unique: true,
            ..
        } = credential
        {
            claims.push(Claim::Username(username));
        }
    }
    Ok(super::claims::without_repeats(claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
