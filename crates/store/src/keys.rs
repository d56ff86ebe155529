//! Users' SSH public keys, as the gateway looks them up.

use crate::{Result, Store, StoreError};
use river_proto::msg::UserKey;
use sqlx::Row;

/// Users' SSH keys.
#[async_trait::async_trait]
pub trait Keys: Send + Sync {
    /// Registers `line` (`TYPE BASE64 [COMMENT]`, already checked) for `user`. A key already
    /// registered to anyone is refused with `Exists`: a key names one user at the gateway.
    async fn add_user_key(&self, user: &str, key_id: &str, line: &str, fingerprint: &str, now_ms: i64) -> Result<()>;

    async fn user_keys(&self, user: &str) -> Result<Vec<UserKey>>;

    /// Removes one of `user`'s keys by its `TYPE BASE64` or its fingerprint; whether there was one.
    async fn remove_user_key(&self, user: &str, key_id_or_fingerprint: &str) -> Result<bool>;

    /// The user a key (`TYPE BASE64`) is registered to.
    async fn user_by_key(&self, key_id: &str) -> Result<Option<String>>;
}

#[async_trait::async_trait]
impl Keys for Store {
    async fn add_user_key(&self, user: &str, key_id: &str, line: &str, fingerprint: &str, now_ms: i64) -> Result<()> {
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

    async fn user_keys(&self, user: &str) -> Result<Vec<UserKey>> {
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

    async fn remove_user_key(&self, user: &str, key_id_or_fingerprint: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM user_keys WHERE user_name = ?1 AND (key_id = ?2 OR fingerprint = ?2)")
            .bind(user)
            .bind(key_id_or_fingerprint)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn user_by_key(&self, key_id: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT user_name FROM user_keys WHERE key_id = ?")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?)
    }
}
