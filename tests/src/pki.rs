//! Certificates made for the tests with `rcgen`: an application's CA, device
//! certificates it issues (valid, expired, not yet valid), and self-signed ones.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, date_time_ymd,
};

/// A certificate and its key, in PEM and DER.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Issued {
    /// Certificate and key in one PEM, as client libraries take an identity.
    pub fn identity_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

/// A certificate authority that signs device certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub key_pem: String,
}

fn dn(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (kind, value) in parts {
        dn.push(kind.clone(), *value);
    }
    dn
}

impl TestCa {
    /// A CA with the subject `O=Drogue IoT, OU=<app>, CN=<cn>`, valid 2020 to 2100.
    pub fn new(app: &str, cn: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn(&[
            (DnType::OrganizationName, "Drogue IoT"),
            (DnType::OrganizationalUnitName, app),
            (DnType::CommonName, cn),
        ]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2100, 1, 1);
        let key = KeyPair::generate().unwrap();
        let key_pem = key.serialize_pem();
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
            key_pem,
        }
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate as a trust anchor entry: base64 of its PEM.
    pub fn anchor(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.cert_pem())
    }

    /// A client certificate for `O=Drogue IoT, OU=<app>, CN=<cn>`, valid between the
    /// given years (January 1st).
    pub fn issue(&self, app: &str, cn: &str, from_year: i32, to_year: i32) -> Issued {
        self.sign(client_params(app, cn, from_year, to_year))
    }

    /// A client certificate like [`Self::issue`]'s, valid from 2020 until `until`
    /// (to the second).
    pub fn issue_until(&self, app: &str, cn: &str, until: std::time::SystemTime) -> Issued {
        let mut params = client_params(app, cn, 2020, 2100);
        params.not_after = until.into();
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

fn client_params(app: &str, cn: &str, from_year: i32, to_year: i32) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = dn(&[
        (DnType::OrganizationName, "Drogue IoT"),
        (DnType::OrganizationalUnitName, app),
        (DnType::CommonName, cn),
    ]);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = date_time_ymd(from_year, 1, 1);
    params.not_after = date_time_ymd(to_year, 1, 1);
    params
}

/// A self-signed client certificate with the same kind of subject.
pub fn self_signed(app: &str, cn: &str) -> Issued {
    let params = client_params(app, cn, 2020, 2100);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// The subject string the registry and authentication compare: x509-parser's form.
pub fn subject(app: &str, cn: &str) -> String {
    format!("O=Drogue IoT, OU={app}, CN={cn}")
}
