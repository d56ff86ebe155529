//! The host's durable state in SQLite: nodes, tokens, users, revocations and the audit trail.
//!
//! Architecture invariant: this is the only crate that knows sqlx or SQL. It speaks in the
//! record types below; callers never see rows. Migrations live in `migrations/` and run at open.

use river_proto::msg::{
    ArchiveRef, EnvVersion, EnvView, NodeInfo, NodeState, NodeUsage, Role, TaskPlacement, TaskSpec, TokenPurpose,
    UserKey, VpsSnapshot,
};
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

/// How many environment versions and VPS snapshots refer to the archive with digest `?1`.
const DIGEST_USES: &str = "SELECT (SELECT COUNT(*) FROM environment_versions WHERE digest = ?1)
                                + (SELECT COUNT(*) FROM vps_snapshots WHERE digest = ?1)";

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

/// A task as stored. `state` is a task state name; the task crate owns its meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub id: u64,
    pub batch: u64,
    pub name: Option<String>,
    pub owner: String,
    pub spec: TaskSpec,
    /// The one target of this task, when it had one.
    pub target: Option<String>,
    pub state: String,
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
        state: r.try_get("state")?,
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

    // --- tasks ---

    /// Queues one task per target (one untargeted task when `targets` is empty), sharing a batch
    /// id (the first task's id), in one transaction. Returns the ids.
    pub async fn insert_tasks(
        &self,
        owner: &str,
        spec: &TaskSpec,
        targets: &[String],
        now_ms: i64,
    ) -> Result<Vec<u64>> {
        let members: Vec<(&TaskSpec, Option<&str>)> = if targets.is_empty() {
            vec![(spec, None)]
        } else {
            targets.iter().map(|t| (spec, Some(t.as_str()))).collect()
        };
        self.insert_batch(owner, &members, now_ms).await
    }

    /// Queues one task per `(spec, target)`, sharing a batch id (the first task's id), in one
    /// transaction: the members of a distributed group, each with its own spec. Returns the ids.
    pub async fn insert_batch(
        &self,
        owner: &str,
        members: &[(&TaskSpec, Option<&str>)],
        now_ms: i64,
    ) -> Result<Vec<u64>> {
        self.insert_batch_as(owner, members, now_ms, "queued").await
    }

    /// [`Self::insert_batch`], the tasks starting in `state` (`queued`, or `pending_approval`).
    pub async fn insert_batch_as(
        &self,
        owner: &str,
        members: &[(&TaskSpec, Option<&str>)],
        now_ms: i64,
        state: &str,
    ) -> Result<Vec<u64>> {
        let mut tx = self.write_tx().await?;
        let mut ids = Vec::with_capacity(members.len());
        for (spec, target) in members {
            let spec_json = json(spec)?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO tasks (batch, name, owner, spec_json, target, state, submitted_at_ms)
                 VALUES (0, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(&spec.name)
            .bind(owner)
            .bind(&spec_json)
            .bind(target)
            .bind(state)
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await?;
            ids.push(id);
        }
        let batch = ids[0];
        for id in &ids {
            sqlx::query("UPDATE tasks SET batch = ? WHERE id = ?")
                .bind(batch)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(ids.into_iter().map(|i| u64::try_from(i).unwrap_or(0)).collect())
    }

    pub async fn task(&self, id: u64) -> Result<Option<TaskRecord>> {
        let id = i64::try_from(id).map_err(|_| StoreError::Corrupt(format!("task id {id}")))?;
        sqlx::query("SELECT * FROM tasks WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(task_from_row)
            .transpose()
    }

    /// Tasks that have not ended, oldest first: what the scheduler and reconciliation look at, so
    /// their cost does not grow with the history.
    pub async fn unfinished_tasks(&self) -> Result<Vec<TaskRecord>> {
        sqlx::query("SELECT * FROM tasks WHERE state NOT IN ('completed', 'failed', 'killed', 'oom') ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(task_from_row)
            .collect()
    }

    /// Tasks that hold a node's resources or may again (assigned, running, paused, lost).
    pub async fn holding_tasks(&self) -> Result<Vec<TaskRecord>> {
        sqlx::query("SELECT * FROM tasks WHERE state IN ('assigned', 'running', 'paused', 'lost') ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(task_from_row)
            .collect()
    }

    /// The first `limit` queued tasks, oldest first.
    pub async fn queued(&self, limit: u32) -> Result<Vec<TaskRecord>> {
        sqlx::query("SELECT * FROM tasks WHERE state = 'queued' ORDER BY id LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(task_from_row)
            .collect()
    }

    /// Tasks, oldest first; with `state`, only those in it.
    pub async fn tasks(&self, state: Option<&str>) -> Result<Vec<TaskRecord>> {
        let rows = match state {
            Some(st) => {
                sqlx::query("SELECT * FROM tasks WHERE state = ? ORDER BY id")
                    .bind(st)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM tasks ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(task_from_row).collect()
    }

    /// Writes a task's mutable fields (a VPS's spec and target change: its keys, its node).
    pub async fn update_task(&self, t: &TaskRecord) -> Result<()> {
        let id = i64::try_from(t.id).map_err(|_| StoreError::Corrupt(format!("task id {}", t.id)))?;
        sqlx::query(
            "UPDATE tasks SET spec_json = ?, target = ?, state = ?, placement_json = ?, exit_code = ?, message = ?,
             started_at_ms = ?, finished_at_ms = ?
             WHERE id = ?",
        )
        .bind(json(&t.spec)?)
        .bind(&t.target)
        .bind(&t.state)
        .bind(t.placement.as_ref().map(json).transpose()?)
        .bind(t.exit_code)
        .bind(&t.message)
        .bind(t.started_at_ms)
        .bind(t.finished_at_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // --- environments ---

    /// A new environment with its first version; `Exists` if the name is taken.
    pub async fn create_env(&self, name: &str, owner: &str, now_ms: i64, first: &EnvVersion) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(
            "INSERT INTO environments (name, owner, created_at_ms) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(owner)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Exists(format!("environment {name}")));
        }
        insert_version(&mut tx, name, first).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds `v` as the environment's next version and returns its number (`v.version` is ignored).
    pub async fn add_env_version(&self, name: &str, v: &EnvVersion) -> Result<u32> {
        let mut tx = self.write_tx().await?;
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM environment_versions WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let Some(last) = last else {
            return Err(StoreError::Corrupt(format!("environment {name} has no versions")));
        };
        let next = u32::try_from(last + 1).map_err(|_| StoreError::Corrupt(format!("version {last}")))?;
        insert_version(
            &mut tx,
            name,
            &EnvVersion {
                version: next,
                ..v.clone()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(next)
    }

    pub async fn env(&self, name: &str) -> Result<Option<EnvView>> {
        Ok(self.envs_where(Some(name)).await?.pop())
    }

    pub async fn envs(&self) -> Result<Vec<EnvView>> {
        self.envs_where(None).await
    }

    async fn envs_where(&self, name: Option<&str>) -> Result<Vec<EnvView>> {
        let envs = sqlx::query("SELECT * FROM environments WHERE ?1 IS NULL OR name = ?1 ORDER BY name")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        let versions = sqlx::query("SELECT * FROM environment_versions WHERE ?1 IS NULL OR name = ?1 ORDER BY version")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        let mut out: Vec<EnvView> = envs
            .iter()
            .map(|r| EnvView {
                name: r.get("name"),
                owner: r.get("owner"),
                created_at_ms: r.get("created_at_ms"),
                versions: Vec::new(),
            })
            .collect();
        for r in &versions {
            let env: String = r.get("name");
            let Some(view) = out.iter_mut().find(|e| e.name == env) else {
                continue;
            };
            let archive = match (
                r.get::<Option<String>, _>("image_id"),
                r.get::<Option<String>, _>("digest"),
            ) {
                (Some(image_id), Some(digest)) => Some(ArchiveRef {
                    image_id,
                    digest,
                    size: u64::try_from(r.get::<Option<i64>, _>("size").unwrap_or(0)).unwrap_or(0),
                }),
                _ => None,
            };
            view.versions.push(EnvVersion {
                version: u32::try_from(r.get::<i64, _>("version")).unwrap_or(0),
                image: r.get("image"),
                archive,
                created_by: r.get("created_by"),
                created_at_ms: r.get("created_at_ms"),
                message: r.get("message"),
                fetches: u64::try_from(r.get::<i64, _>("fetches")).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Removes an environment; returns the archive digests no other version refers to any more
    /// (the caller deletes those files), or `None` if there was no such environment.
    pub async fn remove_env(&self, name: &str) -> Result<Option<Vec<String>>> {
        let mut tx = self.write_tx().await?;
        let digests: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT digest FROM environment_versions WHERE name = ? AND digest IS NOT NULL",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM environment_versions WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM environments WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Ok(None);
        }
        let mut orphans = Vec::new();
        for d in digests {
            let used: i64 = sqlx::query_scalar(DIGEST_USES).bind(&d).fetch_one(&mut *tx).await?;
            if used == 0 {
                orphans.push(d);
            }
        }
        tx.commit().await?;
        Ok(Some(orphans))
    }

    /// Whether some environment version or VPS snapshot refers to the archive with this digest.
    pub async fn archive_known(&self, digest: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(DIGEST_USES)
            .bind(digest)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    // --- VPS snapshots ---

    /// Records a snapshot under the VPS's next number (its `seq` is ignored); returns that number.
    pub async fn add_snapshot(&self, s: &VpsSnapshot) -> Result<u32> {
        let mut tx = self.write_tx().await?;
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM vps_snapshots WHERE vps = ?")
            .bind(s.vps as i64)
            .fetch_one(&mut *tx)
            .await?;
        let seq = last.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO vps_snapshots (vps, seq, image, image_id, digest, size, node, created_by, created_at_ms, message, auto)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.vps as i64)
        .bind(seq)
        .bind(&s.image)
        .bind(&s.archive.image_id)
        .bind(&s.archive.digest)
        .bind(s.archive.size as i64)
        .bind(&s.node)
        .bind(&s.created_by)
        .bind(s.created_at_ms)
        .bind(&s.message)
        .bind(s.auto)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(u32::try_from(seq).unwrap_or(u32::MAX))
    }

    /// A VPS's snapshots, oldest first.
    pub async fn snapshots(&self, vps: u64) -> Result<Vec<VpsSnapshot>> {
        let rows = sqlx::query("SELECT * FROM vps_snapshots WHERE vps = ? ORDER BY seq")
            .bind(vps as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| VpsSnapshot {
                vps,
                seq: u32::try_from(r.get::<i64, _>("seq")).unwrap_or(0),
                image: r.get("image"),
                archive: ArchiveRef {
                    image_id: r.get("image_id"),
                    digest: r.get("digest"),
                    size: u64::try_from(r.get::<i64, _>("size")).unwrap_or(0),
                },
                node: r.get("node"),
                created_by: r.get("created_by"),
                created_at_ms: r.get("created_at_ms"),
                message: r.get("message"),
                auto: r.get::<i64, _>("auto") != 0,
            })
            .collect())
    }

    /// Removes a snapshot. `None`: there was none; `Some(orphan)`: its archive's digest if
    /// nothing else refers to it any more (the caller deletes that file).
    pub async fn remove_snapshot(&self, vps: u64, seq: u32) -> Result<Option<Option<String>>> {
        let mut tx = self.write_tx().await?;
        let digest: Option<String> =
            sqlx::query_scalar("DELETE FROM vps_snapshots WHERE vps = ? AND seq = ? RETURNING digest")
                .bind(vps as i64)
                .bind(seq)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(digest) = digest else {
            return Ok(None);
        };
        let used: i64 = sqlx::query_scalar(DIGEST_USES)
            .bind(&digest)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some((used == 0).then_some(digest)))
    }

    // --- users' SSH keys ---

    /// Registers `line` (`TYPE BASE64 [COMMENT]`, already checked) for `user`. A key already
    /// registered to anyone is refused with `Exists`: a key names one user at the gateway.
    pub async fn add_user_key(
        &self,
        user: &str,
        key_id: &str,
        line: &str,
        fingerprint: &str,
        now_ms: i64,
    ) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO user_keys (key_id, user_name, line, fingerprint, added_at_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(key_id)
        .bind(user)
        .bind(line)
        .bind(fingerprint)
        .bind(now_ms)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Exists(format!("key {fingerprint}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user_keys(&self, user: &str) -> Result<Vec<UserKey>> {
        let rows = sqlx::query("SELECT * FROM user_keys WHERE user_name = ? ORDER BY added_at_ms, key_id")
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| UserKey {
                key: r.get("line"),
                fingerprint: r.get("fingerprint"),
                added_at_ms: r.get("added_at_ms"),
            })
            .collect())
    }

    /// Removes one of `user`'s keys by its `TYPE BASE64` or its fingerprint; whether there was one.
    pub async fn remove_user_key(&self, user: &str, key_id_or_fingerprint: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM user_keys WHERE user_name = ?1 AND (key_id = ?2 OR fingerprint = ?2)")
            .bind(user)
            .bind(key_id_or_fingerprint)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// The user a key (`TYPE BASE64`) is registered to.
    pub async fn user_by_key(&self, key_id: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT user_name FROM user_keys WHERE key_id = ?")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Counts one complete fetch of the archive with this digest.
    pub async fn count_fetch(&self, digest: &str) -> Result<()> {
        sqlx::query("UPDATE environment_versions SET fetches = fetches + 1 WHERE digest = ?")
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

async fn insert_version(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, name: &str, v: &EnvVersion) -> Result<()> {
    let a = v.archive.as_ref();
    sqlx::query(
        "INSERT INTO environment_versions (name, version, image, image_id, digest, size, created_by, created_at_ms, message)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(name)
    .bind(i64::from(v.version))
    .bind(&v.image)
    .bind(a.map(|a| &a.image_id))
    .bind(a.map(|a| &a.digest))
    .bind(a.map(|a| i64::try_from(a.size).unwrap_or(i64::MAX)))
    .bind(&v.created_by)
    .bind(v.created_at_ms)
    .bind(&v.message)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

mod accounts;
mod api_tokens;
mod limits;
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
