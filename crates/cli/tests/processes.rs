//! `--no-container` tasks against the node's real cgroups: confined to their cores and memory,
//! unprivileged, paused with the freezer, killed whole, OOM read from the kernel's count, and
//! followed across a runner restart. They need root (to make cgroups); without it they say they
//! are skipped, and under `RIVER_REQUIRE_DOCKER=1` (the README's test command, as root) they fail.

#[path = "support/docker.rs"]
mod docker;
#[path = "support/harness.rs"]
mod harness;

use docker::*;
use harness::*;
use river_proto::msg::{Request, Response, Signal, TaskSpec};
use std::time::Duration;

fn root() -> bool {
    docker::root("cgroups need root")
}

fn process(script: &str) -> TaskSpec {
    let mut s = TaskSpec::new("", vec!["sh".into(), "-c".into(), script.into()]);
    s.no_container = true;
    s
}

/// Whether any process runs with `marker` in its command line.
fn running(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().filter_map(Result::ok).any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(marker))
    })
}

#[tokio::test]
async fn a_process_task_is_pinned_limited_and_unprivileged() {
    if !root() {
        return;
    }
    let d = tmp();
    let (host, runner, conn) = cluster(d.path(), "p1").await;
    let mut s = process(
        "id -u; grep Cpus_allowed_list /proc/self/status | tr -d ' \\t' | cut -d: -f2; grep -c river /proc/self/cgroup; echo task=$RIVER_TASK_ID; pwd; echo bad >&2; exit 3",
    );
    s.memory_bytes = Some(64 << 20);
    let id = submit(&conn, s).await[0];
    let t = wait_state(&conn, id, &["completed", "failed"]).await;
    assert_eq!((t.state.as_str(), t.exit_code), ("failed", Some(3)), "{t:?}");
    let cores: Vec<String> = t.placement.as_ref().unwrap().cores.iter().map(u32::to_string).collect();
    let out = logs(&conn, id, false).await;
    let lines: Vec<&str> = out.lines().collect();
    let owner = t.placement.as_ref().and_then(|p| p.owner.clone()).expect("an owner");
    assert_eq!(
        lines[0],
        (2_000_000_000 + owner.number).to_string(),
        "runs as its owner's own uid (the node has no account {:?}): {out}",
        owner.name
    );
    assert_eq!(lines[1], cores.join(","), "pinned: {out}");
    assert!(lines[2].parse::<u32>().unwrap() >= 2, "in river's cgroups: {out}");
    assert_eq!(lines[3], format!("task={id}"));
    assert!(
        lines[4].ends_with(&format!("task-{id}")),
        "its own scratch directory: {out}"
    );
    assert_eq!(logs(&conn, id, true).await, "bad\n");

    // More memory than allowed: the kernel kills it, and the task says so.
    let mut s = process("head -c 200000000 /dev/zero | tail > /dev/null");
    s.memory_bytes = Some(32 << 20);
    let id = submit(&conn, s).await[0];
    let t = wait_state(&conn, id, &["completed", "failed", "oom"]).await;
    assert_eq!(t.state, "oom", "{t:?}");
    assert!(t.message.unwrap().contains("memory limit"));

    // What cannot apply is refused at submit.
    let mut s = process("true");
    s.image = IMAGE.into();
    match call(&conn, Request::TaskSubmit(s)).await {
        Response::Error { message, .. } => assert!(message.contains("drop --image"), "{message}"),
        other => panic!("{other:?}"),
    }
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn process_tasks_pause_resume_and_die_whole() {
    if !root() {
        return;
    }
    let d = tmp();
    let (host, runner, conn) = cluster(d.path(), "p2").await;
    let marker = format!("{}", 100_000 + rand::random::<u32>() % 100_000);
    // A child in the background and a ticking foreground: both must stop and both must die.
    let id = submit(
        &conn,
        process(&format!("sleep {marker} & while :; do echo tick; sleep 0.1; done")),
    )
    .await[0];
    wait_state(&conn, id, &["running"]).await;
    eventually(Duration::from_secs(5), "output", || async {
        !logs(&conn, id, false).await.is_empty()
    })
    .await;
    signal(&conn, id, Signal::Pause).await;
    wait_state(&conn, id, &["paused"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frozen = logs(&conn, id, false).await.len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(logs(&conn, id, false).await.len(), frozen, "no output while paused");
    signal(&conn, id, Signal::Resume).await;
    wait_state(&conn, id, &["running"]).await;
    eventually(Duration::from_secs(5), "output again", || async {
        logs(&conn, id, false).await.len() > frozen
    })
    .await;
    assert!(running(&format!("sleep {marker}")));
    signal(&conn, id, Signal::Kill).await;
    let t = wait_state(&conn, id, &["killed", "failed", "completed"]).await;
    assert_eq!(t.state, "killed");
    assert!(
        !running(&format!("sleep {marker}")),
        "the background child died with it"
    );
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn a_process_task_survives_a_runner_restart() {
    if !root() {
        return;
    }
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let (cfg, runner) = runner(&host, d.path(), "p3").await;
    let conn = admin(&host).await;
    online(&host, "p3").await;
    let id = submit(&conn, process("sleep 3; echo survived; exit 4")).await[0];
    wait_state(&conn, id, &["running"]).await;
    runner.shutdown().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bundle = river_runner::ensure_joined(&cfg, None).await.unwrap();
    let runner = river_runner::start(cfg, bundle);
    let t = wait_state(&conn, id, &["failed", "completed"]).await;
    assert_eq!((t.state.as_str(), t.exit_code), ("failed", Some(4)), "{t:?}");
    assert_eq!(logs(&conn, id, false).await, "survived\n");
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn a_node_without_a_container_engine_takes_process_tasks_only() {
    if !root() || !docker_ready().await {
        return;
    }
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let conn = admin(&host).await;
    // A runner whose engine is not there (a node without Docker).
    let mut cfg = runner_cfg(d.path(), "bare");
    cfg.docker_socket = Some(d.path().join("no-docker.sock"));
    let bundle = join(&host, &cfg, &token(&host, 600, 1).await).await.unwrap();
    let bare = river_runner::start(cfg, bundle);
    online(&host, "bare").await;
    let n = nodes(&host).await.into_iter().find(|n| n.name == "bare").unwrap();
    assert!(n.info.no_engine, "the node did not say it has no engine: {n:?}");
    // A container task is refused with the reason (before, it was placed there and failed).
    match call(&conn, Request::TaskSubmit(spec("echo hi"))).await {
        Response::Error { message, .. } => assert!(message.contains("no container engine"), "{message}"),
        other => panic!("a container task was taken by a node without an engine: {other:?}"),
    }
    // A process task runs there.
    let p = submit(&conn, process("echo from-bare")).await[0];
    let t = wait_state(&conn, p, &["completed", "failed"]).await;
    assert_eq!(t.state, "completed", "{t:?}");
    // With a node that has an engine, container tasks go there, never to the bare one.
    let (_cfg, engine) = runner(&host, d.path(), "engine").await;
    online(&host, "engine").await;
    let ids = submit(&conn, spec("echo hi")).await;
    let t = wait_state(&conn, ids[0], &["completed", "failed"]).await;
    assert_eq!(
        (t.state.as_str(), t.placement.map(|p| p.node)),
        ("completed", Some("engine".to_owned()))
    );
    engine.shutdown().await;
    bare.shutdown().await;
    host.shutdown().await;
}
