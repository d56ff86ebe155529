//! VPSs in process: they outlive runner and host restarts, stop while their runner is away, and
//! their snapshots restore them or move them to another runner with their files.

use super::*;

#[tokio::test]
async fn a_vps_outlives_runner_and_host_restarts_and_a_stop_while_its_runner_is_away() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let mut hcfg = host_cfg(d.path());
    let host = start_host(hcfg.clone()).await;
    hcfg.listen = host.mesh_addr;
    let (cfg, runner) = runner(&host, d.path(), "w9").await;
    let conn = admin(&host).await;
    online(&host, "w9").await;
    let mut vps = TaskSpec::new(IMAGE, Vec::new());
    vps.vps = Some(river_proto::msg::VpsSpec {
        ssh_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPApQ0j57M7iGP/Usn4Gpx9FDHOqJCvgdjD3+Zj7Rpga t".into()],
        image_sshd: false,
        generation: 0,
    });
    let id = submit(&conn, vps).await[0];
    wait_state(&conn, id, &["running"]).await;
    let fingerprint = match call(&conn, Request::Status).await {
        Response::Status(s) => s.ca_fingerprint,
        other => panic!("status: {other:?}"),
    };
    let container = format!("river-{}-w9-task-{id}", &fingerprint[..8]);
    let rt = river_docker::Runtime::connect(None).await.unwrap();

    // A runner restart: the VPS keeps running and is re-adopted.
    runner.shutdown().await;
    wait_state(&conn, id, &["lost"]).await;
    let bundle = river_runner::ensure_joined(&cfg, None).await.unwrap();
    let runner = river_runner::start(cfg.clone(), bundle);
    let t = wait_state(&conn, id, &["running", "failed", "stopped"]).await;
    assert_eq!(t.state, "running", "{:?}", t.message);
    assert!(rt.status(&container).await.unwrap().running);

    // Stopped while its runner is away: it comes back `stopped`, container kept, and starts.
    runner.shutdown().await;
    wait_state(&conn, id, &["lost"]).await;
    rt.stop(&container, Duration::from_secs(5)).await.unwrap();
    let bundle = river_runner::ensure_joined(&cfg, None).await.unwrap();
    let runner = river_runner::start(cfg, bundle);
    let t = wait_state(&conn, id, &["stopped", "failed"]).await;
    assert_eq!(t.state, "stopped", "{:?}", t.message);
    assert!(rt.status(&container).await.is_ok(), "the container is kept");
    match call(&conn, Request::VpsStart { id, on: None }).await {
        Response::Done { .. } => {}
        other => panic!("start: {other:?}"),
    }
    wait_state(&conn, id, &["running"]).await;

    // A host restart: still running, nothing lost.
    host.shutdown().await;
    let host = start_host(hcfg).await;
    let conn = admin(&host).await;
    online(&host, "w9").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(show(&conn, id).await.state, "running");

    match call(&conn, Request::VpsRemove { id }).await {
        Response::Done { .. } => {}
        other => panic!("remove: {other:?}"),
    }
    eventually(Duration::from_secs(15), "the container removed", || async {
        rt.status(&container).await.is_err()
    })
    .await;
    assert_eq!(show(&conn, id).await.state, "killed");
    runner.shutdown().await;
    host.shutdown().await;
}

/// A file in a container, read with the engine's own CLI (not through river).
fn read_in(container: &str, path: &str) -> String {
    let o = std::process::Command::new("docker")
        .args(["exec", container, "cat", path])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

fn write_in(container: &str, path: &str, text: &str) {
    let o = std::process::Command::new("docker")
        .args(["exec", container, "sh", "-c", &format!("echo {text} > {path}")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

async fn snapshots(conn: &river_mesh::Connection, id: u64) -> Vec<river_proto::msg::VpsSnapshot> {
    match call(conn, Request::VpsSnapshots { id }).await {
        Response::Snapshots(s) => s,
        other => panic!("snapshots: {other:?}"),
    }
}

async fn done(conn: &river_mesh::Connection, req: Request) -> String {
    match call(conn, req).await {
        Response::Done { message } => message,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn vps_snapshots_restore_and_move_to_another_runner_with_their_files() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let mut hcfg = host_cfg(d.path());
    hcfg.vps.auto_snapshots = 1;
    let host = start_host(hcfg).await;
    let (_c1, r1) = runner(&host, d.path(), "m1").await;
    let (c2, r2) = runner(&host, d.path(), "m2").await;
    let conn = admin(&host).await;
    online(&host, "m1").await;
    online(&host, "m2").await;
    let ca8 = match call(&conn, Request::Status).await {
        Response::Status(s) => s.ca_fingerprint[..8].to_owned(),
        other => panic!("status: {other:?}"),
    };
    let on = |node: &str, id: u64| format!("river-{ca8}-{node}-task-{id}");
    let rt = river_docker::Runtime::connect(None).await.unwrap();
    let mut vps = TaskSpec::new(IMAGE, Vec::new());
    vps.targets = vec!["m1".into()];
    vps.vps = Some(river_proto::msg::VpsSpec {
        ssh_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPApQ0j57M7iGP/Usn4Gpx9FDHOqJCvgdjD3+Zj7Rpga t".into()],
        image_sshd: false,
        generation: 0,
    });
    let id = submit(&conn, vps).await[0];
    wait_state(&conn, id, &["running"]).await;

    // A snapshot by hand, then a change, then a stop (which takes an automatic one).
    write_in(&on("m1", id), "/root/f", "one");
    let first = match call(
        &conn,
        Request::VpsSnapshot {
            id,
            message: Some("first".into()),
        },
    )
    .await
    {
        Response::Snapshot(s) => *s,
        other => panic!("snapshot: {other:?}"),
    };
    assert_eq!((first.seq, first.auto, first.node.as_str()), (1, false, "m1"));
    write_in(&on("m1", id), "/root/f", "two");
    signal(&conn, id, Signal::Stop).await;
    wait_state(&conn, id, &["stopped"]).await;
    eventually(Duration::from_secs(30), "the automatic snapshot", || async {
        snapshots(&conn, id).await.len() == 2
    })
    .await;

    // Restore the first: the disk is the snapshot's (a new container), on the same node.
    let m = done(&conn, Request::VpsRestore { id, seq: 1 }).await;
    assert!(m.contains("from snapshot 1"), "{m}");
    wait_state(&conn, id, &["running"]).await;
    assert_eq!(read_in(&on("m1", id), "/root/f"), "one");
    assert_eq!(
        rt.status(&on("m1", id))
            .await
            .unwrap()
            .labels
            .get("river.vps.generation")
            .map(String::as_str),
        Some("1")
    );
    // A restore needs a stopped VPS.
    match call(&conn, Request::VpsRestore { id, seq: 1 }).await {
        Response::Error {
            kind: ErrorKind::Conflict,
            message,
        } => assert!(message.contains("stop it first"), "{message}"),
        other => panic!("restore while running: {other:?}"),
    }

    // Move to m2 while m1 is up: a fresh snapshot goes along, m1's container goes.
    write_in(&on("m1", id), "/root/f", "three");
    signal(&conn, id, Signal::Stop).await;
    wait_state(&conn, id, &["stopped"]).await;
    let m = done(
        &conn,
        Request::VpsStart {
            id,
            on: Some("m2".into()),
        },
    )
    .await;
    assert!(m.contains("on m2"), "{m}");
    let t = wait_state(&conn, id, &["running", "failed"]).await;
    assert_eq!(t.state, "running", "{:?}", t.message);
    assert_eq!(t.placement.as_ref().unwrap().node, "m2");
    assert_eq!(read_in(&on("m2", id), "/root/f"), "three");
    eventually(Duration::from_secs(15), "m1's old container removed", || async {
        rt.status(&on("m1", id)).await.is_err()
    })
    .await;
    // The restore loaded snapshot 1's image into m1's engine; with its container it is gone (the
    // host keeps the archive).
    eventually(Duration::from_secs(15), "snapshot 1's image gone from m1", || async {
        !rt.image_present(&first.image).await.unwrap()
    })
    .await;
    let snaps = snapshots(&conn, id).await;
    let mut loaded: Vec<String> = snaps.iter().map(|s| s.image.clone()).collect();
    assert_eq!(
        snaps.iter().filter(|s| s.auto).count(),
        1,
        "auto_snapshots = 1 keeps one: {snaps:?}"
    );

    // Move back while m2 is offline: from the latest snapshot (taken when it stopped); m2's
    // container is discarded when m2 returns.
    write_in(&on("m2", id), "/root/f", "four");
    signal(&conn, id, Signal::Stop).await;
    wait_state(&conn, id, &["stopped"]).await;
    eventually(Duration::from_secs(30), "the automatic snapshot on m2", || async {
        snapshots(&conn, id)
            .await
            .last()
            .is_some_and(|s| s.auto && s.node == "m2")
    })
    .await;
    r2.shutdown().await;
    eventually(Duration::from_secs(30), "m2 offline", || async {
        node_state(&host, "m2").await == Some(river_proto::msg::NodeState::Offline)
    })
    .await;
    let m = done(
        &conn,
        Request::VpsStart {
            id,
            on: Some("m1".into()),
        },
    )
    .await;
    assert!(m.contains("not reachable"), "{m}");
    wait_state(&conn, id, &["running"]).await;
    assert_eq!(read_in(&on("m1", id), "/root/f"), "four");
    assert!(rt.status(&on("m2", id)).await.is_ok(), "m2's copy waits for m2");
    let bundle = river_runner::ensure_joined(&c2, None).await.unwrap();
    let r2 = river_runner::start(c2, bundle);
    eventually(Duration::from_secs(30), "m2's stale container discarded", || async {
        rt.status(&on("m2", id)).await.is_err()
    })
    .await;
    assert_eq!(
        show(&conn, id).await.state,
        "running",
        "the stale copy did not touch the VPS"
    );

    // Its node loses the container: the next start comes from the latest snapshot.
    write_in(&on("m1", id), "/root/f", "five");
    let before = snapshots(&conn, id).await.last().unwrap().seq;
    signal(&conn, id, Signal::Stop).await;
    wait_state(&conn, id, &["stopped"]).await;
    eventually(Duration::from_secs(30), "the automatic snapshot on m1", || async {
        snapshots(&conn, id).await.last().is_some_and(|s| s.seq > before)
    })
    .await;
    // (The image m1's container was made from stays: the container vanishes behind river's back.)
    loaded.push(snapshots(&conn, id).await.last().unwrap().image.clone());
    rt.remove(&on("m1", id)).await.unwrap();
    done(&conn, Request::VpsStart { id, on: None }).await;
    wait_state(&conn, id, &["running"]).await;
    assert_eq!(read_in(&on("m1", id), "/root/f"), "five");

    // Removing a snapshot, then the VPS: its snapshots and their archives go.
    done(&conn, Request::VpsSnapshotRm { id, seq: 1 }).await;
    assert!(snapshots(&conn, id).await.iter().all(|s| s.seq != 1));
    done(&conn, Request::VpsRemove { id }).await;
    assert!(snapshots(&conn, id).await.is_empty());
    let blobs = d.path().join("host").join("blobs");
    eventually(Duration::from_secs(5), "archives deleted", || async {
        std::fs::read_dir(&blobs).map(|r| r.count()).unwrap_or(0) == 0
    })
    .await;
    // No node keeps a snapshot's image once no container of it is left.
    eventually(
        Duration::from_secs(15),
        "the snapshots' images gone from the engine",
        || async {
            for image in &loaded {
                if rt.image_present(image).await.unwrap() {
                    return false;
                }
            }
            true
        },
    )
    .await;
    r1.shutdown().await;
    r2.shutdown().await;
    host.shutdown().await;
}
