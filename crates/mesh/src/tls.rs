//! rustls and quinn configuration: mutual TLS with the cluster CA, the one crypto provider (ring),
//! and first-contact verification of the host by the CA fingerprint carried in a join token.

use crate::MeshError;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

/// ALPN of river's mesh protocol; the version is in every stream header too.
pub const ALPN: &[u8] = b"river/1";

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, MeshError> {
        let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| MeshError::Pem(e.to_string()))?;
        if chain.is_empty() {
            return Err(MeshError::Pem("no certificate found".into()));
        }
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| MeshError::Pem(e.to_string()))?
            .ok_or_else(|| MeshError::Pem("no private key found".into()))?;
        Ok(Self { chain, key })
    }
}

/// How a client decides to trust the host.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The cluster CA certificate (DER), stored after joining.
    Ca(Vec<u8>),
    /// Only the SHA-256 of the CA certificate, from a join token: the host must present the CA
    /// in its chain, and the chain must verify up to it.
    Fingerprint([u8; 32]),
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // Keepalives keep idle forwards and sessions open through NATs for hours; the idle timeout
    // notices a vanished peer quickly without depending on heartbeats.
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.max_idle_timeout(Some(Duration::from_secs(20).try_into().expect("20s fits a VarInt")));
    // quinn allocates state up front for every stream the peer may open, so these limits cost
    // memory on every connection (4096 streams ≈ 400 KiB each). Streams are credited back as
    // they close, so this bounds concurrency, not throughput; a connection that needs more
    // (a busy forward) can be raised with `set_max_concurrent_bi_streams`.
    t.max_concurrent_bidi_streams(128u32.into());
    t.max_concurrent_uni_streams(16u32.into());
    // Per stream: enough for a LAN's bandwidth-delay product many times over, and small enough that
    // a forward whose reader stalls holds at most this much at each hop.
    t.stream_receive_window((2u32 * 1024 * 1024).into());
    t.receive_window((32u32 * 1024 * 1024).into());
    t.send_window(32 * 1024 * 1024);
    // Forwarded UDP arrives as datagrams: a burst waits here for the reader rather than pushing
    // out the oldest (quinn drops those when this is full).
    t.datagram_receive_buffer_size(Some(8 * 1024 * 1024));
    // Ask peers to acknowledge every 10th packet rather than every 2nd (the ACK frequency
    // extension; both ends are river): a bulk forward otherwise spends a system call on an ACK
    // for every two data packets.
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(9u32.into());
    t.ack_frequency_config(Some(acks));
    Arc::new(t)
}

fn roots(ca_der: &[u8]) -> Result<Arc<RootCertStore>, MeshError> {
    let mut r = RootCertStore::empty();
    r.add(CertificateDer::from(ca_der.to_vec()))?;
    Ok(Arc::new(r))
}

/// The host's server config. Client certificates are verified against the cluster CA when
/// presented; a client without one may only join (the host enforces that per stream).
///
/// A client certificate that expired less than [`crate::EXPIRED_GRACE_SECS`] ago still completes
/// the handshake (the host lets it renew and nothing else).
pub fn server_config(identity: Identity, ca_der: &[u8]) -> Result<quinn::ServerConfig, MeshError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_der)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| MeshError::Quic(e.to_string()))?;
    let verifier = Arc::new(crate::expired::TolerateExpired(verifier));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(|e| MeshError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// A client config: who we are (none while joining) and how we trust the host.
pub fn client_config(identity: Option<Identity>, trust: Trust) -> Result<quinn::ClientConfig, MeshError> {
    let builder =
        rustls::ClientConfig::builder_with_provider(provider()).with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match trust {
        Trust::Ca(der) => builder.with_root_certificates(roots(&der)?),
        Trust::Fingerprint(fp) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCa { fp })),
    };
    let mut tls = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key)?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| MeshError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// First-contact verifier: finds the CA whose fingerprint the token carries among the
/// certificates the host sent, then verifies the host certificate against it as usual.
#[derive(Debug)]
struct PinnedCa {
    fp: [u8; 32],
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates.iter().find(|c| river_pki::fingerprint(c) == self.fp).ok_or_else(|| {
            rustls::Error::General(
                "the host's CA does not match the fingerprint in the join token (wrong host, or the token is for another cluster)".into(),
            )
        })?;
        let roots = roots(ca).map_err(|e| rustls::Error::General(e.to_string()))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// Who a peer is, from the certificate chain it presented (already verified by rustls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// No certificate: may only join.
    Anonymous,
    /// A certificate from the cluster CA naming a river identity.
    Known(river_pki::Subject, river_pki::CertInfo),
    /// A certificate that verified but names no river identity: refused.
    Unrecognised,
}

pub fn peer_of_certs(certs: Option<&[CertificateDer<'_>]>) -> Peer {
    let Some(first) = certs.and_then(|c| c.first()) else {
        return Peer::Anonymous;
    };
    match river_pki::inspect(first) {
        Ok(info) => match info.subject.clone() {
            Some(s) => Peer::Known(s, info),
            None => Peer::Unrecognised,
        },
        Err(_) => Peer::Unrecognised,
    }
}

/// Who the peer of a QUIC connection is.
pub fn peer_subject(conn: &quinn::Connection) -> Peer {
    let certs = conn
        .peer_identity()
        .and_then(|a| a.downcast::<Vec<CertificateDer<'static>>>().ok());
    peer_of_certs(certs.as_deref().map(Vec::as_slice))
}

/// TLS for the HTTPS API: the host certificate, TLS 1.2 and 1.3 for curl and browsers, and client
/// certificates from the cluster CA accepted (not required: `/api/health` is open).
pub fn https_server_config(identity: Identity, ca_der: &[u8]) -> Result<Arc<rustls::ServerConfig>, MeshError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_der)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| MeshError::Quic(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}
