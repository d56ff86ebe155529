//! A task on the wire: what a user submits, where the host placed it, and how it is shown.

use super::{EnvVars, Secret};
use serde::{Deserialize, Serialize};

/// A bind mount asked for by a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

fn one() -> u32 {
    1
}

/// What a user submits. Targets and sizes arrive parsed by the CLI but are checked again by the
/// host, which never trusts the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub command: Vec<String>,
    /// A Docker image; empty (and no `environment`): the default environment.
    #[serde(default)]
    pub image: String,
    /// `-e KEY=VALUE`: values are shown only to the task's owner and operators, and never by
    /// `Debug` (so never in a log).
    #[serde(default)]
    pub env: EnvVars,
    #[serde(default = "one")]
    pub cores: u32,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    #[serde(default)]
    pub gpus: u32,
    /// `HOST[:NUMA][::GPU,GPU]`; several make one task each, sharing a batch. Empty: placed.
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// Full access to the node (needs the operator role and `allow_privileged` on the host).
    #[serde(default)]
    pub privileged: bool,
    /// A river environment to run in (`river env list`); with neither this nor `image`, the
    /// `default` environment. The host resolves it to `image` and `archive` at submit.
    #[serde(default)]
    pub environment: Option<String>,
    /// Run the command as a process on the node (confined by a cgroup) instead of in a container.
    #[serde(default)]
    pub no_container: bool,
    /// `overlay` (the cluster's overlay network; the default when it is on) or `bridge` (river's
    /// own bridge network with traffic between containers off, reachable only through
    /// `river forward`).
    #[serde(default)]
    pub network: Option<String>,
    /// A reservation token from `river ip reserve`; the host checks it, pins the task to the
    /// reservation's node and address, and drops the token.
    #[serde(default)]
    pub ip_token: Option<Secret>,
    /// A distributed launch over this many nodes: one member per node, started as a group.
    #[serde(default)]
    pub nodes: Option<u32>,
    /// Several targets as one distributed group rather than independent tasks.
    #[serde(default)]
    pub group: bool,
    /// A VPS: a persistent container that is stopped and started rather than ended, reached
    /// over SSH.
    #[serde(default)]
    pub vps: Option<VpsSpec>,
}

/// What the host decides for a task when it accepts it, kept apart from what the user asked
/// ([`TaskSpec`], which has no place for these: a submission cannot set them). Where it runs and
/// with which cores is decided later, at placement ([`TaskPlacement`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assigned {
    /// The environment version's archive, which the runner fetches over the mesh if its engine
    /// lacks the image.
    #[serde(default)]
    pub archive: Option<ArchiveRef>,
    /// The overlay address this task must get: its reservation's, or a group member's.
    #[serde(default)]
    pub ip: Option<String>,
    /// This member's rank in its group (its batch).
    #[serde(default)]
    pub rank: Option<u32>,
}

/// What makes a task a VPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpsSpec {
    /// OpenSSH public keys (`authorized_keys` lines) that may log in.
    pub ssh_keys: Vec<String>,
    /// SSH is served by the image's own sshd on port 22 instead of by the runner.
    #[serde(default)]
    pub image_sshd: bool,
    /// Bumped when the VPS's disk is replaced (restored from a snapshot, moved to another node):
    /// a runner starts an existing container again only if it was made for this generation.
    #[serde(default)]
    pub generation: u32,
}

/// One environment version as an image archive kept by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRef {
    /// The image's id (`sha256:…`, the digest of its config): what the container runs, so a tag
    /// that means something else on a shared engine can never be picked up instead.
    pub image_id: String,
    /// SHA-256 of the archive (`docker save` output), hex.
    pub digest: String,
    pub size: u64,
}

impl TaskSpec {
    /// A one-core task running `command` in `image`, with nothing else asked for.
    pub fn new(image: impl Into<String>, command: Vec<String>) -> Self {
        Self {
            command,
            image: image.into(),
            env: EnvVars::default(),
            cores: 1,
            memory_bytes: None,
            gpus: 0,
            targets: Vec::new(),
            mounts: Vec::new(),
            workdir: None,
            name: None,
            privileged: false,
            environment: None,
            no_container: false,
            network: None,
            ip_token: None,
            nodes: None,
            group: false,
            vps: None,
        }
    }
}

/// Where a task was placed, as the runner needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlacement {
    pub node: String,
    pub cores: Vec<u32>,
    pub numa: Option<u32>,
    pub gpus: Vec<u32>,
    pub memory_bytes: u64,
    /// The task's overlay address, when it joins the overlay.
    #[serde(default)]
    pub ip: Option<String>,
    /// Whose task it is, for what runs it on the node: a process task's uid, the scratch
    /// directory it and a container share. `None` only in placements stored before it existed.
    #[serde(default)]
    pub owner: Option<TaskOwner>,
}

/// The river user a task belongs to, as a node needs to know them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOwner {
    /// The user's name (validated like every name: safe in a path).
    pub name: String,
    /// A number the host gave this user once and never gives anyone else: where the node has no
    /// account of the same name, the user's process tasks run as a uid made from it.
    pub number: u32,
    /// An operator (or admin): may run images made from other users' containers (their VPSs'
    /// snapshots), which everyone else is refused.
    pub operator: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: u64,
    pub batch: u64,
    pub name: Option<String>,
    pub owner: String,
    pub state: String,
    pub spec: TaskSpec,
    /// What the host decided for it at submit.
    #[serde(default)]
    pub assigned: Assigned,
    pub placement: Option<TaskPlacement>,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
    pub submitted_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// While the node fetches the task's environment: bytes received and the total.
    #[serde(default)]
    pub fetch: Option<(u64, u64)>,
    /// Why a queued task waits, when one task is shown (`task status`).
    #[serde(default)]
    pub waiting: Option<String>,
}

/// One state a task was in (`Request::TaskHistory`), oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStateChange {
    pub state: String,
    pub at_ms: i64,
    /// Why, when something said (a refusal, a kill's reason, a node lost).
    pub message: Option<String>,
    pub exit_code: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    Kill,
    Pause,
    Resume,
    /// A VPS: stop its container and keep it, to start again later.
    Stop,
}
