//! API tokens: scripts' credentials for the HTTPS API. The secret itself is never stored.

use crate::{role, Result, Store, StoreError};
use river_proto::msg::Role;
use sqlx::Row as _;

/// An API token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    /// Public: the part of the token it is looked up by.
    pub id: String,
    pub user: String,
    /// The user's label for it (`ci`), unique among their live tokens.
    pub name: String,
    /// The most it may do; the user's own role caps it further when used.
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_used_ms: Option<i64>,
    pub revoked_at: Option<i64>,
}

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<ApiTokenRecord> {
    Ok(ApiTokenRecord {
        id: r.try_get("id")?,
        user: r.try_get("user_name")?,
        name: r.try_get("name")?,
        role: role(r.try_get::<&str, _>("role")?)?,
        secret_hash: r.try_get("secret_hash")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        last_used_ms: r.try_get("last_used_ms")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// Users' API tokens.
#[async_trait::async_trait]
pub trait ApiTokens: Send + Sync {
    /// Stores a new token. A live token of the same user and name is [`StoreError::Exists`]; an
    /// expired one of that name is revoked first, so its name can be used again.
    async fn insert_api_token(&self, t: &ApiTokenRecord, now: i64) -> Result<()>;

    /// The token with this id, revoked or not.
    async fn api_token(&self, id: &str) -> Result<Option<ApiTokenRecord>>;

    /// A user's tokens (everyone's with `None`), live ones first, newest first.
    async fn api_tokens(&self, user: Option<&str>) -> Result<Vec<ApiTokenRecord>>;

    /// Revokes `user`'s live token `name`; whether there was one.
    async fn revoke_api_token(&self, user: &str, name: &str, now: i64) -> Result<bool>;

    /// Notes a use of a token, at most once every 10 s (a script's loop writes little).
    async fn touch_api_token(&self, id: &str, now_ms: i64) -> Result<()>;
}

#[async_trait::async_trait]
impl ApiTokens for Store {
    async fn insert_api_token(&self, t: &ApiTokenRecord, now: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = ? WHERE user_name = ? AND name = ? AND revoked_at IS NULL AND expires_at <= ?",
        )
        .bind(now)
        .bind(&t.user)
        .bind(&t.name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let added = sqlx::query(
            "INSERT INTO api_tokens (id, user_name, name, role, secret_hash, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.user)
        .bind(&t.name)
        .bind(t.role.as_str())
        .bind(&t.secret_hash)
        .bind(t.created_at)
        .bind(t.expires_at)
        .execute(&mut *tx)
        .await?;
        if added.rows_affected() != 1 {
            return Err(StoreError::Exists(format!("API token {}", t.name)));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn api_token(&self, id: &str) -> Result<Option<ApiTokenRecord>> {
        sqlx::query("SELECT * FROM api_tokens WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    async fn api_tokens(&self, user: Option<&str>) -> Result<Vec<ApiTokenRecord>> {
        sqlx::query(
            "SELECT * FROM api_tokens WHERE ?1 IS NULL OR user_name = ?1
             ORDER BY revoked_at IS NOT NULL, created_at DESC, id",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
    }

    async fn revoke_api_token(&self, user: &str, name: &str, now: i64) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE user_name = ? AND name = ? AND revoked_at IS NULL")
                .bind(now)
                .bind(user)
                .bind(name)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }

    async fn touch_api_token(&self, id: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE api_tokens SET last_used_ms = ?1 WHERE id = ?2 AND (last_used_ms IS NULL OR last_used_ms < ?1 - 10000)",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Revokes all of a user's live tokens, inside a transaction of the caller's (a removal, a
/// reissue); how many.
pub(crate) async fn revoke_all(tx: &mut sqlx::SqliteConnection, user: &str, now: i64) -> Result<u64> {
    Ok(
        sqlx::query("UPDATE api_tokens SET revoked_at = ? WHERE user_name = ? AND revoked_at IS NULL")
            .bind(now)
            .bind(user)
            .execute(tx)
            .await?
            .rows_affected(),
    )
}
