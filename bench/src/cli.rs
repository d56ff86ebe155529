//! What a user waits for a command: `river status` (a new process, QUIC handshake, one request,
//! close) against `curl` of `/api/status` with the same client certificate (a new process, TLS
//! over TCP, one request), against one real host, alternating, in the same run. With
//! `--wait-runs`, also one short task from submit to its end: `river task submit --wait -- true`
//! in a container against `docker run --rm` of the same image, and as a process (`--no-container`)
//! against the 30 ms goal, with a real runner beside the host.

use crate::proc::{host, runner};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run_ms(cmd: &mut Command) -> anyhow::Result<f64> {
    let t = Instant::now();
    let ok = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?.success();
    anyhow::ensure!(ok, "{cmd:?} failed");
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(river: &Path, runs: usize, wait_runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_host, bundle, addr) = host(river, dir.path(), Duration::from_secs(5)).await?;
    let admin = dir.path().join("host/admin");
    let status = || {
        let mut c = Command::new(river);
        c.arg("status").env("RIVER_CONFIG_DIR", &admin);
        c
    };
    let curl = || {
        let mut c = Command::new("curl");
        c.arg("-sf")
            .arg("--cacert")
            .arg(admin.join("ca.crt"))
            .arg("--cert")
            .arg(admin.join("cert.pem"))
            .arg("--key")
            .arg(admin.join("key.pem"))
            .arg(format!("https://{addr}/api/status"));
        c
    };
    // Warm both up, then alternate so both see the same machine.
    run_ms(&mut status())?;
    run_ms(&mut curl())?;
    let (mut r, mut c) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        r.push(run_ms(&mut status())?);
        c.push(run_ms(&mut curl())?);
    }
    let (r, c) = (median(r), median(c));
    println!("cli: {runs} runs each, medians");
    println!("  river status          {r:7.1} ms");
    println!("  curl /api/status      {c:7.1} ms   (same certificate, same host)");
    println!("  ratio                 {:7.2}x   (goal: at most 1.5x)", r / c);
    if wait_runs == 0 {
        return Ok(());
    }
    let _runner = runner(river, dir.path(), &bundle, addr, "bench").await?;
    let submit = |extra: &[&str]| {
        let mut c = Command::new(river);
        c.args(["task", "submit"])
            .args(extra)
            .args(["--wait", "--", "true"])
            .env("RIVER_CONFIG_DIR", &admin);
        c
    };
    let docker = || {
        let mut c = Command::new("docker");
        c.args(["run", "--rm", IMAGE, "true"]);
        c
    };
    // The container river makes, asked of the engine directly: its isolated network (a
    // user-defined bridge without traffic between containers, made by river's first task), an
    // init, no NET_RAW, no new privileges, a pinned core, the scratch mount.
    let scratch = tempfile::tempdir()?;
    let alike = || {
        let mut c = Command::new("docker");
        c.args([
            "run",
            "--rm",
            "--network",
            "river-tasks",
            "--init",
            "--cap-drop",
            "NET_RAW",
        ])
        .args(["--security-opt", "no-new-privileges:true", "--cpuset-cpus", "0", "-v"])
        .arg(format!("{}:/local_temp", scratch.path().display()))
        .args([IMAGE, "true"]);
        c
    };
    // Only the network, to tell its cost from the rest.
    let on_network = || {
        let mut c = Command::new("docker");
        c.args(["run", "--rm", "--network", "river-tasks", IMAGE, "true"]);
        c
    };
    let container = ["--image", IMAGE];
    let process = ["--no-container"];
    // The first of each pays for what is made once (the image's first container, the network,
    // cgroups).
    run_ms(&mut submit(&container))?;
    run_ms(&mut docker())?;
    run_ms(&mut alike())?;
    run_ms(&mut on_network())?;
    run_ms(&mut submit(&process))?;
    let (mut rc, mut d, mut a, mut n, mut rp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..wait_runs {
        rc.push(run_ms(&mut submit(&container))?);
        d.push(run_ms(&mut docker())?);
        a.push(run_ms(&mut alike())?);
        n.push(run_ms(&mut on_network())?);
        rp.push(run_ms(&mut submit(&process))?);
    }
    let (rc, d, a, n, rp) = (median(rc), median(d), median(a), median(n), median(rp));
    println!("task submit --wait -- true: {wait_runs} runs each, alternating, medians");
    println!("  river, container      {rc:7.1} ms");
    println!("  docker run --rm       {d:7.1} ms   (same image, same engine, default bridge)");
    println!("  ratio                 {:7.2}x   (goal: at most 1.1x)", rc / d);
    println!("  docker run, as river  {a:7.1} ms   (river's network and options, asked directly)");
    println!("  ratio                 {:7.2}x", rc / a);
    println!("  docker run, network   {n:7.1} ms   (default options on river's isolated network)");
    println!("  river, --no-container {rp:7.1} ms   (goal: at most 30 ms)");
    Ok(())
}

/// A small image the test setup makes (`scripts/docker-env.sh`).
const IMAGE: &str = "river-test/busybox:1";
