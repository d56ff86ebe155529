//! Client side of the mesh, shared by runners and the CLI: enrolling with a token, connecting
//! with a credential bundle, and one-shot requests.

use crate::{client_config, connect, open, recv_msg, send_msg, Identity, MeshError, Trust};
use quinn::{Connection, Endpoint};
use river_creds::{Bundle, Meta};
use river_proto::msg::{JoinRequest, JoinResponse, Request, Response};
use river_proto::token::JoinToken;
use river_proto::StreamKind;
use std::net::SocketAddr;

/// The default port, added to a host given without one.
pub const DEFAULT_PORT: u16 = 7443;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Token(#[from] river_proto::token::TokenParseError),
    #[error("cannot resolve host address {0:?}: {1}")]
    Resolve(String, String),
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    Framed(#[from] crate::FramedError),
    #[error(transparent)]
    Pki(#[from] river_pki::PkiError),
    #[error(transparent)]
    Creds(#[from] river_creds::CredsError),
    #[error("{0}")]
    Refused(String),
    #[error("the host closed the stream without answering")]
    NoAnswer,
    #[error("the host sent a CA that does not match the join token; not trusting it")]
    CaMismatch,
    #[error("{addr} failed the TLS check against the join token ({reason}); check the host address, or use a token from this cluster")]
    WrongHost { addr: SocketAddr, reason: String },
}

/// Resolves `HOST[:PORT]` (port 7443 when absent).
pub async fn resolve(host: &str) -> Result<SocketAddr, ClientError> {
    let has_port = match host.rsplit_once(':') {
        _ if host.parse::<SocketAddr>().is_ok() => true,
        // A bare IPv6 address has colons but no port.
        _ if host.parse::<std::net::Ipv6Addr>().is_ok() => false,
        Some((name, port)) => !name.contains(':') && port.parse::<u16>().is_ok(),
        None => false,
    };
    let with_port = match (has_port, host.parse::<std::net::Ipv6Addr>().is_ok()) {
        (true, _) => host.to_owned(),
        (false, true) => format!("[{host}]:{DEFAULT_PORT}"),
        (false, false) => format!("{host}:{DEFAULT_PORT}"),
    };
    let mut addrs = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| ClientError::Resolve(host.to_owned(), e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| ClientError::Resolve(host.to_owned(), "no address".into()))
}

/// Trades a join token (or user invite) and a locally made key for a certificate. The private key
/// never leaves this machine; the host is verified against the CA fingerprint in the token.
pub async fn enrol(host: &str, token_text: &str, name: &str, kind: &str) -> Result<Bundle, ClientError> {
    let token = JoinToken::parse(token_text)?;
    let addr = resolve(host).await?;
    let (key_pem, csr_pem) = river_pki::new_key_and_csr(name)?;
    let endpoint = crate::client_endpoint(addr)?;
    let trust = client_config(None, Trust::Fingerprint(token.ca_fingerprint))?;
    let conn = match connect(&endpoint, addr, trust).await {
        Ok(c) => c,
        // A TLS failure here means the host is not the one the token names.
        Err(MeshError::Connection {
            source: quinn::ConnectionError::TransportError(t),
            ..
        }) if (0x100..0x200).contains(&u64::from(t.code)) => {
            return Err(ClientError::WrongHost { addr, reason: t.reason });
        }
        Err(e) => return Err(e.into()),
    };
    let answer = async {
        let (mut send, mut recv) = open(&conn, StreamKind::Join).await?;
        send_msg(
            &mut send,
            &JoinRequest {
                token: token_text.trim().to_owned(),
                name: name.to_owned(),
                csr_pem,
            },
        )
        .await?;
        let _ = send.finish();
        recv_msg::<JoinResponse>(&mut recv).await
    }
    .await;
    conn.close(crate::close::DONE, b"");
    endpoint.wait_idle().await;
    match answer?.ok_or(ClientError::NoAnswer)? {
        JoinResponse::Refused { reason } => Err(ClientError::Refused(reason)),
        JoinResponse::Issued { name, cert_pem, ca_pem } => {
            if river_pki::fingerprint(&river_pki::pem_to_der(&ca_pem)?) != token.ca_fingerprint {
                return Err(ClientError::CaMismatch);
            }
            Ok(Bundle {
                meta: Meta {
                    host: host.to_owned(),
                    name: format!("{kind} {name}"),
                },
                ca_pem,
                cert_pem,
                key_pem,
            })
        }
    }
}

/// Connects to the host named in `bundle`, as the identity in it.
pub async fn connect_bundle(bundle: &Bundle) -> Result<(Endpoint, Connection), ClientError> {
    let addr = resolve(&bundle.meta.host).await?;
    let identity = Identity::from_pem(&bundle.cert_pem, &bundle.key_pem)?;
    let cfg = client_config(Some(identity), Trust::Ca(bundle.ca_der()?))?;
    let endpoint = crate::client_endpoint(addr)?;
    let conn = connect(&endpoint, addr, cfg).await?;
    Ok((endpoint, conn))
}

/// A connection the host ended on purpose becomes a refusal with the host's reason.
fn refusal(e: crate::FramedError) -> ClientError {
    match &e {
        crate::FramedError::Connection(c) => match crate::ended(c) {
            crate::Ended::Refused(reason) | crate::Ended::Removed(reason) => ClientError::Refused(reason),
            crate::Ended::Transient(_) => ClientError::Framed(e),
        },
        _ => ClientError::Framed(e),
    }
}

/// Sends one request on its own stream and waits for the answer.
pub async fn call(conn: &Connection, req: &Request) -> Result<Response, ClientError> {
    let (mut send, mut recv) = open(conn, StreamKind::Rpc).await.map_err(refusal)?;
    send_msg(&mut send, req).await.map_err(refusal)?;
    let _ = send.finish();
    recv_msg(&mut recv).await.map_err(refusal)?.ok_or(ClientError::NoAnswer)
}

/// Renews the certificate in `bundle` over `conn` with a new key made here. Returns the new
/// bundle; saving it is the caller's decision.
pub async fn renew(conn: &Connection, bundle: &Bundle, name: &str) -> Result<Bundle, ClientError> {
    let (key_pem, csr_pem) = river_pki::new_key_and_csr(name)?;
    match call(conn, &Request::Renew { csr_pem }).await? {
        Response::Renewed { cert_pem } => Ok(Bundle {
            cert_pem,
            key_pem,
            ..bundle.clone()
        }),
        Response::Error { message, .. } => Err(ClientError::Refused(message)),
        other => Err(ClientError::Refused(format!("unexpected answer {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_with_and_without_port() {
        assert_eq!(resolve("127.0.0.1:9").await.unwrap().port(), 9);
        assert_eq!(resolve("127.0.0.1").await.unwrap().port(), DEFAULT_PORT);
        assert_eq!(resolve("localhost:10").await.unwrap().port(), 10);
        assert_eq!(resolve("[::1]:11").await.unwrap().port(), 11);
        assert_eq!(resolve("::1").await.unwrap().port(), DEFAULT_PORT);
    }
}
