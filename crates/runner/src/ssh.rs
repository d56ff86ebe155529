//! SSH for VPSs, served by the runner itself (over `river-ssh`), so it works with any image: no sshd in the
//! image, nothing installed at start, no internet. The host opens an `Ssh` stream once it has
//! checked the user may reach the VPS, and sends the VPS's authorized keys and host key with it;
//! the stream's bytes are then one SSH connection, with the runner as the server. The runner
//! listens on no port: SSH reaches a node only through the mesh.
//!
//! Sessions run inside the VPS through its backend's `exec` (the engine's exec API for a
//! container): a login shell with a pseudo-terminal, a command (through `sh -c`, as sshd does)
//! with its exit status. The `sftp`
//! subsystem (and so `scp`) is river's own server working inside the container's files (see
//! `sftp.rs`), so the image needs no `sftp-server`. `direct-tcpip` channels (`ssh -L`, `-D`)
//! connect from inside the container's network namespace.

use crate::exec::Executor;
use crate::terminal::{Command, Started};
use futures_util::StreamExt as _;
use river_docker::Output;
use river_mesh::{send_msg, RecvStream, SendStream};
use river_proto::msg::{ForwardReply, SshServe};
use river_ssh::{Event, HostKey, Incoming, Outgoing, PublicKey, Refusal, Relay, SessionChannel};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

/// Serves one SSH connection to VPS `req.task` on this stream.
pub(crate) async fn serve(exec: Arc<Executor>, req: SshServe, mut send: SendStream, recv: RecvStream) {
    let ready = async {
        let pid = match exec.network_of(req.task).await? {
            Some(pid) => pid,
            None => return Err(format!("task {} is not a VPS", req.task)),
        };
        let key = HostKey::from_hex_seed(&req.host_key.0).ok_or("the host sent an unusable SSH host key")?;
        Ok::<_, String>((pid, key))
    };
    let (pid, host_key) = match ready.await {
        Ok(r) => r,
        Err(why) => {
            let _ = send_msg(&mut send, &ForwardReply::Refused(why)).await;
            let _ = send.finish();
            return;
        }
    };
    // A key that does not parse lets no one in; the others still work.
    let keys: Vec<PublicKey> = req
        .keys
        .iter()
        .filter_map(|k| match PublicKey::parse(k) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(task = req.task, "an authorized key does not parse: {e}");
                None
            }
        })
        .collect();
    if send_msg(&mut send, &ForwardReply::Ok).await.is_err() {
        return;
    }
    let config = river_ssh::Config {
        name: "river".into(),
        host_key,
        subsystems: vec!["sftp".into()],
        // A session left idle for days is a VPS's normal life; the mesh notices a dead peer.
        keepalive: None,
        greeting: GREETING,
    };
    let conn = Conn {
        task: req.task,
        vps: Arc::new(Vps {
            exec,
            task: req.task,
            pid,
        }),
        keys,
        user: None,
    };
    let stream = tokio::io::join(recv, send);
    if let Err(e) = river_ssh::serve(stream, config, conn, std::future::pending()).await {
        tracing::debug!(task = req.task, "ssh: {e}");
    }
}

/// How long a client has to greet once its stream is open.
const GREETING: Duration = Duration::from_secs(30);

/// The container a connection's sessions run in.
struct Vps {
    exec: Arc<Executor>,
    task: u64,
    /// Its first process, whose network namespace `direct-tcpip` connects from.
    pid: i64,
}

struct Conn {
    task: u64,
    vps: Arc<Vps>,
    keys: Vec<PublicKey>,
    /// Who logged in: the user sessions run as inside the container.
    user: Option<String>,
}

impl river_ssh::Handler for Conn {
    async fn login(&mut self, user: &str, key: &PublicKey, proven: bool) -> bool {
        let known = self.keys.iter().any(|k| k.same_key(key));
        if proven && !known {
            tracing::info!(task = self.task, "ssh: refused a key the VPS does not know");
        } else if proven {
            tracing::info!(task = self.task, user, "ssh: logged in");
            self.user = Some(user.to_owned());
        }
        known
    }

    fn session(&mut self, channel: SessionChannel) {
        let (vps, user) = (self.vps.clone(), self.user.clone());
        tokio::spawn(async move {
            let (read, write) = channel.split();
            run_session(&vps, user, read, &write).await;
            write.finish().await;
        });
    }

    async fn direct_tcpip(&mut self, host: &str, port: u32) -> Result<Relay, Refusal> {
        let Some(addr) = target(host, port) else {
            return Err(Refusal::ConnectFailed(format!(
                "{host}: give an IP address or localhost"
            )));
        };
        match crate::forward::connect_to_in(Some(self.vps.pid), addr).await {
            Ok(tcp) => Ok(Box::new(tcp)),
            Err(e) => {
                tracing::debug!(task = self.task, %addr, "ssh -L: {e}");
                Err(Refusal::ConnectFailed(format!("{addr}: {e}")))
            }
        }
    }
}

/// Where a `direct-tcpip` channel goes: an IP address, or `localhost`.
fn target(host: &str, port: u32) -> Option<SocketAddr> {
    let port = u16::try_from(port).ok()?;
    let ip = match host {
        "localhost" => std::net::IpAddr::from([127, 0, 0, 1]),
        h => h.trim_start_matches('[').trim_end_matches(']').parse().ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

/// What a session channel asked to run.
enum Start {
    Shell,
    Exec(String),
    Sftp,
}

/// What the kernel does when a terminal hangs up: SIGHUP (then SIGCONT, so that a stopped job
/// sees it) to the session's leader `pid` and to the terminal's foreground process group.
fn hang_up(pid: i64) {
    let Ok(leader) = libc::pid_t::try_from(pid) else { return };
    // The group may be the leader's own (a shell without job control and its children).
    let foreground = foreground_group(pid).filter(|g| *g > 1);
    tracing::debug!(pid, ?foreground, "ssh client gone: hanging up its terminal");
    for target in std::iter::once(leader).chain(foreground.map(|g| -g)) {
        crate::process::signal(target, libc::SIGHUP);
        crate::process::signal(target, libc::SIGCONT);
    }
}

/// The foreground process group of `pid`'s controlling terminal (`tpgid`, field 8 of
/// `/proc/PID/stat`).
fn foreground_group(pid: i64) -> Option<libc::pid_t> {
    crate::process::stat_field(pid, 8)
}

/// The command for `start`, run by `sh` in the user's home directory as sshd would.
fn command(start: &Start) -> Vec<String> {
    let script = match start {
        Start::Shell => {
            "cd \"$HOME\" 2>/dev/null; if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"
                .to_owned()
        }
        Start::Exec(cmd) => format!("cd \"$HOME\" 2>/dev/null; {cmd}"),
        Start::Sftp => unreachable!("sftp is served by the runner"),
    };
    vec!["/bin/sh".into(), "-c".into(), script]
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One session channel: its requests (pty, environment) until one starts something, then that
/// command's input, output, window size and exit status.
async fn run_session(vps: &Vps, user: Option<String>, mut read: Incoming, write: &Outgoing) {
    let mut pty: Option<(String, u16, u16)> = None;
    let mut env: Vec<String> = Vec::new();
    let start = loop {
        match read.next().await {
            None | Some(Event::Eof) => return,
            Some(Event::Pty { term, cols, rows }) => pty = Some((term, rows, cols)),
            Some(Event::Env { name, value }) if valid_env_name(&name) => env.push(format!("{name}={value}")),
            Some(Event::Shell) => break Start::Shell,
            Some(Event::Exec(command)) => break Start::Exec(String::from_utf8_lossy(&command).into_owned()),
            Some(Event::Subsystem(name)) if name == "sftp" => break Start::Sftp,
            Some(Event::Subsystem(_)) => return,
            Some(_) => {}
        }
    };
    if let Start::Sftp = start {
        return sftp(vps, user, read, write).await;
    }
    let tty = pty.is_some();
    let (rows, cols) = pty.as_ref().map_or((0, 0), |(_, r, c)| (*r, *c));
    if let Some((term, _, _)) = &pty {
        env.push(format!("TERM={term}"));
    }
    let cmd = Command {
        task: vps.task,
        argv: command(&start),
        tty,
        rows,
        cols,
        env,
        user: user.filter(|u| !u.is_empty()),
    };
    let Started {
        output: mut exec_output,
        input: mut exec_input,
        control,
    } = match vps.exec.exec_in(&cmd).await {
        Ok(e) => e,
        Err(e) => {
            let msg = format!("river: could not start the session in the VPS: {e}\r\n");
            let _ = write.stderr(msg.as_bytes()).await;
            let _ = write.exit_status(255).await;
            return;
        }
    };
    let output = async {
        while let Some(chunk) = exec_output.next().await {
            let sent = match chunk {
                Ok(Output::Stdout(b)) => write.data(&b[..]).await,
                Ok(Output::Stderr(b)) => write.stderr(&b[..]).await,
                Err(e) => {
                    tracing::debug!("ssh session output: {e}");
                    break;
                }
            };
            if sent.is_err() {
                break;
            }
        }
    };
    let input = async {
        let mut open = true;
        while let Some(event) = read.next().await {
            match event {
                Event::Data(data) if open => {
                    let written = exec_input.write_all(&data).await.is_ok() && exec_input.flush().await.is_ok();
                    open = written;
                }
                Event::Resize { cols, rows } if tty => control.resize(rows, cols).await,
                // A terminal has no end of input (closing it hangs the program up); a pipe does.
                Event::Eof if !tty => {
                    let _ = exec_input.shutdown().await;
                    open = false;
                }
                _ => {}
            }
        }
        // The client went away. A terminal whose client is gone is hung up, as a closed pty is:
        // without this a shell left by a vanished client would wait in the VPS for ever. (First:
        // ending the input below also ends the engine's output stream, and with it this future.)
        if tty {
            if let Some(pid) = control.pid().await {
                hang_up(pid);
            }
        }
        // The command's input ends; its output decides when it is over.
        let _ = exec_input.shutdown().await;
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = output => {}
        () = input => {}
    }
    // The command's output ends when it exits.
    let status = control.exit().await.map_or(255, |c| u32::try_from(c).unwrap_or(255));
    let _ = write.exit_status(status).await;
}

/// The `sftp` subsystem (also what `scp` uses): river's own server, inside the container's files.
async fn sftp(vps: &Vps, user: Option<String>, mut read: Incoming, write: &Outgoing) {
    use tokio::io::AsyncReadExt as _;
    let user = user.filter(|u| !u.is_empty());
    let sock = match crate::sftp::start(vps.pid, user) {
        Ok(s) => s,
        Err(e) => {
            let _ = write.stderr(format!("river: sftp: {e}\r\n").as_bytes()).await;
            let _ = write.exit_status(1).await;
            return;
        }
    };
    let (mut from_server, mut to_server) = sock.into_split();
    let input = async {
        while let Some(event) = read.next().await {
            match event {
                Event::Data(data) if to_server.write_all(&data).await.is_err() => break,
                Event::Eof => break,
                _ => {}
            }
        }
        let _ = to_server.shutdown().await;
        std::future::pending::<()>().await;
    };
    let output = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if write.data(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = output => {}
        () = input => {}
    }
    let _ = write.exit_status(0).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_tcpip_targets() {
        assert_eq!(target("localhost", 80), Some("127.0.0.1:80".parse().unwrap()));
        assert_eq!(target("10.0.0.2", 5432), Some("10.0.0.2:5432".parse().unwrap()));
        assert_eq!(target("[::1]", 22), Some("[::1]:22".parse().unwrap()));
        assert_eq!(target("example.com", 80), None, "no name lookups outside the container");
        assert_eq!(target("localhost", 70_000), None);
    }

    #[test]
    fn environment_names() {
        assert!(valid_env_name("LANG") && valid_env_name("_x1"));
        assert!(!valid_env_name("") && !valid_env_name("1A") && !valid_env_name("A=B"));
    }
}
