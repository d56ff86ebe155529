//! The crate's server against the real OpenSSH client (`ssh`, `ssh-keygen`): logins, a command
//! with its input, output and exit status, a terminal, subsystems, `direct-tcpip` (`ssh -W`) and
//! its refusals, the host key the client sees, a server telling a client to go, and a client
//! that never greets.

use river_ssh::{serve, Config, Event, HostKey, PublicKey, Refusal, Relay};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const SEED: [u8; 32] = [5; 32];

/// A server that lets `key` in as anyone and says, for each command, who ran it and how.
struct Test {
    key: PublicKey,
    user: Option<String>,
    echo: std::net::SocketAddr,
    /// Told when a client has logged in.
    logged_in: Arc<Notify>,
}

impl river_ssh::Handler for Test {
    async fn login(&mut self, user: &str, key: &PublicKey, proven: bool) -> bool {
        let ok = key.same_key(&self.key);
        if ok && proven {
            self.user = Some(user.to_owned());
            self.logged_in.notify_one();
        }
        ok
    }

    fn session(&mut self, channel: river_ssh::SessionChannel) {
        let user = self.user.clone().unwrap_or_default();
        tokio::spawn(async move {
            let (mut events, out) = channel.split();
            let mut pty = None;
            let mut vars = Vec::new();
            while let Some(event) = events.next().await {
                match event {
                    Event::Pty { term, .. } => pty = Some(term),
                    Event::Env { name, value } => vars.push(format!("{name}={value}")),
                    Event::Exec(cmd) if cmd == b"cat" => {
                        // Input back as output, to its end.
                        while let Some(e) = events.next().await {
                            match e {
                                Event::Data(d) => out.data(&d).await.unwrap(),
                                Event::Eof => break,
                                _ => {}
                            }
                        }
                        out.exit_status(0).await.unwrap();
                        break;
                    }
                    Event::Exec(cmd) => {
                        let cmd = String::from_utf8_lossy(&cmd);
                        let said = format!("{user} ran {cmd} pty={pty:?} vars={vars:?}\n");
                        out.data(said.as_bytes()).await.unwrap();
                        out.stderr(b"to stderr\n").await.unwrap();
                        out.exit_status(3).await.unwrap();
                        break;
                    }
                    Event::Subsystem(name) => {
                        out.data(format!("subsystem {name}\n").as_bytes()).await.unwrap();
                        out.exit_status(0).await.unwrap();
                        break;
                    }
                    _ => {}
                }
            }
            out.finish().await;
        });
    }

    async fn direct_tcpip(&mut self, host: &str, _port: u32) -> Result<Relay, Refusal> {
        match host {
            "echo" => Ok(Box::new(TcpStream::connect(self.echo).await.unwrap())),
            "theirs" => Err(Refusal::Prohibited("task 9 is not yours".into())),
            _ => Err(Refusal::ConnectFailed(format!("{host}: no such task"))),
        }
    }
}

struct Server {
    port: u16,
    dir: tempfile::TempDir,
    /// Tells every connection to go.
    go: Arc<Notify>,
    logged_in: Arc<Notify>,
    /// What each connection's `serve` returned.
    ended: tokio::sync::mpsc::UnboundedReceiver<Result<(), river_ssh::Error>>,
}

impl Server {
    fn key(&self) -> PathBuf {
        self.dir.path().join("id")
    }
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(&dir.path().join("id"));
    keygen(&dir.path().join("other"));
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let go = Arc::new(Notify::new());
    let (tx, ended) = tokio::sync::mpsc::unbounded_channel();
    let go2 = go.clone();
    let logged_in = Arc::new(Notify::new());
    let logged = logged_in.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let config = Config {
                name: "river-test".into(),
                host_key: HostKey::from_seed(&SEED),
                subsystems: vec!["files".into()],
                keepalive: None,
                greeting: Duration::from_secs(1),
            };
            let handler = Test {
                key: key.clone(),
                user: None,
                echo: echo_addr,
                logged_in: logged.clone(),
            };
            let go = go2.clone();
            let stop = async move {
                go.notified().await;
                "the test said so".to_owned()
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(serve(tcp, config, handler, stop).await);
            });
        }
    });
    Server {
        port,
        dir,
        go,
        logged_in,
        ended,
    }
}

/// A new key pair at `path`; its public key.
fn keygen(path: &Path) -> PublicKey {
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen failed");
    PublicKey::parse(&std::fs::read_to_string(path.with_extension("pub")).unwrap()).unwrap()
}

/// `ssh` to the server with `key` and `args`, `input` on its stdin: (status, stdout, stderr).
async fn ssh(s: &Server, key: &Path, args: &[&str], input: &[u8]) -> (Option<i32>, String, String) {
    let known = s.dir.path().join("known_hosts");
    let line = HostKey::from_seed(&SEED).public_line();
    std::fs::write(&known, format!("[127.0.0.1]:{} {line}\n", s.port)).unwrap();
    let mut child = tokio::process::Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args(["-o", "IdentitiesOnly=yes", "-o", "SetEnv=LANG=xx"])
        .arg("-i")
        .arg(key)
        .args(["-p", &s.port.to_string(), "alice@127.0.0.1"])
        .args(args)
        .env("TERM", "river-term")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("ssh did not finish in time")
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn a_command_runs_with_its_output_status_and_input() {
    let s = start().await;
    let (code, out, err) = ssh(&s, &s.key(), &["hello", "world"], b"").await;
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(out, "alice ran hello world pty=None vars=[\"LANG=xx\"]\n");
    assert!(err.contains("to stderr"), "{err}");

    let (code, out, err) = ssh(&s, &s.key(), &["cat"], b"all of the input\n").await;
    assert_eq!((code, out.as_str()), (Some(0), "all of the input\n"), "{err}");

    let (code, out, _) = ssh(&s, &s.key(), &["-tt", "where"], b"").await;
    assert_eq!(code, Some(3));
    assert!(out.contains("pty=Some(\"river-term\")"), "{out}");
}

#[tokio::test]
async fn an_unknown_key_is_refused() {
    let s = start().await;
    let (code, out, err) = ssh(&s, &s.dir.path().join("other"), &["hello"], b"").await;
    assert_eq!(code, Some(255));
    assert_eq!(out, "");
    assert!(err.contains("Permission denied (publickey)"), "{err}");
}

#[tokio::test]
async fn only_named_subsystems_start() {
    let s = start().await;
    let (code, out, err) = ssh(&s, &s.key(), &["-s", "files"], b"").await;
    assert_eq!((code, out.as_str()), (Some(0), "subsystem files\n"), "{err}");
    let (code, out, err) = ssh(&s, &s.key(), &["-s", "other"], b"").await;
    assert_ne!(code, Some(0));
    assert_eq!(out, "");
    assert!(err.contains("subsystem request failed"), "{err}");
}

#[tokio::test]
async fn direct_tcpip_is_relayed_or_refused_with_the_reason() {
    let s = start().await;
    let (code, out, err) = ssh(&s, &s.key(), &["-W", "echo:7"], b"through the relay\n").await;
    assert_eq!((code, out.as_str()), (Some(0), "through the relay\n"), "{err}");

    let (code, _, err) = ssh(&s, &s.key(), &["-W", "theirs:22"], b"").await;
    assert_eq!(code, Some(255));
    assert!(
        err.contains("administratively prohibited") && err.contains("task 9 is not yours"),
        "{err}"
    );
    let (code, _, err) = ssh(&s, &s.key(), &["-W", "nowhere:22"], b"").await;
    assert_eq!(code, Some(255));
    assert!(
        err.contains("connect failed") && err.contains("nowhere: no such task"),
        "{err}"
    );
}

#[tokio::test]
async fn the_server_tells_a_client_to_go_and_a_silent_client_is_dropped() {
    let mut s = start().await;
    // A client logged in and idle, until the server says go: it is disconnected with the reason.
    let key = s.key();
    let (said, ()) = tokio::join!(ssh(&s, &key, &["-N"], b""), async {
        tokio::time::timeout(Duration::from_secs(60), s.logged_in.notified())
            .await
            .expect("the client did not log in");
        s.go.notify_waiters();
    });
    let (code, _, err) = said;
    assert_eq!(code, Some(255));
    assert!(err.contains("the test said so"), "{err}");

    // A client that connects and says nothing is dropped once its greeting time is over.
    let mut silent = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"SSH-2.0-river-test"));
    loop {
        let ended = tokio::time::timeout(Duration::from_secs(30), s.ended.recv())
            .await
            .expect("the silent client was not dropped")
            .unwrap();
        if let Err(river_ssh::Error::NoGreeting) = ended {
            break;
        }
    }
}
