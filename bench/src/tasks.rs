//! Task dispatch: N no-op tasks through a real `river host` and `river runner`, against a baseline
//! in the same run: plain `docker run --rm` of the same image for container tasks, or starting
//! `sh -c true` for `--no-container` tasks (which leaves river's own cost: scheduling, SQLite, the
//! mesh, the cgroup). Latencies come from the host's own timestamps (submitted, started,
//! finished), so the client's polling adds nothing.

use crate::proc::{host, runner};
use river_mesh::client;
use river_proto::msg::{Request, Response, TaskSpec};
use std::path::Path;
use std::time::{Duration, Instant};

const IMAGE: &str = "river-test/busybox:1";

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[allow(clippy::cast_precision_loss)]
pub async fn run(river: &Path, count: usize, concurrency: usize, no_container: bool) -> anyhow::Result<()> {
    // Baseline: `docker run --rm IMAGE true` (or `sh -c true`), `concurrency` at a time, as many runs.
    let baseline: &[&str] = if no_container {
        &["sh", "-c", "true"]
    } else {
        &["docker", "run", "--rm", IMAGE, "true"]
    };
    let start = Instant::now();
    let mut base = Vec::with_capacity(count);
    let mut left = count;
    while left > 0 {
        let n = left.min(concurrency);
        let runs: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(async move {
                    let t = Instant::now();
                    let ok = tokio::process::Command::new(baseline[0])
                        .args(&baseline[1..])
                        .status()
                        .await;
                    (
                        ok.map(|s| s.success()).unwrap_or(false),
                        t.elapsed().as_secs_f64() * 1000.0,
                    )
                })
            })
            .collect();
        for r in runs {
            let (ok, ms) = r.await?;
            anyhow::ensure!(
                ok,
                "baseline {baseline:?} failed: is dockerd running and {IMAGE} built (scripts/docker-env.sh)?"
            );
            base.push(ms);
        }
        left -= n;
    }
    let base_secs = start.elapsed().as_secs_f64();
    base.sort_by(f64::total_cmp);

    // river: a host and a runner, each its own process.
    let dir = tempfile::tempdir()?;
    let (_host, admin, addr) = host(river, dir.path(), Duration::from_secs(5)).await?;
    let _runner = runner(river, dir.path(), &admin, addr, "bench").await?;
    let (_e, conn) = client::connect_bundle(&admin).await?;

    // Each task takes one core, so the node runs as many at once as it has cores.
    let spec = if no_container {
        TaskSpec {
            no_container: true,
            ..TaskSpec::new("", vec!["true".into()])
        }
    } else {
        TaskSpec::new(IMAGE, vec!["true".into()])
    };
    for _ in 0..count {
        let Response::TaskSubmitted { .. } = client::call(&conn, &Request::TaskSubmit(spec.clone())).await? else {
            anyhow::bail!("submit refused")
        };
    }
    // Wait on the cheap cluster summary, so polling does not load the host being measured.
    loop {
        let Response::Status(s) = client::call(&conn, &Request::Status).await? else {
            anyhow::bail!("no status")
        };
        if s.tasks_queued + s.tasks_active == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tasks = loop {
        let mut all = Vec::new();
        let mut before = None;
        loop {
            let Response::Tasks { tasks, .. } = client::call(
                &conn,
                &Request::TaskList {
                    state: None,
                    node: None,
                    before,
                    limit: Some(river_proto::msg::TASK_PAGE_MAX),
                    vps: false,
                    owner: None,
                },
            )
            .await?
            else {
                anyhow::bail!("no task list")
            };
            let Some(last) = tasks.last().map(|t| t.id) else { break };
            before = Some(last);
            all.extend(tasks);
        }
        if all.iter().all(|t| t.finished_at_ms.is_some()) {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let failed = tasks.iter().filter(|t| t.state != "completed").count();
    let mut to_running: Vec<f64> = tasks
        .iter()
        .filter_map(|t| Some((t.started_at_ms? - t.submitted_at_ms) as f64))
        .collect();
    let mut to_done: Vec<f64> = tasks
        .iter()
        .filter_map(|t| Some((t.finished_at_ms? - t.submitted_at_ms) as f64))
        .collect();
    to_running.sort_by(f64::total_cmp);
    to_done.sort_by(f64::total_cmp);
    let first = tasks.iter().map(|t| t.submitted_at_ms).min().unwrap_or(0);
    let last = tasks.iter().filter_map(|t| t.finished_at_ms).max().unwrap_or(0);
    let river_secs = (last - first) as f64 / 1000.0;
    // Per-task cost once queueing is taken out: the service time the node's cores saw.
    let mut service: Vec<f64> = tasks
        .iter()
        .filter_map(|t| Some((t.finished_at_ms? - t.started_at_ms?) as f64))
        .collect();
    service.sort_by(f64::total_cmp);

    println!("| what | count | p50 | p99 | throughput |");
    println!("|---|---|---|---|---|");
    let (what, mode) = if no_container {
        ("`sh -c true`".to_owned(), "--no-container")
    } else {
        (format!("`docker run --rm {IMAGE} true`"), "container")
    };
    println!(
        "| {what}, {concurrency} at a time | {count} | {:.0} ms | {:.0} ms | {:.2} runs/s |",
        pct(&base, 0.5),
        pct(&base, 0.99),
        count as f64 / base_secs
    );
    println!(
        "| river {mode}, submit → completed (includes queueing) | {count} | {:.0} ms | {:.0} ms | {:.2} tasks/s |",
        pct(&to_done, 0.5),
        pct(&to_done, 0.99),
        count as f64 / river_secs
    );
    println!(
        "| river {mode}, submit → running (includes queueing) | {count} | {:.0} ms | {:.0} ms | |",
        pct(&to_running, 0.5),
        pct(&to_running, 0.99)
    );
    println!(
        "| river {mode}, running → completed (per task, no queueing) | {count} | {:.0} ms | {:.0} ms | |",
        pct(&service, 0.5),
        pct(&service, 0.99)
    );
    println!("failed tasks: {failed}");
    Ok(())
}
