//! The host's doors held open by someone who never says anything: idle connections must not shut
//! out everyone else. A real `river host` process with a small file limit, and an attacker on
//! another loopback address holding a thousand TCP connections to its HTTPS/SSH port.

#[path = "support/binary.rs"]
mod binary;

use binary::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `curl` of `path` on the host's HTTPS API with the admin's certificate: the HTTP status, or 0
/// when no answer came within 10 s.
fn api_status(cfg: &std::path::Path, port: u16, path: &str) -> u32 {
    let o = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(cfg.join("ca.crt"))
        .arg("--cert")
        .arg(cfg.join("cert.pem"))
        .arg("--key")
        .arg(cfg.join("key.pem"))
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn a_thousand_idle_connections_do_not_shut_the_admin_out() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let state = d.path().join("host");
    // 256 open files: a thousand idle connections would use them all up.
    let log = std::fs::File::create(d.path().join("host.log")).unwrap();
    let host = Proc(
        Command::new("prlimit")
            .args([
                "--nofile=256:256",
                "--",
                env!("CARGO_BIN_EXE_river"),
                "host",
                "--state-dir",
            ])
            .arg(&state)
            .args(["--listen", &listen])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let admin = state.join("admin");
    until(Duration::from_secs(60), "the host serves", || {
        admin.join("cluster.toml").exists() && river(&admin, &["whoami"]).status.success()
    });
    assert_eq!(api_status(&admin, port, "/api/status"), 200);

    // From 127.0.0.2: a thousand connections that send nothing, held.
    let script = format!(
        r#"
import resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
held = []
for _ in range(1000):
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", {port}))
    held.append(s)
time.sleep(3)
connected = []
for s in held:
    try:
        s.getpeername()
        connected.append(s)
    except OSError:
        s.close()
held = connected
print("held", len(held), flush=True)
time.sleep(8)
open_now = 0
for s in held:
    s.setblocking(False)
    try:
        open_now += s.recv(1) != b""
    except BlockingIOError:
        open_now += 1
    except OSError:
        pass
print("open", open_now, flush=True)
sys.stdin.read()
"#
    );
    let mut attacker = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(attacker.stdout.take().unwrap());
    let held = lines
        .recv_timeout(Duration::from_secs(120))
        .expect("the attacker started");
    eprintln!("attacker: {held}");

    // Meanwhile the admin is answered, over the mesh and over HTTPS.
    let started = Instant::now();
    let o = river(&admin, &["status"]);
    assert!(o.status.success(), "river status: {:?}", text(&o));
    let code = api_status(&admin, port, "/api/status");
    assert_eq!(
        code, 200,
        "the HTTPS API did not answer the admin while idle connections were held"
    );
    eprintln!("the admin was answered in {:?}", started.elapsed());

    // It kept few of them: most of its files are still free.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", host.0.id())).unwrap().count();
    eprintln!("the host has {fds} files open of 256");
    assert!(
        fds < 160,
        "the host holds {fds} of its 256 files while idle connections are held"
    );
    let open = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("the attacker counted");
    eprintln!("attacker: {open}");
    drop(attacker.stdin.take());
    let _ = attacker.kill();
    let _ = attacker.wait();
    let log = std::fs::read_to_string(d.path().join("host.log")).unwrap();
    assert!(log.contains("refused") && log.contains("127.0.0.2"), "{log}");
}
