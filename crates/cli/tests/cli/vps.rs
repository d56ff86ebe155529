//! VPSs through the binary: SSH with OpenSSH through the mesh, files that outlive a stop and a
//! start.

use super::*;

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
pub(super) fn vps_ssh(cfg: &Path, id: &str, key: &Path, args: &[&str]) -> Output {
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
pub(super) fn container_name(cfg: &Path, id: &str) -> String {
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
pub(super) fn container_pid(cfg: &Path, id: &str) -> String {
    let name = container_name(cfg, id);
    let o = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", &name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}
