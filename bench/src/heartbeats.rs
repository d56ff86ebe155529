//! Host scale: N simulated runners, each with its own certificate issued through the real join
//! flow, heartbeat against a real `river host` process. Reports the host's CPU and memory per
//! runner, heartbeat round-trip latency and false offlines; the baseline is the same host with no
//! runners, measured in the same run.

use crate::proc::{admin_call, cpu_secs, host, rss_bytes, runner, until, River};
use river_creds::Bundle;
use river_mesh::{client, client_config, connect, open, recv_msg, send_msg, Identity, Trust};
use river_proto::msg::{Heartbeat, HeartbeatAck, Hello, HelloReply, NodeInfo, NodeState, NodeUsage, Request, Response};
use river_proto::StreamKind;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Shared {
    ready: AtomicUsize,
    /// Failed connection attempts (each retried, as a real runner does).
    failed: AtomicUsize,
    last_error: Mutex<String>,
    recording: AtomicBool,
    latencies_us: Mutex<Vec<u32>>,
}

pub async fn run(river: &Path, n: usize, interval: Duration, measure: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (host, admin, addr) = host(river, dir.path(), interval).await?;
    let pid = host.pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_bytes(pid)?;

    let Response::TokenCreated(t) = admin_call(
        &admin,
        Request::TokenCreate {
            ttl_secs: 3600,
            uses: u32::try_from(n)?,
        },
    )
    .await?
    else {
        anyhow::bail!("no token")
    };
    let join_start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..n {
        let (sem, token, host) = (sem.clone(), t.token.clone(), addr.to_string());
        joins.spawn(async move {
            let _permit = sem.acquire().await;
            client::enrol(&host, &token, &format!("sim-{i:05}"), "node").await
        });
    }
    let mut bundles = Vec::with_capacity(n);
    while let Some(r) = joins.join_next().await {
        bundles.push(r??);
    }
    let join_secs = join_start.elapsed().as_secs_f64();

    let shared = Arc::new(Shared {
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        last_error: Mutex::new(String::new()),
        recording: AtomicBool::new(false),
        latencies_us: Mutex::new(Vec::new()),
    });
    let mut sims = tokio::task::JoinSet::new();
    let connect_start = Instant::now();
    let mut endpoint = river_mesh::client_endpoint(addr)?;
    for (i, b) in bundles.into_iter().enumerate() {
        // A few hundred connections per UDP socket, like a NAT would multiplex them.
        if i % 250 == 0 {
            endpoint = river_mesh::client_endpoint(addr)?;
        }
        sims.spawn(sim(b, endpoint.clone(), addr, interval, shared.clone()));
        if i % 50 == 49 {
            tokio::task::yield_now().await;
        }
    }
    let waited = until(Duration::from_secs(180), "every runner connected", || {
        shared.ready.load(Ordering::Relaxed) == n
    })
    .await;
    let failed = shared.failed.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!(
            "{failed} connection attempts failed and were retried; last: {}",
            shared.last_error.lock().map(|l| l.clone()).unwrap_or_default()
        );
    }
    waited?;
    let connect_secs = connect_start.elapsed().as_secs_f64();
    // One interval for every runner to send its first heartbeat, then measure.
    tokio::time::sleep(interval + Duration::from_millis(500)).await;
    shared.recording.store(true, Ordering::Relaxed);
    let cpu0 = cpu_secs(pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(measure).await;
    let cpu = (cpu_secs(pid)? - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    shared.recording.store(false, Ordering::Relaxed);
    let rss = rss_bytes(pid)?;

    let Response::Nodes(nodes) = admin_call(&admin, Request::NodeList).await? else {
        anyhow::bail!("no node list")
    };
    let offline_now = nodes.iter().filter(|n| n.state != NodeState::Online).count();
    let log = std::fs::read_to_string(dir.path().join("host.log"))?;
    let offline_events = log.lines().filter(|l| l.contains("node is offline")).count();

    let mut lat = std::mem::take(&mut *shared.latencies_us.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        f64::from(lat[i]) / 1000.0
    };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "| {n} | {:.0} ms | {join_secs:.1} s | {connect_secs:.1} s | {} | {cpu:.1}% | {:.1} MiB | {:.1} MiB | {:.1} KiB | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
        interval.as_millis(),
        lat.len(),
        mib(rss_idle),
        mib(rss),
        (rss.saturating_sub(rss_idle)) as f64 / 1024.0 / n as f64,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        offline_now + offline_events,
    );
    // A host restart the way systemd does it: SIGTERM, then start again on the same state.
    let pid = host.pid();
    std::process::Command::new("kill").arg(pid.to_string()).status()?;
    drop(host);
    until(Duration::from_secs(60), "every runner to notice", || {
        shared.ready.load(Ordering::Relaxed) == 0
    })
    .await?;
    let restarted = Instant::now();
    let host = River::spawn(
        river,
        &[
            "host",
            "--config",
            dir.path().join("host.toml").to_str().unwrap_or_default(),
        ],
        &dir.path().join("host2.log"),
    )?;
    until(Duration::from_secs(300), "every runner back", || {
        shared.ready.load(Ordering::Relaxed) == n
    })
    .await?;
    println!(
        "  after a host restart (SIGTERM, start): all {n} runners back in {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
    sims.abort_all();
    drop(host);
    Ok(())
}

/// A simulated runner: connects (retrying with the runner's backoff), says hello, heartbeats, and
/// reconnects when the host goes away, as `river runner` does.
async fn sim(
    bundle: Bundle,
    endpoint: river_mesh::Endpoint,
    addr: SocketAddr,
    interval: Duration,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let cfg = client_config(
        Some(Identity::from_pem(&bundle.cert_pem, &bundle.key_pem)?),
        Trust::Ca(bundle.ca_der()?),
    )?;
    let mut attempt = 0u32;
    loop {
        match connect(&endpoint, addr, cfg.clone()).await {
            Ok(conn) => {
                attempt = 0;
                let _ = session(&conn, &bundle, interval, &shared).await;
            }
            Err(e) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut l) = shared.last_error.lock() {
                    *l = e.to_string();
                }
            }
        }
        // The runner's backoff: 0.5 s doubling to 30 s, with jitter.
        let base = 500u64.saturating_mul(1 << attempt.min(6)).min(30_000);
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(
            base - base / 8 + rand::random::<u64>() % (base / 4 + 1),
        ))
        .await;
    }
}

async fn session(
    conn: &river_mesh::Connection,
    bundle: &Bundle,
    interval: Duration,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    let (mut cs, mut cr) = open(conn, StreamKind::Control).await?;
    let info = NodeInfo {
        hostname: bundle.meta.name.clone(),
        cores: 64,
        memory_bytes: 512 << 30,
        version: "bench".into(),
        ..Default::default()
    };
    send_msg(&mut cs, &Hello { info }).await?;
    let Some(HelloReply::Welcome { .. }) = recv_msg::<HelloReply>(&mut cr).await? else {
        anyhow::bail!("not welcomed")
    };
    shared.ready.fetch_add(1, Ordering::Relaxed);
    let result = heartbeats(conn, interval, shared).await;
    shared.ready.fetch_sub(1, Ordering::Relaxed);
    result
}

async fn heartbeats(conn: &river_mesh::Connection, interval: Duration, shared: &Arc<Shared>) -> anyhow::Result<()> {
    let (mut hs, mut hr) = open(conn, StreamKind::Heartbeat).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let reader = {
        let shared = shared.clone();
        async move {
            while let Ok(Some(_ack)) = recv_msg::<HeartbeatAck>(&mut hr).await {
                if let Some(sent) = rx.recv().await {
                    if shared.recording.load(Ordering::Relaxed) {
                        let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                        if let Ok(mut l) = shared.latencies_us.lock() {
                            l.push(us);
                        }
                    }
                }
            }
        }
    };
    let writer = async move {
        // Spread the runners over the interval, as real ones started at different times are.
        let phase =
            Duration::from_micros(rand::random::<u64>() % u64::try_from(interval.as_micros()).unwrap_or(1).max(1));
        tokio::time::sleep(phase).await;
        let mut tick = tokio::time::interval(interval);
        let usage = NodeUsage {
            cpu_percent: 12.5,
            memory_used_bytes: 64 << 30,
            gpus: Vec::new(),
            no_engine: false,
        };
        for seq in 0u64.. {
            tick.tick().await;
            let _ = tx.send(Instant::now());
            send_msg(
                &mut hs,
                &Heartbeat {
                    seq,
                    usage: usage.clone(),
                },
            )
            .await?;
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::select! {
        () = reader => Ok(()),
        r = writer => r,
        e = conn.closed() => Err(e.into()),
    }
}

/// Idle memory of a real host and runner.
pub async fn footprint(river: &Path, idle: Duration) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (host, admin, addr) = host(river, dir.path(), Duration::from_secs(5)).await?;
    let runner = runner(river, dir.path(), &admin, addr, "idle").await?;
    tokio::time::sleep(idle).await;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "| river host (1 runner) | {:.1} MiB | 40 MiB |",
        mib(rss_bytes(host.pid())?)
    );
    println!("| river runner | {:.1} MiB | 20 MiB |", mib(rss_bytes(runner.pid())?));
    Ok(())
}
