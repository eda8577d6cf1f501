//! Application trust anchors: `spec.trustAnchors.anchors[].certificate` holds the base64
//! of a PEM certificate; the registry reports each one in `status.trustAnchors`.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use x509_parser::prelude::*;

/// Most trust anchors an application may hold.
pub const MAX_TRUST_ANCHORS: usize = 16;

#[derive(Deserialize)]
struct SpecTrustAnchors {
    #[serde(default)]
    anchors: Vec<SpecTrustAnchor>,
}

#[derive(Deserialize)]
struct SpecTrustAnchor {
    certificate: String,
}

/// What the registry found in one trust anchor, as Drogue Cloud reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AnchorStatus {
    #[serde(rename_all = "camelCase")]
    Valid {
        subject: String,
        /// The certificate as given in the spec (base64 of its PEM).
        certificate: String,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    },
    Invalid {
        error: String,
        message: String,
    },
}

/// Why the trust anchor section itself could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.trustAnchors: {0}")]
pub struct TrustAnchorError(String);

/// Evaluates `spec.trustAnchors`; `Ok(None)` when the application has none.
///
/// A malformed section (wrong types) is an error; a certificate that cannot be read is
/// reported as `invalid` in the status, as Drogue Cloud does.
pub fn evaluate(spec: &Map<String, Value>) -> Result<Option<Vec<AnchorStatus>>, TrustAnchorError> {
    let Some(section) = spec.get("trustAnchors").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let section =
        SpecTrustAnchors::deserialize(section).map_err(|e| TrustAnchorError(e.to_string()))?;
    if section.anchors.len() > MAX_TRUST_ANCHORS {
        return Err(TrustAnchorError(format!(
            "at most {MAX_TRUST_ANCHORS} trust anchors are allowed"
        )));
    }
    Ok(Some(
        section
            .anchors
            .into_iter()
            .map(|anchor| evaluate_one(anchor.certificate))
            .collect(),
    ))
}

/// The certificates (DER) of the valid anchors, for verifying device certificates.
pub fn anchor_certificates(spec: &Map<String, Value>) -> Vec<Vec<u8>> {
    let Some(Ok(section)) = spec.get("trustAnchors").map(SpecTrustAnchors::deserialize) else {
        return Vec::new();
    };
    section
        .anchors
        .iter()
        .filter_map(|a| decode(&a.certificate).ok())
        .collect()
}

fn evaluate_one(encoded: String) -> AnchorStatus {
    let invalid = |error: &str, message: String| AnchorStatus::Invalid {
        error: error.to_owned(),
        message,
    };
    let der = match decode(&encoded) {
        Ok(der) => der,
        Err((error, message)) => return invalid(error, message),
    };
    match X509Certificate::from_der(&der) {
        Ok((_, cert)) => AnchorStatus::Valid {
            subject: cert.subject().to_string(),
            certificate: encoded,
            not_before: to_utc(cert.validity().not_before),
            not_after: to_utc(cert.validity().not_after),
        },
        Err(e) => invalid("Failed", format!("Failed to parse certificate: {e}")),
    }
}

/// base64 -> PEM -> DER of its first certificate. DER given directly is accepted too.
/// The DER of a certificate given as base64 of its PEM text or DER.
pub fn certificate_from_base64(encoded: &str) -> Option<Vec<u8>> {
    decode(encoded).ok()
}

fn decode(encoded: &str) -> Result<Vec<u8>, (&'static str, String)> {
    let bytes = STANDARD.decode(encoded.trim()).map_err(|e| {
        (
            "Failed",
            format!("The certificate is not valid base64: {e}"),
        )
    })?;
    if bytes.first() == Some(&0x30) {
        return Ok(bytes);
    }
    for pem in Pem::iter_from_buffer(&bytes) {
        match pem {
            Ok(pem) if pem.label == "CERTIFICATE" => return Ok(pem.contents),
            Ok(_) => continue,
            Err(e) => return Err(("Failed", format!("Failed to parse PEM: {e}"))),
        }
    }
    Err((
        "NoCertificateFound",
        "No PEM encoded certificate was found".into(),
    ))
}

/// The subjects of the valid trust anchors reported in an application's status.
pub fn valid_subjects(status: &Map<String, Value>) -> Vec<String> {
    status
        .get("trustAnchors")
        .and_then(|t| t.get("anchors"))
        .and_then(Value::as_array)
        .map(|anchors| {
            anchors
                .iter()
                .filter_map(|a| a.get("valid")?.get("subject")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn to_utc(time: ASN1Time) -> DateTime<Utc> {
    DateTime::from_timestamp(time.timestamp(), 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // A self-signed CA made with `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256
    // -subj /CN=Test CA -days 36500 -nodes`.
    pub(crate) const CA_PEM: &str = include_str!("../../testdata/ca.pem");

    #[test]
    fn a_pem_certificate_is_reported_valid_with_subject_and_validity() {
        let encoded = STANDARD.encode(CA_PEM);
        let spec = json!({"trustAnchors": {"anchors": [{"certificate": encoded}]}});
        let status = evaluate(spec.as_object().unwrap()).unwrap().unwrap();
        let AnchorStatus::Valid {
            subject,
            not_before,
            not_after,
            certificate,
        } = &status[0]
        else {
            panic!("expected valid, got {status:?}");
        };
        assert_eq!(subject, "CN=Test CA");
        assert!(not_before < not_after);
        assert_eq!(certificate, &encoded);
        assert_eq!(anchor_certificates(spec.as_object().unwrap()).len(), 1);
        let status = serde_json::json!({"trustAnchors": {"anchors": status}});
        assert_eq!(valid_subjects(status.as_object().unwrap()), ["CN=Test CA"]);
    }

    #[test]
    fn unreadable_certificates_are_reported_invalid() {
        let spec = json!({"trustAnchors": {"anchors": [
            {"certificate": "not base64!"},
            {"certificate": STANDARD.encode("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")},
            {"certificate": STANDARD.encode("hello")}
        ]}});
        let status = evaluate(spec.as_object().unwrap()).unwrap().unwrap();
        assert_eq!(status.len(), 3);
        for s in &status {
            assert!(matches!(s, AnchorStatus::Invalid { .. }), "{s:?}");
        }
        let json = serde_json::to_value(&status[0]).unwrap();
        assert_eq!(json["invalid"]["error"], "Failed");
        let json = serde_json::to_value(&status[2]).unwrap();
        assert_eq!(json["invalid"]["error"], "NoCertificateFound");
    }

    #[test]
    fn a_malformed_section_is_an_error() {
        let spec = json!({"trustAnchors": {"anchors": "x"}});
        assert!(evaluate(spec.as_object().unwrap()).is_err());
        assert_eq!(evaluate(&Map::new()).unwrap(), None);
    }
}
