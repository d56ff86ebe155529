//! The host's durable state in SQLite: nodes, tokens, users, revocations and the audit trail.
//!
//! Architecture invariant: this is the only crate that knows sqlx or SQL. It speaks in the
//! record types below; callers never see rows. Migrations live in `migrations/` and run at open.

use river_proto::msg::{NodeInfo, NodeState, NodeUsage, Role, TaskPlacement, TaskSpec, TokenPurpose};
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
    pub spec: TaskSpec,
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
    let batch: i64 = r.try_get("batch")?;
    Ok(TaskRecord {
        id: u64::try_from(id).map_err(|_| StoreError::Corrupt(format!("task id {id}")))?,
        batch: u64::try_from(batch).map_err(|_| StoreError::Corrupt(format!("batch {batch}")))?,
        name: r.try_get("name")?,
        owner: r.try_get("owner")?,
        spec: unjson(r.try_get::<&str, _>("spec_json")?)?,
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

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // --- nodes ---

    /// Records a joined node and spends one use of its token, atomically: a token with one use
    /// left can never join two nodes.
    pub async fn join_node(&self, token_id: &str, now: i64, node: &NodeRecord) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let spent = sqlx::query("UPDATE tokens SET uses_left = uses_left - 1 WHERE id = ? AND uses_left > 0 AND revoked = 0 AND expires_at > ?")
            .bind(token_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if spent.rows_affected() != 1 {
            return Err(StoreError::TokenSpent);
        }
        let inserted = sqlx::query(
            "INSERT INTO nodes (name, state, address, info_json, joined_at, cert_serial, cert_expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO NOTHING",
        )
        .bind(&node.name)
        .bind(state_str(node.state))
        .bind(&node.address)
        .bind(json(&node.info)?)
        .bind(node.joined_at)
        .bind(&node.cert_serial)
        .bind(node.cert_expires_at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            return Err(StoreError::Exists(format!("node {}", node.name)));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records a node with a certificate the CA issued it but the records lost (restored from an
    /// older backup): a known node's current certificate becomes this one, an unknown node is
    /// added as it would have been at join.
    pub async fn admit_node(&self, name: &str, serial: &str, expires_at: i64, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (name, state, info_json, joined_at, cert_serial, cert_expires_at)
             VALUES (?, 'offline', ?, ?, ?, ?)
             ON CONFLICT(name) DO UPDATE SET prev_cert_serial = cert_serial, cert_serial = excluded.cert_serial,
             cert_expires_at = excluded.cert_expires_at",
        )
        .bind(name)
        .bind(json(&NodeInfo::default())?)
        .bind(now)
        .bind(serial)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn node(&self, name: &str) -> Result<Option<NodeRecord>> {
        sqlx::query("SELECT * FROM nodes WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(node_from_row)
            .transpose()
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        sqlx::query("SELECT * FROM nodes ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(node_from_row)
            .collect()
    }

    /// A runner's session began: what it reported and where it came from.
    pub async fn node_session(&self, name: &str, info: &NodeInfo, address: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE nodes SET info_json = ?, address = ?, state = 'online', last_heartbeat_ms = ? WHERE name = ?",
        )
        .bind(json(info)?)
        .bind(address)
        .bind(now_ms)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn heartbeat(&self, name: &str, usage: &NodeUsage, now_ms: i64) -> Result<()> {
        sqlx::query("UPDATE nodes SET usage_json = ?, last_heartbeat_ms = ?, state = 'online' WHERE name = ?")
            .bind(json(usage)?)
            .bind(now_ms)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_node_state(&self, name: &str, state: NodeState) -> Result<()> {
        sqlx::query("UPDATE nodes SET state = ? WHERE name = ?")
            .bind(state_str(state))
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A node renewed its certificate. The previous one stays accepted until the runner has the
    /// new one safely on disk and reconnects with it; older ones are refused.
    pub async fn set_node_cert(&self, name: &str, serial: &str, expires_at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE nodes SET prev_cert_serial = cert_serial, cert_serial = ?, cert_expires_at = ? WHERE name = ?",
        )
        .bind(serial)
        .bind(expires_at)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What the host's records say of a node connecting as `name` with certificate `serial`.
    pub async fn node_standing(&self, name: &str, serial: &str) -> Result<Standing> {
        if self.is_revoked(serial).await? {
            return Ok(Standing::Revoked);
        }
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM nodes WHERE name = ? AND (cert_serial = ? OR prev_cert_serial = ?)",
        )
        .bind(name)
        .bind(serial)
        .bind(serial)
        .fetch_one(&self.pool)
        .await?;
        Ok(if n > 0 { Standing::Accepted } else { Standing::Unknown })
    }

    /// Removes a node and revokes its certificates in one transaction.
    pub async fn remove_node(&self, name: &str, now: i64) -> Result<Option<NodeRecord>> {
        let mut tx = self.write_tx().await?;
        let Some(node) = sqlx::query("SELECT * FROM nodes WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .as_ref()
            .map(node_from_row)
            .transpose()?
        else {
            return Ok(None);
        };
        let prev: Option<String> = sqlx::query_scalar("SELECT prev_cert_serial FROM nodes WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        for serial in std::iter::once(node.cert_serial.clone()).chain(prev) {
            sqlx::query(
                "INSERT OR IGNORE INTO revoked_certs (serial, subject, revoked_at, expires_at) VALUES (?, ?, ?, ?)",
            )
            .bind(serial)
            .bind(format!("node {name}"))
            .bind(now)
            .bind(node.cert_expires_at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM nodes WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(node))
    }

    // --- certificates ---

    pub async fn revoke_cert(&self, serial: &str, subject: &str, now: i64, expires_at: i64) -> Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO revoked_certs (serial, subject, revoked_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(serial)
        .bind(subject)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn is_revoked(&self, serial: &str) -> Result<bool> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM revoked_certs WHERE serial = ?")
                .bind(serial)
                .fetch_one(&self.pool)
                .await?
                > 0,
        )
    }

    // --- tokens ---

    pub async fn insert_token(&self, t: &TokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (id, secret_hash, purpose, user_name, user_role, created_by, created_at, expires_at, uses_left, revoked)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.id)
        .bind(&t.secret_hash)
        .bind(purpose_str(t.purpose))
        .bind(t.user.as_ref().map(|u| u.0.clone()))
        .bind(t.user.as_ref().map(|u| u.1.as_str()))
        .bind(&t.created_by)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(i64::from(t.uses_left))
        .bind(t.revoked)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        sqlx::query("SELECT * FROM tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        sqlx::query("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(token_from_row)
            .collect()
    }

    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query("UPDATE tokens SET revoked = 1 WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1)
    }
}

mod accounts;
mod api_tokens;
mod archives;
mod keys;
mod limits;
mod tasks;
pub use api_tokens::ApiTokenRecord;
mod audit;
mod queue;
mod shares;
mod users;
pub use audit::EventRecord;
pub use users::IssuedCert;
mod file;
mod pages;
pub use pages::TaskQuery;
mod overlay;
pub use overlay::Reservation;

#[cfg(test)]
mod tests;
