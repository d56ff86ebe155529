//! Message types carried in frames. These are wire types: they derive serde and nothing else
//! depends on their layout. Adding a variant at the end of an enum is compatible within a protocol
//! version; anything else bumps [`crate::PROTOCOL_VERSION`].

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
}

/// One request on an `Rpc` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    TaskList {
        state: Option<String>,
        node: Option<String>,
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
    Error { kind: ErrorKind, message: String },
    Done { message: String },
    WhoAmI { identity: String, role: Option<Role> },
    Status(ClusterStatus),
    Nodes(Vec<NodeView>),
    Node(Box<NodeView>),
    TokenCreated(TokenCreated),
    Tokens(Vec<TokenView>),
    Users(Vec<UserView>),
    Renewed { cert_pem: String },
    TaskSubmitted { batch: u64, ids: Vec<u64> },
    Tasks(Vec<TaskView>),
    Task(Box<TaskView>),
    Logs(Vec<u8>),
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
    pub image: String,
    #[serde(default)]
    pub env: Vec<(String, String)>,
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
}

impl TaskSpec {
    /// A one-core task running `command` in `image`, with nothing else asked for.
    pub fn new(image: impl Into<String>, command: Vec<String>) -> Self {
        Self {
            command,
            image: image.into(),
            env: Vec::new(),
            cores: 1,
            memory_bytes: None,
            gpus: 0,
            targets: Vec::new(),
            mounts: Vec::new(),
            workdir: None,
            name: None,
            privileged: false,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    Kill,
    Pause,
    Resume,
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
}

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
    /// state) and the recorded ends of tasks that finished, so the host can settle what happened
    /// while it could not hear. The host schedules nothing on the node before it has this.
    Snapshot { tasks: Vec<TaskReport> },
}

/// One task's state as a runner knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub id: u64,
    pub state: String,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
}

/// Host → runner on a `Logs` stream: one request, then the runner sends the bytes and finishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub id: u64,
    pub stderr: bool,
    /// Keep sending new output until the task ends.
    pub follow: bool,
}
