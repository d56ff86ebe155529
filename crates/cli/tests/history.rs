//! Answers that grow with the cluster's history come a page or a stream at a time: `task list`
//! pages, `task logs` streams output larger than any frame. Through the `river` binary, against
//! a real host and runner.

#[path = "support/docker.rs"]
mod docker;
#[path = "support/harness.rs"]
mod harness;

use docker::*;
use harness::*;
use river_proto::msg::{Request, Response};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn river(cfg: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_river"))
        .args(args)
        .env("RIVER_CONFIG_DIR", cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ids_in_table(o: &Output) -> Vec<u64> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn task_list_pages_and_task_logs_streams_what_no_frame_holds() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let (host, runner, conn) = cluster(d.path(), "h1").await;
    let cfg = host.admin_dir.clone();

    // 25 MB of output (a frame holds 4 MiB), read back whole without --follow.
    let big = submit(&conn, spec("head -c 25000000 /dev/zero | tr '\\0' x")).await[0];
    assert_eq!(
        wait_state(&conn, big, &["completed", "failed"]).await.state,
        "completed"
    );
    let o = tokio::task::block_in_place(|| river(&cfg, &["task", "logs", &big.to_string()]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout.len(), 25_000_000);
    assert!(o.stdout.iter().all(|b| *b == b'x'));
    // The same through the HTTPS API, streamed as plain text.
    let saved = d.path().join("big.out");
    let curl = tokio::task::block_in_place(|| {
        Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(cfg.join("ca.crt"))
            .arg("--cert")
            .arg(cfg.join("cert.pem"))
            .arg("--key")
            .arg(cfg.join("key.pem"))
            .arg("-o")
            .arg(&saved)
            .arg(format!(
                "https://localhost:{}/api/tasks/{big}/output",
                host.api_addr.port()
            ))
            .output()
            .unwrap()
    });
    assert!(curl.status.success(), "{}", String::from_utf8_lossy(&curl.stderr));
    assert_eq!(std::fs::metadata(&saved).unwrap().len(), 25_000_000);

    // 150 tasks wait behind one that holds a core: each asks for every core of the node.
    let cores = match call(&conn, Request::NodeShow { name: "h1".into() }).await {
        Response::Node(n) => n.info.cores,
        other => panic!("{other:?}"),
    };
    let holder = submit(&conn, spec("sleep 300")).await[0];
    wait_state(&conn, holder, &["running"]).await;
    let mut waiting = spec("true");
    waiting.cores = cores;
    for _ in 0..150 {
        submit(&conn, waiting.clone()).await;
    }
    let newest = big + 151;

    // The newest 100, oldest of them first, and where the rest are.
    let o = tokio::task::block_in_place(|| river(&cfg, &["task", "list"]));
    assert!(o.status.success());
    let page = ids_in_table(&o);
    assert_eq!(page, ((newest - 99)..=newest).collect::<Vec<_>>());
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("100 of 152 matching tasks") && said.contains(&format!("--before {}", newest - 99)),
        "{said}"
    );
    // The next page, and every task at once.
    let o = tokio::task::block_in_place(|| {
        river(
            &cfg,
            &["task", "list", "--limit", "10", "--before", &(newest - 99).to_string()],
        )
    });
    assert_eq!(ids_in_table(&o), ((newest - 109)..=(newest - 100)).collect::<Vec<_>>());
    let o = tokio::task::block_in_place(|| river(&cfg, &["task", "list", "--all", "-o", "json"]));
    let all: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(all.len(), 152);
    assert_eq!(all[0]["id"].as_u64(), Some(big));

    signal(&conn, holder, river_proto::msg::Signal::Kill).await;
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runner_with_a_long_history_attaches_and_stops_resending_what_the_host_has() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let cfg = runner_cfg(d.path(), "h2");
    let bundle = join(&host, &cfg, &token(&host, 600, 1).await).await.unwrap();
    // 60,000 ends of tasks this host never ran, as a node that served another cluster database
    // for years keeps them: more than one frame's worth (4 MiB) in one snapshot.
    let tasks = cfg.state_dir.join("tasks");
    let reason = "x".repeat(100);
    for id in 5_000_000..5_060_000u64 {
        let dir = tasks.join(id.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let end = serde_json::json!({ "state": "completed", "exit_code": 0, "message": reason });
        std::fs::write(dir.join("result.json"), end.to_string()).unwrap();
    }
    let runner = river_runner::start(cfg.clone(), bundle);
    let conn = admin(&host).await;
    online(&host, "h2").await;
    // It attached: work runs on it.
    let id = submit(&conn, spec("echo hi")).await[0];
    assert_eq!(wait_state(&conn, id, &["completed", "failed"]).await.state, "completed");
    // The host acknowledged the end it stored; the node leaves it out of its next snapshots. The
    // ends the host never had stay on the node.
    let marker = tasks.join(id.to_string()).join("recorded-by-host");
    eventually(
        std::time::Duration::from_secs(30),
        "the end was acknowledged",
        || async { marker.exists() },
    )
    .await;
    assert!(!tasks.join("5000000").join("recorded-by-host").exists());
    runner.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_removes_output_past_its_retention_and_task_logs_says_so() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let host = start_host(host_cfg(d.path())).await;
    let mut cfg = runner_cfg(d.path(), "h3");
    cfg.task_retention = std::time::Duration::from_secs(2);
    let bundle = join(&host, &cfg, &token(&host, 600, 1).await).await.unwrap();
    let runner = river_runner::start(cfg.clone(), bundle);
    let conn = admin(&host).await;
    online(&host, "h3").await;
    let id = submit(&conn, spec("echo kept for a while")).await[0];
    assert_eq!(wait_state(&conn, id, &["completed", "failed"]).await.state, "completed");
    let out = tokio::task::block_in_place(|| river(&host.admin_dir, &["task", "logs", &id.to_string()]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept for a while\n");

    // Once the host has stored its end, the output stays for the retention, then goes.
    let dir = cfg.state_dir.join("tasks").join(id.to_string());
    eventually(std::time::Duration::from_secs(30), "the output was removed", || async {
        !dir.exists()
    })
    .await;
    let out = tokio::task::block_in_place(|| river(&host.admin_dir, &["task", "logs", &id.to_string()]));
    assert!(!out.status.success(), "task logs of removed output exited 0");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no longer kept") && said.contains("task_retention"),
        "{said}"
    );
    runner.shutdown().await;
    host.shutdown().await;
}
