//! Nodes as runners describe them (machine, live usage) and as the host shows them.

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
    /// No container engine answers on the node: it runs `--no-container` tasks only.
    #[serde(default)]
    pub no_engine: bool,
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
    /// No container engine answered the runner just now.
    #[serde(default)]
    pub no_engine: bool,
}

/// A node's usage at one moment, as its heartbeat reported it (`Request::NodeUsage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageSample {
    pub at_ms: i64,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
// Lowercase in JSON (the API, `-o json`), as states and roles are written everywhere else.
#[serde(rename_all = "lowercase")]
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
    /// Unix milliseconds.
    pub joined_at_ms: i64,
    /// Unix milliseconds.
    pub cert_expires_at_ms: i64,
}
