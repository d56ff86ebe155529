//! Users and the certificates issued to them.

use crate::{role, Result, Store, StoreError, UserRecord};
use sqlx::Row as _;

fn user_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<UserRecord> {
    Ok(UserRecord {
        name: r.try_get("name")?,
        role: role(r.try_get::<&str, _>("role")?)?,
        created_at: r.try_get("created_at")?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        removed_at: r.try_get("removed_at")?,
    })
}

/// A certificate just issued: its serial and when it ends (seconds).
pub struct IssuedCert<'a> {
    pub serial: &'a str,
    pub expires_at: i64,
}

/// Users, their roles and certificates.
#[async_trait::async_trait]
pub trait Users: Send + Sync {
    /// Creates a user and spends one use of its invite (the host's own admin has none),
    /// atomically. A name that is taken is [`StoreError::Exists`]: an invite never touches an
    /// existing user (see [`Self::reenrol_user`]).
    async fn enrol_user(
        &self,
        token_id: Option<&str>,
        now: i64,
        user: &UserRecord,
        cert: &IssuedCert<'_>,
    ) -> Result<()>;

    /// Gives an existing user a new certificate through a reissue token, and revokes every
    /// certificate issued to them before, atomically. Their role is kept. Returns how many were
    /// revoked; a user who is gone is [`StoreError::NotFound`].
    async fn reenrol_user(&self, token_id: &str, now: i64, name: &str, cert: &IssuedCert<'_>) -> Result<u64>;

    /// A user renewed their certificate: the new one is theirs (the old one stays valid until it
    /// ends, so a renewal whose answer was lost does not lock them out).
    async fn renew_user_cert(&self, name: &str, cert: &IssuedCert<'_>) -> Result<()>;

    /// Removes a user: every certificate issued to them is revoked, their gateway keys and the
    /// invites or reissues still waiting for their name are withdrawn, and the account is marked
    /// removed — kept, so the name (and its number) is never given to anyone else. Returns
    /// whether there was such a user still there.
    async fn remove_user(&self, name: &str, now: i64) -> Result<bool>;

    /// Sets a user's role; whether there was such a user.
    async fn set_user_role(&self, name: &str, role: river_proto::msg::Role) -> Result<bool>;

    /// Disables or enables a user; whether there was such a user.
    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool>;

    /// Revokes the certificate `serial` if it was issued to `name` (a logout); whether it was.
    async fn revoke_user_cert(&self, name: &str, serial: &str, now: i64) -> Result<bool>;

    async fn user(&self, name: &str) -> Result<Option<UserRecord>>;

    async fn users(&self) -> Result<Vec<UserRecord>>;
}

#[async_trait::async_trait]
impl Users for Store {
    async fn enrol_user(
        &self,
        token_id: Option<&str>,
        now: i64,
        user: &UserRecord,
        cert: &IssuedCert<'_>,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        if let Some(id) = token_id {
            spend_token(&mut tx, id, now).await?;
        }
        let added = sqlx::query(
            "INSERT INTO users (name, role, created_at, cert_serial) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO NOTHING",
        )
        .bind(&user.name)
        .bind(user.role.as_str())
        .bind(user.created_at)
        .bind(cert.serial)
        .execute(&mut *tx)
        .await?;
        if added.rows_affected() != 1 {
            return Err(StoreError::Exists(format!("user {}", user.name)));
        }
        record_cert(&mut tx, &user.name, cert).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn reenrol_user(&self, token_id: &str, now: i64, name: &str, cert: &IssuedCert<'_>) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        spend_token(&mut tx, token_id, now).await?;
        let updated = sqlx::query("UPDATE users SET cert_serial = ? WHERE name = ? AND removed_at IS NULL")
            .bind(cert.serial)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::NotFound(format!("user {name}")));
        }
        let revoked = sqlx::query(
            "INSERT OR IGNORE INTO revoked_certs (serial, subject, revoked_at, expires_at)
             SELECT serial, 'user ' || user_name, ?, expires_at FROM user_certs WHERE user_name = ?",
        )
        .bind(now)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        record_cert(&mut tx, name, cert).await?;
        // A lost laptop may hold API tokens too.
        crate::api_tokens::revoke_all(&mut tx, name, now).await?;
        crate::web_sessions::revoke_all(&mut tx, name, now * 1000).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    async fn renew_user_cert(&self, name: &str, cert: &IssuedCert<'_>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE users SET cert_serial = ? WHERE name = ?")
            .bind(cert.serial)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        record_cert(&mut tx, name, cert).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_user(&self, name: &str, now: i64) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT OR IGNORE INTO revoked_certs (serial, subject, revoked_at, expires_at)
             SELECT serial, 'user ' || user_name, ?, expires_at FROM user_certs WHERE user_name = ?",
        )
        .bind(now)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM user_keys WHERE user_name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE tokens SET revoked = 1 WHERE user_name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        crate::api_tokens::revoke_all(&mut tx, name, now).await?;
        crate::web_sessions::revoke_all(&mut tx, name, now * 1000).await?;
        let gone = sqlx::query("UPDATE users SET removed_at = ?, disabled = 1 WHERE name = ? AND removed_at IS NULL")
            .bind(now)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        tx.commit().await?;
        Ok(gone)
    }

    async fn set_user_role(&self, name: &str, role: river_proto::msg::Role) -> Result<bool> {
        Ok(sqlx::query("UPDATE users SET role = ? WHERE name = ?")
            .bind(role.as_str())
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1)
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        Ok(sqlx::query("UPDATE users SET disabled = ? WHERE name = ?")
            .bind(i64::from(disabled))
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 1)
    }

    async fn revoke_user_cert(&self, name: &str, serial: &str, now: i64) -> Result<bool> {
        Ok(sqlx::query(
            "INSERT OR IGNORE INTO revoked_certs (serial, subject, revoked_at, expires_at)
             SELECT serial, 'user ' || user_name, ?, expires_at FROM user_certs WHERE serial = ? AND user_name = ?",
        )
        .bind(now)
        .bind(serial)
        .bind(name)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        sqlx::query("SELECT * FROM users WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn users(&self) -> Result<Vec<UserRecord>> {
        sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_from_row)
            .collect()
    }
}

async fn spend_token(tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>, id: &str, now: i64) -> Result<()> {
    let spent = sqlx::query(
        "UPDATE tokens SET uses_left = uses_left - 1 WHERE id = ? AND uses_left > 0 AND revoked = 0 AND expires_at > ?",
    )
    .bind(id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if spent.rows_affected() != 1 {
        return Err(StoreError::TokenSpent);
    }
    Ok(())
}

async fn record_cert(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    name: &str,
    cert: &IssuedCert<'_>,
) -> Result<()> {
    sqlx::query("INSERT OR IGNORE INTO user_certs (serial, user_name, expires_at) VALUES (?, ?, ?)")
        .bind(cert.serial)
        .bind(name)
        .bind(cert.expires_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
