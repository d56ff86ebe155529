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
use tmux::Tmux;

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
    let tmux = Tmux::start(
        &format!(
            "RIVER_CONFIG_DIR={} {exe} connect {id}; echo EXIT=$?; sleep 60",
            cfg.display()
        ),
        100,
        30,
    );
    tmux.expect("#");
    tmux.keys(&["echo typed-$((6*7))", "Enter"]);
    tmux.expect("typed-42");
    tmux.keys(&["stty size", "Enter"]);
    tmux.expect("30 100");
    assert!(tmux
        .cmd(&["resize-window", "-t", "t", "-x", "90", "-y", "25"])
        .status
        .success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    tmux.keys(&["stty size", "Enter"]);
    tmux.expect("25 90");
    tmux.keys(&["sleep 100", "Enter"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    tmux.keys(&["C-c"]);
    tmux.keys(&["echo still-$((1+1))", "Enter"]);
    tmux.expect("still-2");
    tmux.keys(&["exit 3", "Enter"]);
    tmux.expect("EXIT=3");
    drop(tmux);

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
fn forward_through_the_binary_survives_a_host_restart() {
    if !docker_image_ready() {
        return;
    }
    let (_d, cfg, state, listen, _guard) = cluster(&[]);
    let s = state.to_str().unwrap();
    let up = ["up", "--detach", "--state-dir", s, "--listen", &listen];
    let id = running_task(
        &cfg,
        &[
            "--image",
            "river-test/busybox:1",
            "--",
            "sh",
            "-c",
            "mkdir /www && echo hello-through-river > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www",
        ],
    );

    let (mut fwd, local, _) = spawn_forward(&cfg, &[&id, "8080"]);
    assert!(local.starts_with("127.0.0.1:"), "{local}");
    let page = http_get(&local, "/index.html").unwrap();
    assert!(page.contains("hello-through-river"), "{page}");
    // A second forward session to the same port at the same time: both serve, neither interferes.
    let (mut second, line2, _) = spawn_forward(&cfg, &[&id, "8080"]);
    let both: Vec<std::thread::JoinHandle<bool>> = (0..20)
        .map(|i| {
            let addr = if i % 2 == 0 { local.clone() } else { line2.clone() };
            std::thread::spawn(move || http_get(&addr, "/index.html").is_ok_and(|p| p.contains("hello-through-river")))
        })
        .collect();
    assert!(
        both.into_iter().all(|h| h.join().unwrap()),
        "every request through either forward"
    );
    let _ = second.kill();
    let _ = second.wait();

    // The host and runner restart (the task's container keeps running); the forward keeps
    // listening and the next connection goes through the new host.
    let o = river(&cfg, &["down", "--state-dir", s]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(river(&cfg, &up).status.success());
    wait_running(&cfg, &id);
    let mut page = String::new();
    for _ in 0..50 {
        page = http_get(&local, "/index.html").unwrap_or_default();
        if page.contains("hello-through-river") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(page.contains("hello-through-river"), "after the restart: {page:?}");

    // A port with nothing behind it: the local connection is closed, and forward says why. Every
    // time: also when the request's first bytes leave just as the refusal comes back (they met the
    // stopped stream, and the reason was lost, in about one connection in a hundred).
    let (mut bad, bad_local, said) = spawn_forward(&cfg, &[&id, "9999"]);
    assert_eq!(http_get(&bad_local, "/").unwrap_or_default(), "");
    const TRIES: u32 = 600;
    for batch in 0..TRIES / 4 {
        let clients: Vec<_> = (0..4)
            .map(|i| {
                let addr = bad_local.clone();
                // Spread over the few milliseconds the refusal takes to come back.
                let pause = Duration::from_micros(u64::from((batch * 4 + i) * 7919 % 3000));
                std::thread::spawn(move || {
                    use std::io::Write as _;
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    std::thread::sleep(pause);
                    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut got = Vec::new();
                    let _ = s.read_to_end(&mut got);
                    got
                })
            })
            .collect();
        for c in clients {
            assert_eq!(c.join().unwrap(), b"", "a refused connection carries nothing");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reasons = Vec::new();
    while reasons.len() < TRIES as usize + 1 {
        match said.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.starts_with("connection from") => reasons.push(l),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = bad.kill();
    let _ = bad.wait();
    assert_eq!(
        reasons.len(),
        TRIES as usize + 1,
        "one reason per connection: {reasons:?}"
    );
    let other: Vec<&String> = reasons
        .iter()
        .filter(|l| !l.contains("connection refused inside task"))
        .collect();
    assert!(
        other.is_empty(),
        "{} of {} said otherwise: {other:?}",
        other.len(),
        reasons.len()
    );
    let _ = fwd.kill();
    let _ = fwd.wait();
    let o = river(&cfg, &["forward", "9999", "80"]);
    assert!(
        !o.status.success() && text(&o).1.contains("no task 9999"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn ssh_with_openssh_through_the_mesh() {
    if !docker_image_ready() {
        return;
    }
    let (d, cfg, _state, _listen, _guard) = cluster(&[]);
    let key = d.path().join("id_ed25519");
    keygen(&key, "river-test");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let id = running_task(
        &cfg,
        &[
            "--image",
            "river-test/sshd:2",
            "-e",
            &format!("KEY={}", public.trim()),
            "--",
            "sh",
            "-c",
            "mkdir -p /root/.ssh && echo \"$KEY\" > /root/.ssh/authorized_keys && exec /usr/sbin/sshd -D -e",
        ],
    );
    let k = key.to_str().unwrap();
    let quiet = [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "BatchMode=yes",
    ];
    // sshd takes a moment to listen after the container starts.
    let mut o = river(&cfg, &["task", "status", &id]);
    for _ in 0..50 {
        let mut args = vec!["ssh", &id, "-i", k];
        args.extend_from_slice(&quiet);
        args.extend_from_slice(&["sh", "-c", "'echo hi-from-sshd; exit 9'"]);
        o = river(&cfg, &args);
        if o.status.code() == Some(9) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(o.status.code(), Some(9), "{:?}", text(&o));
    assert_eq!(text(&o).0, "hi-from-sshd\n");

    // scp and plain ssh with the printed config: the user's own client, river as ProxyCommand.
    let ssh_config = d.path().join("ssh_config");
    let o = river(&cfg, &["ssh-config"]);
    assert!(o.status.success());
    std::fs::write(&ssh_config, &o.stdout).unwrap();
    let payload = d.path().join("payload");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&payload, &data).unwrap();
    let mut scp = Command::new("scp");
    scp.args(["-q", "-F"]).arg(&ssh_config).args(["-i", k]).args(quiet);
    let o = output_within(
        scp.arg(&payload)
            .arg(format!("river-{id}:/tmp/payload"))
            .env("RIVER_CONFIG_DIR", &cfg),
    );
    assert!(o.status.success(), "scp: {:?}", String::from_utf8_lossy(&o.stderr));
    let o = output_within(
        Command::new("ssh")
            .arg("-F")
            .arg(&ssh_config)
            .args(["-i", k])
            .args(quiet)
            .arg(format!("river-{id}"))
            .args(["sha256sum", "/tmp/payload"])
            .env("RIVER_CONFIG_DIR", &cfg),
    );
    let want = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&data))
    };
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with(&want),
        "{:?}",
        (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    );

    // A key the task does not know is refused by sshd; a task without sshd says so.
    let other = d.path().join("other");
    keygen(&other, "river-test");
    let mut args = vec!["ssh", &id, "-i", other.to_str().unwrap()];
    args.extend_from_slice(&quiet);
    args.push("true");
    let o = river(&cfg, &args);
    assert_eq!(o.status.code(), Some(255), "{:?}", text(&o));
    assert!(text(&o).1.contains("Permission denied"), "{:?}", text(&o));
    let plain = running_task(&cfg, &["--image", "river-test/busybox:1", "--", "sleep", "300"]);
    let mut args = vec!["ssh", &plain, "-i", k];
    args.extend_from_slice(&quiet);
    args.push("true");
    let o = river(&cfg, &args);
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o).1.contains("connection refused inside task"), "{:?}", text(&o));
}

fn vps_state(cfg: &Path, id: &str) -> String {
    let o = river(cfg, &["vps", "status", id, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["state"].as_str().unwrap_or_default().to_owned()
}

/// `river ssh ID ARGS…` with a key and no host-key prompts; returns the output.
fn vps_ssh(cfg: &Path, id: &str, key: &Path, args: &[&str]) -> Output {
    output_within(&mut vps_ssh_command(cfg, id, key, args))
}

#[test]
fn vps_ssh_into_an_image_without_sshd_and_files_outlive_stop_and_start() {
    if !docker_image_ready() {
        return;
    }
    let (d, cfg, _state, _listen, _guard) = cluster(&[]);
    // No key given and none in ~/.ssh: refused before anything is made.
    let o = river(&cfg, &["vps", "create", "--image", "river-test/busybox:1"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("--ssh-key"), "{:?}", text(&o));
    let ssh_dir = d.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let key = ssh_dir.join("id_ed25519");
    keygen(&key, "test-key");
    // busybox only: no sshd, no scp, no package manager; the default key is ~/.ssh/id_ed25519.pub.
    let o = river(
        &cfg,
        &[
            "vps",
            "create",
            "--image",
            "river-test/busybox:1",
            "--name",
            "dev",
            "--wait",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let id = text(&o).0.trim().to_owned();
    assert_eq!(vps_state(&cfg, &id), "running");

    // A command: its output and exit status; stdin reaches it.
    let o = vps_ssh(&cfg, &id, &key, &["sh", "-c", "'echo hi-from-vps; whoami; exit 7'"]);
    assert_eq!(o.status.code(), Some(7), "{:?}", text(&o));
    assert_eq!(text(&o).0, "hi-from-vps\nroot\n");
    let data: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let o = fed_within(
        vps_ssh_command(&cfg, &id, &key, &["cat > /root/kept.txt && wc -c < /root/kept.txt"]).stdin(Stdio::piped()),
        move |mut i| std::io::Write::write_all(&mut i, &data).unwrap(),
    );
    assert!(o.status.success(), "{:?}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "200000");

    // An interactive session gets a terminal.
    let o = vps_ssh(&cfg, &id, &key, &["-tt", "tty; stty size"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert!(text(&o).0.starts_with("/dev/pts/"), "{:?}", text(&o));

    // A terminal session whose client vanishes is hung up, as sshd's would be: its program does
    // not stay behind in the VPS. (The bracket keeps the counting shell out of its own count.)
    let count = |cfg: &Path| -> String {
        let o = vps_ssh(cfg, &id, &key, &["ps | grep -c '[s]leep 4242'"]);
        text(&o).0.trim().to_owned()
    };
    let mut client = vps_ssh_command(&cfg, &id, &key, &["-tt", "sleep 4242; sleep 4242"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut running = String::new();
    for _ in 0..100 {
        running = count(&cfg);
        if running != "0" && !running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Its shell (whose command line names it too) and the sleep.
    assert!(
        running != "0" && !running.is_empty(),
        "the session's program never started"
    );
    client.kill().unwrap();
    let _ = client.wait();
    let mut left = String::new();
    for _ in 0..50 {
        left = count(&cfg);
        if left == "0" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(left, "0", "the vanished client's program is still running");

    // ssh -L reaches a server bound to the VPS's own loopback.
    let o = vps_ssh(
        &cfg,
        &id,
        &key,
        &["mkdir -p /www && echo served > /www/index.html && httpd -p 127.0.0.1:8080 -h /www"],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let local = free_port();
    let forward = format!("{local}:localhost:8080");
    let mut tunnel = vps_ssh_command(
        &cfg,
        &id,
        &key,
        &["-o", "ExitOnForwardFailure=yes", "-N", "-L", &forward],
    )
    .spawn()
    .unwrap();
    let mut page = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", local)) {
            use std::io::{Read as _, Write as _};
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
            page.clear();
            let _ = s.read_to_string(&mut page);
            if page.contains("served") {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    assert!(page.contains("served"), "{page:?}");

    // Another key is refused until added, and again once removed.
    let other = d.path().join("other");
    keygen(&other, "test-key");
    let o = vps_ssh(&cfg, &id, &other, &["true"]);
    assert_eq!(o.status.code(), Some(255), "{:?}", text(&o));
    assert!(text(&o).1.contains("Permission denied"), "{:?}", text(&o));
    let other_pub = other.with_extension("pub");
    let o = river(&cfg, &["vps", "keys", "add", &id, other_pub.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(vps_ssh(&cfg, &id, &other, &["true"]).status.code(), Some(0));
    let o = river(&cfg, &["vps", "keys", "rm", &id, other_pub.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(vps_ssh(&cfg, &id, &other, &["true"]).status.code(), Some(255));
    let o = river(&cfg, &["vps", "keys", "rm", &id, "test-key"]);
    assert!(
        !o.status.success() && text(&o).1.contains("no one could log in"),
        "{:?}",
        text(&o)
    );

    // Stop keeps the container and its files; start brings both back. It returns once the VPS has
    // stopped, so `vps stop ID && vps start ID` works as written (before, the start was refused:
    // "VPS ID is running").
    let o = river(&cfg, &["vps", "stop", &id]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        vps_state(&cfg, &id),
        "stopped",
        "vps stop returned before the VPS stopped"
    );
    let o = vps_ssh(&cfg, &id, &key, &["true"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(text(&o).1.contains("is stopped"), "{:?}", text(&o));
    let o = river(&cfg, &["vps", "start", &id, "--wait"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = vps_ssh(&cfg, &id, &key, &["wc -c < /root/kept.txt"]);
    assert_eq!(text(&o).0.trim(), "200000", "{:?}", text(&o));

    // Pause and resume, each done when it returns.
    assert!(river(&cfg, &["vps", "pause", &id]).status.success());
    assert_eq!(vps_state(&cfg, &id), "paused");
    assert!(river(&cfg, &["vps", "resume", &id]).status.success());
    assert_eq!(vps_state(&cfg, &id), "running");
    assert_eq!(vps_ssh(&cfg, &id, &key, &["true"]).status.code(), Some(0));
    // A paused VPS stops too; the docs' one-liner, as written.
    assert!(river(&cfg, &["vps", "pause", &id]).status.success());
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_river")).parent().unwrap();
    let o = output_within(
        Command::new("sh")
            .args(["-c", &format!("river vps stop {id} && river vps start {id} --wait")])
            .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()))
            .env("RIVER_CONFIG_DIR", &cfg)
            .env("HOME", cfg.parent().unwrap()),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(vps_state(&cfg, &id), "running");

    // A task is not a VPS, and a VPS's port 22 is river's even for `river forward`.
    let plain = running_task(&cfg, &["--image", "river-test/busybox:1", "--", "sleep", "300"]);
    let o = river(&cfg, &["vps", "stop", &plain]);
    assert!(
        !o.status.success() && text(&o).1.contains("not a VPS"),
        "{:?}",
        text(&o)
    );

    // rm deletes the container; the record stays. On a terminal it asks first (`script` gives it
    // one): "n" keeps the VPS.
    let name = container_name(&cfg, &id);
    let o = fed_within(
        Command::new("script")
            .args([
                "-qec",
                &format!("{} vps rm {id}", env!("CARGO_BIN_EXE_river")),
                "/dev/null",
            ])
            .env("RIVER_CONFIG_DIR", &cfg)
            .stdin(Stdio::piped()),
        |mut i| std::io::Write::write_all(&mut i, b"n\n").unwrap(),
    );
    assert!(
        !o.status.success() && text(&o).0.contains("Remove it? [y/N]"),
        "{:?}",
        text(&o)
    );
    assert_eq!(vps_state(&cfg, &id), "running");
    let o = river(&cfg, &["vps", "rm", &id]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(vps_state(&cfg, &id), "killed");
    let mut gone = false;
    for _ in 0..100 {
        let o = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name=^{name}$")])
            .output()
            .unwrap();
        if o.stdout.is_empty() {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(gone, "the VPS's container is still there");
    let o = river(&cfg, &["vps", "list"]);
    assert!(!text(&o).0.contains("dev"), "{:?}", text(&o));
    let o = river(&cfg, &["vps", "list", "-a"]);
    assert!(text(&o).0.contains("killed"), "{:?}", text(&o));
}

/// A task's container: `river-<cluster>-<node>-task-<id>`.
fn container_name(cfg: &Path, id: &str) -> String {
    let status: serde_json::Value = serde_json::from_slice(&river(cfg, &["status", "-o", "json"]).stdout).unwrap();
    let task: serde_json::Value =
        serde_json::from_slice(&river(cfg, &["task", "status", id, "-o", "json"]).stdout).unwrap();
    format!(
        "river-{}-{}-task-{id}",
        &status["ca_fingerprint"].as_str().unwrap()[..8],
        task["placement"]["node"].as_str().unwrap()
    )
}

/// The pid of a task's container, from its name `river-<cluster>-<node>-task-<id>`.
fn container_pid(cfg: &Path, id: &str) -> String {
    let name = container_name(cfg, id);
    let o = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", &name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[test]
fn udp_forward_carries_one_flow_per_client() {
    if !docker_image_ready() {
        return;
    }
    let (_d, cfg, _state, _listen, _guard) = cluster(&[]);
    let id = running_task(&cfg, &["--image", "river-test/busybox:1", "--", "sleep", "600"]);
    // A UDP echo server on the container's loopback, answering with who it heard from.
    let pid = container_pid(&cfg, &id);
    let mut server = Command::new("nsenter")
        .args(["-t", &pid, "-n", "python3", "-c"])
        .arg(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('127.0.0.1',5353))\n\
             while True:\n  d,a=s.recvfrom(65535)\n  s.sendto(b'%d:'%a[1]+d,a)\n",
        )
        .spawn()
        .unwrap();
    let (mut fwd, local, _) = spawn_forward(&cfg, &[&id, "5353", "--udp"]);
    let ask = |sock: &std::net::UdpSocket, msg: &[u8]| -> Option<Vec<u8>> {
        for _ in 0..20 {
            sock.send_to(msg, &local).unwrap();
            let mut buf = [0u8; 2048];
            if let Ok(n) = sock.recv(&mut buf) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    };
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
    }
    let from_a = ask(&a, b"from-a").expect("an answer to a");
    let from_b = ask(&b, b"from-b").expect("an answer to b");
    // Each client has its own flow, so the server saw two different source ports.
    let (pa, pb) = (String::from_utf8_lossy(&from_a), String::from_utf8_lossy(&from_b));
    assert!(pa.ends_with(":from-a") && pb.ends_with(":from-b"), "{pa} {pb}");
    assert_ne!(pa.split(':').next(), pb.split(':').next(), "{pa} {pb}");
    // Many packets, in order or not, each answered.
    let mut answered = 0;
    for i in 0..200 {
        if ask(&a, format!("n{i}").as_bytes()).is_some() {
            answered += 1;
        }
    }
    assert_eq!(answered, 200);
    let _ = fwd.kill();
    let _ = fwd.wait();
    let _ = server.kill();
    let _ = server.wait();
}

/// An OpenSSH client config for these tests: `ssh-config`'s stanza for `river-ID`, the key, no
/// host-key prompts and messages at INFO (so a refused channel's reason shows).
fn ssh_config_file(cfg: &Path, key: &Path) -> std::path::PathBuf {
    let o = river(cfg, &["ssh-config"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let file = cfg
        .parent()
        .unwrap()
        .join(format!("ssh_config_{}", key.file_name().unwrap().to_string_lossy()));
    let common = format!(
        "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  BatchMode yes\n",
        key.display()
    );
    std::fs::write(&file, format!("{}\n{common}", text(&o).0)).unwrap();
    file
}

fn openssh(program: &str, config: &Path, args: &[&str]) -> Output {
    output_within(Command::new(program).arg("-F").arg(config).args(args))
}

#[test]
fn vps_files_by_scp_and_sftp_and_plain_ssh_through_the_gateway() {
    if !docker_image_ready() {
        return;
    }
    let (d, cfg, _state, listen, _guard) = cluster(&[]);
    let ssh_dir = d.path().join(".ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    let key = ssh_dir.join("id_ed25519");
    keygen(&key, "gw-key");
    let o = river(&cfg, &["vps", "create", "--image", "river-test/busybox:1", "--wait"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let id = text(&o).0.trim().to_owned();
    let conf = ssh_config_file(&cfg, &key);
    let host = format!("river-{id}");

    // scp both ways into an image with no sftp-server and no scp: bytes intact.
    let data: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let up = d.path().join("up.bin");
    std::fs::write(&up, &data).unwrap();
    let o = openssh("scp", &conf, &[up.to_str().unwrap(), &format!("{host}:/root/up.bin")]);
    assert!(o.status.success(), "{:?}", text(&o));
    let down = d.path().join("down.bin");
    let o = openssh("scp", &conf, &[&format!("{host}:up.bin"), down.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        std::fs::read(&down).unwrap() == data,
        "scp round trip changed the bytes"
    );
    // Paths are the container's: the node's own files cannot be named.
    let o = openssh("scp", &conf, &[&format!("{host}:{}", up.display()), "/dev/null"]);
    assert!(!o.status.success(), "read a node file through a VPS: {:?}", text(&o));
    // sftp: directories, rename, listing.
    let batch = d.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir work\ncd work\nput {} a.bin\nrename a.bin b.bin\nls -l\n",
            up.display()
        ),
    )
    .unwrap();
    let o = openssh("sftp", &conf, &["-b", batch.to_str().unwrap(), &host]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("1500000 b.bin"), "{:?}", text(&o));
    let o = vps_ssh(&cfg, &id, &key, &["wc -c < /root/work/b.bin"]);
    assert_eq!(text(&o).0.trim(), "1500000", "{:?}", text(&o));

    // The gateway, with nothing but OpenSSH: the key must be registered to a river user.
    let jump = format!("river@{listen}");
    let target = format!("root@vps-{id}");
    let o = openssh("ssh", &conf, &["-J", &jump, &target, "echo via-gateway; exit 5"]);
    assert_eq!(o.status.code(), Some(255), "{:?}", text(&o));
    let key_pub = key.with_extension("pub");
    let o = river(&cfg, &["user", "key", "add", key_pub.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = river(&cfg, &["user", "key", "list"]);
    assert!(text(&o).0.contains("gw-key"), "{:?}", text(&o));
    let o = openssh("ssh", &conf, &["-J", &jump, &target, "echo via-gateway; exit 5"]);
    assert_eq!(o.status.code(), Some(5), "{:?}", text(&o));
    assert_eq!(text(&o).0, "via-gateway\n");
    // Logging in to the gateway itself only says how to use it.
    let port = listen.rsplit_once(':').unwrap().1;
    let o = openssh("ssh", &conf, &["-p", port, "river@127.0.0.1"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("jump host"), "{:?}", text(&o));
    // The HTTPS API still answers on the same port.
    let o = Command::new("curl")
        .args(["-sk", &format!("https://{listen}/api/health")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok"), "{o:?}");

    // Another user, with their own registered key, may not reach this VPS.
    let o = river(&cfg, &["user", "invite", "bob", "--role", "user", "--ttl", "10m"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let bob = d.path().join("bob");
    let o = river(&bob, &["login", &listen, "--token", text(&o).0.trim()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let bob_key = d.path().join("bob_key");
    keygen(&bob_key, "gw-key");
    let bob_pub = bob_key.with_extension("pub");
    // A key names one user.
    let o = river(&cfg, &["user", "key", "add", key_pub.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).1.contains("already registered"),
        "{:?}",
        text(&o)
    );
    let o = river(&bob, &["user", "key", "add", bob_pub.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let bob_conf = ssh_config_file(&cfg, &bob_key);
    let o = openssh("ssh", &bob_conf, &["-J", &jump, &target, "true"]);
    assert_eq!(o.status.code(), Some(255), "{:?}", text(&o));
    assert!(text(&o).1.contains("belongs to user admin"), "{:?}", text(&o));
    // Removing the key closes the gateway to it.
    let o = river(&cfg, &["user", "key", "rm", key_pub.to_str().unwrap()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = openssh("ssh", &conf, &["-J", &jump, &target, "true"]);
    assert_eq!(o.status.code(), Some(255), "{:?}", text(&o));
}

/// A loop device over a file, detached when dropped: a disk of the node's that tests may read.
struct LoopDisk(String);

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).output();
    }
}

#[test]
fn vps_sftp_opens_no_device_the_container_may_not() {
    if !docker_image_ready() {
        return;
    }
    let (d, cfg, _state, listen, _guard) = cluster(&[]);
    // The node's disk, as far as this test goes: a loop device holding a marker.
    let marker = format!("node-disk-{}", rand::random::<u32>());
    let mut bytes = marker.clone().into_bytes();
    bytes.resize(1 << 20, 0);
    let image = d.path().join("disk.img");
    std::fs::write(&image, &bytes).unwrap();
    let o = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(o.status.success(), "losetup: {:?}", text(&o));
    let disk = LoopDisk(text(&o).0.trim().to_owned());
    let o = Command::new("stat").args(["-c", "%t %T", &disk.0]).output().unwrap();
    let numbers: Vec<u32> = text(&o)
        .0
        .split_whitespace()
        .map(|h| u32::from_str_radix(h, 16).unwrap())
        .collect();
    let (major, minor) = (numbers[0], numbers[1]);

    // A plain user with a VPS.
    let o = river(&cfg, &["user", "invite", "mal", "--role", "user", "--ttl", "10m"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let mal = d.path().join("mal").join("cfg");
    let o = river(&mal, &["login", &listen, "--token", text(&o).0.trim()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let key = d.path().join("mal_key");
    keygen(&key, "mal");
    let key_pub = key.with_extension("pub");
    let o = river(
        &mal,
        &[
            "vps",
            "create",
            "--image",
            "river-test/busybox:1",
            "--ssh-key",
            key_pub.to_str().unwrap(),
            "--wait",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let id = text(&o).0.trim().to_owned();

    // Root in the VPS may make the device node, but the container may not read it…
    let o = vps_ssh(
        &mal,
        &id,
        &key,
        &[&format!(
            "mknod /root/disk b {major} {minor} && echo made; head -c 64 /root/disk || echo refused-inside"
        )],
    );
    let (out, err) = text(&o);
    assert!(out.contains("made") && out.contains("refused-inside"), "{out} {err}");
    assert!(!out.contains(&marker), "the container itself read the disk: {out}");
    // …and neither may the SFTP server the runner serves the VPS with. (OpenSSH's `sftp` would
    // not ask it to: it downloads only what stat calls a regular file. A client that asks.)
    let conf = ssh_config_file(&mal, &key);
    let answer = sftp_read(&conf, &format!("river-{id}"), "/root/disk");
    assert!(
        !String::from_utf8_lossy(&answer).contains(&marker),
        "SFTP read the node's disk through a device node"
    );
    assert!(
        String::from_utf8_lossy(&answer).contains("not a regular file"),
        "the server says why: {}",
        String::from_utf8_lossy(&answer)
    );
    // A regular file still reads.
    let o = vps_ssh(&mal, &id, &key, &[&format!("echo {marker}-file > /root/plain")]);
    assert!(o.status.success(), "{:?}", text(&o));
    let answer = sftp_read(&conf, &format!("river-{id}"), "/root/plain");
    assert!(String::from_utf8_lossy(&answer).contains(&format!("{marker}-file")));
}

/// Speaks SFTP itself over `ssh -s HOST sftp`: INIT, OPEN `path` to read, READ 64 bytes from
/// it. Returns the body of the last answer (the data, or a status with its message). Bounded by
/// [`COMMAND_LIMIT`].
fn sftp_read(config: &Path, host: &str, path: &str) -> Vec<u8> {
    use std::io::Write as _;
    let packet = |body: &[u8]| {
        let mut p = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        p.extend_from_slice(body);
        p
    };
    let string = |b: &[u8]| {
        let mut v = u32::try_from(b.len()).unwrap().to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    };
    let mut child = Command::new("ssh")
        .arg("-F")
        .arg(config)
        .args(["-s", host, "sftp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut input, mut output) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let mut answer = || -> std::io::Result<(u8, Vec<u8>)> {
            let mut len = [0u8; 4];
            output.read_exact(&mut len)?;
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            output.read_exact(&mut body)?;
            Ok((body[0], body[1..].to_vec()))
        };
        let mut exchange = || -> std::io::Result<Vec<u8>> {
            input.write_all(&packet(&[1, 0, 0, 0, 3]))?; // INIT, version 3
            answer()?;
            let mut open = vec![3, 0, 0, 0, 1]; // OPEN, id 1
            open.extend(string(path.as_bytes()));
            open.extend([0, 0, 0, 1, 0, 0, 0, 0]); // read; no attributes
            input.write_all(&packet(&open))?;
            let (kind, body) = answer()?;
            if kind != 102 {
                return Ok(body); // a status: refused
            }
            let mut read = vec![5, 0, 0, 0, 2]; // READ, id 2
            read.extend_from_slice(&body[4..]); // the handle, as sent (a string)
            read.extend([0u8; 8]); // offset 0
            read.extend(64u32.to_be_bytes());
            input.write_all(&packet(&read))?;
            Ok(answer()?.1)
        };
        let _ = tx.send(exchange());
    });
    let got = rx.recv_timeout(COMMAND_LIMIT);
    let _ = child.kill();
    let _ = child.wait();
    got.expect("the SFTP exchange finished in time")
        .expect("the SFTP exchange")
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
