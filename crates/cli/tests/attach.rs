//! `river connect` into a `--no-container` task, as its owner runs it: the command runs beside the
//! task's processes — its uid, cgroup, working directory and environment, unable to gain
//! privileges — in a real terminal (tmux) or on pipes, and goes when the task does. Real `river
//! host` and runner processes; processes need root (cgroups), which the README's test command has.

#[path = "support/binary.rs"]
mod binary;
#[path = "support/tmux.rs"]
mod tmux;

use binary::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tmux::connect_interactively;

#[test]
fn connect_reaches_a_process_task_as_its_owner_and_no_further() {
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &admin, &listen, "attach-node");
    let bob = person(d.path(), &admin, &listen, "bob", "user");
    // The task says who and where it is, then waits.
    let id = running_task(
        &bob,
        &[
            "--no-container",
            "-e",
            "GREETING=hi-from-the-task",
            "--",
            "sh",
            "-c",
            "id -u; pwd; grep -o 'task-[0-9]*' /proc/self/cgroup | head -1; exec sleep 600",
        ],
    );
    let mut first = Vec::new();
    until(Duration::from_secs(30), "the task printed its three lines", || {
        first = text(&river(&bob, &["task", "logs", &id]))
            .0
            .lines()
            .map(str::to_owned)
            .collect();
        first.len() >= 3
    });

    // One command, on pipes: the task's uid, directory, cgroup and environment; its streams
    // apart; its exit code.
    let o = river(
        &bob,
        &[
            "connect",
            &id,
            "--",
            "sh",
            "-c",
            "id -u; pwd; grep -o 'task-[0-9]*' /proc/self/cgroup | head -1; echo $GREETING; \
             grep NoNewPrivs /proc/self/status; echo err >&2; exit 5",
        ],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(5), "{out} {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        [first[0].as_str(), first[1].as_str(), first[2].as_str()],
        "{out}"
    );
    assert_ne!(lines[0], "0", "not root: {out}");
    assert_eq!(lines[3], "hi-from-the-task", "{out}");
    assert!(lines[4].ends_with('1'), "no way to gain privileges: {out}");
    assert!(err.contains("err"), "{err}");
    // Piped input reaches it.
    let o = fed_within(
        Command::new(env!("CARGO_BIN_EXE_river"))
            .args(["connect", &id, "--", "tr", "a-z", "A-Z"])
            .env("RIVER_CONFIG_DIR", &bob)
            .stdin(Stdio::piped()),
        |mut i| {
            let _ = std::io::Write::write_all(&mut i, b"piped through\n");
        },
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "PIPED THROUGH\n");

    // Interactive, in a real terminal: a prompt of an ordinary user, typed input, the window's
    // size and a change of it, Ctrl-C reaching the program inside, and the exit code.
    let exe = env!("CARGO_BIN_EXE_river");
    connect_interactively(exe, &bob, &id, "$");

    // Paused, it says so rather than hang.
    assert!(river(&bob, &["task", "pause", &id]).status.success());
    let o = river(&bob, &["connect", &id, "--", "true"]);
    assert!(!o.status.success() && text(&o).1.contains("paused"), "{:?}", text(&o));
    assert!(river(&bob, &["task", "resume", &id]).status.success());

    // What was started in it ends with the task.
    let mut long = Command::new(exe)
        .args(["connect", &id, "--", "sleep", "601"])
        .env("RIVER_CONFIG_DIR", &bob)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until(Duration::from_secs(30), "the connected command runs", || {
        std::fs::read_dir("/proc").unwrap().filter_map(Result::ok).any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x00601\x00")
                && std::fs::read_to_string(e.path().join("cgroup")).is_ok_and(|c| c.contains(&format!("task-{id}")))
        })
    });
    assert!(river(&bob, &["task", "kill", &id]).status.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = long.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "connect outlived its task");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !status.success(),
        "a command ended by its task's end does not end cleanly"
    );
}
