//! One SSH connection served: russh's handler is an adapter here over river's [`Handler`].

use crate::keys::{HostKey, PublicKey};
use crate::session::SessionChannel;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// How a server presents itself and keeps its connections.
pub struct Config {
    /// After `SSH-2.0-` in the greeting, e.g. `river`.
    pub name: String,
    pub host_key: HostKey,
    /// The subsystems a session channel may ask for (e.g. `sftp`); others are refused.
    pub subsystems: Vec<String>,
    /// How often a client that has sent nothing is asked whether it is there; after two
    /// unanswered asks it is dropped. `None`: never (the transport notices a dead peer).
    pub keepalive: Option<Duration>,
    /// How long the client has to send its greeting.
    pub greeting: Duration,
}

/// What a server does; the crate speaks SSH around it. Each connection has its own.
pub trait Handler: Send + 'static {
    /// Whether `key` may log in as `user`. Asked first when the client offers the key (`proven`
    /// false), then once it has signed with it (`proven` true): only a yes to the second logs in.
    fn login(&mut self, user: &str, key: &PublicKey, proven: bool) -> impl Future<Output = bool> + Send;

    /// A session channel the client opened: the handler follows its events and answers on it
    /// (usually from a task of its own, so that the connection goes on meanwhile).
    fn session(&mut self, channel: SessionChannel);

    /// A `direct-tcpip` channel (`ssh -L`, `ssh -J`) to `host:port`: the stream it is relayed to,
    /// or why not.
    fn direct_tcpip(&mut self, host: &str, port: u32) -> impl Future<Output = Result<Relay, Refusal>> + Send;
}

/// A byte stream a `direct-tcpip` channel is relayed to.
pub type Relay = Box<dyn Duplex>;

/// A stream both read and written.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// Why a `direct-tcpip` channel is not opened, as the client is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not allowed (SSH's "administratively prohibited"), and why.
    Prohibited(String),
    /// Allowed, but it could not be reached (SSH's "connect failed"), and why.
    ConnectFailed(String),
}

/// Why a connection ended other than by its client leaving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no SSH greeting in time")]
    NoGreeting,
    #[error("handshake: {0}")]
    Handshake(russh::Error),
    #[error("session: {0}")]
    Session(russh::Error),
}

/// Serves one SSH connection on `stream` with `handler` until the client leaves, or until `stop`
/// says why it must go (the client is disconnected with that reason).
pub async fn serve<S, H>(
    stream: S,
    config: Config,
    handler: H,
    stop: impl Future<Output = String> + Send,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let russh_config = russh::server::Config {
        server_id: russh::SshId::Standard(format!("SSH-2.0-{}", config.name).into()),
        methods: russh::MethodSet::from(&[MethodKind::PublicKey][..]),
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![config.host_key.0],
        // A session idle for days is normal (a VPS's shell, a tunnel); keepalives find the gone.
        inactivity_timeout: None,
        keepalive_interval: config.keepalive,
        keepalive_max: 2,
        ..Default::default()
    };
    let adapter = Adapter {
        handler,
        subsystems: config.subsystems,
    };
    let session = match tokio::time::timeout(
        config.greeting,
        russh::server::run_stream(Arc::new(russh_config), stream, adapter),
    )
    .await
    {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => return Err(Error::Handshake(e)),
        Err(_) => return Err(Error::NoGreeting),
    };
    // russh runs the session as a task of its own: told to go, it ends with every channel in it.
    let handle = session.handle();
    let told = async move {
        let why = stop.await;
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, why, "en".into())
            .await;
        std::future::pending::<()>().await;
    };
    tokio::select! {
        ended = session => ended.map_err(Error::Session),
        () = told => Ok(()),
    }
}

struct Adapter<H> {
    handler: H,
    subsystems: Vec<String>,
}

impl<H: Handler> russh::server::Handler for Adapter<H> {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let key = PublicKey(offer.public_key.clone());
        Ok(if self.handler.login(user, &key, false).await {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let key = PublicKey(key.public_key.clone());
        Ok(if self.handler.login(user, &key, true).await {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        self.handler.session(SessionChannel::new(channel));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.handler.direct_tcpip(host_to_connect, port_to_connect).await {
            Ok(mut to) => {
                reply.accept().await;
                tokio::spawn(async move {
                    let mut ch = channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut ch, &mut to).await;
                });
            }
            Err(why) => {
                let (code, reason) = match why {
                    Refusal::Prohibited(r) => (1, r),
                    Refusal::ConnectFailed(r) => (2, r),
                };
                reply.reject(ChannelOpenFailure::Other { code, reason }).await;
            }
        }
        Ok(())
    }

    // Requests are answered here; the session's channel (which sees them too, in order) acts.
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.subsystems.iter().any(|s| s == name) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}
