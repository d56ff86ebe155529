//! Client certificates that expired a short while ago still complete the handshake, so that a
//! node whose certificate ran out while it could not reach the host (a long host outage) can
//! renew it. Everything else about the certificate is checked as usual (the chain to the cluster
//! CA, the signature, its use); the host lets such a peer do nothing but renew (nodes) and tells
//! users to log in again.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use std::sync::Arc;

/// How long after its expiry a client certificate still completes the handshake.
pub const EXPIRED_GRACE_SECS: i64 = 90 * 86_400;

#[derive(Debug)]
pub(crate) struct TolerateExpired(pub Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for TolerateExpired {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match self.0.verify_client_cert(end_entity, intermediates, now) {
            Err(Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })) => {
                let info = river_pki::inspect(end_entity)
                    .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
                let now_s = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
                if now_s - info.not_after > EXPIRED_GRACE_SECS {
                    return Err(Error::InvalidCertificate(CertificateError::Expired));
                }
                // Everything else checked as of the last second it was valid.
                let then = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                    u64::try_from(info.not_after - 1).unwrap_or(0),
                ));
                self.0.verify_client_cert(end_entity, intermediates, then)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
