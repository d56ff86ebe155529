//! The cluster's own certificate authority and the profile of every certificate it issues.
//!
//! Trust model (see `pki/README.md`): one CA per cluster, made on the host's first start. The host
//! holds the CA key. Runners and users make their keys where they live and send only a CSR; the
//! host ignores everything in the CSR but the public key and writes the identity itself, as a
//! `river://node/NAME` or `river://user/NAME` URI in the subject alternative names.
//!
//! Architecture invariant: no I/O and no clock reads. Callers pass `now` in unix seconds and get
//! PEM strings back; writing files with the right modes is the caller's job.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use std::fmt;
use time::OffsetDateTime;

/// The DNS name every host certificate carries and every river client verifies, whatever address
/// it dialled. Trust comes from the cluster CA, not from DNS.
pub const HOST_SERVER_NAME: &str = "host.river";

/// Certificates are valid from a little before `now`, so a peer whose clock lags accepts them:
/// five minutes, or a tenth of a short lifetime, so the renewal point stays in the future.
const BACKDATE_SECS: i64 = 300;

fn backdate(lifetime_secs: i64) -> i64 {
    BACKDATE_SECS.min(lifetime_secs / 10)
}

pub const CA_LIFETIME_SECS: i64 = 10 * 365 * 24 * 3600;
pub const HOST_LIFETIME_SECS: i64 = 365 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate library: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("certificate signing request is invalid or unsupported: {0}")]
    BadCsr(String),
    #[error("not a valid PEM certificate: {0}")]
    BadPem(String),
    #[error("certificate could not be parsed: {0}")]
    BadCert(String),
    #[error("time out of range")]
    Time,
}

/// Who a certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Host,
    Node(String),
    User(String),
}

impl Subject {
    fn uri(&self) -> String {
        match self {
            Subject::Host => "river://host".to_owned(),
            Subject::Node(n) => format!("river://node/{n}"),
            Subject::User(n) => format!("river://user/{n}"),
        }
    }

    fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("river://")?;
        if rest == "host" {
            return Some(Subject::Host);
        }
        let (kind, name) = rest.split_once('/')?;
        river_proto::name::Name::parse(name).ok()?;
        match kind {
            "node" => Some(Subject::Node(name.to_owned())),
            "user" => Some(Subject::User(name.to_owned())),
            _ => None,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Host => f.write_str("host"),
            Subject::Node(n) => write!(f, "node {n}"),
            Subject::User(n) => write!(f, "user {n}"),
        }
    }
}

/// A certificate and its freshly made private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The cluster certificate authority.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &hex::encode(self.fingerprint()))
            .finish_non_exhaustive()
    }
}

fn at(secs: i64) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|_| PkiError::Time)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).expect("system RNG failed");
    // Positive, and never starting with a zero byte, so every tool prints it the same way.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn leaf_params(subject: &Subject, now: i64, lifetime_secs: i64) -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "river");
    dn.push(
        DnType::CommonName,
        match subject {
            Subject::Host => "river host".to_owned(),
            Subject::Node(n) | Subject::User(n) => n.clone(),
        },
    );
    p.distinguished_name = dn;
    p.subject_alt_names = vec![SanType::URI(subject.uri().try_into()?)];
    p.not_before = at(now - backdate(lifetime_secs))?;
    p.not_after = at(now + lifetime_secs)?;
    p.serial_number = Some(random_serial());
    // An explicit CA:FALSE, so no verifier has to guess.
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

impl Ca {
    /// Makes a new CA for a cluster.
    pub fn generate(cluster_id: &str, now: i64) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "river");
        dn.push(DnType::CommonName, format!("river cluster CA {cluster_id}"));
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.not_before = at(now - BACKDATE_SECS)?;
        p.not_after = at(now + CA_LIFETIME_SECS)?;
        p.serial_number = Some(random_serial());
        let cert = p.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
        })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = pem_to_der(cert_pem)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            key,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA private key as PEM, to be written 0600 by the caller.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// SHA-256 of the CA certificate: what join tokens carry.
    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.cert_der)
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_der(&self.cert_der.clone().into(), &self.key)?)
    }

    /// The host's own server certificate, valid for `names` (DNS names or IPs) as well as
    /// [`HOST_SERVER_NAME`]. The host makes its own key here: it is the CA's machine.
    pub fn issue_host(&self, names: &[String], now: i64, lifetime_secs: i64) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let mut p = leaf_params(&Subject::Host, now, lifetime_secs)?;
        let mut all: Vec<String> = vec![HOST_SERVER_NAME.to_owned()];
        all.extend(names.iter().filter(|n| n.as_str() != HOST_SERVER_NAME).cloned());
        for n in all {
            let san = match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.try_into()?),
            };
            p.subject_alt_names.push(san);
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.issuer()?)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a node or user certificate for the public key in `csr_pem`. Everything else the CSR
    /// asks for is ignored: the identity and lifetime are the host's decision.
    pub fn issue_from_csr(
        &self,
        csr_pem: &str,
        subject: &Subject,
        now: i64,
        lifetime_secs: i64,
    ) -> Result<String, PkiError> {
        if *subject == Subject::Host {
            return Err(PkiError::BadCsr("host certificates are not issued from a CSR".into()));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let p = leaf_params(subject, now, lifetime_secs)?;
        Ok(p.signed_by(&csr.public_key, &self.issuer()?)?.pem())
    }

    /// Issues a user certificate together with a new key, for the local admin credential made at
    /// host init (the host is where that credential is used first).
    pub fn issue_user_with_key(&self, name: &str, now: i64, lifetime_secs: i64) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let p = leaf_params(&Subject::User(name.to_owned()), now, lifetime_secs)?;
        let cert = p.signed_by(&key, &self.issuer()?)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Makes a private key and a CSR for it. The key stays with the caller.
pub fn new_key_and_csr(name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    let csr = p.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// The first certificate in a PEM text, as DER.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, PkiError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| PkiError::BadPem(e.to_string()))?;
    if p.label != "CERTIFICATE" {
        return Err(PkiError::BadPem(format!(
            "expected a CERTIFICATE block, found {}",
            p.label
        )));
    }
    Ok(p.contents)
}

/// What river reads out of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: Option<Subject>,
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
}

pub fn inspect(der: &[u8]) -> Result<CertInfo, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::BadCert(e.to_string()))?;
    let subject = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::BadCert(e.to_string()))?
        .and_then(|ext| {
            ext.value.general_names.iter().find_map(|g| match g {
                x509_parser::extensions::GeneralName::URI(u) => Subject::from_uri(u),
                _ => None,
            })
        });
    Ok(CertInfo {
        subject,
        serial: hex::encode(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        is_ca: cert.is_ca(),
    })
}

/// When to renew a certificate: at 70% of its lifetime, early enough to survive a long outage of
/// the host, late enough not to churn. (linkerd2-proxy uses the same rule.)
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before) * 7 / 10
}

#[cfg(test)]
mod tests;
