//! Tokens, users, their gateway keys and the audit trail, as answers carry them.

use super::{Role, TokenPurpose};
use serde::{Deserialize, Serialize};

/// The namespace of the SSH signature that proves a gateway key's holder has its private key.
pub const KEY_PROOF_NAMESPACE: &str = "river-gateway-key";

/// What the holder of the key `TYPE BASE64` signs to register it for user `user`: their name and
/// the key, so a signature made for one user or key proves nothing for another.
pub fn key_proof_message(user: &str, key_type: &str, key_base64: &str) -> String {
    format!("river gateway key\nuser {user}\nkey {key_type} {key_base64}\n")
}

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

/// An SSH public key registered to a user, for the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserKey {
    /// `TYPE BASE64 [COMMENT]`.
    pub key: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub added_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    pub id: String,
    /// The secret token text, shown once.
    pub token: String,
    pub expires_at_ms: i64,
    pub uses: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub purpose: TokenPurpose,
    /// For user invites: who it enrols.
    pub user: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub uses_left: u32,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub name: String,
    pub role: Role,
    pub created_at_ms: i64,
    #[serde(default)]
    pub disabled: bool,
    /// When they were removed; listed so the name's history stays visible.
    #[serde(default)]
    pub removed_at_ms: Option<i64>,
}

/// The prefix of an API token's text: `rvk1.ID.SECRET`.
pub const API_TOKEN_PREFIX: &str = "rvk1";

/// A new API token; `token` is its secret text, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenCreated {
    pub name: String,
    pub user: String,
    pub role: Role,
    pub token: String,
    pub expires_at_ms: i64,
}

/// An API token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenView {
    pub id: String,
    pub name: String,
    pub user: String,
    pub role: Role,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

/// A browser logged in to the dashboard at the host's own address (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSessionView {
    pub id: String,
    pub user: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub last_seen_ms: Option<i64>,
    /// Where it logged in from, and with what browser (as it said).
    pub address: String,
    pub agent: String,
}

/// A user's limits, each set or not (0: no limit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitValues {
    /// Tasks waiting (queued or for approval).
    pub queued: Option<u32>,
    /// Cores their tasks hold at once.
    pub running_cores: Option<u32>,
    /// GPUs their tasks hold at once.
    pub running_gpus: Option<u32>,
    /// VPSs they have (not removed).
    pub vps: Option<u32>,
    /// MiB of archives the host keeps for them: environment versions they made, their VPSs'
    /// snapshots.
    pub archive_mib: Option<u32>,
}

/// A user's limits as they apply (`effective`, every value set) and which are theirs alone
/// (`overrides`; the rest are the cluster's defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLimitsView {
    pub user: String,
    pub effective: LimitValues,
    pub overrides: LimitValues,
}
