//! Devices with X.509 client certificates. The certificate's issuer names the
//! application (its trust anchor subjects are unique across applications); the chain
//! is verified against that application's trust anchors with `rustls-webpki` at the
//! injected clock's time; the subject DN (or, failing that, the common name) names the
//! device, by name or alias.
//!
//! A device may use certificates when it holds `cert` credentials (then the presented
//! certificate must be one of them: pinned) or no credentials at all (any certificate of
//! its application's trust anchors that names it). A device that holds only passwords or
//! pre-shared keys does not authenticate with a certificate.

use super::DeviceAuthenticator;
use crate::model::device_spec::{self, Credential};
use crate::model::trust_anchors::anchor_certificates;
use crate::model::{AppName, Application, Claim, Device};
use crate::store::StoreError;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The time certificates are checked at.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A fixed time, for tests.
impl Clock for SystemTime {
    fn now(&self) -> SystemTime {
        *self
    }
}

type Found = Result<(Arc<Application>, Arc<Device>), &'static str>;

pub(super) async fn authenticate(
    auth: &DeviceAuthenticator,
    app_hint: Option<&str>,
    chain: &[Vec<u8>],
) -> Result<Found, StoreError> {
    let Some(end_entity) = chain.first() else {
        return Ok(Err("no client certificate"));
    };
    let Ok((_, cert)) = X509Certificate::from_der(end_entity) else {
        return Ok(Err("unreadable client certificate"));
    };
    let issuer = cert.issuer().to_string();
    let subject = cert.subject().to_string();
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);

    let store = auth.store.as_ref();
    let Some(app) = store
        .find_application_by_claim(&Claim::TrustAnchor(issuer))
        .await?
    else {
        return Ok(Err("no application trusts the certificate's issuer"));
    };
    if app_hint.is_some_and(|hint| hint != app.as_str()) {
        return Ok(Err("the certificate belongs to another application"));
    }
    let Some(application) = store.get_application(&app).await? else {
        return Ok(Err("no application trusts the certificate's issuer"));
    };
    let now = auth.clock.now();
    if let Err(e) = verify_chain(chain, &anchor_certificates(&application.app.spec), now) {
        tracing::debug!(error = %e, application = %app, "client certificate refused");
        return Ok(Err("the certificate is not valid for the application"));
    }
    let device = match find(auth, &app, &subject).await? {
        Some(device) => Some(device),
        None => match common_name {
            Some(cn) => find(auth, &app, &cn).await?,
            None => None,
        },
    };
    let Some(device) = device else {
        return Ok(Err("no device matches the certificate's subject"));
    };
    let stored = device_spec::credentials(&device.spec).unwrap_or_default();
    if let Err(reason) = may_use(&stored, end_entity) {
        return Ok(Err(reason));
    }
    Ok(Ok((Arc::new(application.app), Arc::new(device))))
}

/// Whether a device holding `stored` credentials may authenticate with the certificate
/// `end_entity` (DER): one of its `cert` credentials, or any when it holds none at all.
fn may_use(stored: &[Credential], end_entity: &[u8]) -> Result<(), &'static str> {
    may_use_certificate(stored, |der| der == end_entity)
}

/// Whether a device holding `stored` credentials may authenticate with a certificate,
/// told by `is_it` (which sees the DER of each pinned certificate): when it pins `cert`
/// credentials, one of them must be it; a device with no credentials at all may use any
/// certificate of its application's trust anchors; any other device none. The one rule
/// for authentication and for revoking certificates activated on IoT Core.
pub fn may_use_certificate(
    stored: &[Credential],
    is_it: impl Fn(&[u8]) -> bool,
) -> Result<(), &'static str> {
    let mut pinned = stored.iter().filter_map(|c| match c {
        Credential::Certificate(text) => Some(text),
        _ => None,
    });
    match pinned.next() {
        Some(first) => std::iter::once(first)
            .chain(pinned)
            .filter_map(|text| certificate_der(text))
            .any(|der| is_it(&der))
            .then_some(())
            .ok_or("the certificate is not one the device holds"),
        None if stored.is_empty() => Ok(()),
        None => Err("the device does not authenticate with certificates"),
    }
}

/// The DER of a `cert` credential: PEM text, or base64 of PEM or DER.
fn certificate_der(text: &str) -> Option<Vec<u8>> {
    if text.contains("-----BEGIN") {
        return x509_parser::pem::Pem::iter_from_buffer(text.as_bytes())
            .filter_map(Result::ok)
            .find(|p| p.label == "CERTIFICATE")
            .map(|p| p.contents);
    }
    crate::model::trust_anchors::certificate_from_base64(text)
}

async fn find(
    auth: &DeviceAuthenticator,
    app: &AppName,
    id: &str,
) -> Result<Option<Device>, StoreError> {
    auth.find_device(app, id).await
}

/// Verifies `chain` (end entity first) for client authentication against `anchors` at
/// `now`.
pub fn verify_chain(
    chain: &[Vec<u8>],
    anchors: &[Vec<u8>],
    now: SystemTime,
) -> Result<(), webpki::Error> {
    let end_entity = CertificateDer::from(chain[0].as_slice());
    let cert = webpki::EndEntityCert::try_from(&end_entity)?;
    let anchor_ders: Vec<CertificateDer<'_>> = anchors
        .iter()
        .map(|a| CertificateDer::from(a.as_slice()))
        .collect();
    let trust_anchors = anchor_ders
        .iter()
        .filter_map(|der| webpki::anchor_from_trusted_cert(der).ok())
        .collect::<Vec<_>>();
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust_anchors,
        &intermediates,
        UnixTime::since_unix_epoch(since_epoch),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn only_devices_that_use_certificates_authenticate_with_one() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        let b64 = base64::engine::general_purpose::STANDARD;
        let pem_text = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            b64.encode(&der)
        );
        let pass = Credential::Password(crate::model::credentials::Password::Bare("x".into()));
        assert_eq!(may_use(&[], &der), Ok(()), "no credentials: any");
        assert!(
            may_use(std::slice::from_ref(&pass), &der).is_err(),
            "passwords only"
        );
        for form in [pem_text.clone(), b64.encode(&pem_text), b64.encode(&der)] {
            let pinned = [pass.clone(), Credential::Certificate(form.clone())];
            assert_eq!(may_use(&pinned, &der), Ok(()), "{form}");
            assert!(
                may_use(&pinned, &[0x30, 0x00]).is_err(),
                "another certificate"
            );
        }
        let unreadable = [Credential::Certificate("nonsense".into())];
        assert!(may_use(&unreadable, &der).is_err());
    }
}
