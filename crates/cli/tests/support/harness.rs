//! Test harness: real hosts and runners in this process, on loopback, with short timings.
//! Everything lives in a temporary directory that is removed when the test ends.

#![allow(dead_code)]

use river_creds::Bundle;
use river_host::{HostConfig, RunningHost};
use river_mesh::Connection;
use river_proto::msg::{NodeState, NodeView, Request, Response};
use river_runner::{RunnerConfig, RunningRunner};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn host_cfg(dir: &Path) -> HostConfig {
    HostConfig {
        state_dir: dir.join("host"),
        listen: "127.0.0.1:0".parse().unwrap(),
        heartbeat_interval: Duration::from_millis(200),
        offline_after: Duration::from_millis(1500),
        // The image `scripts/docker-env.sh` builds: no registry is reachable in tests.
        default_image: "river-test/busybox:1".into(),
        ..Default::default()
    }
}

pub async fn start_host(cfg: HostConfig) -> RunningHost {
    river_host::start(cfg).await.expect("host starts")
}

/// A host started from `cfg`, and `cfg` now naming the port it got: starting it again from the
/// returned config brings it back where its runners and users look for it.
pub async fn restartable_host(mut cfg: HostConfig) -> (HostConfig, RunningHost) {
    let host = start_host(cfg.clone()).await;
    cfg.listen = host.mesh_addr;
    (cfg, host)
}

/// A connection as the host's first admin.
pub async fn admin(host: &RunningHost) -> Connection {
    let b = Bundle::load(&host.admin_dir).unwrap();
    river_mesh::client::connect_bundle(&b).await.expect("admin connects").1
}

pub async fn call(conn: &Connection, req: Request) -> Response {
    river_mesh::client::call(conn, &req).await.expect("host answers")
}

pub async fn token(host: &RunningHost, ttl_secs: u64, uses: u32) -> String {
    match call(&admin(host).await, Request::TokenCreate { ttl_secs, uses }).await {
        Response::TokenCreated(t) => t.token,
        other => panic!("token create: {other:?}"),
    }
}

pub fn runner_cfg(dir: &Path, name: &str) -> RunnerConfig {
    RunnerConfig {
        state_dir: dir.join(format!("runner-{name}")),
        name: Some(name.into()),
        ..Default::default()
    }
}

pub async fn join(host: &RunningHost, cfg: &RunnerConfig, token: &str) -> anyhow::Result<Bundle> {
    river_runner::ensure_joined(cfg, Some((&host.mesh_addr.to_string(), token))).await
}

/// Joins (with a fresh token) and starts a runner named `name`.
pub async fn runner(host: &RunningHost, dir: &Path, name: &str) -> (RunnerConfig, RunningRunner) {
    let cfg = runner_cfg(dir, name);
    let bundle = join(host, &cfg, &token(host, 600, 1).await)
        .await
        .expect("runner joins");
    let r = river_runner::start(cfg.clone(), bundle);
    (cfg, r)
}

pub async fn nodes(host: &RunningHost) -> Vec<NodeView> {
    match call(&admin(host).await, Request::NodeList).await {
        Response::Nodes(n) => n,
        other => panic!("node list: {other:?}"),
    }
}

pub async fn node_state(host: &RunningHost, name: &str) -> Option<NodeState> {
    nodes(host).await.into_iter().find(|n| n.name == name).map(|n| n.state)
}

/// Polls `check` until it returns true, failing the test with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn path(d: &tempfile::TempDir) -> PathBuf {
    d.path().to_owned()
}

/// A connection as a new user with the `user` role.
pub async fn user_conn(
    host: &river_host::RunningHost,
    admin: &river_mesh::Connection,
    name: &str,
) -> river_mesh::Connection {
    let invite = match call(
        admin,
        Request::UserInvite {
            name: name.into(),
            role: river_proto::msg::Role::User,
            ttl_secs: 600,
        },
    )
    .await
    {
        Response::TokenCreated(t) => t.token,
        other => panic!("invite: {other:?}"),
    };
    let bundle = river_mesh::client::enrol(&host.mesh_addr.to_string(), &invite, name, "user")
        .await
        .expect("user enrols");
    river_mesh::client::connect_bundle(&bundle)
        .await
        .expect("user connects")
        .1
}
