//! The runner's work behind one trait: a [`Backend`] prepares and starts a task's work, follows it
//! to its end with its output saved, signals it, opens a command in it, says where its network
//! is, and removes what is left of it. Two implementations: containers on the node's Docker engine
//! (`container`) and processes in cgroups (`process`); a virtual machine backend is a third of the
//! same shape. The executor (the `exec` module) owns everything the backends share — what is reported
//! to the host, a kill or stop a user asked for, a VPS's rules, ends recorded on disk, following
//! output — so a backend only does what its kind of work needs.

pub(crate) mod account;
mod attach;
pub(crate) mod container;
#[cfg(any(test, feature = "testing"))]
pub(crate) mod fake;
pub(crate) mod output;
mod pin;
pub(crate) mod process;
mod pump;

use crate::terminal::{Command, Started};
use futures_util::future::BoxFuture;
use river_proto::msg::{Assigned, Signal, TaskPlacement, TaskSpec};
use std::path::PathBuf;

/// What every backend knows of its node.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub node: String,
    /// A short id of the cluster (its CA fingerprint's start), so clusters sharing a machine never
    /// touch each other's work.
    pub cluster: String,
    /// Where each task's output (`ID/stdout.log`, `ID/stderr.log`) and records are kept.
    pub dir: PathBuf,
    /// The node's GPUs are a fake inventory: tasks learn their GPUs from `RIVER_GPUS`, and no
    /// device is requested from the NVIDIA runtime.
    pub fake_gpus: bool,
    /// Mounted at `/shared` in every task.
    pub shared: Option<PathBuf>,
    /// Each user's scratch directory is made in it.
    pub scratch: PathBuf,
    /// Where else `--mount` sources may come from.
    pub allowed_mounts: Vec<PathBuf>,
    /// Where uids of tasks start for owners without an account on the node.
    pub task_uid_base: u32,
    /// The most the node keeps of each of a task's output streams (its last part); `None`: all.
    pub output_cap: Option<u64>,
}

impl Node {
    /// `ID/`: task `id`'s own directory.
    pub fn task_dir(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }
}

/// One task to start: the user's ask, what the host assigned it, and where it placed it.
pub(crate) struct Job<'a> {
    pub id: u64,
    pub spec: &'a TaskSpec,
    pub assigned: &'a Assigned,
    pub placement: &'a TaskPlacement,
}

/// Why a start did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub message: String,
    /// Nothing of the work was lost: a VPS that could not start again is stopped, not failed (its
    /// disk is still there). A first start that fails is a failure whatever the work.
    pub kept: bool,
}

impl Refused {
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kept: false,
        }
    }

    pub fn kept(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kept: true,
        }
    }
}

/// How a task's work ended, once all of its output is saved (or could not be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Its main process exited: its code (`None`: not known), whether the kernel killed it for
    /// memory, and whether its output was saved whole (`Err`: what was not, and why).
    Exited {
        code: Option<i64>,
        oom: bool,
        output: Result<(), String>,
    },
    /// The backend no longer knows what became of it (its engine lost it): why.
    Lost(String),
}

/// What a backend sees of a task's work on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Running,
    Paused,
    /// Over, and still there (a VPS's kept container, or one that ended while the runner was
    /// down): its code and whether the kernel killed it for memory.
    Exited {
        code: Option<i64>,
        oom: bool,
    },
}

/// A task's work found on the node: after a runner's restart, for a new session's snapshot, or
/// when the node leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    pub id: u64,
    pub vps: bool,
    pub seen: Seen,
}

/// One kind of work (containers, processes; a virtual machine next). Every method names the task
/// by its id; what a backend needs to find its work again (a container's name, a cgroup) it
/// derives from the id and the [`Node`], so a restarted runner finds it too.
pub(crate) trait Backend: Send + Sync {
    /// Whether task `id`'s work is this backend's and is on the node now (cheap, no engine call).
    /// Only the process backend answers for sure; the executor asks the others otherwise.
    fn holds(&self, id: u64) -> bool;

    /// Prepares and starts the work (its image fetched, its network and mounts set up, a VPS's
    /// kept container started again). `Ok`: it runs, and [`Backend::wait`] follows it.
    fn start<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<(), Refused>>;

    /// Follows started or found work to its end, saving its output into the task's files, and
    /// kills whatever it leaves running. The work is left in place for [`Backend::remove`].
    fn wait(&self, id: u64) -> BoxFuture<'_, Ended>;

    /// Kill (at once), pause, resume, or stop (SIGTERM, then SIGKILL after a grace period).
    fn signal(&self, id: u64, signal: Signal) -> BoxFuture<'_, Result<(), String>>;

    /// What is on the node of task `id` now (`None`: nothing).
    fn seen(&self, id: u64) -> BoxFuture<'_, Option<Seen>>;

    /// Every task's work of this runner on the node.
    fn found(&self) -> BoxFuture<'_, Vec<Found>>;

    /// Removes what is left of the work, running or not (`vps`: with what only a VPS has).
    fn remove(&self, id: u64, vps: bool) -> BoxFuture<'_, Result<(), String>>;

    /// Starts a command in the running work (`river connect`, a VPS's SSH sessions).
    fn exec<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<Started, String>>;

    /// The process whose network namespace the work's ports are in (`None`: the node's own).
    fn network(&self, id: u64) -> BoxFuture<'_, Result<Option<i64>, String>>;
}

/// `1,2,3`: a list of ids as cpuset and `RIVER_GPUS` write it.
pub(crate) fn id_list(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}
