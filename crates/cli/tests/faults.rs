//! Faults that must not destroy work: a host's state directory taken by a second host or left
//! with its CA but without its database, a database restored from an older backup, a full disk
//! under the host. Each test causes the fault as an operator (or the machine) would and asserts
//! what the operator and users see afterwards.

#[path = "support/binary.rs"]
mod binary;
#[path = "support/docker.rs"]
mod docker;
#[path = "support/harness.rs"]
mod harness;

use docker::*;
use harness::*;
use river_proto::msg::{Request, Response};
use std::path::Path;
use std::time::Duration;

/// The container of task `id` on node `node` (ids repeat across the tests' clusters).
async fn container_of(rt: &river_docker::Runtime, id: u64, node: &str) -> Option<river_docker::Found> {
    let found = rt.list(&format!("river.task={id}")).await.unwrap();
    found
        .into_iter()
        .find(|c| c.labels.get("river.node").map(String::as_str) == Some(node))
}

fn expect_refusal(result: anyhow::Result<river_host::RunningHost>) -> String {
    match result {
        Ok(h) => panic!("the host started: {h:?}"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_host_will_not_share_its_state_directory_nor_start_on_a_ca_without_its_database() {
    let d = tmp();
    let cfg = host_cfg(d.path());
    let host = start_host(cfg.clone()).await;
    let admin_meta = std::fs::read_to_string(host.admin_dir.join("cluster.toml")).unwrap();

    // A second host on the same directory (another port: `listen` is port 0) is refused and
    // changes nothing the first one owns.
    let e = expect_refusal(river_host::start(cfg.clone()).await);
    assert!(
        e.contains("another river host") && e.contains("is using the state directory"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(host.admin_dir.join("cluster.toml")).unwrap(),
        admin_meta,
        "the admin's credential still names the first host"
    );
    assert!(matches!(
        call(&admin(&host).await, Request::WhoAmI).await,
        Response::WhoAmI { .. }
    ));
    host.shutdown().await;

    // The database gone, the CA still there: no new, empty database is made.
    let state = &cfg.state_dir;
    for f in ["river.db", "river.db-wal", "river.db-shm"] {
        let _ = std::fs::remove_file(state.join(f));
    }
    let e = expect_refusal(river_host::start(cfg.clone()).await);
    assert!(
        e.contains("holds this cluster's CA but no database") && e.contains("river host restore"),
        "{e}"
    );
    assert!(!state.join("river.db").exists(), "no empty database was left behind");

    // An empty database beside the CA is refused the same way.
    std::fs::write(state.join("river.db"), b"").unwrap();
    let e = expect_refusal(river_host::start(cfg.clone()).await);
    assert!(e.contains("its database (river.db) is empty"), "{e}");
}

#[tokio::test]
async fn a_damaged_database_is_refused_at_start_and_a_backup_brings_the_cluster_back() {
    let d = tmp();
    let cfg = host_cfg(d.path());
    let host = start_host(cfg.clone()).await;
    let conn = admin(&host).await;
    for _ in 0..200 {
        call(&conn, Request::TokenCreate { ttl_secs: 600, uses: 1 }).await;
    }
    let backup = d.path().join("good.tar");
    river_host::backup::create(&cfg.state_dir, &backup).await.unwrap();
    let fp = host.ca_fingerprint.clone();
    host.shutdown().await;

    // Random bytes over pages in the middle of the file, as a failing disk leaves them.
    let db = cfg.state_dir.join("river.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let mid = bytes.len() / 2;
    for (i, b) in bytes[mid..mid + 8192].iter_mut().enumerate() {
        *b = u8::try_from((i * 151 + 7) % 256).unwrap();
    }
    std::fs::write(&db, bytes).unwrap();
    let e = expect_refusal(river_host::start(cfg.clone()).await);
    assert!(e.contains("is damaged") && e.contains("river host restore"), "{e}");

    river_host::backup::restore(&backup, &cfg.state_dir, true)
        .await
        .unwrap();
    let host = start_host(cfg.clone()).await;
    assert_eq!(host.ca_fingerprint, fp, "the same cluster");
    match call(&admin(&host).await, Request::TokenList).await {
        Response::Tokens(t) => assert_eq!(t.len(), 200, "every token of the backup"),
        other => panic!("{other:?}"),
    }
    host.shutdown().await;
}

#[tokio::test]
async fn a_node_the_restored_host_does_not_know_keeps_its_work_and_is_admitted_again() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let (cfg, host) = restartable_host(host_cfg(d.path())).await;
    // The backup is taken before the node joins, so the restored database has never heard of it.
    let backup = d.path().join("before-f2.tar");
    river_host::backup::create(&cfg.state_dir, &backup).await.unwrap();
    let (_rcfg, runner) = runner(&host, d.path(), "f2").await;
    online(&host, "f2").await;
    let conn = admin(&host).await;
    let id = submit(&conn, spec("sleep 300")).await[0];
    wait_state(&conn, id, &["running"]).await;
    host.shutdown().await;

    let said = river_host::backup::restore(&backup, &cfg.state_dir, true)
        .await
        .unwrap();
    assert!(said.contains("river node admit"), "{said}");
    let host = start_host(cfg.clone()).await;
    let conn = admin(&host).await;

    // The node tries, is told it is unknown, and waits with its task still running.
    eventually(Duration::from_secs(60), "the node tried to connect", || async {
        match call(&conn, Request::NodeAdmit { name: "f2".into() }).await {
            Response::Done { message } => message.contains("admitted node f2"),
            _ => false,
        }
    })
    .await;
    assert_eq!(runner.status.borrow().stopped, None, "the runner did not stop");
    let rt = river_docker::Runtime::connect(None).await.unwrap();
    let container = container_of(&rt, id, "f2")
        .await
        .expect("the task's container is still there");
    assert!(
        rt.status(&container.id).await.unwrap().exit.is_none(),
        "the task is still running"
    );

    // Admitted, it comes back online by itself, and new work runs on it under ids never used.
    online(&host, "f2").await;
    let next = submit(&conn, spec("echo after")).await[0];
    assert!(next > id, "task id {next} repeats one given after the backup ({id})");
    assert_eq!(
        wait_state(&conn, next, &["completed", "failed"]).await.state,
        "completed"
    );
    assert_eq!(logs(&conn, next, false).await, "after\n");

    let _ = rt.kill(&container.id).await;
    runner.shutdown().await;
    host.shutdown().await;
}

/// A tmpfs mounted on `dir` for the test's life: a disk that fills up when the test says.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs on {}", dir.display());
        Self(dir.to_owned())
    }

    /// Writes a file until the disk has no room left.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).and_then(|()| f.flush()).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_under_the_host_delays_work_and_loses_none() {
    if !docker_ready().await || !root("mounting a small tmpfs to fill") {
        return;
    }
    let d = tmp();
    let disk = SmallDisk::mount(&d.path().join("host"), "8m");
    let host = start_host(host_cfg(d.path())).await;
    let (rcfg, runner) = runner(&host, d.path(), "f3").await;
    let conn = admin(&host).await;
    online(&host, "f3").await;
    let id = submit(&conn, spec("sleep 2; echo done")).await[0];
    wait_state(&conn, id, &["running"]).await;

    let filler = disk.fill();
    // What needs a write is refused with the reason (the write-ahead log may still have room
    // for a few).
    let mut refused = None;
    for _ in 0..2000 {
        if let Response::Error { message, .. } = call(&conn, Request::TokenCreate { ttl_secs: 60, uses: 1 }).await {
            refused = Some(message);
            break;
        }
    }
    let refused = refused.expect("a write was refused on a full disk");
    assert!(refused.contains("full"), "{refused}");
    // Submissions too, each in a transaction whose COMMIT fails.
    for _ in 0..4 {
        match call(&conn, Request::TaskSubmit(spec("true"))).await {
            Response::Error { message, .. } => assert!(message.contains("full"), "{message}"),
            Response::TaskSubmitted { .. } => {}
            other => panic!("{other:?}"),
        }
    }

    // The task ends on the node while the host cannot record it.
    let result = rcfg.state_dir.join("tasks").join(id.to_string()).join("result.json");
    eventually(Duration::from_secs(30), "the task ended on the node", || async {
        result.exists()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        show(&conn, id).await.state,
        "running",
        "the host could not record the end yet"
    );

    // Room again: the end arrives without restarting anything, and every write works again.
    std::fs::remove_file(filler).unwrap();
    let t = wait_state(&conn, id, &["completed", "failed", "lost"]).await;
    assert_eq!((t.state.as_str(), t.exit_code), ("completed", Some(0)), "{t:?}");
    assert_eq!(logs(&conn, id, false).await, "done\n");
    for i in 0..8 {
        match call(&conn, Request::TaskSubmit(spec("true"))).await {
            Response::TaskSubmitted { .. } => {}
            other => panic!("submission {i} after the disk had room again: {other:?}"),
        }
    }

    runner.shutdown().await;
    host.shutdown().await;
    drop(disk);
}

fn now_s() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(d.as_secs()).unwrap()
}

#[tokio::test]
async fn a_node_whose_certificate_runs_out_during_a_host_outage_keeps_its_work_and_renews() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let mut cfg = host_cfg(d.path());
    cfg.node_cert_lifetime = Duration::from_secs(10);
    let (cfg, host) = restartable_host(cfg).await;
    let (rcfg, runner) = runner(&host, d.path(), "f5").await;
    let conn = admin(&host).await;
    online(&host, "f5").await;
    let id = submit(&conn, spec("sleep 300")).await[0];
    wait_state(&conn, id, &["running"]).await;
    host.shutdown().await;

    // The node's certificate runs out while the host is away.
    let identity = rcfg.state_dir.join("identity");
    let expiry = || {
        river_creds::Bundle::load(&identity)
            .unwrap()
            .cert_info()
            .unwrap()
            .not_after
    };
    eventually(Duration::from_secs(60), "the node's certificate expired", || async {
        expiry() < now_s() - 1
    })
    .await;
    let host = start_host(cfg.clone()).await;
    let conn = admin(&host).await;

    // It renews with the expired certificate, comes back, and its task ran on meanwhile.
    eventually(Duration::from_secs(90), "the node is online again", || async {
        node_state(&host, "f5").await == Some(river_proto::msg::NodeState::Online)
    })
    .await;
    assert_eq!(runner.status.borrow().stopped, None, "the runner did not stop");
    assert!(expiry() > now_s(), "a new certificate");
    assert_eq!(show(&conn, id).await.state, "running");

    signal(&conn, id, river_proto::msg::Signal::Kill).await;
    wait_state(&conn, id, &["killed"]).await;
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn output_a_full_disk_cut_short_is_flagged_in_the_record_and_by_task_logs() {
    if !docker_ready().await || !root("mounting a small tmpfs to fill") {
        return;
    }
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let rcfg = runner_cfg(d.path(), "f6");
    let _disk = SmallDisk::mount(&rcfg.state_dir, "16m");
    let bundle = join(&host, &rcfg, &token(&host, 600, 1).await).await.unwrap();
    let runner = river_runner::start(rcfg.clone(), bundle);
    let conn = admin(&host).await;
    online(&host, "f6").await;

    // 30 MB of output onto a node with 16 MB of room.
    let id = submit(&conn, spec("head -c 30000000 /dev/zero | tr '\\0' x")).await[0];
    let t = wait_state(&conn, id, &["completed", "failed"]).await;
    assert_eq!(
        (t.state.as_str(), t.exit_code),
        ("completed", Some(0)),
        "the task itself succeeded"
    );
    let said = t.message.unwrap_or_default();
    assert!(
        said.contains("output is incomplete") && said.contains("No space left"),
        "{said}"
    );

    // `task logs` gives what was kept, then fails saying it is not all.
    let o = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_river"))
            .args(["task", "logs", &id.to_string()])
            .env("RIVER_CONFIG_DIR", &host.admin_dir)
            .output()
            .unwrap()
    });
    assert!(!o.status.success(), "task logs exited 0 with part of the output");
    assert!(
        !o.stdout.is_empty() && o.stdout.len() < 30_000_000,
        "{} bytes",
        o.stdout.len()
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is incomplete"), "{err}");

    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_running_forward_renews_its_certificate_and_outlives_its_first_one() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let mut cfg = host_cfg(d.path());
    cfg.user_cert_lifetime = Duration::from_secs(10);
    let (cfg, host) = restartable_host(cfg).await;
    let (_rcfg, runner) = runner(&host, d.path(), "f7").await;
    online(&host, "f7").await;
    let invite = match call(
        &admin(&host).await,
        Request::UserInvite {
            name: "fwd".into(),
            role: river_proto::msg::Role::User,
            ttl_secs: 600,
        },
    )
    .await
    {
        Response::TokenCreated(t) => t.token,
        other => panic!("{other:?}"),
    };
    let user_dir = d.path().join("fwd");
    let bundle = river_mesh::client::enrol(&host.mesh_addr.to_string(), &invite, "fwd", "user")
        .await
        .unwrap();
    bundle.save(&user_dir).unwrap();
    let first_expiry = bundle.cert_info().unwrap().not_after;
    let conn = river_mesh::client::connect_bundle(&bundle).await.unwrap().1;
    let id = submit(
        &conn,
        spec("mkdir /www && echo through > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www"),
    )
    .await[0];
    wait_state(&conn, id, &["running"]).await;
    let (mut fwd, local, _) =
        tokio::task::block_in_place(|| binary::spawn_forward(&user_dir, &[&id.to_string(), "8080"]));
    let get = || binary::http_get(&local, "/index.html").unwrap_or_default();
    assert!(tokio::task::block_in_place(get).contains("through"));

    // The certificate it started with runs out; then the host restarts, so the forward must
    // connect again, with whatever certificate it has.
    eventually(Duration::from_secs(30), "the first certificate expired", || async {
        now_s() > first_expiry + 1
    })
    .await;
    host.shutdown().await;
    let host = start_host(cfg.clone()).await;
    let mut page = String::new();
    for _ in 0..150 {
        page = tokio::task::block_in_place(get);
        if page.contains("through") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        page.contains("through"),
        "the forward could not connect again: {page:?}"
    );

    let _ = fwd.kill();
    let _ = fwd.wait();
    signal(&admin(&host).await, id, river_proto::msg::Signal::Kill).await;
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test]
async fn a_task_killed_from_outside_river_says_so() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let (host, runner, conn) = cluster(d.path(), "f8").await;
    let id = submit(&conn, spec("sleep 300")).await[0];
    wait_state(&conn, id, &["running"]).await;
    // Someone on the node (or its shutdown) kills the container.
    let rt = river_docker::Runtime::connect(None).await.unwrap();
    let c = container_of(&rt, id, "f8").await.expect("the task's container");
    rt.kill(&c.id).await.unwrap();
    let t = wait_state(&conn, id, &["failed", "killed", "completed"]).await;
    assert_eq!((t.state.as_str(), t.exit_code), ("failed", Some(137)));
    let said = t.message.unwrap_or_default();
    assert!(
        said.contains("SIGKILL") && said.contains("river did not send"),
        "{said}"
    );
    runner.shutdown().await;
    host.shutdown().await;
}

/// Networks named `name` on the node's engine.
fn networks_named(name: &str) -> Vec<String> {
    let o = std::process::Command::new("docker")
        .args(["network", "ls", "-q", "--filter", &format!("name=^{name}$")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_second_network_of_the_same_name_on_the_engine_does_not_stop_tasks() {
    if !docker_ready().await || !root("the engine's socket") {
        return;
    }
    let d = tmp();
    let (host, runner, conn) = cluster(d.path(), "f9").await;
    // A task keeps running on the network river made.
    let first = submit(&conn, spec("echo one; exec sleep 600")).await[0];
    wait_state(&conn, first, &["running"]).await;
    let old = networks_named("river-tasks");
    assert_eq!(old.len(), 1);
    // Another process sharing the engine made the network at the same moment: the engine keeps
    // both (its API, unlike `docker network create`, does not refuse the name), and a container
    // that names the network is refused as ambiguous. Made until the new one's id sorts first,
    // so that "the smallest id" would pick the one no container uses.
    for _ in 0..64 {
        let made = std::process::Command::new("curl")
            .args(["-sSf", "--unix-socket", "/var/run/docker.sock", "-X", "POST"])
            .args(["-H", "content-type: application/json", "-d"])
            .arg(r#"{"Name":"river-tasks","Driver":"bridge","Options":{"com.docker.network.bridge.enable_icc":"false"}}"#)
            .arg("http://localhost/networks/create")
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let now = networks_named("river-tasks");
        let new: Vec<&String> = now.iter().filter(|n| !old.contains(n)).collect();
        if new.iter().any(|n| n.as_str() < old[0].as_str()) {
            break;
        }
        for n in new {
            let _ = std::process::Command::new("docker").args(["network", "rm", n]).output();
        }
    }
    // (Another test's runner on this engine may already have set this right: that is the same
    // code at work, and what follows holds either way.)

    let second = submit(&conn, spec("echo two")).await[0];
    let t = wait_state(&conn, second, &["completed", "failed"]).await;
    assert_eq!(t.state, "completed", "{:?}", t.message);
    assert_eq!(logs(&conn, second, false).await, "two\n");
    assert_eq!(
        networks_named("river-tasks"),
        old,
        "the spare one is removed, the one in use kept"
    );
    assert!(matches!(
        call(
            &conn,
            Request::TaskSignal {
                id: first,
                signal: river_proto::msg::Signal::Kill
            }
        )
        .await,
        Response::Done { .. } | Response::Task(_)
    ));
    runner.shutdown().await;
    host.shutdown().await;
}
