//! Devices with X.509 client certificates. The chain is verified against an
//! application's trust anchors with `rustls-webpki` at the injected clock's time; the
//! subject DN (or, failing that, the common name) names the device, by name or alias.
//!
//! Several applications, of any owners, may hold the same trust anchor. A device that
//! gives its application (HTTP `?application=` or a scoped Basic user, the MQTT client
//! id `{device}@{app}`) is checked against that application only. Without one, the
//! certificate's issuer finds the applications holding that subject; of those, the ones
//! whose anchors the chain verifies against and that hold a usable device that matches
//! the certificate and may use it accept it: exactly one authenticates it, several are
//! [`AMBIGUOUS`] (denied: the device must give its application).
//!
//! A device may use certificates when it holds `cert` credentials (then the presented
//! certificate must be one of them: pinned) or no credentials at all (any certificate of
//! its application's trust anchors that names it). A device that holds only passwords or
//! pre-shared keys does not authenticate with a certificate.

use super::DeviceAuthenticator;
use crate::model::device_spec::Credential;
use crate::model::trust_anchors::anchor_certificates;
use crate::model::{AppName, Claim, Device};
use crate::store::StoreError;
use rustls_pki_types::{CertificateDer, UnixTime};
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

type Found = Result<super::Found, &'static str>;

/// The denial of a certificate that no application was given for and that several
/// applications accept.
pub const AMBIGUOUS: &str =
    "several applications trust the certificate's issuer: give the application";

/// At most this many applications holding the issuer's subject are tried for a
/// certificate that names no application; a certificate whose issuer more hold is
/// [`AMBIGUOUS`] without trying (so that strangers holding a public CA cannot make every
/// hint-less login arbitrarily slow).
pub const MAX_CANDIDATES: usize = 16;

/// How far a certificate got with one application: the denial of the furthest stage is
/// the one reported when no application accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Issuer,
    Chain,
    Device,
    Credentials,
}

/// What the certificate says about itself.
struct Presented<'a> {
    chain: &'a [Vec<u8>],
    issuer: String,
    subject: String,
    common_name: Option<String>,
}

impl<'a> Presented<'a> {
    fn parse(chain: &'a [Vec<u8>]) -> Result<Self, &'static str> {
        let end_entity = chain.first().ok_or("no client certificate")?;
        let (_, cert) =
            X509Certificate::from_der(end_entity).map_err(|_| "unreadable client certificate")?;
        Ok(Self {
            chain,
            issuer: cert.issuer().to_string(),
            subject: cert.subject().to_string(),
            common_name: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
        })
    }
}

pub(super) async fn authenticate(
    auth: &DeviceAuthenticator,
    app_hint: Option<&str>,
    chain: &[Vec<u8>],
) -> Result<Found, StoreError> {
    let presented = match Presented::parse(chain) {
        Ok(presented) => presented,
        Err(reason) => return Ok(Err(reason)),
    };
    if let Some(hint) = app_hint {
        // only the application the device gives is considered
        let Ok(app) = AppName::parse(hint) else {
            return Ok(Err(
                "the application does not trust the certificate's issuer",
            ));
        };
        return Ok(application(auth, &presented, &app, true)
            .await?
            .map_err(|(_, reason)| reason));
    }
    candidates(auth, &presented).await
}

/// The applications holding the issuer's subject that accept the certificate (a device
/// of theirs matches it and may use it): exactly one authenticates it.
async fn candidates(
    auth: &DeviceAuthenticator,
    presented: &Presented<'_>,
) -> Result<Found, StoreError> {
    let apps = accepting(auth, presented).await?;
    match apps {
        Err(reason) => Ok(Err(reason)),
        Ok(mut found) if found.len() == 1 => {
            let claimant = found.remove(0);
            // the one application that claims the device, or none: a disabled device of
            // its owner never falls through to a stranger's device of the same name
            match claimant.unusable {
                None => Ok(Ok(claimant.found)),
                Some(reason) => Ok(Err(reason)),
            }
        }
        Ok(_) => Ok(Err(AMBIGUOUS)),
    }
}

/// An application that claims a certificate: it trusts the issuer, the chain verifies
/// against its anchors, and one of its devices matches the certificate and may use it.
struct Claimant {
    found: super::Found,
    /// Why the application or the device cannot be used now (disabled, being deleted).
    unusable: Option<&'static str>,
}

/// Every application holding the issuer's subject whose trust anchors the chain verifies
/// against and that has a device that matches the certificate and may use it, usable or
/// not; the denial of the furthest stage when there is none.
async fn accepting(
    auth: &DeviceAuthenticator,
    presented: &Presented<'_>,
) -> Result<Result<Vec<Claimant>, &'static str>, StoreError> {
    let no_issuer = "no application trusts the certificate's issuer";
    let apps = auth
        .applications
        .find_applications_by_claim(&Claim::TrustAnchor(presented.issuer.clone()))
        .await?;
    if apps.is_empty() {
        return Ok(Err(no_issuer));
    }
    if apps.len() > MAX_CANDIDATES {
        return Ok(Err(AMBIGUOUS));
    }
    let mut found = Vec::new();
    let mut furthest = (Stage::Issuer, no_issuer);
    for app in &apps {
        match application(auth, presented, app, false).await? {
            Ok(claimed) => {
                let unusable = super::unusable(&claimed.application)
                    .or_else(|| super::unusable(&claimed.device));
                found.push(Claimant {
                    found: claimed,
                    unusable,
                });
            }
            Err(denied) => furthest = furthest.max(denied),
        }
    }
    if found.is_empty() {
        return Ok(Err(furthest.1));
    }
    Ok(Ok(found))
}

/// Whether one application accepts the certificate: it holds the issuer's subject as a
/// trust anchor, the chain verifies against its anchors, and one of its devices matches
/// the certificate and may use it (whether both are usable is the caller's to judge).
async fn application(
    auth: &DeviceAuthenticator,
    presented: &Presented<'_>,
    app: &AppName,
    given: bool,
) -> Result<Result<super::Found, (Stage, &'static str)>, StoreError> {
    let untrusted = if given {
        "the application does not trust the certificate's issuer"
    } else {
        "no application trusts the certificate's issuer"
    };
    let Some(application) = auth.applications.get_application(app).await? else {
        return Ok(Err((Stage::Issuer, untrusted)));
    };
    if !crate::model::trust_anchors::valid_subjects(&application.app.status)
        .contains(&presented.issuer)
    {
        return Ok(Err((Stage::Issuer, untrusted)));
    }
    let now = auth.clock.now();
    if let Err(e) = verify_chain(
        presented.chain,
        &anchor_certificates(&application.app.spec),
        now,
    ) {
        tracing::debug!(error = %e, application = %app, "client certificate refused");
        return Ok(Err((
            Stage::Chain,
            "the certificate is not valid for the application",
        )));
    }
    let device = match find(auth, app, &presented.subject).await? {
        Some(device) => Some(device),
        None => match &presented.common_name {
            Some(cn) => find(auth, app, cn).await?,
            None => None,
        },
    };
    let Some(device) = device else {
        return Ok(Err((
            Stage::Device,
            "no device matches the certificate's subject",
        )));
    };
    let mut found = super::found(application.app, device);
    if let Err(reason) = may_use(&found.credentials, &presented.chain[0]) {
        return Ok(Err((Stage::Credentials, reason)));
    }
    auth.share_application(app.as_str(), &mut found.application);
    Ok(Ok(found))
}

/// The applications (by name) that accept a certificate chain (DER, end entity first)
/// when it names none, as [`authenticate`] sees them: for the just-in-time validation
/// of certificates on IoT Core, which grants each of them its own policy. The denial
/// when none does.
pub(super) async fn accepting_applications(
    auth: &DeviceAuthenticator,
    chain: &[Vec<u8>],
) -> Result<Result<Vec<String>, &'static str>, StoreError> {
    let presented = match Presented::parse(chain) {
        Ok(presented) => presented,
        Err(reason) => return Ok(Err(reason)),
    };
    Ok(accepting(auth, &presented).await?.and_then(|found| {
        let usable: Vec<String> = found
            .iter()
            .filter(|c| c.unusable.is_none())
            .map(|c| c.found.application.metadata.name.clone())
            .collect();
        match (usable.is_empty(), found.first()) {
            (true, Some(claimant)) => Err(claimant.unusable.unwrap_or("not usable")),
            _ => Ok(usable),
        }
    }))
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

/// The first moment after `now` at which a certificate of `chain` (DER) is no longer
/// valid: a second after the earliest `notAfter` still ahead (X.509 times are whole
/// seconds). Until then, a chain that verified verifies again against the same anchors.
/// `None` when a certificate cannot be read or none expires after `now`.
pub fn valid_until(chain: &[Vec<u8>], now: SystemTime) -> Option<SystemTime> {
    let mut first: Option<SystemTime> = None;
    for der in chain {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let seconds = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
        let ends = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds + 1);
        if ends > now && first.is_none_or(|first| ends < first) {
            first = Some(ends);
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn a_chain_is_valid_until_its_first_certificate_expires() {
        let cert = |not_after: i32| {
            let mut params = rcgen::CertificateParams::new(vec!["d".into()]).unwrap();
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(not_after, 1, 1);
            let key = rcgen::KeyPair::generate().unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        let at =
            |year: u64| SystemTime::UNIX_EPOCH + Duration::from_secs((year - 1970) * 31_556_952);
        // a second after 2030-01-01T00:00:00Z and 2040-01-01T00:00:00Z
        let second_after =
            |epoch: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(epoch + 1));
        let chain = [cert(2040), cert(2030), cert(2050)];
        assert_eq!(valid_until(&chain, at(2025)), second_after(1_893_456_000));
        // past the first: the next one
        assert_eq!(valid_until(&chain, at(2035)), second_after(2_208_988_800));
        assert_eq!(valid_until(&chain, at(2060)), None, "all expired");
        assert_eq!(
            valid_until(&[vec![0x30, 0x00]], at(2025)),
            None,
            "unreadable"
        );
    }

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
