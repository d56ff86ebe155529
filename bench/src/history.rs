//! Answers that grow with history: `river task list` (its first page) against a host whose
//! database holds N tasks, beside the same command against a new cluster in the same run; and
//! `river task logs` of a large output without `--follow`, beside reading the same bytes from the
//! runner's disk with `cat`.

use crate::proc::{host, runner, River};
use river_mesh::client;
use river_proto::msg::{Request, Response, TaskSpec};
use river_store::prelude::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "river-test/busybox:1";

/// Median wall time of `runs` runs of `f`, in milliseconds.
fn median_ms(runs: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// `river task list` as a user runs it (a new process and connection each time).
fn cli_list(river: &Path, admin_dir: &Path) -> anyhow::Result<()> {
    let ok = Command::new(river)
        .args(["task", "list"])
        .env("RIVER_CONFIG_DIR", admin_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    anyhow::ensure!(ok, "river task list failed");
    Ok(())
}

/// The first page over one open connection: the host's own cost.
async fn rpc_list_ms(admin: &river_creds::Bundle, runs: usize) -> anyhow::Result<f64> {
    let (_e, conn) = client::connect_bundle(admin).await?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let req = Request::TaskList {
            state: None,
            node: None,
            before: None,
            limit: None,
            vps: false,
            owner: None,
        };
        let Response::Tasks { .. } = client::call(&conn, &req).await? else {
            anyhow::bail!("no task page")
        };
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

pub async fn run(river: &Path, tasks: usize, log_mb: usize) -> anyhow::Result<()> {
    let empty = tempfile::tempdir()?;
    let (h0, admin0, _) = host(river, empty.path(), Duration::from_secs(5)).await?;
    let admin0_dir = empty.path().join("host/admin");
    let base_cli = median_ms(10, || cli_list(river, &admin0_dir))?;
    let base_rpc = rpc_list_ms(&admin0, 50).await?;

    // The same host state with `tasks` tasks in it, written while the host is stopped.
    let full = tempfile::tempdir()?;
    let (h1, _, _) = host(river, full.path(), Duration::from_secs(5)).await?;
    drop(h1);
    let t = Instant::now();
    {
        let store = river_store::Store::open(&full.path().join("host/river.db")).await?;
        let spec = TaskSpec::new(IMAGE, vec!["sh".into(), "-c".into(), "echo done".into()]);
        let none = river_proto::msg::Assigned::default();
        let batch: Vec<_> = (0..1000).map(|_| (&spec, &none, None)).collect();
        for _ in 0..tasks.div_ceil(1000) {
            store.insert_batch("user admin", &batch, 0).await?;
        }
        store.close().await;
    }
    println!(
        "wrote {} tasks into the database in {:.1} s",
        tasks.div_ceil(1000) * 1000,
        t.elapsed().as_secs_f64()
    );
    let (_h1, admin1, _) = host(river, full.path(), Duration::from_secs(5)).await?;
    let admin1_dir = full.path().join("host/admin");
    let cli = median_ms(10, || cli_list(river, &admin1_dir))?;
    let rpc = rpc_list_ms(&admin1, 50).await?;

    println!();
    println!(
        "| `task list`, first page (100 tasks) | new cluster | {} tasks | difference |",
        tasks.div_ceil(1000) * 1000
    );
    println!("|---|---|---|---|");
    println!(
        "| `river task list` (process, connection, page), median of 10 | {base_cli:.1} ms | {cli:.1} ms | {:+.1} ms |",
        cli - base_cli
    );
    println!(
        "| the page alone over an open connection, median of 50 | {base_rpc:.2} ms | {rpc:.2} ms | {:+.2} ms |",
        rpc - base_rpc
    );

    if log_mb == 0 {
        return Ok(());
    }
    // A task's large output, read back without --follow (on the new cluster: the full one's
    // queue would run its tasks first).
    let addr0 = admin0.meta.host.parse()?;
    let runner0: River = runner(river, empty.path(), &admin0, addr0, "bench").await?;
    let (_e, conn) = client::connect_bundle(&admin0).await?;
    let bytes = log_mb << 20;
    let spec = TaskSpec::new(
        IMAGE,
        vec![
            "sh".into(),
            "-c".into(),
            format!("head -c {bytes} /dev/zero | tr '\\0' x"),
        ],
    );
    let Response::TaskSubmitted { ids, .. } = client::call(&conn, &Request::TaskSubmit(spec)).await? else {
        anyhow::bail!("submit refused")
    };
    let id = ids[0];
    loop {
        let Response::Task(t) = client::call(&conn, &Request::TaskShow { id }).await? else {
            anyhow::bail!("no task")
        };
        if t.finished_at_ms.is_some() {
            anyhow::ensure!(t.state == "completed", "the output task ended {}", t.state);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let file = empty.path().join(format!("runner-bench/tasks/{id}/stdout.log"));
    anyhow::ensure!(
        std::fs::metadata(&file)?.len() == bytes as u64,
        "the runner kept {}",
        file.display()
    );
    let to_null = |cmd: &mut Command| -> anyhow::Result<()> {
        let ok = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?.success();
        anyhow::ensure!(ok, "{cmd:?} failed");
        Ok(())
    };
    let cat = median_ms(3, || to_null(Command::new("cat").arg(&file)))?;
    let cpu = |p: u32| crate::proc::cpu_secs(p).unwrap_or(f64::NAN);
    let before = (cpu(h0.pid()), cpu(runner0.pid()));
    let logs = median_ms(3, || {
        to_null(
            Command::new(river)
                .args(["task", "logs", &id.to_string()])
                .env("RIVER_CONFIG_DIR", &admin0_dir),
        )
    })?;
    let used = (cpu(h0.pid()) - before.0, cpu(runner0.pid()) - before.1);
    #[allow(clippy::cast_precision_loss)]
    let mb = bytes as f64 / 1e6;
    println!();
    println!("| {log_mb} MiB of output, to /dev/null, median of 3 | time | rate |");
    println!("|---|---|---|");
    println!(
        "| `cat` of the runner's file (baseline) | {cat:.0} ms | {:.0} MB/s |",
        mb / cat * 1000.0
    );
    println!(
        "| `river task logs` (runner → host → CLI) | {logs:.0} ms | {:.0} MB/s |",
        mb / logs * 1000.0
    );
    println!();
    println!("CPU for the 3 runs: host {:.1} s, runner {:.1} s", used.0, used.1);
    Ok(())
}
