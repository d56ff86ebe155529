//! Reading a process's CPU time and memory from /proc, and running `river` processes.

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
    fn drop(&mut self) {
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
