//! Long operations show how far they are on a terminal — bytes, rate, time left — and print
//! nothing of it when their output is piped. Real `river host` and runner processes, the real
//! Docker engine, and a real terminal (tmux).

#[path = "support/binary.rs"]
mod binary;
#[path = "support/tmux.rs"]
mod tmux;

use binary::*;
use std::time::{Duration, Instant};
use tmux::Tmux;

#[test]
fn a_snapshot_shows_its_progress_on_a_terminal_and_nothing_when_piped() {
    if !docker_image_ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, cfg) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &cfg, &listen, "bar-node");
    let key = d.path().join("key");
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(o.status.success());
    let pubkey = format!("{}.pub", key.display());
    let o = river(
        &cfg,
        &[
            "vps",
            "create",
            "--image",
            "river-test/busybox:1",
            "--ssh-key",
            &pubkey,
            "--wait",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let id = text(&o).0.trim().to_owned();
    // Enough on its disk that saving it takes a while.
    let o = river(
        &cfg,
        &[
            "connect",
            &id,
            "--",
            "sh",
            "-c",
            "head -c 250000000 /dev/urandom > /big",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));

    // Piped: the result, and no bar.
    let o = river(&cfg, &["vps", "snapshot", &id]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(text(&o).0.trim(), "1");
    assert!(
        !text(&o).1.contains('\r') && !text(&o).1.contains("/s"),
        "{:?}",
        text(&o).1
    );

    // On a terminal: what it does, the bytes against the whole, the rate and the time left.
    let exe = env!("CARGO_BIN_EXE_river");
    let tmux = Tmux::start(
        &format!(
            "RIVER_CONFIG_DIR={} {exe} vps snapshot {id}; echo EXIT=$?; sleep 60",
            cfg.display()
        ),
        200,
        10,
    );
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let screen = tmux.screen();
        if let Some(line) = screen.lines().find(|l| l.contains(&format!("snapshot of VPS {id}"))) {
            seen.push(line.trim().to_owned());
        }
        if screen.contains("EXIT=") {
            assert!(screen.contains("EXIT=0"), "{screen}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the snapshot never ended:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    seen.dedup();
    assert!(
        seen.iter().any(|l| l.contains("committing the container")),
        "no step shown: {seen:#?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("sending the archive")
            && l.contains("B / ")
            && l.contains("B/s")
            && l.ends_with(" left")),
        "no bytes, rate and time left shown: {seen:#?}"
    );
}
