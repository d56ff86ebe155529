//! Taking connections at a TCP door of the host (the HTTPS/SSH port, the dashboard's own
//! address): within the door's caps, and TLS within a deadline.

use std::time::Duration;

/// The next connection on `listener` that `entrances` lets in (a failed accept is logged and
/// tried again; one over the caps is dropped), with its place.
pub(super) async fn admit(
    listener: &tokio::net::TcpListener,
    entrances: &crate::entrances::Entrances,
) -> (tokio::net::TcpStream, std::net::SocketAddr, crate::entrances::Admitted) {
    loop {
        match listener.accept().await {
            Ok((tcp, remote)) => {
                if let Some(admitted) = entrances.admit(remote.ip()) {
                    return (tcp, remote, admitted);
                }
            }
            Err(e) => {
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The TLS side of `tcp`, once its handshake ends (within 10 s).
pub(super) async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    remote: std::net::SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%remote, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            None
        }
    }
}
