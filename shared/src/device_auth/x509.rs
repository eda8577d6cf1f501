//! Devices with X.509 client certificates. The certificate's issuer names the
//! application (its trust anchor subjects are unique across applications); the chain
//! is verified against that application's trust anchors with `rustls-webpki` at the
//! injected clock's time; the subject DN (or, failing that, the common name) names the
//! device, by name or alias.

use super::DeviceAuthenticator;
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
    Ok(match device {
        Some(device) => Ok((Arc::new(application.app), Arc::new(device))),
        None => Err("no device matches the certificate's subject"),
    })
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
