//! The QUIC mesh: endpoint and TLS configuration, peer identities, and typed frames on streams.
//!
//! Architecture invariant: this is the only crate that knows quinn. Roles (host, runner, CLI)
//! open connections and streams through it and speak in `river_proto` messages.

pub mod client;
mod framed;
mod lab_tls;
pub use lab_tls::lab_server_config;
mod splice;
mod tls;
pub mod udp;

pub use framed::{open, pipe, read_header, recv_msg, send_msg, FramedError, MsgReader};
pub use quinn::ReadError;
pub use quinn::{ClientConfig, Connection, ConnectionError, Endpoint, RecvStream, SendStream, ServerConfig, VarInt};
mod expired;
pub use expired::EXPIRED_GRACE_SECS;
pub use splice::{copy_down, copy_up, reset_tcp, splice};
pub use tls::{
    client_config, https_server_config, peer_of_certs, peer_subject, server_config, Identity, Peer, Trust, ALPN,
};

/// Application close codes, so the far side can tell a refusal from a crash.
pub mod close {
    use quinn::VarInt;
    /// Normal shutdown.
    pub const DONE: VarInt = VarInt::from_u32(0);
    /// The peer's certificate was revoked or its node removed.
    pub const REVOKED: VarInt = VarInt::from_u32(0x10);
    /// The peer sent something it must not (wrong stream kind for its identity, garbage).
    pub const PROTOCOL: VarInt = VarInt::from_u32(0x11);
    /// A join-only connection finished its join.
    pub const JOINED: VarInt = VarInt::from_u32(0x12);
    /// The host has no record of this node (or of this certificate): not a removal. The node
    /// keeps its work and tries again; an admin can admit it again.
    pub const UNKNOWN: VarInt = VarInt::from_u32(0x13);
    /// The host cannot serve this peer now (its database failed); try again.
    pub const UNAVAILABLE: VarInt = VarInt::from_u32(0x14);
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("key or certificate file: {0}")]
    Pem(String),
    #[error("QUIC configuration: {0}")]
    Quic(String),
    // Not a `#[source]`: the message already carries it, and error chains would say it twice.
    #[error("could not open the QUIC socket: {0}")]
    Io(std::io::Error),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        source: quinn::ConnectError,
    },
    #[error("no answer from {0} within 5s: is the river host running there, and is UDP open to it?")]
    NoAnswer(std::net::SocketAddr),
    #[error("connection to {addr} failed: {source}")]
    Connection {
        addr: std::net::SocketAddr,
        source: quinn::ConnectionError,
    },
}

impl From<std::io::Error> for MeshError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// Binds a client endpoint on an ephemeral UDP port of the right address family.
pub fn client_endpoint(peer: std::net::SocketAddr) -> Result<Endpoint, MeshError> {
    let bind: std::net::SocketAddr = if peer.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .map_err(|_| MeshError::Quic("bad bind address".into()))?;
    endpoint(bind, None, quinn::EndpointConfig::default())
}

/// Binds the host's endpoint at `addr`.
pub fn server_endpoint(addr: std::net::SocketAddr, config: ServerConfig) -> Result<Endpoint, MeshError> {
    endpoint(addr, Some(config), quinn::EndpointConfig::default())
}

/// A server endpoint whose stateless-reset key comes from `seed` (secret, and the same every time
/// this server starts) instead of from chance: after a crash and restart, the new process answers
/// packets of a connection it never had with the reset the old process promised, and the peer
/// ends that connection at once instead of waiting out its idle timeout.
pub fn server_endpoint_with_reset_seed(
    addr: std::net::SocketAddr,
    config: ServerConfig,
    seed: &[u8],
) -> Result<Endpoint, MeshError> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, seed);
    let mut cfg = quinn::EndpointConfig::new(std::sync::Arc::new(key));
    // quinn's default connection ids carry a keyed check whose key is random per process: the
    // successor would drop the old connection's packets as foreign instead of resetting them.
    cfg.cid_generator(|| Box::new(RandomCids));
    endpoint(addr, Some(config), cfg)
}

/// Connection ids of random bytes, any of which a restarted server answers with a stateless
/// reset.
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut id = [0u8; 8];
        // getrandom(2), which does not fail on the kernels river runs on; were it to, the ids
        // would still differ.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id).is_err() {
            let n = FALLBACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            id = n.to_le_bytes();
        }
        quinn::ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

fn endpoint(
    addr: std::net::SocketAddr,
    server: Option<ServerConfig>,
    config: quinn::EndpointConfig,
) -> Result<Endpoint, MeshError> {
    let socket = std::net::UdpSocket::bind(addr)?;
    buffers::enlarge(&socket);
    let runtime = quinn::default_runtime().ok_or_else(|| MeshError::Quic("no async runtime".into()))?;
    Ok(Endpoint::new(config, server, socket, runtime)?)
}

/// Enlarges a UDP socket's buffers (4 MiB each way where the system allows), so a burst waits
/// in the kernel rather than being dropped there.
pub use buffers::enlarge as enlarge_udp_buffers;

mod buffers {
    //! UDP socket buffers. The kernel's default (208 KiB) overflows during a bulk forward on a busy
    //! machine: every dropped datagram is a loss to QUIC, which halves its congestion window.

    /// Per direction: a few milliseconds of a 10 Gbit/s link.
    const WANTED: libc::c_int = 4 * 1024 * 1024;

    /// Asks for [`WANTED`] bytes each way: beyond `net.core.[rw]mem_max` when privileged
    /// (`SO_*BUFFORCE`), else up to it. Best effort: a smaller buffer still works.
    pub fn enlarge(socket: &impl std::os::fd::AsRawFd) {
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if set(socket, force).is_err() {
                let _ = set(socket, plain);
            }
        }
    }

    #[allow(unsafe_code)]
    fn set(socket: &impl std::os::fd::AsRawFd, option: libc::c_int) -> std::io::Result<()> {
        let value = WANTED;
        // SAFETY: setsockopt(2) on a socket we own, with a pointer to a c_int and its size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// How long a handshake may take before the host counts as unreachable.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Dials `addr` and completes the handshake.
pub async fn connect(
    endpoint: &Endpoint,
    addr: std::net::SocketAddr,
    config: quinn::ClientConfig,
) -> Result<Connection, MeshError> {
    let connecting = endpoint
        .connect_with(config, addr, river_pki::HOST_SERVER_NAME)
        .map_err(|source| MeshError::Connect { addr, source })?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(r) => r.map_err(|source| MeshError::Connection { addr, source }),
        Err(_) => Err(MeshError::NoAnswer(addr)),
    }
}

/// Why a connection ended, as far as a client deciding whether to retry cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The host removed this node (or revoked this user) on purpose. Carries its reason.
    Removed(String),
    /// TLS refused this identity or the host's (foreign or expired certificate); retrying cannot
    /// help. Carries the reason.
    Refused(String),
    /// Anything else: the host went away, the network broke. Retry.
    Transient(String),
}

/// Certificate-related TLS alerts: the peer does not accept who we are (or we do not accept it).
const CERT_ALERTS: [u8; 8] = [42, 43, 44, 45, 46, 48, 49, 116];

fn is_cert_alert(code: quinn::TransportErrorCode) -> bool {
    CERT_ALERTS
        .iter()
        .any(|a| code == quinn::TransportErrorCode::crypto(*a))
}

/// Classifies a connection error.
pub fn ended(e: &quinn::ConnectionError) -> Ended {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) if c.error_code == close::REVOKED => {
            Ended::Removed(String::from_utf8_lossy(&c.reason).into_owned())
        }
        quinn::ConnectionError::ConnectionClosed(c) if is_cert_alert(c.error_code) => {
            Ended::Refused(format!("the host rejected this certificate ({e}); it is from another cluster or long expired: a node joins again with a new token, a user logs in again (`river login`)"))
        }
        quinn::ConnectionError::TransportError(t) if is_cert_alert(t.code) => {
            Ended::Refused(format!("the host's certificate is not trusted ({e}); is this the right host?"))
        }
        quinn::ConnectionError::ApplicationClosed(c) if c.error_code == close::UNKNOWN || c.error_code == close::UNAVAILABLE => {
            Ended::Transient(String::from_utf8_lossy(&c.reason).into_owned())
        }
        other => Ended::Transient(other.to_string()),
    }
}
