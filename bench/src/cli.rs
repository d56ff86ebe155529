//! What a user waits for a command: `river status` (a new process, QUIC handshake, one request,
//! close) against `curl` of `/api/status` with the same client certificate (a new process, TLS
//! over TCP, one request), against one real host, alternating, in the same run.

use crate::proc::host;
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

pub async fn run(river: &Path, runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_host, _admin, addr) = host(river, dir.path(), Duration::from_secs(5)).await?;
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
    Ok(())
}
