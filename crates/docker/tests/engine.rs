//! The runtime against a real Docker engine and the busybox test image that
//! `scripts/docker-env.sh` builds (`docker import` of Debian's busybox-static). Without an engine
//! these tests say they are skipped; with `RIVER_REQUIRE_DOCKER=1` (as `scripts/test.sh` sets)
//! they fail instead.

use futures_util::StreamExt;
use river_docker::{ContainerSpec, Mount, Output, Runtime, RuntimeError};
use std::time::Duration;

const IMAGE: &str = "river-test/busybox:1";

async fn runtime() -> Option<Runtime> {
    let why = match Runtime::connect(None).await {
        Ok(r) => match r.image_present(IMAGE).await {
            Ok(true) => return Some(r),
            _ => format!("image {IMAGE} is missing; run scripts/docker-env.sh"),
        },
        Err(e) => e.to_string(),
    };
    assert!(
        std::env::var_os("RIVER_REQUIRE_DOCKER").is_none(),
        "Docker is required here: {why}"
    );
    eprintln!("skipped: {why}");
    None
}

fn spec(name: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        name: format!("river-test-{}-{name}", std::process::id()),
        image: IMAGE.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        labels: [("river.test".to_string(), std::process::id().to_string())].into(),
        ..Default::default()
    }
}

/// Runs a container to its end; returns its exit, stdout and stderr, and removes it.
async fn run(rt: &Runtime, spec: &ContainerSpec) -> (river_docker::Exit, String, String) {
    rt.remove(&spec.name).await.unwrap();
    let id = rt.create(spec).await.unwrap();
    rt.start(&id).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(60), rt.wait(&id))
        .await
        .expect("container ends")
        .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut logs = Box::pin(rt.output(&id, false));
    while let Some(chunk) = logs.next().await {
        match chunk.unwrap() {
            Output::Stdout(b) => out.extend(b),
            Output::Stderr(b) => err.extend(b),
        }
    }
    rt.remove(&id).await.unwrap();
    (
        exit,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

#[tokio::test]
async fn output_and_exit_code_come_back_separately() {
    let Some(rt) = runtime().await else { return };
    let (exit, out, err) = run(&rt, &spec("exit", "echo to-out; echo to-err >&2; exit 3")).await;
    assert_eq!((exit.code, exit.oom_killed), (3, false));
    assert_eq!(out, "to-out\n");
    assert_eq!(err, "to-err\n");
}

#[tokio::test]
async fn cores_are_pinned() {
    let Some(rt) = runtime().await else { return };
    let core = if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        "1"
    } else {
        "0"
    };
    let mut s = spec(
        "cpuset",
        "cat /sys/fs/cgroup/cpuset/cpuset.cpus 2>/dev/null || cat /sys/fs/cgroup/cpuset.cpus.effective",
    );
    s.cpuset_cpus = Some(core.into());
    s.cpuset_mems = Some("0".into());
    let (exit, out, _) = run(&rt, &s).await;
    assert_eq!(exit.code, 0);
    assert_eq!(out.trim(), core, "the container sees only its core");
}

#[tokio::test]
async fn exceeding_memory_is_oom_and_a_kill_is_not() {
    let Some(rt) = runtime().await else { return };
    // `tail` keeps a newline-free stream in memory until the kernel kills it.
    let mut s = spec("oom", "head -c 300m /dev/zero | tail > /dev/null");
    s.memory_bytes = Some(32 << 20);
    let (exit, _, _) = run(&rt, &s).await;
    assert!(exit.oom_killed, "{exit:?}");

    let s = spec("kill", "sleep 60");
    rt.remove(&s.name).await.unwrap();
    let id = rt.create(&s).await.unwrap();
    rt.start(&id).await.unwrap();
    rt.kill(&id).await.unwrap();
    let exit = rt.wait(&id).await.unwrap();
    assert_eq!(
        (exit.code, exit.oom_killed),
        (137, false),
        "137 from a kill is not an OOM"
    );
    rt.remove(&id).await.unwrap();
}

#[tokio::test]
async fn pause_and_resume() {
    let Some(rt) = runtime().await else { return };
    let s = spec("pause", "sleep 60");
    rt.remove(&s.name).await.unwrap();
    let id = rt.create(&s).await.unwrap();
    rt.start(&id).await.unwrap();
    rt.pause(&id).await.unwrap();
    let st = rt.status(&id).await.unwrap();
    assert!(st.paused && st.running && st.exit.is_none(), "{st:?}");
    rt.resume(&id).await.unwrap();
    assert!(!rt.status(&id).await.unwrap().paused);
    rt.remove(&id).await.unwrap();
    assert!(matches!(rt.status(&id).await, Err(RuntimeError::NotFound(_))));
}

#[tokio::test]
async fn labels_find_containers_again() {
    let Some(rt) = runtime().await else { return };
    let mut s = spec("label", "sleep 60");
    let mark = format!("river.test.find={}", std::process::id());
    s.labels
        .insert("river.test.find".into(), std::process::id().to_string());
    rt.remove(&s.name).await.unwrap();
    let id = rt.create(&s).await.unwrap();
    let found = rt.list(&mark).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].id.as_str(), found[0].name.as_str()),
        (id.as_str(), s.name.as_str())
    );
    rt.remove(&id).await.unwrap();
    assert!(rt.list(&mark).await.unwrap().is_empty());
}

#[tokio::test]
async fn mounts_reach_the_container() {
    let Some(rt) = runtime().await else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "from the host").unwrap();
    let mut s = spec(
        "mount",
        "cat /shared/in.txt; echo from-the-task > /shared/out.txt; echo x > /ro/x",
    );
    s.mounts = vec![
        Mount {
            source: dir.path().into(),
            target: "/shared".into(),
            read_only: false,
        },
        Mount {
            source: dir.path().into(),
            target: "/ro".into(),
            read_only: true,
        },
    ];
    let (exit, out, err) = run(&rt, &s).await;
    assert_eq!(out, "from the host");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "from-the-task\n"
    );
    assert!(
        exit.code != 0 && err.contains("Read-only"),
        "a read-only mount refuses writes: {err}"
    );
    assert!(!dir.path().join("x").exists());
}

#[tokio::test]
async fn a_missing_image_or_engine_is_a_clear_error() {
    let Some(rt) = runtime().await else { return };
    let mut s = spec("noimage", "true");
    s.image = "river-test/does-not-exist:0".into();
    // Not on the node and no registry to pull it from: the error says both.
    match rt.create(&s).await {
        Err(e @ RuntimeError::PullFailed { .. }) => assert!(e.to_string().contains("pulling it failed"), "{e}"),
        other => panic!("{other:?}"),
    }
    let e = Runtime::connect(Some(std::path::Path::new("/nonexistent/docker.sock")))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("is dockerd running"), "{e}");
}
