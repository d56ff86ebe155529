//! Message types carried in frames. These are wire types: they derive serde and nothing else
//! depends on their layout. Adding a variant at the end of an enum is compatible within a protocol
//! version; anything else bumps [`crate::PROTOCOL_VERSION`].

mod kind;
mod secret;
pub use secret::{EnvVars, Secret};
use serde::{Deserialize, Serialize};

/// What a runner knows about its machine, sent on join and on every session start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeInfo {
    pub hostname: String,
    pub cores: u32,
    pub memory_bytes: u64,
    pub numa: Vec<NumaNode>,
    pub gpus: Vec<Gpu>,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaNode {
    pub id: u32,
    pub cpus: Vec<u32>,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub memory_bytes: u64,
    /// The NUMA node the GPU hangs off, when the platform says.
    pub numa: Option<u32>,
}

/// Live figures sent in each heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeUsage {
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub gpus: Vec<GpuUsage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuUsage {
    pub index: u32,
    pub util_percent: u32,
    pub memory_used_bytes: u64,
    pub temperature_c: Option<u32>,
}

/// First frame of a `Join` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The whole token text as the user pasted it.
    pub token: String,
    /// The node name asked for (ignored for users: the invite names them).
    pub name: String,
    /// A PEM certificate signing request. Only its public key is used: the host decides what the
    /// certificate says.
    pub csr_pem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinResponse {
    Issued {
        name: String,
        cert_pem: String,
        ca_pem: String,
    },
    Refused {
        reason: String,
    },
}

/// First frame a runner sends on its `Control` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub info: NodeInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome { heartbeat_interval_ms: u64 },
    Refused { reason: String },
}

/// Sent by a runner on its `Heartbeat` stream every interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub seq: u64,
    pub usage: NodeUsage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Viewer,
    User,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::User => "user",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "viewer" => Role::Viewer,
            "user" => Role::User,
            "operator" => Role::Operator,
            "admin" => Role::Admin,
            _ => return Err(format!("unknown role {s:?}; use viewer, user, operator or admin")),
        })
    }
}

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenPurpose {
    /// Joins a runner.
    Node,
    /// Enrols a user with a name and role.
    User,
    /// Re-enrols an existing user (a new laptop, a lost key), revoking their earlier
    /// certificates; their role is kept.
    Reissue,
}

/// The error code that resets a `Logs` stream after all that was kept of a task's output, when
/// that is not all it wrote (its node could not save the rest).
pub const LOGS_INCOMPLETE: u32 = 4;
/// The error code that resets a `Logs` stream of a task whose output its node no longer keeps
/// (removed after the node's `task_retention`).
pub const LOGS_REMOVED: u32 = 5;

/// Tasks in a page of `task list` when the request does not say.
pub const TASK_PAGE: u32 = 100;
/// The most tasks in one page: an answer stays far below a frame's 4 MiB.
pub const TASK_PAGE_MAX: u32 = 1000;

/// The most events one `Audit` answer holds.
pub const AUDIT_MAX: u32 = 5000;

/// One event of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub at_ms: i64,
    /// `user NAME`, `node NAME` or `host`.
    pub actor: String,
    /// `user.login`, `user.rm`, `task.submit`, `refused`, …
    pub action: String,
    pub detail: String,
}

/// One request on an `Rpc` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// One request per stream, built once: its size in memory does not matter, and boxing the spec
// would only add noise at every call site.
#[allow(clippy::large_enum_variant)]
pub enum Request {
    WhoAmI,
    Status,
    NodeList,
    NodeShow {
        name: String,
    },
    NodeRemove {
        name: String,
    },
    TokenCreate {
        ttl_secs: u64,
        uses: u32,
    },
    TokenList,
    TokenRevoke {
        id: String,
    },
    UserInvite {
        name: String,
        role: Role,
        ttl_secs: u64,
    },
    UserList,
    /// Renew the caller's own certificate for the key in the CSR.
    Renew {
        csr_pem: String,
    },
    TaskSubmit(TaskSpec),
    /// A page of tasks, newest first.
    TaskList {
        state: Option<String>,
        node: Option<String>,
        /// Only tasks with a smaller id: the page after one that ended with this id.
        before: Option<u64>,
        /// At most this many; none means [`TASK_PAGE`], and the host caps it at [`TASK_PAGE_MAX`].
        limit: Option<u32>,
        /// Only VPSs.
        vps: bool,
    },
    TaskShow {
        id: u64,
    },
    TaskSignal {
        id: u64,
        signal: Signal,
    },
    TaskLogs {
        id: u64,
        stderr: bool,
    },
    /// A new environment from an image one of the nodes has or can pull (`node`: that one).
    EnvCreate {
        name: String,
        from: String,
        node: Option<String>,
    },
    EnvList,
    EnvRm {
        name: String,
    },
    /// The running container of an environment being edited, started if there is none: the task
    /// that `river env shell` connects to.
    EnvShell {
        name: String,
        /// Where to start it (a target, `HOST[:NUMA]`); default: placed by the scheduler.
        node: Option<String>,
    },
    /// Save the container started by `EnvShell` as the environment's next version, then stop it.
    EnvCommit {
        name: String,
        message: Option<String>,
    },
    /// Reserve an overlay address ahead of a launch; answered with a signed token.
    IpReserve {
        node: Option<String>,
        ip: Option<String>,
        ttl_secs: u64,
    },
    IpList,
    IpRelease {
        ip: String,
    },
    /// The overlay: subnets, peers and each node's last reconcile.
    Overlay,
    /// Start a stopped VPS again: on its node (its container and disk as they were), or with
    /// `on`, on that node from its latest snapshot (one is taken first if its node is up).
    VpsStart {
        id: u64,
        #[serde(default)]
        on: Option<String>,
    },
    /// Save a VPS's disk (its container, committed) as its next snapshot.
    VpsSnapshot {
        id: u64,
        message: Option<String>,
    },
    VpsSnapshots {
        id: u64,
    },
    VpsSnapshotRm {
        id: u64,
        seq: u32,
    },
    /// Start a stopped VPS from one of its snapshots (its container is made anew from it).
    VpsRestore {
        id: u64,
        seq: u32,
    },
    /// Register an SSH public key for the caller, for the SSH gateway.
    UserKeyAdd {
        key: String,
    },
    UserKeys,
    /// Remove one of the caller's keys: a whole line, its `TYPE BASE64` part, or its comment.
    UserKeyRm {
        key: String,
    },
    /// Remove a VPS: its container and disk go; the record stays.
    VpsRemove {
        id: u64,
    },
    /// Change the SSH keys a VPS accepts (OpenSSH `authorized_keys` lines); takes effect at the
    /// next connection.
    VpsKeys {
        id: u64,
        add: Vec<String>,
        remove: Vec<String>,
    },
    /// Let back in a node the host has no record of (its database restored from a backup older
    /// than the node's join or its latest certificate), with the certificate it last presented.
    NodeAdmit {
        name: String,
    },
    /// Re-enrols an existing user (admin): a one-time token with which they log in again, which
    /// revokes all their earlier certificates and closes what those have open. Answered with
    /// [`Response::TokenCreated`].
    UserReissue {
        name: String,
        ttl_secs: u64,
    },
    /// Removes a user (operators: viewers and users; admins: anyone but themselves): every
    /// certificate revoked, gateway keys dropped, open connections closed. Their tasks are kept,
    /// or killed with `kill_tasks`.
    UserRemove {
        name: String,
        kill_tasks: bool,
    },
    /// Changes a user's role, never above the caller's own; their open connections are closed so
    /// the new role counts at once.
    UserSetRole {
        name: String,
        role: Role,
    },
    /// Disables (`enabled: false`: refused everywhere, open connections closed, nothing removed)
    /// or enables a user again.
    UserEnable {
        name: String,
        enabled: bool,
    },
    /// The audit trail (operators): newest first, at most `limit` events (capped at
    /// [`AUDIT_MAX`]), by or about `user`, since `since_ms`. Answered with [`Response::Events`].
    Audit {
        user: Option<String>,
        since_ms: Option<i64>,
        limit: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    NotFound,
    Forbidden,
    Invalid,
    Conflict,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Error {
        kind: ErrorKind,
        message: String,
    },
    Done {
        message: String,
    },
    WhoAmI {
        identity: String,
        role: Option<Role>,
    },
    Status(ClusterStatus),
    Nodes(Vec<NodeView>),
    Node(Box<NodeView>),
    TokenCreated(TokenCreated),
    Tokens(Vec<TokenView>),
    Users(Vec<UserView>),
    Renewed {
        cert_pem: String,
    },
    TaskSubmitted {
        batch: u64,
        ids: Vec<u64>,
    },
    /// A page of tasks, newest first, and how many match in all.
    Tasks {
        tasks: Vec<TaskView>,
        total: u64,
    },
    Task(Box<TaskView>),
    Logs(Vec<u8>),
    Env(Box<EnvView>),
    Envs(Vec<EnvView>),
    /// The task holding an environment's editing container; `started`: it was just created.
    EnvSession {
        task: u64,
        started: bool,
    },
    IpReserved(IpReservation),
    Ips(Vec<IpView>),
    Overlay(Box<OverlayView>),
    Snapshot(Box<VpsSnapshot>),
    Snapshots(Vec<VpsSnapshot>),
    UserKeys(Vec<UserKey>),
    /// Audit events, newest first.
    Events(Vec<EventView>),
}

/// The repository of snapshot images (`river-vps/ID:MS`): a node drops one of these once no
/// container of it is left, since the host keeps the archive.
pub const VPS_SNAPSHOT_REPO: &str = "river-vps";

/// A saved disk state of a VPS: its container committed to an image, kept by the host as an
/// archive (so any node can start the VPS from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpsSnapshot {
    pub vps: u64,
    /// 1, 2, … per VPS, never reused.
    pub seq: u32,
    pub image: String,
    pub archive: ArchiveRef,
    /// The node it was taken on.
    pub node: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub message: Option<String>,
    /// Taken when the VPS stopped (the oldest automatic ones are dropped past the host's limit).
    pub auto: bool,
}

/// An SSH public key registered to a user, for the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserKey {
    /// `TYPE BASE64 [COMMENT]`.
    pub key: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub added_at_ms: i64,
}

/// A new reservation and the token that claims it (shown once; the host keeps no copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpReservation {
    pub ip: String,
    pub node: String,
    pub token: String,
    pub expires_at_ms: i64,
}

/// A reserved overlay address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpView {
    pub ip: String,
    pub node: String,
    pub owner: String,
    pub expires_at_ms: i64,
    /// The task that claimed it; the address is released when that task ends.
    pub task: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayView {
    pub enabled: bool,
    pub range: String,
    pub vni: u32,
    pub port: u16,
    pub members: Vec<OverlayMemberView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayMemberView {
    pub name: String,
    pub subnet: String,
    /// The member's own overlay address (its subnet's gateway).
    pub address: String,
    pub underlay: Option<String>,
    pub state: String,
    /// Containers on it with an overlay address now.
    pub containers: u32,
    /// The member's last reconcile, as it reported it.
    pub health: Option<OverlayHealth>,
}

/// What a member says after reconciling its overlay devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayHealth {
    pub ok: bool,
    pub detail: String,
    pub mtu: u32,
    pub peers: u32,
    pub at_ms: i64,
}

impl OverlayHealth {
    /// A reconcile that made `changes` changes, or failed with `Err(why)`.
    pub fn of(result: Result<(u32, usize), String>, peers: usize, at_ms: i64) -> Self {
        let peers = u32::try_from(peers).unwrap_or(u32::MAX);
        match result {
            Ok((mtu, changes)) => Self {
                ok: true,
                detail: format!("{changes} changes"),
                mtu,
                peers,
                at_ms,
            },
            Err(detail) => Self {
                ok: false,
                detail,
                mtu: 0,
                peers,
                at_ms,
            },
        }
    }
}

/// The overlay as one member must build it; sent by the host whenever membership or a reach set
/// changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayConfig {
    pub vni: u32,
    pub port: u16,
    pub range: String,
    pub mtu: Option<u32>,
    pub me: OverlayPeer,
    pub peers: Vec<OverlayPeer>,
    /// The reach sets: for each owner, the overlay addresses of their containers that have not
    /// ended, anywhere in the cluster. A container takes traffic from the overlay only from its
    /// own set (and the members' gateways).
    pub reach: Vec<Vec<std::net::Ipv4Addr>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayPeer {
    pub name: String,
    pub subnet: String,
    pub underlay: std::net::Ipv4Addr,
}

/// An environment and its versions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvView {
    pub name: String,
    pub owner: String,
    pub created_at_ms: i64,
    pub versions: Vec<EnvVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVersion {
    pub version: u32,
    /// What tasks see as their image: `river-env/NAME:vN`, or a registry reference for a version
    /// that points at one (the default environment before anyone commits to it).
    pub image: String,
    /// The archive the host keeps, absent for a registry reference.
    pub archive: Option<ArchiveRef>,
    pub created_by: String,
    pub created_at_ms: i64,
    pub message: Option<String>,
    /// How many times nodes fetched this version's archive in full.
    pub fetches: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    Online,
    Offline,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Online => "online",
            NodeState::Offline => "offline",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub state: NodeState,
    pub address: Option<String>,
    pub info: NodeInfo,
    pub usage: Option<NodeUsage>,
    /// Unix milliseconds.
    pub last_heartbeat_ms: Option<i64>,
    /// Unix seconds.
    pub joined_at: i64,
    /// Unix seconds.
    pub cert_expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub version: String,
    pub ca_fingerprint: String,
    pub nodes_online: u32,
    pub nodes_offline: u32,
    pub cores: u32,
    pub memory_bytes: u64,
    pub gpus: u32,
    pub tasks_queued: u32,
    /// Assigned, running or paused.
    pub tasks_active: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    pub id: String,
    /// The secret token text, shown once.
    pub token: String,
    pub expires_at: i64,
    pub uses: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub purpose: TokenPurpose,
    /// For user invites: who it enrols.
    pub user: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub uses_left: u32,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    #[serde(default)]
    pub disabled: bool,
    /// When they were removed (seconds); listed so the name's history stays visible.
    #[serde(default)]
    pub removed_at: Option<i64>,
}

// --- tasks ---

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
    /// Set by the host: the environment version's archive, which the runner fetches over the mesh
    /// if its engine lacks the image.
    #[serde(default)]
    pub archive: Option<ArchiveRef>,
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
    /// Set by the host: the reserved overlay address this task must get.
    #[serde(default)]
    pub ip: Option<String>,
    /// A distributed launch over this many nodes: one member per node, started as a group.
    #[serde(default)]
    pub nodes: Option<u32>,
    /// Several targets as one distributed group rather than independent tasks.
    #[serde(default)]
    pub group: bool,
    /// Set by the host: this member's rank in its group (its batch).
    #[serde(default)]
    pub rank: Option<u32>,
    /// A VPS: a persistent container that is stopped and started rather than ended, reached
    /// over SSH.
    #[serde(default)]
    pub vps: Option<VpsSpec>,
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
            archive: None,
            no_container: false,
            network: None,
            ip_token: None,
            ip: None,
            nodes: None,
            group: false,
            rank: None,
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
    pub placement: Option<TaskPlacement>,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
    pub submitted_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// While the node fetches the task's environment: bytes received and the total.
    #[serde(default)]
    pub fetch: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    Kill,
    Pause,
    Resume,
    /// A VPS: stop its container and keep it, to start again later.
    Stop,
}

/// Host → runner, on the session's `Control` stream after the welcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMsg {
    Start {
        id: u64,
        spec: Box<TaskSpec>,
        placement: TaskPlacement,
    },
    Signal {
        id: u64,
        signal: Signal,
    },
    /// Build (or repair) this node's part of the overlay as described.
    Overlay(Box<OverlayConfig>),
    /// A VPS is removed: its container goes, running or not.
    Remove {
        id: u64,
    },
    /// A VPS has moved elsewhere (or ended while the node was away): its container here goes,
    /// and nothing is reported.
    Discard {
        id: u64,
    },
    /// The host has stored how these tasks ended: the node need not report them again.
    Recorded {
        ids: Vec<u64>,
    },
}

/// Tasks in one part of a runner's snapshot: a part stays far below a frame's 4 MiB, whatever
/// the messages in it.
pub const SNAPSHOT_PART: usize = 2000;

/// Runner → host, on the session's `Control` stream after the hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunnerMsg {
    /// `state` is a task state name (`running`, `paused`, `completed`, …).
    Task {
        id: u64,
        state: String,
        exit_code: Option<i64>,
        message: Option<String>,
    },
    /// First message of every session: the tasks whose containers exist on this node (with their
    /// state) and the recorded ends of tasks that finished and the host has not acknowledged
    /// ([`HostMsg::Recorded`]), so the host can settle what happened while it could not hear. The
    /// host schedules nothing on the node before it has all of it. In parts of at most
    /// [`SNAPSHOT_PART`] tasks, every part but the last with `more`.
    Snapshot { tasks: Vec<TaskReport>, more: bool },
    /// Progress of fetching the environment archive a waiting task needs.
    Fetch { id: u64, done: u64, total: u64 },
    /// The outcome of the node's last overlay reconcile.
    Overlay(OverlayHealth),
}

/// One task's state as a runner knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub id: u64,
    pub state: String,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
}

/// Runner → host on a `Blob` stream: the archive with this digest, from `offset` (a retry resumes
/// where the last attempt stopped). The host answers with a [`BlobReply`], then the bytes, raw,
/// and finishes the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    pub digest: String,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobReply {
    /// `size` is the whole archive's; the bytes from the offset follow.
    Ok {
        size: u64,
    },
    Missing {
        message: String,
    },
}

/// Host → runner on an `Export` stream: make `tag` from `source`, then answer with an
/// [`ExportReply`] and, when it is `Ok`, the `docker save` archive of `tag`, raw, to the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRequest {
    pub source: ExportSource,
    pub tag: String,
    /// Untag the image on the node once sent (a snapshot lives on the host, not on nodes).
    #[serde(default)]
    pub drop_after: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportSource {
    /// An image the node has, or pulls.
    Image(String),
    /// The container of a task running on the node, committed as it is now.
    Task(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportReply {
    Ok { image_id: String },
    Failed { message: String },
}

/// First frame of a `Terminal` stream, from the user to the host and, once the host has checked
/// the user may reach the task, from the host to the task's runner. Then [`TermIn`] frames go
/// toward the container and [`TermOut`] frames come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalOpen {
    pub task: u64,
    /// Empty: the container's shell (bash if it has one, else sh).
    pub command: Vec<String>,
    /// A pseudo-terminal (interactive use); without one, stdout and stderr stay apart.
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TermIn {
    Input(Vec<u8>),
    Resize {
        rows: u16,
        cols: u16,
    },
    /// The user's input ended (closes the command's stdin).
    Eof,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TermOut {
    /// The command is running; input may follow.
    Started,
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command ended; the last frame.
    Exit {
        code: i64,
    },
    /// Refused or failed, with the reason; the last frame.
    Error(String),
}

/// First frame of a `Forward` stream, user → host → runner: connect to `port` inside the task's
/// network namespace (its loopback). The runner answers with a [`ForwardReply`]; after `Ok` the
/// stream carries the connection's bytes both ways, raw, and a finished side is a half-close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardOpen {
    pub task: u64,
    pub port: u16,
    /// A UDP flow: the stream only opens and closes it, and the packets travel as QUIC datagrams
    /// tagged with the stream's id (see [`udp_datagram`]).
    #[serde(default)]
    pub udp: bool,
}

/// A UDP packet of a forwarded flow as a QUIC datagram: the id of the flow's `Forward` stream on
/// that connection (8 bytes, big-endian), then the packet.
pub fn udp_datagram(flow: u64, packet: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + packet.len());
    d.extend_from_slice(&flow.to_be_bytes());
    d.extend_from_slice(packet);
    d
}

/// The flow id and packet of a datagram made by [`udp_datagram`]; `None` if it is too short.
pub fn parse_udp_datagram(d: &[u8]) -> Option<(u64, &[u8])> {
    let (id, packet) = d.split_at_checked(8)?;
    Some((u64::from_be_bytes(id.try_into().ok()?), packet))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardReply {
    Ok,
    /// Why not, in words for the user (refused by the host, or by the port inside the task).
    Refused(String),
}

/// First frame of an `Ssh` stream, host → runner: serve SSH for VPS `task` on this stream. The
/// runner answers with a [`ForwardReply`], then speaks SSH (as the server) on the stream's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshServe {
    pub task: u64,
    /// The public keys that may log in, as the host has them now.
    pub keys: Vec<String>,
    /// The VPS's host key, an Ed25519 seed (hex), the same wherever the VPS runs.
    pub host_key: Secret,
}

/// Host → runner on a `Logs` stream: one request, then the runner sends the bytes and finishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub id: u64,
    pub stderr: bool,
    /// Keep sending new output until the task ends.
    pub follow: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_datagrams_round_trip_and_short_ones_are_refused() {
        let d = udp_datagram(0x0102_0304_0506_0708, b"ping");
        assert_eq!(parse_udp_datagram(&d), Some((0x0102_0304_0506_0708, &b"ping"[..])));
        assert_eq!(parse_udp_datagram(&udp_datagram(7, b"")), Some((7, &b""[..])));
        assert_eq!(parse_udp_datagram(&[1, 2, 3]), None);
    }
}
