//! Command tasks end to end, in process: a real host, a real runner and the real Docker engine with
//! the busybox test image (`scripts/docker-env.sh`). Without Docker these say they are skipped;
//! with `RIVER_REQUIRE_DOCKER=1` they fail instead.

#[path = "support/docker.rs"]
mod docker;
#[path = "support/harness.rs"]
mod harness;

use docker::*;
use harness::*;
use river_proto::msg::{ErrorKind, Request, Response, Signal, TaskSpec};
use std::time::Duration;

#[path = "tasks/vps.rs"]
mod vps;

#[tokio::test]
async fn a_task_runs_pinned_and_its_output_and_exit_code_come_back() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let (_c, runner) = runner(&host, d.path(), "w1").await;
    let conn = admin(&host).await;
    eventually(Duration::from_secs(15), "node online", || async {
        node_state(&host, "w1")
            .await
            .is_some_and(|s| s == river_proto::msg::NodeState::Online)
    })
    .await;

    let script = "cat /sys/fs/cgroup/cpuset/cpuset.cpus 2>/dev/null || cat /sys/fs/cgroup/cpuset.cpus.effective; echo task=$RIVER_TASK_ID; echo oops >&2; exit 3";
    let id = submit(&conn, spec(script)).await[0];
    let t = wait_state(&conn, id, &["completed", "failed"]).await;
    assert_eq!((t.state.as_str(), t.exit_code), ("failed", Some(3)));
    let p = t.placement.expect("placed");
    assert_eq!(p.node, "w1");
    let out = logs(&conn, id, false).await;
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(
            p.cores
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
                .as_str()
        ),
        "pinned to its cores: {out}"
    );
    assert_eq!(lines.next(), Some(format!("task={id}").as_str()));
    assert_eq!(logs(&conn, id, true).await, "oops\n");
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn a_busy_node_queues_tasks_and_runs_them_all() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let (host, runner, conn) = cluster(d.path(), "w2").await;
    let cores = nodes(&host).await[0].info.cores;
    // Twice as many one-core tasks as the node has cores: some must wait, none may fail.
    let mut ids = Vec::new();
    for i in 0..cores * 2 {
        ids.extend(submit(&conn, spec(&format!("sleep 1; echo done {i}"))).await);
    }
    let queued = match call(
        &conn,
        Request::TaskList {
            state: Some("queued".into()),
            node: None,
            before: None,
            limit: Some(1000),
            vps: false,
            owner: None,
        },
    )
    .await
    {
        Response::Tasks { tasks, .. } => tasks.len(),
        other => panic!("{other:?}"),
    };
    assert!(queued > 0, "with every core busy, tasks wait in the queue");
    for id in &ids {
        let t = wait_state(&conn, *id, &["completed", "failed", "killed", "oom"]).await;
        assert_eq!(t.state, "completed", "task {id}: {:?}", t.message);
    }
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn kill_pause_resume_and_cancel() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let (host, runner, conn) = cluster(d.path(), "w3").await;
    let id = submit(&conn, spec("sleep 120")).await[0];
    wait_state(&conn, id, &["running"]).await;
    signal(&conn, id, Signal::Pause).await;
    wait_state(&conn, id, &["paused"]).await;
    signal(&conn, id, Signal::Resume).await;
    wait_state(&conn, id, &["running"]).await;
    signal(&conn, id, Signal::Kill).await;
    let t = wait_state(&conn, id, &["killed", "failed", "completed"]).await;
    assert_eq!((t.state.as_str(), t.exit_code), ("killed", Some(137)));
    // Killed again: it has ended, said plainly (before: "a killed task cannot become killed").
    match call(
        &conn,
        Request::TaskSignal {
            id,
            signal: Signal::Kill,
        },
    )
    .await
    {
        Response::Error { message, .. } => {
            assert!(message.contains("has already ended (killed)"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // A task no node can hold right now waits; cancelling it never starts it.
    let cores = nodes(&host).await[0].info.cores;
    let mut big = spec("true");
    big.cores = cores;
    let blocker = submit(&conn, spec("sleep 120")).await[0];
    wait_state(&conn, blocker, &["running"]).await;
    let waiting = submit(&conn, big).await[0];
    let t = show(&conn, waiting).await;
    assert_eq!(t.state, "queued");
    // It says why: what it needs, and what the node has free now.
    let why = t.waiting.unwrap_or_default();
    assert!(
        why.contains(&format!("it needs {cores} cores")) && why.contains("the most free now is on w3"),
        "{why}"
    );
    let behind = submit(&conn, spec("true")).await[0];
    let why = show(&conn, behind).await.waiting.unwrap_or_default();
    assert!(why.contains("1 older task waits too"), "{why}");
    signal(&conn, behind, Signal::Kill).await;
    signal(&conn, waiting, Signal::Kill).await;
    let t = show(&conn, waiting).await;
    assert_eq!((t.state.as_str(), t.placement), ("killed", None));
    signal(&conn, blocker, Signal::Kill).await;
    wait_state(&conn, blocker, &["killed"]).await;
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn impossible_tasks_are_refused_at_submit_with_the_reason() {
    let d = tmp();
    let (host, runner, conn) = cluster(d.path(), "w4").await;
    let cases = [
        (
            TaskSpec {
                cores: 10_000,
                ..spec("true")
            },
            "asks for 10000 cores",
        ),
        (
            TaskSpec {
                targets: vec!["nope".into()],
                ..spec("true")
            },
            "no node named nope",
        ),
        (
            TaskSpec {
                targets: vec!["w4:7".into()],
                ..spec("true")
            },
            "no NUMA node 7",
        ),
        (
            TaskSpec {
                targets: vec!["w4::0".into()],
                ..spec("true")
            },
            "no GPU 0",
        ),
        (
            TaskSpec {
                gpus: 1,
                ..spec("true")
            },
            "asks for 1 GPUs",
        ),
        (
            TaskSpec {
                command: vec![],
                ..spec("true")
            },
            "no command",
        ),
    ];
    for (s, why) in cases {
        match call(&conn, Request::TaskSubmit(s)).await {
            Response::Error {
                kind: ErrorKind::Invalid,
                message,
            } => assert!(message.contains(why), "{message}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    let listed = match call(
        &conn,
        Request::TaskList {
            state: None,
            node: None,
            before: None,
            limit: Some(1000),
            vps: false,
            owner: None,
        },
    )
    .await
    {
        Response::Tasks { tasks, .. } => tasks.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(listed, 0, "nothing refused was queued");
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn a_runner_restart_loses_no_task() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let (cfg, runner) = runner(&host, d.path(), "w5").await;
    let conn = admin(&host).await;
    let online = || async { node_state(&host, "w5").await == Some(river_proto::msg::NodeState::Online) };
    eventually(Duration::from_secs(15), "node online", online).await;
    // One task outlives the runner's absence; one ends during it.
    let long = submit(&conn, spec("sleep 4; echo survived; exit 6")).await[0];
    let short = submit(&conn, spec("sleep 1; echo short; exit 5")).await[0];
    wait_state(&conn, long, &["running"]).await;
    wait_state(&conn, short, &["running"]).await;
    runner.shutdown().await;
    // The host notices the node is gone and cannot know what its tasks are doing.
    let t = wait_state(&conn, long, &["lost"]).await;
    assert!(t.message.unwrap_or_default().contains("went offline"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let bundle = river_runner::ensure_joined(&cfg, None).await.unwrap();
    let runner = river_runner::start(cfg, bundle);
    // Back online, the runner re-adopts the running container and reports the one that ended.
    let t = wait_state(&conn, short, &["failed", "completed"]).await;
    assert_eq!((t.state.as_str(), t.exit_code), ("failed", Some(5)));
    let said = t.message.unwrap_or_default();
    assert!(
        said.contains("ended while") && !said.contains("may still be running"),
        "the record says what became of it: {said}"
    );
    let t = wait_state(&conn, long, &["failed", "completed"]).await;
    assert_eq!((t.state.as_str(), t.exit_code), ("failed", Some(6)), "{:?}", t.message);
    assert_eq!(
        logs(&conn, long, false).await,
        "survived\n",
        "the whole output, written once"
    );
    assert_eq!(logs(&conn, short, false).await, "short\n");
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn a_host_restart_loses_no_task() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let mut cfg = host_cfg(d.path());
    let host = start_host(cfg.clone()).await;
    cfg.listen = host.mesh_addr;
    let (_c, runner) = runner(&host, d.path(), "w6").await;
    let conn = admin(&host).await;
    online(&host, "w6").await;
    let id = submit(&conn, spec("sleep 2; echo through")).await[0];
    wait_state(&conn, id, &["running"]).await;
    let queued = submit(
        &conn,
        TaskSpec {
            cores: nodes(&host).await[0].info.cores,
            ..spec("echo after")
        },
    )
    .await[0];
    host.shutdown().await;
    let host = start_host(cfg).await;
    let conn = admin(&host).await;
    let t = wait_state(&conn, id, &["completed", "failed"]).await;
    assert_eq!(
        (t.state.as_str(), t.exit_code),
        ("completed", Some(0)),
        "{:?}",
        t.message
    );
    assert_eq!(logs(&conn, id, false).await, "through\n");
    // The queued task was kept and runs once the cores are free.
    let t = wait_state(&conn, queued, &["completed", "failed"]).await;
    assert_eq!(t.state, "completed");
    runner.shutdown().await;
    host.shutdown().await;
}

/// Opens `logs -f` as the CLI does: a `Logs` stream, an answer frame, then raw bytes.
async fn follow(conn: &river_mesh::Connection, id: u64) -> river_mesh::RecvStream {
    let (mut send, mut recv) = river_mesh::open(conn, river_proto::StreamKind::Logs).await.unwrap();
    river_mesh::send_msg(
        &mut send,
        &river_proto::msg::LogsRequest {
            id,
            stderr: false,
            follow: true,
        },
    )
    .await
    .unwrap();
    let _ = send.finish();
    match river_mesh::recv_msg::<Response>(&mut recv).await.unwrap() {
        Some(Response::Logs(_)) => recv,
        other => panic!("follow: {other:?}"),
    }
}

#[tokio::test]
async fn logs_follow_live_and_end_with_the_task() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let (host, runner, conn) = cluster(d.path(), "w7").await;
    let id = submit(&conn, spec("echo first; sleep 2; echo second")).await[0];
    wait_state(&conn, id, &["running"]).await;
    let mut recv = follow(&conn, id).await;
    // The first line arrives while the task still runs: streamed, not collected at the end.
    let first = recv.read_chunk(1024, true).await.unwrap().expect("output");
    assert_eq!(&first.bytes[..], b"first\n");
    assert_eq!(show(&conn, id).await.state, "running");
    let rest = recv.read_to_end(1 << 20).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&rest), "second\n");
    // The stream ended because the task did.
    let t = wait_state(&conn, id, &["completed", "failed"]).await;
    assert_eq!(t.state, "completed");
    // Following a finished task gives its whole output and ends.
    let all = follow(&conn, id).await.read_to_end(1 << 20).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&all), "first\nsecond\n");
    // A task that never started has nothing to follow, and says so.
    let (mut send, mut recv) = river_mesh::open(&conn, river_proto::StreamKind::Logs).await.unwrap();
    river_mesh::send_msg(
        &mut send,
        &river_proto::msg::LogsRequest {
            id: 999,
            stderr: false,
            follow: true,
        },
    )
    .await
    .unwrap();
    match river_mesh::recv_msg::<Response>(&mut recv).await.unwrap() {
        Some(Response::Error {
            kind: ErrorKind::NotFound,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn gpus_are_placed_from_a_fake_inventory_and_batches_span_nodes() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    // Two runners: g1 with two fake GPUs, g2 with none.
    let mut g1 = runner_cfg(d.path(), "g1");
    g1.fake_gpus = (0..2)
        .map(|i| river_inventory::FakeGpu {
            name: format!("Fake {i}"),
            memory_bytes: 16 << 30,
            numa: None,
        })
        .collect();
    let b1 = join(&host, &g1, &token(&host, 600, 1).await).await.unwrap();
    let r1 = river_runner::start(g1, b1);
    let (_c2, r2) = runner(&host, d.path(), "g2").await;
    let conn = admin(&host).await;
    let host_ref = &host;
    for n in ["g1", "g2"] {
        eventually(Duration::from_secs(15), "nodes online", || async move {
            node_state(host_ref, n).await == Some(river_proto::msg::NodeState::Online)
        })
        .await;
    }
    // Untargeted GPU tasks can only go to g1, each gets its own GPU, and a third waits.
    let gpu = |script: &str| TaskSpec {
        gpus: 1,
        ..spec(script)
    };
    let a = submit(&conn, gpu("echo gpus=$RIVER_GPUS; sleep 2")).await[0];
    let b = submit(&conn, gpu("echo gpus=$RIVER_GPUS; sleep 2")).await[0];
    let c = submit(&conn, gpu("echo gpus=$RIVER_GPUS")).await[0];
    wait_state(&conn, a, &["running"]).await;
    wait_state(&conn, b, &["running"]).await;
    assert_eq!(show(&conn, c).await.state, "queued", "both GPUs are busy");
    let mut seen = Vec::new();
    for id in [a, b, c] {
        let t = wait_state(&conn, id, &["completed", "failed"]).await;
        assert_eq!(t.state, "completed", "{:?}", t.message);
        let p = t.placement.unwrap();
        assert_eq!(p.node, "g1");
        assert_eq!(logs(&conn, id, false).await, format!("gpus={}\n", p.gpus[0]));
        seen.push(p.gpus[0]);
    }
    assert_ne!(seen[0], seen[1], "two tasks never share a GPU");
    // A named GPU is honoured.
    let named = submit(
        &conn,
        TaskSpec {
            targets: vec!["g1::1".into()],
            ..spec("echo gpus=$RIVER_GPUS")
        },
    )
    .await[0];
    wait_state(&conn, named, &["completed"]).await;
    assert_eq!(logs(&conn, named, false).await, "gpus=1\n");
    // One submission, one task per target, one batch.
    let ids = match call(
        &conn,
        Request::TaskSubmit(TaskSpec {
            targets: vec!["g1".into(), "g2".into()],
            ..spec("echo $RIVER_NODE")
        }),
    )
    .await
    {
        Response::TaskSubmitted { batch, ids } => {
            assert_eq!(batch, ids[0]);
            ids
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(ids.len(), 2);
    for (id, node) in ids.iter().zip(["g1", "g2"]) {
        wait_state(&conn, *id, &["completed"]).await;
        assert_eq!(logs(&conn, *id, false).await, format!("{node}\n"));
    }
    r1.shutdown().await;
    r2.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn memory_limits_mounts_and_privilege_are_enforced() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let shared = d.path().join("nfs");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("in.txt"), "dataset").unwrap();
    let mut cfg = runner_cfg(d.path(), "w8");
    cfg.shared_dir = Some(shared.clone());
    let bundle = join(&host, &cfg, &token(&host, 600, 1).await).await.unwrap();
    let runner = river_runner::start(cfg, bundle);
    let conn = admin(&host).await;
    online(&host, "w8").await;

    // Over its memory limit: the kernel kills it, and the task says so.
    let oom = submit(
        &conn,
        TaskSpec {
            memory_bytes: Some(32 << 20),
            ..spec("head -c 300m /dev/zero | tail > /dev/null")
        },
    )
    .await[0];
    let t = wait_state(&conn, oom, &["oom", "failed", "completed"]).await;
    assert_eq!(t.state, "oom", "{:?}", t.message);
    assert!(t.message.unwrap_or_default().contains("memory limit of 32 MiB"));

    // /shared and /local_temp are there; a mount under the shared directory reaches the task.
    let sub = shared.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let ok = TaskSpec {
        mounts: vec![river_proto::msg::MountSpec { source: sub.display().to_string(), target: "/data".into(), read_only: true }],
        ..spec("cat /shared/in.txt; echo out > /shared/out.txt; echo tmp > /local_temp/x && echo scratch-ok; test -d /data && echo data-ok")
    };
    let id = submit(&conn, ok).await[0];
    let t = wait_state(&conn, id, &["completed", "failed"]).await;
    assert_eq!(t.state, "completed", "{:?}", t.message);
    assert_eq!(logs(&conn, id, false).await, "datasetscratch-ok\ndata-ok\n");
    assert_eq!(std::fs::read_to_string(shared.join("out.txt")).unwrap(), "out\n");

    // Anything else of the node's filesystem is refused, also through `..`.
    for source in ["/etc".to_string(), format!("{}/../..", sub.display())] {
        let bad = TaskSpec {
            mounts: vec![river_proto::msg::MountSpec {
                source: source.clone(),
                target: "/x".into(),
                read_only: false,
            }],
            ..spec("cat /x/passwd")
        };
        let id = submit(&conn, bad).await[0];
        let t = wait_state(&conn, id, &["failed", "completed"]).await;
        assert_eq!(t.state, "failed", "{source}");
        assert!(
            t.message
                .unwrap_or_default()
                .contains("not under a directory tasks may mount"),
            "{source}"
        );
    }

    // Privileged tasks are off unless the host allows them.
    match call(
        &conn,
        Request::TaskSubmit(TaskSpec {
            privileged: true,
            ..spec("true")
        }),
    )
    .await
    {
        Response::Error {
            kind: ErrorKind::Forbidden,
            message,
        } => assert!(message.contains("allow_privileged"), "{message}"),
        other => panic!("{other:?}"),
    }
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn removing_a_node_fails_its_tasks_with_the_reason() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let (host, mut runner, conn) = cluster(d.path(), "leaver").await;
    let id = submit(&conn, spec("sleep 60")).await[0];
    wait_state(&conn, id, &["running"]).await;
    assert!(matches!(
        call(&conn, Request::NodeRemove { name: "leaver".into() }).await,
        Response::Done { .. }
    ));
    let t = show(&conn, id).await;
    assert_eq!(t.state, "failed");
    assert!(t.message.unwrap_or_default().contains("removed from the cluster"));
    // The removed runner stops by itself.
    let _ = tokio::time::timeout(Duration::from_secs(15), runner.wait())
        .await
        .expect("runner stops");
    match call(&conn, Request::Status).await {
        Response::Status(s) => assert_eq!((s.tasks_active, s.tasks_queued), (0, 0)),
        other => panic!("{other:?}"),
    }
    // ...and takes its tasks' containers with it.
    let rt = river_docker::Runtime::connect(None).await.unwrap();
    assert!(
        rt.list("river.node=leaver").await.unwrap().is_empty(),
        "containers of a removed node are gone"
    );
    host.shutdown().await;
}
