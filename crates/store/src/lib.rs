//! The host's durable state in SQLite: nodes, tokens, users, revocations and the audit trail.
//!
//! Architecture invariant: this is the only crate that knows sqlx or SQL. It speaks in the
//! record types below; callers never see rows. Migrations live in `migrations/` and run at open.

use river_proto::msg::{Assigned, NodeInfo, NodeState, NodeUsage, Role, TaskPlacement, TaskSpec, TokenPurpose};
use river_task::state::TaskState;
use sqlx::{Row, SqlitePool};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("join token was used up or revoked while this request was in flight")]
    TokenSpent,
    #[error("{0} already exists")]
    Exists(String),
    #[error("there is no {0}")]
    NotFound(String),
    #[error("the database file is damaged: {0}")]
    Damaged(String),
}

type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub name: String,
    pub state: NodeState,
    pub address: Option<String>,
    pub info: NodeInfo,
    pub usage: Option<NodeUsage>,
    pub last_heartbeat_ms: Option<i64>,
    pub joined_at: i64,
    pub cert_serial: String,
    pub cert_expires_at: i64,
}

/// A connecting node's standing in the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// A current certificate of a known node.
    Accepted,
    /// The certificate was revoked: the node was removed (or its identity replaced) on purpose.
    Revoked,
    /// Neither: no such node, or a certificate the records never saw. Not a removal: the
    /// database may be older than the node (restored from a backup).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub secret_hash: String,
    pub purpose: TokenPurpose,
    pub user: Option<(String, Role)>,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub uses_left: u32,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    /// Disabled by an admin: keeps everything, may not connect.
    pub disabled: bool,
    /// When the user was removed (seconds): gone for good, the name never given again.
    pub removed_at: Option<i64>,
}

/// The states a task ends in, as an SQL list: equal to [`TaskState::is_final`] (a test holds
/// them so). A macro, so statements stay literals.
macro_rules! ended {
    () => {
        "('completed', 'failed', 'killed', 'oom')"
    };
}
/// The states in which a task holds resources on its node, as an SQL list: equal to
/// [`TaskState::holds_resources`].
macro_rules! holding {
    () => {
        "('assigned', 'running', 'paused', 'lost')"
    };
}

/// A task as stored. Its state changes only through the host's lifecycle (`river_task::lifecycle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub id: u64,
    pub batch: u64,
    pub name: Option<String>,
    pub owner: String,
    /// What the user asked.
    pub spec: TaskSpec,
    /// What the host decided for it at submit.
    pub assigned: Assigned,
    /// The one target of this task, when it had one.
    pub target: Option<String>,
    pub state: TaskState,
    pub placement: Option<TaskPlacement>,
    pub exit_code: Option<i64>,
    pub message: Option<String>,
    pub submitted_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

fn task_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<TaskRecord> {
    let id: i64 = r.try_get("id")?;
    let spec = r.try_get::<&str, _>("spec_json")?;
    let batch: i64 = r.try_get("batch")?;
    Ok(TaskRecord {
        id: u64::try_from(id).map_err(|_| StoreError::Corrupt(format!("task id {id}")))?,
        batch: u64::try_from(batch).map_err(|_| StoreError::Corrupt(format!("batch {batch}")))?,
        name: r.try_get("name")?,
        owner: r.try_get("owner")?,
        spec: unjson(spec)?,
        assigned: match r.try_get::<Option<&str>, _>("assigned_json")? {
            Some(a) => unjson(a)?,
            // A row from before the host's decisions had a column of their own: they were kept
            // in the spec, under the same names.
            None => unjson(spec)?,
        },
        target: r.try_get("target")?,
        state: r
            .try_get::<&str, _>("state")?
            .parse()
            .map_err(|e: String| StoreError::Corrupt(e))?,
        placement: r
            .try_get::<Option<&str>, _>("placement_json")?
            .map(unjson)
            .transpose()?,
        exit_code: r.try_get("exit_code")?,
        message: r.try_get("message")?,
        submitted_at_ms: r.try_get("submitted_at_ms")?,
        started_at_ms: r.try_get("started_at_ms")?,
        finished_at_ms: r.try_get("finished_at_ms")?,
    })
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

fn state_str(s: NodeState) -> &'static str {
    s.as_str()
}

fn parse_state(s: &str) -> Result<NodeState> {
    match s {
        "online" => Ok(NodeState::Online),
        "offline" => Ok(NodeState::Offline),
        _ => Err(StoreError::Corrupt(format!("node state {s:?}"))),
    }
}

fn purpose_str(p: TokenPurpose) -> &'static str {
    match p {
        TokenPurpose::Node => "node",
        TokenPurpose::User => "user",
        TokenPurpose::Reissue => "reissue",
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn unjson<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn role(s: &str) -> Result<Role> {
    Role::from_str(s).map_err(StoreError::Corrupt)
}

fn node_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<NodeRecord> {
    Ok(NodeRecord {
        name: r.try_get("name")?,
        state: parse_state(r.try_get::<&str, _>("state")?)?,
        address: r.try_get("address")?,
        info: unjson(r.try_get::<&str, _>("info_json")?)?,
        usage: r.try_get::<Option<&str>, _>("usage_json")?.map(unjson).transpose()?,
        last_heartbeat_ms: r.try_get("last_heartbeat_ms")?,
        joined_at: r.try_get("joined_at")?,
        cert_serial: r.try_get("cert_serial")?,
        cert_expires_at: r.try_get("cert_expires_at")?,
    })
}

fn token_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<TokenRecord> {
    let purpose = match r.try_get::<&str, _>("purpose")? {
        "node" => TokenPurpose::Node,
        "user" => TokenPurpose::User,
        "reissue" => TokenPurpose::Reissue,
        p => return Err(StoreError::Corrupt(format!("token purpose {p:?}"))),
    };
    let user = match (
        r.try_get::<Option<String>, _>("user_name")?,
        r.try_get::<Option<&str>, _>("user_role")?,
    ) {
        (Some(n), Some(ro)) => Some((n, role(ro)?)),
        _ => None,
    };
    Ok(TokenRecord {
        id: r.try_get("id")?,
        secret_hash: r.try_get("secret_hash")?,
        purpose,
        user,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        uses_left: u32::try_from(r.try_get::<i64, _>("uses_left")?).unwrap_or(0),
        revoked: r.try_get::<i64, _>("revoked")? != 0,
    })
}

impl Store {
    /// A transaction that writes: it takes SQLite's write lock at once, so a concurrent writer
    /// makes it wait (the busy timeout) instead of failing when its first read would have to be
    /// upgraded to a write.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

mod accounts;
mod api_tokens;
mod archives;
mod keys;
mod limits;
mod nodes;
mod tasks;
pub use api_tokens::ApiTokenRecord;
mod audit;
mod queue;
mod shares;
mod users;
mod web_sessions;
pub use audit::EventRecord;
pub use users::IssuedCert;
pub use web_sessions::WebSessionRecord;
mod file;
mod pages;
pub use pages::TaskQuery;
mod overlay;
pub use overlay::Reservation;
pub use prelude::*;

/// The store's repository traits, one per area of what the host keeps: `use
/// river_store::prelude::*` to call them.
pub mod prelude {
    pub use crate::accounts::Accounts;
    pub use crate::api_tokens::ApiTokens;
    pub use crate::archives::Archives;
    pub use crate::audit::Audit;
    pub use crate::file::Maintenance;
    pub use crate::keys::Keys;
    pub use crate::limits::Limits;
    pub use crate::nodes::Cluster;
    pub use crate::overlay::Addresses;
    pub use crate::pages::Pages;
    pub use crate::queue::Queue;
    pub use crate::shares::Shares;
    pub use crate::tasks::Tasks;
    pub use crate::users::Users;
    pub use crate::web_sessions::WebLogins;
    pub use crate::Repositories;
}

/// Everything the host keeps, behind one object: the host holds an `Arc<dyn Repositories>` and
/// knows no more of the database than these traits. SQLite ([`Store`]) implements them today; a
/// second implementation (Postgres) implements the same traits, and nothing above this crate
/// changes.
pub trait Repositories:
    Cluster
    + Accounts
    + ApiTokens
    + Archives
    + Audit
    + Maintenance
    + Keys
    + Limits
    + Addresses
    + Pages
    + Queue
    + Shares
    + Tasks
    + Users
    + WebLogins
{
}

impl<T> Repositories for T where
    T: Cluster
        + Accounts
        + ApiTokens
        + Archives
        + Audit
        + Maintenance
        + Keys
        + Limits
        + Addresses
        + Pages
        + Queue
        + Shares
        + Tasks
        + Users
        + WebLogins
{
}

#[cfg(test)]
mod tests;
