//! The `river` binary as a user runs it: output, exit codes, files.

#[path = "support/binary.rs"]
mod binary;
#[path = "support/tmux.rs"]
mod tmux;

use binary::*;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tmux::connect_interactively;

#[path = "cli/forward.rs"]
mod forward;
#[path = "cli/sftp.rs"]
mod sftp;
#[path = "cli/vps.rs"]
mod vps;

#[test]
fn every_command_has_help_with_an_example() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg");
    for args in [
        vec!["--help"],
        vec!["up", "--help"],
        vec!["host", "--help"],
        vec!["runner", "--help"],
        vec!["token", "create", "--help"],
        vec!["node", "remove", "--help"],
        vec!["user", "invite", "--help"],
        vec!["login", "--help"],
        vec!["init", "config", "--help"],
        vec!["connect", "--help"],
        vec!["env", "create", "--help"],
        vec!["env", "shell", "--help"],
        vec!["env", "commit", "--help"],
        vec!["task", "submit", "--help"],
        vec!["task", "cancel", "--help"],
        vec!["ip", "reserve", "--help"],
        vec!["ip", "release", "--help"],
        vec!["node", "overlay", "--help"],
        vec!["vps", "create", "--help"],
        vec!["vps", "stop", "--help"],
        vec!["vps", "keys", "add", "--help"],
        vec!["user", "token", "create", "--help"],
        vec!["user", "token", "revoke", "--help"],
        vec!["user", "limits", "--help"],
        vec!["task", "approve", "--help"],
        vec!["task", "reject", "--help"],
        vec!["ui", "--help"],
    ] {
        let o = river(&cfg, &args);
        assert!(o.status.success(), "{args:?}");
        let (out, _) = text(&o);
        assert!(out.contains("Usage:"), "{args:?}: {out}");
        if args.len() > 1 {
            assert!(out.contains("Example"), "{args:?} has no example: {out}");
        }
    }
}

#[test]
fn a_closed_output_ends_a_command_quietly() {
    // `river … | head -1`: the reader is gone before the command writes.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(env!("CARGO_BIN_EXE_river"))
        .args(["init", "config", "--host"])
        .stdout(writer)
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    // Ended by SIGPIPE, as `cat` would be, not a panic and a backtrace.
    assert_eq!(o.status.signal(), Some(13), "{:?}", text(&o));
    assert!(!text(&o).1.contains("panicked"), "{:?}", text(&o));
}

#[test]
fn without_credentials_commands_say_how_to_get_them() {
    let d = tempfile::tempdir().unwrap();
    let o = river(&d.path().join("cfg"), &["node", "list"]);
    assert_eq!(o.status.code(), Some(1));
    let (_, err) = text(&o);
    assert!(err.contains("river login"), "{err}");
}

#[test]
fn a_runner_without_identity_or_token_explains_the_first_start() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("runner");
    let o = river(
        &d.path().join("cfg"),
        &["runner", "--state-dir", state.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    let (_, err) = text(&o);
    assert!(err.contains("--join HOST:PORT --token-file FILE"), "{err}");
    // --join without --token is a usage error.
    let o = river(&d.path().join("cfg"), &["runner", "--join", "127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn init_writes_configs_and_units_but_never_overwrites() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg");
    let o = river(&cfg, &["init", "config", "--host"]);
    assert!(text(&o).0.contains("offline_after = \"30s\""));
    let file = d.path().join("runner.toml");
    assert!(
        river(&cfg, &["init", "config", "--runner", "--file", file.to_str().unwrap()])
            .status
            .success()
    );
    let o = river(&cfg, &["init", "config", "--runner", "--file", file.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).1.contains("not overwriting"));
    let units = d.path().join("units");
    assert!(
        river(&cfg, &["init", "service", "--runner", "--dir", units.to_str().unwrap()])
            .status
            .success()
    );
    let unit = std::fs::read_to_string(units.join("river-runner.service")).unwrap();
    assert!(
        unit.contains(&format!("ExecStart={} runner", env!("CARGO_BIN_EXE_river"))),
        "{unit}"
    );
}

#[test]
fn up_detach_then_status_nodes_tokens_and_down() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg");
    let state = d.path().join("state");
    let s = state.to_str().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    // A one-machine cluster configured like any other: a host and a runner config file.
    let (host_toml, runner_toml) = (d.path().join("host.toml"), d.path().join("runner.toml"));
    std::fs::write(&host_toml, "[limits]\nvps = 3\n").unwrap();
    std::fs::write(
        &runner_toml,
        "[[fake_gpus]]\nname = \"Test GPU\"\nmemory_bytes = 1024\n",
    )
    .unwrap();
    let (h, r) = (host_toml.to_str().unwrap(), runner_toml.to_str().unwrap());
    let o = river(
        &cfg,
        &[
            "up",
            "--detach",
            "--state-dir",
            s,
            "--listen",
            &listen,
            "--host-config",
            h,
            "--runner-config",
            r,
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "up failed: {out}\n{err}");
    assert!(out.contains("river is up") && out.contains("river node list"), "{out}");
    // In the background, Ctrl-C stops nothing: it says how it is stopped.
    assert!(
        out.contains("Stop with `river down`") && !out.contains("Ctrl-C"),
        "{out}"
    );
    let guard = Down(cfg.clone(), state.clone());

    // Both files were read: the host's limits, the runner's GPUs.
    let o = river(&cfg, &["user", "limits", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(v["effective"]["vps"], 3, "{:?}", text(&o));
    until(Duration::from_secs(30), "the node reports its GPU", || {
        let o = river(&cfg, &["node", "list", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v[0]["info"]["gpus"].as_array().is_some_and(|g| g.len() == 1)
    });

    // A second `up` on the same state is refused while the first runs.
    let o = river(&cfg, &["up", "--detach", "--state-dir", s, "--listen", &listen]);
    assert!(!o.status.success() && text(&o).1.contains("already running"));

    let (out, _) = text(&river(&cfg, &["status"]));
    assert!(out.contains("1 online, 0 offline"), "{out}");
    let o = river(&cfg, &["node", "list", "-o", "json"]);
    let nodes: serde_json::Value = serde_json::from_str(&text(&o).0).expect("json");
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    assert_eq!(nodes[0]["state"], "online");
    let (who, _) = text(&river(&cfg, &["whoami"]));
    assert_eq!(who.trim(), "user admin (admin)");

    let o = river(&cfg, &["token", "create", "--ttl", "5m", "--uses", "2"]);
    let (token, err) = text(&o);
    assert!(token.trim().starts_with("rvt1."), "{token}");
    assert!(err.contains("river runner --join"), "{err}");
    let (list, _) = text(&river(&cfg, &["token", "list"]));
    assert!(
        list.contains("valid") && !list.contains(token.trim()),
        "token list must not show secrets: {list}"
    );

    // A teammate: invited, logs in with their own credentials, sees the cluster, cannot administer it.
    let o = river(&cfg, &["user", "invite", "vic", "--role", "viewer", "--ttl", "10m"]);
    let (invite, _) = text(&o);
    assert!(
        o.status.success() && invite.trim().starts_with("rvt1."),
        "{:?}",
        text(&o)
    );
    let vic = d.path().join("vic");
    let o = river(&vic, &["login", &listen, "--token", invite.trim()]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("as user vic"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(vic.join("key.pem")).unwrap().permissions()) & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(text(&river(&vic, &["whoami"])).0.trim(), "user vic (viewer)");
    assert!(text(&river(&vic, &["status"])).0.contains("1 online"));
    let o = river(&vic, &["token", "create"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("needs the admin role"), "{:?}", text(&o));
    // The invite was one-time.
    let o = river(&d.path().join("eve"), &["login", &listen, "--token", invite.trim()]);
    assert!(
        !o.status.success() && text(&o).1.contains("no uses left"),
        "{:?}",
        text(&o)
    );

    // A task, if this machine has Docker and the test image: `--wait` exits with its exit code.
    let docker = std::process::Command::new("docker")
        .args(["image", "inspect", "river-test/busybox:1"])
        .output();
    if docker.is_ok_and(|o| o.status.success()) {
        let o = river(
            &cfg,
            &[
                "task",
                "submit",
                "--image",
                "river-test/busybox:1",
                "--wait",
                "--",
                "sh",
                "-c",
                "echo hi; exit 7",
            ],
        );
        assert_eq!(o.status.code(), Some(7), "{:?}", text(&o));
        let (out, _) = text(&river(&cfg, &["task", "logs", "1"]));
        assert_eq!(out, "hi\n");
        let o = river(
            &cfg,
            &[
                "task",
                "submit",
                "--image",
                "river-test/busybox:1",
                "-c",
                "9999",
                "--",
                "true",
            ],
        );
        assert_eq!(o.status.code(), Some(1));
        assert!(text(&o).1.contains("asks for 9999 cores"), "{:?}", text(&o));
    } else {
        assert!(
            std::env::var_os("RIVER_REQUIRE_DOCKER").is_none(),
            "Docker is required here"
        );
        eprintln!("skipped the task part: no Docker test image");
    }

    // With the overlay off (the default), what needs it says so and how to turn it on.
    let o = river(&cfg, &["ip", "reserve"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("[overlay] enabled = true"), "{:?}", text(&o));
    let o = river(&cfg, &["task", "submit", "--nodes", "2", "--image", "x", "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("needs the overlay network"), "{:?}", text(&o));
    let o = river(&cfg, &["task", "submit", "--ip-token", "rvip1.x.y", "--", "true"]);
    assert!(text(&o).1.contains("overlay network is off"), "{:?}", text(&o));
    let (out, _) = text(&river(&cfg, &["node", "overlay"]));
    assert!(out.contains("the overlay network is off"), "{out}");

    // The key files are private.
    for key in [
        state.join("host/ca.key"),
        state.join("host/host.key"),
        cfg.join("key.pem"),
        state.join("runner/identity/key.pem"),
    ] {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions()) & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    drop(guard);
    let o = river(&cfg, &["node", "list"]);
    assert!(!o.status.success(), "the cluster is down");
    assert!(text(&o).1.contains("cannot reach the river host"), "{}", text(&o).1);

    // Brought back on another address, its own runner follows (before: "the local runner did not
    // connect within 30s": it dialled the old one).
    let moved = format!("127.0.0.1:{}", free_port());
    let o = river(&cfg, &["up", "--detach", "--state-dir", s, "--listen", &moved]);
    let _guard = Down(cfg.clone(), state.clone());
    assert!(o.status.success(), "{:?}", text(&o));
    // Listening on loopback, it says other machines cannot join rather than print a join line.
    assert!(text(&o).0.contains("to let other machines join"), "{:?}", text(&o));
    until(Duration::from_secs(30), "the node is online", || {
        let o = river(&cfg, &["node", "list", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v[0]["state"] == "online"
    });
}

/// A `river up --detach` cluster in a fresh directory (`extra`: more `up` arguments): the
/// directory, the CLI's config directory, the state directory, the address, and the guard that
/// brings the cluster down.
fn cluster(extra: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, String, Down) {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg");
    let state = d.path().join("state");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "up",
        "--detach",
        "--state-dir",
        state.to_str().unwrap(),
        "--listen",
        &listen,
    ];
    args.extend_from_slice(extra);
    let o = river(&cfg, &args);
    assert!(o.status.success(), "up failed: {:?}", text(&o));
    let guard = Down(cfg.clone(), state.clone());
    (d, cfg, state, listen, guard)
}

/// A new passphrase-less ed25519 key pair at `path` (and `path.pub`), its comment `comment`.
fn keygen(path: &Path, comment: &str) {
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "ssh-keygen: {:?}", text(&o));
}

/// Stops the detached cluster even when an assertion fails.
struct Down(std::path::PathBuf, std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        // `river down` leaves tasks' containers running (a runner that comes back takes them
        // back); a test's cluster never comes back, so its containers go too.
        let status = river(&self.0, &["status", "-o", "json"]);
        let fingerprint = serde_json::from_slice::<serde_json::Value>(&status.stdout)
            .ok()
            .and_then(|v| {
                v["ca_fingerprint"]
                    .as_str()
                    .map(|f| f.chars().take(8).collect::<String>())
            });
        let o = river(&self.0, &["down", "--state-dir", self.1.to_str().unwrap()]);
        assert!(o.status.success() || std::thread::panicking(), "down: {:?}", text(&o));
        if let Some(cluster) = fingerprint.filter(|f| f.len() == 8) {
            let label = format!("label=river.cluster={cluster}");
            if let Ok(ids) = Command::new("docker").args(["ps", "-aq", "--filter", &label]).output() {
                let ids = String::from_utf8_lossy(&ids.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>();
                if !ids.is_empty() {
                    let _ = Command::new("docker").args(["rm", "-f"]).args(&ids).output();
                }
            }
        }
    }
}

#[test]
fn connect_and_environments_through_the_binary() {
    if !docker_image_ready() {
        return;
    }
    let (_d, cfg, _state, _listen, _guard) = cluster(&["--default-image", "river-test/busybox:1"]);

    // An environment, listed with the default one.
    let o = river(&cfg, &["env", "create", "tools", "--from", "river-test/busybox:1"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("river-env/tools:v1"), "{:?}", text(&o));
    let (list, _) = text(&river(&cfg, &["env", "list"]));
    assert!(list.contains("default") && list.contains("tools"), "{list}");

    let o = river(&cfg, &["task", "submit", "--env", "tools", "--", "sleep", "600"]);
    let (id, _) = text(&o);
    let id = id.trim().to_owned();
    wait_running(&cfg, &id);

    // One command: its output, separate streams and exit code; piped input.
    let o = river(
        &cfg,
        &["connect", &id, "--", "sh", "-c", "echo out; echo err >&2; exit 5"],
    );
    assert_eq!(o.status.code(), Some(5), "{:?}", text(&o));
    assert_eq!(text(&o).0, "out\n");
    assert!(text(&o).1.contains("err"), "{:?}", text(&o));
    let connect = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_river"));
        c.args(["connect", &id, "--"])
            .args(args)
            .env("RIVER_CONFIG_DIR", &cfg)
            .stdin(Stdio::piped());
        c
    };
    let o = fed_within(&mut connect(&["tr", "a-z", "A-Z"]), |mut i| {
        let _ = std::io::Write::write_all(&mut i, b"piped through\n");
    });
    assert_eq!(String::from_utf8_lossy(&o.stdout), "PIPED THROUGH\n");
    // Bulk both ways at once: input frames reach the command in pieces while its output comes
    // back, and output frames arrive in pieces while input goes out. Every byte comes back.
    let data: Vec<u8> = (0..16_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sent = data.clone();
    let o = fed_within(&mut connect(&["cat"]), move |mut i| {
        let _ = std::io::Write::write_all(&mut i, &sent);
    });
    assert!(o.status.success(), "{:?}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout.len(), data.len());
    assert!(o.stdout == data, "the bytes came back changed");
    // A command that writes a lot before it reads: its input waits, its output still flows (a
    // runner or CLI that waited on the input's write before reading output again stalled here
    // for good).
    let o = fed_within(
        &mut connect(&["sh", "-c", "head -c 30000000 /dev/zero; wc -c"]),
        |mut i| {
            let _ = std::io::Write::write_all(&mut i, &vec![1u8; 4_000_000]);
        },
    );
    assert!(o.status.success(), "{:?}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout.len(), 30_000_000 + "4000000\n".len());
    assert_eq!(String::from_utf8_lossy(&o.stdout[30_000_000..]).trim(), "4000000");
    // A command that stops reading its input long before the input ends (`yes | … head -n 2`):
    // its output and exit code, not a failed send.
    let o = fed_within(&mut connect(&["head", "-n", "2"]), |mut i| {
        let line = b"y\n".repeat(8192);
        while std::io::Write::write_all(&mut i, &line).is_ok() {}
    });
    assert_eq!(o.status.code(), Some(0), "{:?}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "y\ny\n");

    // Interactive, in a real terminal: typed input, window size and resize, Ctrl-C reaching the
    // program inside (not river), and the exit code at the end.
    let exe = env!("CARGO_BIN_EXE_river");
    connect_interactively(exe, &cfg, &id, "#");

    // Edit the environment in its editing container, commit, run the new version.
    let o = river(&cfg, &["env", "shell", "tools", "--detach"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let editing = text(&o).0.trim().to_owned();
    let o = river(&cfg, &["connect", &editing, "--", "sh", "-c", "echo second > /version"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = river(&cfg, &["env", "commit", "tools", "-m", "add /version"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        text(&o).0.contains("river-env/tools:v2") && text(&o).0.contains("add /version"),
        "{:?}",
        text(&o)
    );
    let o = river(
        &cfg,
        &["task", "submit", "--env", "tools", "--wait", "--", "cat", "/version"],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let o = river(&cfg, &["task", "list", "-o", "json"]);
    let tasks: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let last = tasks.as_array().unwrap().last().unwrap()["id"].to_string();
    assert_eq!(text(&river(&cfg, &["task", "logs", &last])).0, "second\n");

    // Errors say what to do.
    let o = river(&cfg, &["connect", "9999"]);
    assert!(
        !o.status.success() && text(&o).1.contains("no task 9999"),
        "{:?}",
        text(&o)
    );
    let o = river(&cfg, &["env", "commit", "tools"]);
    assert!(text(&o).1.contains("river env shell tools"), "{:?}", text(&o));
    let o = river(&cfg, &["task", "kill", &id]);
    assert!(o.status.success());
    let o = river(&cfg, &["env", "rm", "tools"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let (list, _) = text(&river(&cfg, &["env", "list"]));
    assert!(!list.contains("tools"), "{list}");
}

#[test]
fn the_host_says_what_it_could_not_do_and_why_once() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cfg");
    // Its port taken (by a UDP socket here).
    let port = free_port();
    let _taken = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let state = d.path().join("h");
    let o = river(
        &cfg,
        &["host", "--state-dir", state.to_str().unwrap(), "--listen", &listen],
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!("cannot listen on udp {listen} for the mesh")),
        "{err}"
    );
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    // A state directory that cannot be made.
    let file = d.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let o = river(
        &cfg,
        &[
            "host",
            "--state-dir",
            file.join("h").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("the host's state directory") && err.contains("cannot be used"),
        "{err}"
    );
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
}
