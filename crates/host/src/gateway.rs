//! The SSH gateway: for people who have only OpenSSH, the host is an SSH jump host on its API
//! port (`ssh -J river@HOST:7443 root@vps-12`). The API listener tells the two apart by the first
//! bytes a client sends (`SSH-2.0-…` against a TLS ClientHello).
//!
//! A user logs in with an SSH key registered to their river account (`river user key add`); the
//! gateway then opens only `direct-tcpip` channels, each checked like `river forward` (the user may
//! reach the task, it is running) and carried over the mesh: to a VPS's port 22 that is the SSH
//! server its runner keeps for it, so the user's SSH session runs end to end between their client
//! and the VPS, and the gateway relays bytes it cannot read. Any other port of a task the user may
//! reach works too (`ssh -L 8888:task-12:8888 -p 7443 river@HOST`).

use crate::auth::Caller;
use crate::reply::{refused, HostResult};
use crate::vps::key_id;
use crate::Ctx;
use base64::Engine as _;
use river_proto::msg::{ErrorKind, Response, UserKey};
use river_ssh::{Event, PublicKey, Refusal, Relay, SessionChannel};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What a client that opens a shell on the gateway itself is told.
const USAGE: &str = "river SSH gateway: use it as a jump host, e.g.\r\n  ssh -J river@HOST:PORT root@vps-12\r\n  ssh -L 8888:task-12:8888 -N -p PORT river@HOST\r\n";

/// `SHA256:…` of a key line's blob, as `ssh-keygen -l` prints it.
fn fingerprint(line: &str) -> Option<String> {
    let data = line.split_whitespace().nth(1)?;
    let blob = base64::engine::general_purpose::STANDARD.decode(data).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &blob);
    Some(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref())
    ))
}

fn user_name(caller: &Caller) -> HostResult<&str> {
    match caller {
        Caller::User { name, .. } => Ok(name),
        Caller::Node(_) => Err(refused(ErrorKind::Forbidden, "nodes have no SSH keys")),
    }
}

/// Whether `proof` is an SSH signature by `line`'s key of what registering it for `user` means
/// ([`river_proto::msg::key_proof_message`]): that the caller holds the private key. Without
/// it, anyone could register someone else's (public) key to their own account, and the owner's
/// gateway logins would land in it.
fn proves(user: &str, line: &str, proof: &str) -> Result<(), String> {
    let key = PublicKey::parse(line).map_err(|e| format!("not an SSH public key: {e}"))?;
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(data)) = (parts.next(), parts.next()) else {
        return Err("not an SSH public key".into());
    };
    let msg = river_proto::msg::key_proof_message(user, kind, data);
    key.verify(river_proto::msg::KEY_PROOF_NAMESPACE, msg.as_bytes(), proof)
        .map_err(|e| match e {
            river_ssh::SignatureError::NotASignature => "no proof that you hold the private key came with it (an SSH signature; `river user key add` makes one with `ssh-keygen -Y sign`)",
            river_ssh::SignatureError::Wrong => "the signature does not prove that you hold this key's private key (for this account)",
        }.to_owned())
}

/// `river user key add FILE`.
pub(crate) async fn add_key(ctx: &Ctx, caller: &Caller, line: &str, proof: &str) -> HostResult<Response> {
    let user = user_name(caller)?;
    let line = match crate::vps::parse_key(line) {
        Ok(l) => l,
        Err(why) => return Err(refused(ErrorKind::Invalid, why)),
    };
    if let Err(why) = proves(user, &line, proof) {
        return Err(refused(ErrorKind::Forbidden, why));
    }
    let Some(fp) = fingerprint(&line) else {
        return Err(refused(ErrorKind::Invalid, "the key data is not base64"));
    };
    match ctx
        .store
        .add_user_key(user, &key_id(&line), &line, &fp, ctx.clock.now_ms())
        .await
    {
        Ok(()) => {}
        Err(river_store::StoreError::Exists(_)) => {
            return Err(refused(
                ErrorKind::Conflict,
                format!("key {fp} is already registered (to you or another user): a key can name only one user"),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    ctx.store
        .event(ctx.clock.now_ms(), &caller.actor(), "user.key.add", &fp)
        .await?;
    keys(ctx, caller).await
}

pub(crate) async fn keys(ctx: &Ctx, caller: &Caller) -> HostResult<Response> {
    let user = user_name(caller)?;
    Ok(Response::UserKeys(ctx.store.user_keys(user).await?))
}

/// Removes a key given as a line, its `TYPE BASE64`, its fingerprint or its comment.
pub(crate) async fn remove_key(ctx: &Ctx, caller: &Caller, key: &str) -> HostResult<Response> {
    let user = user_name(caller)?;
    let key = key.trim();
    let mine: Vec<UserKey> = ctx.store.user_keys(user).await?;
    let found = mine.iter().find(|k| {
        key_id(&k.key) == key_id(key) || k.fingerprint == key || k.key.split_whitespace().nth(2) == Some(key)
    });
    let Some(found) = found else {
        return Err(refused(
            ErrorKind::NotFound,
            "you have no such key; `river user key list` shows yours",
        ));
    };
    ctx.store.remove_user_key(user, &key_id(&found.key)).await?;
    ctx.store
        .event(ctx.clock.now_ms(), &caller.actor(), "user.key.rm", &found.fingerprint)
        .await?;
    Ok(Response::Done {
        message: format!("removed key {}", found.fingerprint),
    })
}

/// How long a gateway client has from connecting to logging in.
const LOGIN_DEADLINE: Duration = Duration::from_secs(30);

/// Whether a connection's first bytes are SSH's (`SSH-`), rather than TLS's. A client that sends
/// nothing at first is taken for SSH too: TLS clients always speak first.
pub(crate) async fn is_ssh(tcp: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 4];
    match tokio::time::timeout(Duration::from_millis(500), tcp.peek(&mut first)).await {
        Ok(Ok(n)) => n > 0 && first[..n] == b"SSH-"[..n],
        Ok(Err(_)) => false,
        Err(_) => true,
    }
}

/// How often a logged-in gateway client that has sent nothing is asked whether it is there.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Serves one SSH client on the API port.
pub(crate) async fn serve(ctx: Arc<Ctx>, tcp: tokio::net::TcpStream, remote: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let config = river_ssh::Config {
        name: "river-gateway".into(),
        host_key: ctx.vps_keys.gateway_key(),
        subsystems: Vec::new(),
        // Relayed sessions may idle for days, but a client that went away (a laptop closed, a
        // network gone) stops answering keepalives and is dropped within about 45 s, so it
        // holds none of its user's connection places.
        keepalive: Some(KEEPALIVE),
        greeting: LOGIN_DEADLINE,
    };
    let cut = Arc::new(tokio::sync::Notify::new());
    let logged_in = Arc::new(AtomicBool::new(false));
    let handler = Gateway {
        ctx,
        remote,
        caller: None,
        cut: cut.clone(),
        held: None,
        logged_in: logged_in.clone(),
    };
    // A client that has not logged in by the deadline, or whose user is cut off, is
    // disconnected, with every channel in it.
    let started = tokio::time::Instant::now();
    let stop = async move {
        let late = async {
            tokio::time::sleep_until(started + LOGIN_DEADLINE).await;
            if logged_in.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
        };
        let why = tokio::select! {
            () = cut.notified() => "an admin changed your river account",
            () = late => "no login in time",
        };
        tracing::info!(%remote, "ssh gateway session closed: {why}");
        why.to_owned()
    };
    if let Err(e) = river_ssh::serve(tcp, config, handler, stop).await {
        tracing::debug!(%remote, "ssh gateway: {e}");
    }
}

struct Gateway {
    ctx: Arc<Ctx>,
    remote: SocketAddr,
    /// Who the key belongs to, once logged in.
    caller: Option<Caller>,
    /// Notified when the user is cut off ([`crate::sessions`]).
    cut: Arc<tokio::sync::Notify>,
    /// The session's place among its user's open connections.
    held: Option<crate::sessions::Held>,
    /// Set once a key has logged in: until then the session has [`LOGIN_DEADLINE`].
    logged_in: Arc<AtomicBool>,
}

impl Gateway {
    /// The river user a key is registered to, with their current role.
    async fn owner(&self, key: &PublicKey) -> Option<Caller> {
        let line = key.line();
        let name = self.ctx.store.user_by_key(&key_id(&line)).await.ok()??;
        let user = self.ctx.store.user(&name).await.ok()??;
        (!user.disabled).then_some(Caller::User { name, role: user.role })
    }
}

/// The task a `direct-tcpip` host names: `vps-12`, `task-12` or `12`.
fn task_of(host: &str) -> Option<u64> {
    let id = host
        .strip_prefix("vps-")
        .or_else(|| host.strip_prefix("task-"))
        .or_else(|| host.strip_prefix("river-"))
        .unwrap_or(host);
    id.parse().ok()
}

impl river_ssh::Handler for Gateway {
    async fn login(&mut self, _user: &str, key: &PublicKey, proven: bool) -> bool {
        let Some(caller) = self.owner(key).await else {
            if proven {
                tracing::info!(remote = %self.remote, "ssh gateway: refused a key no user registered");
            }
            return false;
        };
        if !proven {
            return true;
        }
        tracing::info!(remote = %self.remote, who = %caller.actor(), "ssh gateway: logged in");
        if let Caller::User { name, .. } = &caller {
            self.held = self
                .ctx
                .sessions
                .hold(name, crate::sessions::Closer::Ssh(self.cut.clone()));
            if self.held.is_none() {
                tracing::warn!(remote = %self.remote, who = %caller.actor(), "ssh gateway: refused, too many connections of theirs");
                return false;
            }
        }
        // Read again now that it is held: a removal that landed meanwhile is seen here, or it
        // found the session held.
        if self.owner(key).await.is_none() {
            self.held = None;
            return false;
        }
        self.caller = Some(caller);
        self.logged_in.store(true, Ordering::SeqCst);
        true
    }

    /// A session on the gateway itself only says how the gateway is used, once the client asks
    /// for a shell or a command.
    fn session(&mut self, channel: SessionChannel) {
        tokio::spawn(async move {
            let (mut events, out) = channel.split();
            while let Some(event) = events.next().await {
                if let Event::Shell | Event::Exec(_) = event {
                    let _ = out.stderr(USAGE.as_bytes()).await;
                    let _ = out.exit_status(1).await;
                    out.finish().await;
                    return;
                }
            }
        });
    }

    async fn direct_tcpip(&mut self, host: &str, port: u32) -> Result<Relay, Refusal> {
        let Some(caller) = self.caller.clone() else {
            return Err(Refusal::Prohibited("log in first".into()));
        };
        let (Some(task), Ok(port)) = (task_of(host), u16::try_from(port)) else {
            return Err(Refusal::ConnectFailed(format!(
                "{host}: name a task as vps-ID or task-ID (e.g. root@vps-12)"
            )));
        };
        match crate::terminal::open_tcp(&self.ctx, &caller, task, port).await {
            Ok((send, recv)) => {
                tracing::info!(who = %caller.actor(), task, port, "ssh gateway: relaying");
                Ok(Box::new(tokio::io::join(recv, send)))
            }
            Err(why) => {
                tracing::info!(who = %caller.actor(), task, port, "ssh gateway: refused: {why}");
                Err(Refusal::Prohibited(why))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_named_like_river_ssh_config_names_them() {
        assert_eq!(task_of("vps-12"), Some(12));
        assert_eq!(task_of("task-7"), Some(7));
        assert_eq!(task_of("river-7"), Some(7));
        assert_eq!(task_of("7"), Some(7));
        assert_eq!(task_of("example.com"), None);
        assert_eq!(task_of("vps-"), None);
    }

    #[test]
    fn fingerprints_match_ssh_keygen() {
        // What `ssh-keygen -lf` prints for this key.
        let k = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPApQ0j57M7iGP/Usn4Gpx9FDHOqJCvgdjD3+Zj7Rpga me";
        assert_eq!(
            fingerprint(k).unwrap(),
            "SHA256:kBj+JkyWsgncpEleP0XQ4sBt6KD1s5V0X29PjJTgM68"
        );
        assert_eq!(key_id(k), k.rsplit_once(' ').unwrap().0);
    }
}
