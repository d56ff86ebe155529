//! Reading a process's CPU time and memory from /proc, and running `river` processes.

use river_creds::Bundle;
use river_mesh::client;
use river_proto::msg::{Request, Response};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// CPU time (user + system) of a process, in seconds.
#[allow(clippy::cast_precision_loss)]
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')').ok_or_else(|| anyhow::anyhow!("bad stat"))? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY-free: sysconf is not needed, Linux reports USER_HZ = 100 to user space.
    Ok(ticks as f64 / 100.0)
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("bad VmRSS"))?
        .parse()?;
    Ok(kb * 1024)
}

/// A `river` child process, killed when dropped.
pub struct River(pub Child);

impl River {
    pub fn spawn(river: &Path, args: &[&str], log: &Path) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log)?;
        let child = Command::new(river)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(Self(child))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for River {
    /// SIGTERM first, so a runner undoes its mounts; SIGKILL if it is still there after 10 s.
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        for _ in 0..200 {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls until `f` is true or `limit` passes.
pub async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    while !f() {
        if start.elapsed() > limit {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn free_port() -> u16 {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = t.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Starts a host process with the given heartbeat timing; returns it and its admin bundle.
pub async fn host(river: &Path, dir: &Path, interval: Duration) -> anyhow::Result<(River, Bundle, SocketAddr)> {
    host_with(river, dir, interval, "").await
}

/// [`host`], its config file ending with `extra` (TOML: sections such as `[web]`).
pub async fn host_with(
    river: &Path,
    dir: &Path,
    interval: Duration,
    extra: &str,
) -> anyhow::Result<(River, Bundle, SocketAddr)> {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let cfg = dir.join("host.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = {:?}\nlisten = \"{addr}\"\nheartbeat_interval = \"{}ms\"\noffline_after = \"{}ms\"\n{extra}",
            dir.join("host"),
            interval.as_millis(),
            interval.as_millis() * 6
        ),
    )?;
    let host = River::spawn(
        river,
        &["host", "--config", cfg.to_str().unwrap_or_default()],
        &dir.join("host.log"),
    )?;
    let admin_dir = dir.join("host/admin");
    until(Duration::from_secs(30), "the host's admin credential", || {
        admin_dir.join("cluster.toml").exists()
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok((host, Bundle::load(&admin_dir)?, addr))
}

pub async fn admin_call(admin: &Bundle, req: Request) -> anyhow::Result<Response> {
    let (_e, conn) = client::connect_bundle(admin).await?;
    Ok(client::call(&conn, &req).await?)
}

/// Joins a `river runner` process named `name` to the host and waits until it is connected.
pub async fn runner(river: &Path, dir: &Path, admin: &Bundle, addr: SocketAddr, name: &str) -> anyhow::Result<River> {
    let Response::TokenCreated(t) = admin_call(admin, Request::TokenCreate { ttl_secs: 600, uses: 1 }).await? else {
        anyhow::bail!("no token")
    };
    let state = dir.join(format!("runner-{name}"));
    let log = dir.join(format!("runner-{name}.log"));
    let runner = River::spawn(
        river,
        &[
            "runner",
            "--state-dir",
            state.to_str().unwrap_or_default(),
            "--name",
            name,
            "--join",
            &addr.to_string(),
            "--token",
            &t.token,
        ],
        &log,
    )?;
    until(Duration::from_secs(30), "the runner connected", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("connected to the host"))
    })
    .await?;
    Ok(runner)
}
