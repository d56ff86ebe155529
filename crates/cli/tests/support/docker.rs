//! Helpers for tests against the real Docker engine: a cluster with a runner, and task calls.

#![allow(dead_code)]

use super::harness::*;
use river_proto::msg::{Request, Response, Signal, TaskSpec, TaskView};
use std::time::Duration;

pub const IMAGE: &str = "river-test/busybox:1";

pub async fn docker_ready() -> bool {
    let why = match river_docker::Runtime::connect(None).await {
        Ok(rt) if rt.image_present(IMAGE).await.unwrap_or(false) => return true,
        Ok(_) => format!("image {IMAGE} is missing; run scripts/docker-env.sh"),
        Err(e) => e.to_string(),
    };
    assert!(
        std::env::var_os("RIVER_REQUIRE_DOCKER").is_none(),
        "Docker is required here: {why}"
    );
    eprintln!("skipped: {why}");
    false
}

/// Whether this test runs as root, which `why` needs; without it the test says it is skipped, and
/// under `RIVER_REQUIRE_DOCKER=1` (the README's test command, as root) it fails instead.
pub fn root(why: &str) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        assert!(
            std::env::var_os("RIVER_REQUIRE_DOCKER").is_none(),
            "this test needs root: {why}"
        );
        eprintln!("skipped: {why}");
    }
    root
}

pub fn spec(script: &str) -> TaskSpec {
    TaskSpec::new(IMAGE, vec!["sh".into(), "-c".into(), script.into()])
}

/// A host and one runner named `name`, online, and an admin connection.
pub async fn cluster(
    d: &std::path::Path,
    name: &str,
) -> (
    river_host::RunningHost,
    river_runner::RunningRunner,
    river_mesh::Connection,
) {
    let host = start_host(host_cfg(d)).await;
    let (_cfg, runner) = runner(&host, d, name).await;
    let conn = admin(&host).await;
    online(&host, name).await;
    (host, runner, conn)
}

pub async fn online(host: &river_host::RunningHost, name: &str) {
    eventually(Duration::from_secs(15), "node online", || async {
        node_state(host, name).await == Some(river_proto::msg::NodeState::Online)
    })
    .await;
}

pub async fn submit(conn: &river_mesh::Connection, s: TaskSpec) -> Vec<u64> {
    match call(conn, Request::TaskSubmit(s)).await {
        Response::TaskSubmitted { ids, .. } => ids,
        other => panic!("submit: {other:?}"),
    }
}

pub async fn show(conn: &river_mesh::Connection, id: u64) -> TaskView {
    match call(conn, Request::TaskShow { id }).await {
        Response::Task(t) => *t,
        other => panic!("show: {other:?}"),
    }
}

pub async fn wait_state(conn: &river_mesh::Connection, id: u64, states: &[&str]) -> TaskView {
    let mut last = String::new();
    for _ in 0..600 {
        let t = show(conn, id).await;
        if states.contains(&t.state.as_str()) {
            return t;
        }
        last = t.state;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {id} stayed {last}, never {states:?}");
}

/// Sends a kill, pause or resume, which the host must accept.
pub async fn signal(conn: &river_mesh::Connection, id: u64, signal: Signal) {
    match call(conn, Request::TaskSignal { id, signal }).await {
        Response::Done { .. } => {}
        other => panic!("{signal:?} of task {id}: {other:?}"),
    }
}

pub async fn logs(conn: &river_mesh::Connection, id: u64, stderr: bool) -> String {
    match call(conn, Request::TaskLogs { id, stderr }).await {
        Response::Logs(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("logs: {other:?}"),
    }
}
