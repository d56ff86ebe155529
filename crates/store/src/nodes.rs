//! Nodes, join tokens, revoked certificates and the cluster's settings.

use crate::*;

/// Nodes, join tokens, revoked certificates and the cluster's settings.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync {
    async fn close(&self);

    async fn meta(&self, key: &str) -> Result<Option<String>>;

    async fn set_meta(&self, key: &str, value: &str) -> Result<()>;

    /// Records a joined node and spends one use of its token, atomically: a token with one use
    /// left can never join two nodes.
    async fn join_node(&self, token_id: &str, now: i64, node: &NodeRecord) -> Result<()>;

    /// Records a node with a certificate the CA issued it but the records lost (restored from an
    /// older backup): a known node's current certificate becomes this one, an unknown node is
    /// added as it would have been at join.
    async fn admit_node(&self, name: &str, serial: &str, expires_at: i64, now: i64) -> Result<()>;

    async fn node(&self, name: &str) -> Result<Option<NodeRecord>>;

    async fn nodes(&self) -> Result<Vec<NodeRecord>>;

    /// A runner's session began: what it reported and where it came from.
    async fn node_session(&self, name: &str, info: &NodeInfo, address: &str, now_ms: i64) -> Result<()>;

    async fn heartbeat(&self, name: &str, usage: &NodeUsage, now_ms: i64) -> Result<()>;

    async fn set_node_state(&self, name: &str, state: NodeState) -> Result<()>;

    /// A node renewed its certificate. The previous one stays accepted until the runner has the
    /// new one safely on disk and reconnects with it; older ones are refused.
    async fn set_node_cert(&self, name: &str, serial: &str, expires_at: i64) -> Result<()>;

    /// What the host's records say of a node connecting as `name` with certificate `serial`.
    async fn node_standing(&self, name: &str, serial: &str) -> Result<Standing>;

    /// Removes a node and revokes its certificates in one transaction.
    async fn remove_node(&self, name: &str, now: i64) -> Result<Option<NodeRecord>>;

    async fn revoke_cert(&self, serial: &str, subject: &str, now: i64, expires_at: i64) -> Result<()>;

    async fn is_revoked(&self, serial: &str) -> Result<bool>;

    async fn insert_token(&self, t: &TokenRecord) -> Result<()>;

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>>;

    async fn tokens(&self) -> Result<Vec<TokenRecord>>;

    async fn revoke_token(&self, id: &str) -> Result<bool>;
}

#[async_trait::async_trait]
impl Cluster for Store {
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn join_node(&self, token_id: &str, now: i64, node: &NodeRecord) -> Result<()> {
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

    async fn admit_node(&self, name: &str, serial: &str, expires_at: i64, now: i64) -> Result<()> {
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

    async fn node(&self, name: &str) -> Result<Option<NodeRecord>> {
        sqlx::query("SELECT * FROM nodes WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(node_from_row)
            .transpose()
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        sqlx::query("SELECT * FROM nodes ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(node_from_row)
            .collect()
    }

    async fn node_session(&self, name: &str, info: &NodeInfo, address: &str, now_ms: i64) -> Result<()> {
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

    async fn heartbeat(&self, name: &str, usage: &NodeUsage, now_ms: i64) -> Result<()> {
        sqlx::query("UPDATE nodes SET usage_json = ?, last_heartbeat_ms = ?, state = 'online' WHERE name = ?")
            .bind(json(usage)?)
            .bind(now_ms)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_node_state(&self, name: &str, state: NodeState) -> Result<()> {
        sqlx::query("UPDATE nodes SET state = ? WHERE name = ?")
            .bind(state_str(state))
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_node_cert(&self, name: &str, serial: &str, expires_at: i64) -> Result<()> {
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

    async fn node_standing(&self, name: &str, serial: &str) -> Result<Standing> {
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

    async fn remove_node(&self, name: &str, now: i64) -> Result<Option<NodeRecord>> {
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

    async fn revoke_cert(&self, serial: &str, subject: &str, now: i64, expires_at: i64) -> Result<()> {
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

    async fn is_revoked(&self, serial: &str) -> Result<bool> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM revoked_certs WHERE serial = ?")
                .bind(serial)
                .fetch_one(&self.pool)
                .await?
                > 0,
        )
    }

    async fn insert_token(&self, t: &TokenRecord) -> Result<()> {
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

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        sqlx::query("SELECT * FROM tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        sqlx::query("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(token_from_row)
            .collect()
    }

    async fn revoke_token(&self, id: &str) -> Result<bool> {
        Ok(sqlx::query("UPDATE tokens SET revoked = 1 WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1)
    }
}
