//! Running the `river` binary as a user does, from tests: bounded in time, output collected.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn river(cfg: &Path, args: &[&str]) -> Output {
    output_within(
        Command::new(env!("CARGO_BIN_EXE_river"))
            .args(args)
            .env("RIVER_CONFIG_DIR", cfg)
            .env("HOME", cfg.parent().unwrap())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME"),
    )
}

/// How long any one command a test runs may take.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// `cmd`'s output, as `Command::output` gives it (no standard input), except that a command still
/// running after [`COMMAND_LIMIT`] is killed and fails the test with what it printed, rather than
/// holding up the whole suite.
pub fn output_within(cmd: &mut Command) -> Output {
    fed_within(cmd.stdin(Stdio::null()), |_| {})
}

/// [`output_within`] with standard input written by `feed`, on a thread of its own.
pub fn fed_within(cmd: &mut Command, feed: impl FnOnce(std::process::ChildStdin) + Send + 'static) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    if let Some(stdin) = child.stdin.take() {
        std::thread::spawn(move || feed(stdin));
    }
    let collect = |mut from: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = from.read_to_end(&mut all);
            let _ = tx.send(all);
        });
        rx
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + COMMAND_LIMIT;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let printed = |rx: mpsc::Receiver<Vec<u8>>| {
                let all = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
                let end = String::from_utf8_lossy(&all[all.len().saturating_sub(500)..]).into_owned();
                format!("{} bytes ending {end:?}", all.len())
            };
            panic!(
                "{cmd:?} was still running after {COMMAND_LIMIT:?}; it printed {} and, on stderr, {}",
                printed(stdout),
                printed(stderr)
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    // Whatever it started in the background may hold its output open: wait a moment, no more.
    let rest = |rx: mpsc::Receiver<Vec<u8>>| rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    Output {
        status,
        stdout: rest(stdout),
        stderr: rest(stderr),
    }
}

/// The lines `from` prints, as they come, to be waited for with a limit.
pub fn lines_of(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(from)) {
            let Ok(line) = line else { return };
            // Read on when nobody listens, so the process never blocks on a full pipe.
            let _ = tx.send(line);
        }
    });
    rx
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub fn free_port() -> u16 {
    // A port free on both TCP and UDP right now.
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Whether the Docker test image is here; without it (and without RIVER_REQUIRE_DOCKER) the
/// caller skips.
pub fn docker_image_ready() -> bool {
    let ok = Command::new("docker")
        .args(["image", "inspect", "river-test/busybox:1"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("RIVER_REQUIRE_DOCKER").is_none(),
            "Docker is required here"
        );
        eprintln!("skipped: no Docker test image");
    }
    ok
}

/// Submits a task (`args` follow `river task submit`), waits until it runs, and returns its id.
pub fn running_task(cfg: &Path, args: &[&str]) -> String {
    let mut all = vec!["task", "submit"];
    all.extend_from_slice(args);
    let o = river(cfg, &all);
    assert!(o.status.success(), "{:?}", text(&o));
    let id = text(&o).0.trim().to_owned();
    wait_running(cfg, &id);
    id
}

pub fn wait_running(cfg: &Path, id: &str) {
    for _ in 0..300 {
        let o = river(cfg, &["task", "status", id, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v["state"] == "running" {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("task {id} never ran");
}

/// `river forward ARGS -l 0`, once it listens: the process, its local address, and the lines it
/// prints on standard error from then on.
pub fn spawn_forward(cfg: &Path, args: &[&str]) -> (std::process::Child, String, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_river"))
        .arg("forward")
        .args(args)
        .args(["-l", "0"])
        .env("RIVER_CONFIG_DIR", cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let said = lines_of(child.stderr.take().unwrap());
    let Ok(line) = lines_of(child.stdout.take().unwrap()).recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        let _ = child.wait();
        let said: Vec<String> = said.try_iter().collect();
        panic!("river forward {args:?} did not say where it listens; it said {said:?}");
    };
    (child, line.trim().to_owned(), said)
}

/// `GET path` over a plain TCP connection; the whole answer.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A `river host` or `river runner` process, killed when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    /// Stops it as an operator would (SIGTERM: a runner undoes its mounts), and kills it if it
    /// is still there after 10 s.
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn serve(log: &Path, args: &[&str]) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_river"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Proc(child)
}

/// Polls `check` every 100 ms until it holds, failing with `what` after `limit`.
pub fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `river host` on `listen` with its state in `dir/host`, serving: the process and the admin's
/// credential directory.
pub fn host_process(dir: &Path, listen: &str) -> (Proc, std::path::PathBuf) {
    host_process_with(dir, listen, "")
}

/// [`host_process`] with a host config file holding `config` (TOML).
pub fn host_process_with(dir: &Path, listen: &str, config: &str) -> (Proc, std::path::PathBuf) {
    let state = dir.join("host");
    let config_file = dir.join("host.toml");
    std::fs::write(&config_file, config).unwrap();
    let host = serve(
        &dir.join("host.log"),
        &[
            "host",
            "--config",
            config_file.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--listen",
            listen,
        ],
    );
    let cfg = state.join("admin");
    until(Duration::from_secs(60), "the host serves", || {
        cfg.join("cluster.toml").exists() && river(&cfg, &["whoami"]).status.success()
    });
    (host, cfg)
}

/// `river runner` named `name`, joined with a new token, its state in `dir/runner-NAME` and its
/// log in `dir/runner-NAME.log`; returns once the node is online.
pub fn runner_process(dir: &Path, cfg: &Path, listen: &str, name: &str) -> Proc {
    runner_process_with(dir, cfg, listen, name, "")
}

/// [`runner_process`] with a runner config file holding `config` (TOML).
pub fn runner_process_with(dir: &Path, cfg: &Path, listen: &str, name: &str, config: &str) -> Proc {
    let o = river(cfg, &["token", "create", "--ttl", "10m"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let token = text(&o).0.lines().next().unwrap().trim().to_owned();
    // From a file, as an admin would: a token on the command line shows in `ps`.
    let token_file = dir.join(format!("token-{name}"));
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let state = dir.join(format!("runner-{name}"));
    let config_file = dir.join(format!("runner-{name}.toml"));
    std::fs::write(&config_file, config).unwrap();
    let runner = serve(
        &dir.join(format!("runner-{name}.log")),
        &[
            "runner",
            "--config",
            config_file.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--name",
            name,
            "--join",
            listen,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    until(Duration::from_secs(60), "the node is online", || node_online(cfg, name));
    runner
}

/// Whether `river node list` shows `name` online.
pub fn node_online(cfg: &Path, name: &str) -> bool {
    let o = river(cfg, &["node", "list", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v.as_array().is_some_and(|nodes| {
        nodes
            .iter()
            .any(|n| n["name"] == name && n["state"].as_str().is_some_and(|s| s.eq_ignore_ascii_case("online")))
    })
}

/// `river ssh ID … ARGS` with a key and no host-key prompts, as a command to run.
pub fn vps_ssh_command(cfg: &Path, id: &str, key: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_river"));
    c.args(["ssh", id, "-i", key.to_str().unwrap()])
        .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args([
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args(args)
        .env("RIVER_CONFIG_DIR", cfg)
        .env("HOME", cfg.parent().unwrap())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME");
    c
}

/// `name`, invited by `by` with `role`, logged in with credentials in `dir/NAME`.
pub fn person(dir: &Path, by: &Path, listen: &str, name: &str, role: &str) -> PathBuf {
    let o = river(by, &["user", "invite", name, "--role", role, "--ttl", "10m"]);
    assert!(o.status.success(), "invite {name}: {:?}", text(&o));
    login(dir, listen, name, text(&o).0.trim())
}

pub fn login(dir: &Path, listen: &str, name: &str, token: &str) -> PathBuf {
    let cfg = dir.join(name);
    let o = river(&cfg, &["login", listen, "--token", token]);
    assert!(o.status.success(), "login {name}: {:?}", text(&o));
    cfg
}
