//! The `river` binary as a user runs it: output, exit codes, files.

use std::path::Path;
use std::process::{Command, Output};

fn river(cfg: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_river"))
        .args(args)
        .env("RIVER_CONFIG_DIR", cfg)
        .env("HOME", cfg.parent().unwrap())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .output()
        .expect("river runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    // A port free on both TCP and UDP right now.
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

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
    assert!(err.contains("--join HOST:PORT --token TOKEN"), "{err}");
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
    let o = river(&cfg, &["up", "--detach", "--state-dir", s, "--listen", &listen]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "up failed: {out}\n{err}");
    assert!(out.contains("river is up") && out.contains("river node list"), "{out}");
    let guard = Down(cfg.clone(), state.clone());

    // A second `up` on the same state is refused while the first runs.
    let o = river(&cfg, &["up", "--detach", "--state-dir", s, "--listen", &listen]);
    assert!(!o.status.success() && text(&o).1.contains("already running"));

    let (out, _) = text(&river(&cfg, &["status"]));
    assert!(out.contains("1 online, 0 offline"), "{out}");
    let o = river(&cfg, &["node", "list", "-o", "json"]);
    let nodes: serde_json::Value = serde_json::from_str(&text(&o).0).expect("json");
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    assert_eq!(nodes[0]["state"], "Online");
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
}

/// Stops the detached cluster even when an assertion fails.
struct Down(std::path::PathBuf, std::path::PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let o = river(&self.0, &["down", "--state-dir", self.1.to_str().unwrap()]);
        assert!(o.status.success() || std::thread::panicking(), "down: {:?}", text(&o));
    }
}
