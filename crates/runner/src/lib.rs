//! The runner role: one agent per compute node. It joins the cluster once with a token, then
//! keeps one mesh connection to the host: a hello describing the machine, heartbeats with live
//! usage, and certificate renewal before expiry. When the host goes away it reconnects with
//! backoff (0.5 s doubling to 5 s), forever; only a removal from the cluster stops it.
//!
//! Architecture invariant: a library like the host, started by `river runner`, `river up` and
//! in-process tests through [`start`]. It never depends on the host crate.

mod backend;
mod cgroup;
pub mod config;
mod exec;
#[cfg(test)]
mod exec_tests;
mod forward;
mod images;
mod nosuid;
mod overlay;
mod process;
mod renew;
mod session;
mod sftp;
mod ssh;
mod terminal;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use anyhow::{bail, Context as _};
use river_creds::Bundle;
use river_inventory::{GpuSource, Inventory};
use river_proto::name::Name;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

pub use config::RunnerConfig;

/// What a runner reports about itself, for `river up`, tests and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunnerStatus {
    pub connected: bool,
    /// Sessions started since the process began (1 while the first connection lasts).
    pub sessions: u64,
    /// Heartbeats the host acknowledged.
    pub acked: u64,
    /// Certificates renewed.
    pub renewals: u64,
    /// Set when the runner stopped for good, with the reason.
    pub stopped: Option<String>,
}

/// A running runner.
#[derive(Debug)]
pub struct RunningRunner {
    pub name: String,
    pub status: watch::Receiver<RunnerStatus>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningRunner {
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Waits for the runner to stop by itself (only a fatal refusal does that).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await.context("runner task")?
    }
}

pub(crate) fn identity_dir(cfg: &RunnerConfig) -> PathBuf {
    cfg.state_dir.join("identity")
}

/// Joins with `token` when this runner has no identity yet; with one already, the token is not
/// needed (and is ignored with a note, so a systemd unit that still passes it keeps working).
pub async fn ensure_joined(cfg: &RunnerConfig, join: Option<(&str, &str)>) -> anyhow::Result<Bundle> {
    let dir = identity_dir(cfg);
    if Bundle::exists(&dir) {
        if join.is_some() {
            tracing::info!("already joined ({}); ignoring --token", dir.display());
        }
        return Ok(Bundle::load(&dir)?);
    }
    let Some((host, token)) = join else {
        bail!(
            "this runner has not joined a cluster yet ({} is empty): start it once with \
             `river runner --join HOST:PORT --token-file FILE` (or RIVER_JOIN_TOKEN=TOKEN) (make a token on the host with `river token create`)",
            dir.display()
        );
    };
    let name = match &cfg.name {
        Some(n) => Name::parse(n)?,
        None => Name::from_hostname(&river_inventory::hostname())
            .context("this machine's hostname is not a valid node name; pass --name")?,
    };
    river_creds::private_dir(&cfg.state_dir)?;
    let bundle = river_mesh::client::enrol(host, token, name.as_str(), "node").await?;
    bundle.save(&dir)?;
    tracing::info!(node = %name, host, "joined the cluster");
    Ok(bundle)
}

/// Starts the runner's session loop in the background. The runner must have joined.
pub fn start(cfg: RunnerConfig, bundle: Bundle) -> RunningRunner {
    let (tx, rx) = watch::channel(RunnerStatus::default());
    let name = bundle.meta.name.trim_start_matches("node ").to_owned();
    let gpus = if cfg.fake_gpus.is_empty() {
        GpuSource::detect()
    } else {
        GpuSource::Fake(cfg.fake_gpus.clone())
    };
    let inventory = Inventory::new(gpus);
    let task = tokio::spawn(run(cfg, inventory, tx));
    RunningRunner { name, status: rx, task }
}

async fn run(cfg: RunnerConfig, mut inventory: Inventory, status: watch::Sender<RunnerStatus>) -> anyhow::Result<()> {
    // Two runners on one state directory would each take the other's containers for their own.
    let _lock = match river_creds::StateLock::acquire(&cfg.state_dir, "runner") {
        Ok(l) => l,
        Err(e) => {
            status.send_modify(|s| s.stopped = Some(e.to_string()));
            return Err(e.into());
        }
    };
    let renewer = tokio::spawn(renew::keep_renewed(cfg.clone(), status.clone()));
    // Dropped when this function ends (or is aborted): the executor's work stops with it.
    let (_stop, stop) = tokio::sync::watch::channel(());
    // Task reports queue here while the host is unreachable and go out with the next session.
    let (reports_tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let identity = Bundle::load(&identity_dir(&cfg))?;
    let node = identity.meta.name.trim_start_matches("node ").to_owned();
    let cluster: String = identity
        .ca_der()
        .map(|d| river_pki::fingerprint(&d))
        .map(|fp| fp[..4].iter().map(|b| format!("{b:02x}")).collect())?;
    let settings = exec::Settings {
        node,
        cluster,
        dir: cfg.state_dir.join("tasks"),
        socket: cfg.docker_socket.clone(),
        fake_gpus: !cfg.fake_gpus.is_empty(),
        shared: cfg.shared_dir.clone(),
        scratch: cfg.scratch_dir.clone().unwrap_or_else(|| cfg.state_dir.join("scratch")),
        allowed_mounts: cfg.allowed_mounts.clone(),
        blobs: cfg.state_dir.join("blobs"),
        task_uid_base: cfg.task_uid_base,
        cgroup_root: cfg.cgroup_root.clone(),
        output_cap: cfg.output_cap()?,
    };
    std::fs::create_dir_all(&settings.scratch)
        .map_err(|e| anyhow::anyhow!("scratch directory {}: {e}", settings.scratch.display()))?;
    if settings.scratch.starts_with(&cfg.state_dir) && process::running_as_root() {
        // Tasks reach their scratch through the state directory (the default place): others may
        // pass through it but list nothing, and what else it holds stays the runner's alone.
        for private in [&settings.dir, &settings.blobs, &identity_dir(&cfg)] {
            river_creds::private_dir(private)?;
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| anyhow::anyhow!("state directory {}: {e}", cfg.state_dir.display()))?;
    }
    let sealed: Vec<_> = std::iter::once(&settings.scratch)
        .chain(&settings.shared)
        .chain(&settings.allowed_mounts)
        .cloned()
        .collect();
    // Undone when this function ends, like the executor's work.
    let _sealed = nosuid::seal(&sealed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tasks_dir = settings.dir.clone();
    let exec = std::sync::Arc::new(exec::Executor::new(settings, reports_tx, stop));
    exec.adopt().await;
    // Output the host has the end of goes after the retention; checked at start and then
    // a few times per retention period (at most hourly).
    let retention = cfg.task_retention;
    let pruner = tokio::spawn(async move {
        if retention.is_zero() {
            return;
        }
        let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        loop {
            match exec::records::prune(&tasks_dir, retention, std::time::SystemTime::now()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(tasks = n, "removed the output of tasks past the retention"),
                Err(e) => tracing::warn!("removing old task output: {e}"),
            }
            tokio::time::sleep(every).await;
        }
    });
    let mut backoff = Backoff::default();
    let result = loop {
        let bundle = Bundle::load(&identity_dir(&cfg))?;
        match session::run(&bundle, &mut inventory, &status, &mut backoff, &exec, &mut reports).await {
            Ok(()) => {}
            Err(session::SessionError::Removed(reason)) => {
                tracing::error!("{reason}");
                exec.stop_all().await;
                status.send_modify(|s| s.stopped = Some(reason.clone()));
                break Err(anyhow::anyhow!(reason));
            }
            Err(session::SessionError::Fatal(reason)) if expired(&bundle) => {
                // Its certificate ran out while the host was away: the work stays, and renewal
                // (which the host allows an expired node) or an admin brings it back.
                tracing::error!(
                    "{reason}; this node's certificate has expired: it keeps its tasks and keeps trying to renew; if the host refuses for good (expired over {} days ago), remove the node and join it again",
                    river_mesh::EXPIRED_GRACE_SECS / 86_400
                );
            }
            Err(session::SessionError::Fatal(reason)) => {
                tracing::error!("{reason}");
                status.send_modify(|s| s.stopped = Some(reason.clone()));
                break Err(anyhow::anyhow!(reason));
            }
            Err(session::SessionError::Retry(e)) => tracing::warn!("connection to the host: {e}"),
        }
        status.send_modify(|s| s.connected = false);
        let wait = backoff.next();
        tracing::info!("reconnecting in {:.1}s", wait.as_secs_f32());
        tokio::time::sleep(wait).await;
    };
    renewer.abort();
    pruner.abort();
    result
}

/// Whether this node's certificate has run out.
fn expired(bundle: &Bundle) -> bool {
    bundle.cert_info().is_ok_and(|i| i.not_after <= renew::now_s())
}

/// Exponential backoff with jitter: 0.5 s doubling to 5 s, reset once a session is up.
///
/// **Decision**: a low cap. Each attempt is one QUIC handshake that waits 5 s for an answer, so
/// retrying every 5–10 s costs a host of hundreds of nodes little, while a cap of 30 s kept nodes
/// away 16–30 s after a host that had been down a minute came back (measured in `restarts.rs`).
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

/// The longest a runner waits between two attempts to reach the host (before jitter).
const BACKOFF_CAP_MS: u64 = 5_000;

impl Backoff {
    fn next(&mut self) -> Duration {
        let base = 500u64.saturating_mul(1 << self.attempt.min(6)).min(BACKOFF_CAP_MS);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = rand::random::<u64>() % (base / 4 + 1);
        Duration::from_millis(base - base / 8 + jitter)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_and_resets() {
        let mut b = Backoff::default();
        let first = b.next();
        assert!(
            first >= Duration::from_millis(430) && first <= Duration::from_millis(600),
            "{first:?}"
        );
        for _ in 0..20 {
            assert!(b.next() <= Duration::from_millis(5_700));
        }
        b.reset();
        assert!(b.next() < Duration::from_secs(1));
    }
}
