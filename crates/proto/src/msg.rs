//! Message types carried in frames. These are wire types: they derive serde and nothing else
//! depends on their layout. Adding a variant at the end of an enum is compatible within a protocol
//! version; anything else bumps [`crate::PROTOCOL_VERSION`].

mod archive;
mod kind;
mod node;
mod overlay;
pub mod people;
mod secret;
mod streams;
mod task;
pub use archive::{EnvVersion, EnvView, VpsSnapshot, VPS_SNAPSHOT_REPO};
pub use node::{Gpu, GpuUsage, NodeInfo, NodeState, NodeUsage, NodeView, NumaNode, UsageSample};
pub use overlay::{IpReservation, IpView, OverlayConfig, OverlayHealth, OverlayMemberView, OverlayPeer, OverlayView};
pub use people::{
    key_proof_message, ApiTokenCreated, ApiTokenView, EventView, LimitValues, TokenCreated, TokenView, UserKey,
    UserLimitsView, UserView, WebSessionView, API_TOKEN_PREFIX, AUDIT_MAX, KEY_PROOF_NAMESPACE,
};
pub use secret::{EnvVars, Secret};
use serde::{Deserialize, Serialize};
pub use streams::{
    parse_udp_datagram, udp_datagram, BlobReply, BlobRequest, ExportReply, ExportRequest, ExportSource, ForwardOpen,
    ForwardReply, LogsRequest, SshServe, TermIn, TermOut, TerminalOpen, UdpFrame,
};
pub use task::{
    ArchiveRef, Assigned, MountSpec, Signal, TaskOwner, TaskPlacement, TaskSpec, TaskStateChange, TaskView, VpsSpec,
};

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
// Lowercase in JSON (the API, `-o json`), as states and roles are written everywhere else.
#[serde(rename_all = "lowercase")]
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
// Lowercase in JSON (the API, `-o json`), as states and roles are written everywhere else.
#[serde(rename_all = "lowercase")]
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
        /// Only this owner's tasks (`user NAME`).
        #[serde(default)]
        owner: Option<String>,
    },
    TaskShow {
        id: u64,
    },
    /// Task `id` as `TaskShow` answers, once its state is none of `past` — or as it is when
    /// `timeout_ms` (at most 30 s) has passed: a client waits for a start or an end without
    /// polling. Answered with [`Response::Task`].
    TaskWait {
        id: u64,
        past: Vec<String>,
        timeout_ms: u64,
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
    /// Register an SSH public key for the caller, for the SSH gateway, with `proof` that they
    /// hold its private key: an SSH signature (`ssh-keygen -Y sign`, namespace
    /// [`people::KEY_PROOF_NAMESPACE`]) of [`people::key_proof_message`].
    UserKeyAdd {
        key: String,
        proof: String,
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
    /// Lets `user` reach VPS `id` (`share`), or no longer: ssh, connect, forward and the gateway,
    /// not stopping, removing or snapshotting it. Its owner or an operator.
    VpsShare {
        id: u64,
        user: String,
        share: bool,
    },
    /// Revokes the caller's own certificate `serial` (`river logout`).
    Logout {
        serial: String,
    },
    /// A token for the HTTPS API (`Authorization: Bearer`), acting as the caller at most at
    /// `role` (default: the caller's role, never above it). Answered with
    /// [`Response::ApiTokenCreated`]: the secret is shown once.
    ApiTokenCreate {
        name: String,
        ttl_secs: u64,
        role: Option<Role>,
    },
    /// The caller's API tokens, or `user`'s (whom the caller may manage).
    ApiTokenList {
        user: Option<String>,
    },
    /// Revokes the live API token `name` of the caller, or of `user`.
    ApiTokenRevoke {
        name: String,
        user: Option<String>,
    },
    /// Lets a task waiting for approval into the queue (operators).
    TaskApprove {
        id: u64,
    },
    /// Refuses a task waiting for approval: it ends killed, with the reason (operators).
    TaskReject {
        id: u64,
        reason: String,
    },
    /// A user's limits (the caller's own with `None`), after setting those `set` names for them
    /// (operators, for those they manage): a value of 0 means no limit, `reset` goes back to the
    /// cluster's defaults. Answered with [`Response::UserLimits`].
    UserLimits {
        name: Option<String>,
        set: LimitValues,
        reset: bool,
    },
    /// How far a long operation has got (`snapshot:ID`, `env:NAME` — keys the client knows
    /// before it asks), for a progress bar while its own request runs. Answered with
    /// [`Response::Progress`].
    Progress {
        key: String,
    },
    /// A node's usage over the last hour, oldest first (the host keeps it in memory). Answered
    /// with [`Response::Usage`].
    NodeUsage {
        name: String,
    },
    /// A one-time link that logs a browser in to the dashboard the host serves at its own
    /// address (`[web]` in its config), as the caller at most at the caller's role. Answered with
    /// [`Response::WebLink`].
    WebLink,
    /// The caller's dashboard sessions, or `user`'s (whom the caller may manage). Answered with
    /// [`Response::WebSessions`].
    WebSessions {
        user: Option<String>,
    },
    /// Ends the caller's (or `user`'s) dashboard session `id`, or all of them without one.
    WebSessionRevoke {
        id: Option<String>,
        user: Option<String>,
    },
    /// Every state task `id` has been in, oldest first. Answered with [`Response::TaskHistory`].
    TaskHistory {
        id: u64,
    },
    /// Who VPS `id` is shared with (its owner or an operator asks). Answered with
    /// [`Response::SharedWith`].
    VpsShares {
        id: u64,
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
    ApiTokenCreated(ApiTokenCreated),
    ApiTokens(Vec<ApiTokenView>),
    UserLimits(UserLimitsView),
    /// `None`: no such operation is running (it has not started, or has ended).
    Progress(Option<OpProgress>),
    Usage(Vec<UsageSample>),
    WebLink {
        url: String,
        expires_at_ms: i64,
    },
    /// Live sessions, newest first.
    WebSessions(Vec<WebSessionView>),
    TaskHistory(Vec<TaskStateChange>),
    /// User names, sorted.
    SharedWith(Vec<String>),
}

/// How far a long operation has got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpProgress {
    /// What it is doing now, in words (`committing the container`, `sending the archive`).
    pub phase: String,
    /// Bytes so far, and the whole if known (0: not known yet).
    pub done: u64,
    pub total: u64,
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

/// Host → runner, on the session's `Control` stream after the welcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMsg {
    Start {
        id: u64,
        spec: Box<TaskSpec>,
        assigned: Box<Assigned>,
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
    /// The images (ids) of every archive the host keeps (environment versions, VPS snapshots),
    /// at the start of each session and after one is removed: images the node loaded from the
    /// host and not among them go (once no container runs them).
    Archives {
        keep: Vec<String>,
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
