//! The dashboard's logins at the host's own address: one-time links and browser sessions. The
//! secrets themselves are never stored, only their SHA-256.

use crate::{role, Result, Store, StoreError};
use river_proto::msg::Role;
use sqlx::Row as _;

/// A browser session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSessionRecord {
    /// Public: what the session is listed and revoked by (the cookie holds it and the secret).
    pub id: String,
    pub user: String,
    /// The most it may do; the user's own role caps it further when used.
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub last_seen_ms: Option<i64>,
    /// Where it logged in from, and the browser as it named itself.
    pub address: String,
    pub agent: String,
    pub revoked_at_ms: Option<i64>,
}

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<WebSessionRecord> {
    Ok(WebSessionRecord {
        id: r.try_get("id")?,
        user: r.try_get("user_name")?,
        role: role(r.try_get::<&str, _>("role")?)?,
        secret_hash: r.try_get("secret_hash")?,
        created_at_ms: r.try_get("created_at_ms")?,
        expires_at_ms: r.try_get("expires_at_ms")?,
        last_seen_ms: r.try_get("last_seen_ms")?,
        address: r.try_get("address")?,
        agent: r.try_get("agent")?,
        revoked_at_ms: r.try_get("revoked_at_ms")?,
    })
}

/// Sessions ended (expired or revoked) this long ago are forgotten.
const KEPT_MS: i64 = 30 * 86_400_000;

/// Login links and browser sessions.
#[async_trait::async_trait]
pub trait WebLogins: Send + Sync {
    /// Stores a login link (the hash of its key) for `user`, at most at `role`.
    async fn insert_web_link(
        &self,
        key_hash: &str,
        user: &str,
        role: Role,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<()>;

    /// Spends the link with this key hash: whose it is and their role then, if it is neither
    /// spent nor expired. A link works once, however many browsers try it at the same moment.
    async fn take_web_link(&self, key_hash: &str, now_ms: i64) -> Result<Option<(String, Role)>>;

    /// Stores a new session; an id in use is [`StoreError::Exists`].
    async fn insert_web_session(&self, s: &WebSessionRecord) -> Result<()>;

    /// The session with this id, ended or not.
    async fn web_session(&self, id: &str) -> Result<Option<WebSessionRecord>>;

    /// Live sessions (neither revoked nor expired) of `user` (everyone's with `None`), newest first.
    async fn web_sessions(&self, user: Option<&str>, now_ms: i64) -> Result<Vec<WebSessionRecord>>;

    /// Revokes `user`'s live session `id`, or all of their live sessions without one; the ids
    /// revoked.
    async fn revoke_web_sessions(&self, user: &str, id: Option<&str>, now_ms: i64) -> Result<Vec<String>>;

    /// Notes a use of a session, at most once a minute.
    async fn touch_web_session(&self, id: &str, now_ms: i64) -> Result<()>;
}

#[async_trait::async_trait]
impl WebLogins for Store {
    async fn insert_web_link(
        &self,
        key_hash: &str,
        user: &str,
        role: Role,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM web_links WHERE expires_at_ms <= ?")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO web_links (key_hash, user_name, role, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(key_hash)
        .bind(user)
        .bind(role.as_str())
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn take_web_link(&self, key_hash: &str, now_ms: i64) -> Result<Option<(String, Role)>> {
        let row = sqlx::query("DELETE FROM web_links WHERE key_hash = ? RETURNING user_name, role, expires_at_ms")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        if r.try_get::<i64, _>("expires_at_ms")? <= now_ms {
            return Ok(None);
        }
        Ok(Some((r.try_get("user_name")?, role(r.try_get::<&str, _>("role")?)?)))
    }

    async fn insert_web_session(&self, s: &WebSessionRecord) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM web_sessions WHERE MIN(expires_at_ms, COALESCE(revoked_at_ms, expires_at_ms)) < ?")
            .bind(s.created_at_ms - KEPT_MS)
            .execute(&mut *tx)
            .await?;
        let added = sqlx::query(
            "INSERT INTO web_sessions (id, user_name, role, secret_hash, created_at_ms, expires_at_ms, address, agent)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&s.id)
        .bind(&s.user)
        .bind(s.role.as_str())
        .bind(&s.secret_hash)
        .bind(s.created_at_ms)
        .bind(s.expires_at_ms)
        .bind(&s.address)
        .bind(&s.agent)
        .execute(&mut *tx)
        .await?;
        if added.rows_affected() != 1 {
            return Err(StoreError::Exists(format!("web session {}", s.id)));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn web_session(&self, id: &str) -> Result<Option<WebSessionRecord>> {
        sqlx::query("SELECT * FROM web_sessions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    async fn web_sessions(&self, user: Option<&str>, now_ms: i64) -> Result<Vec<WebSessionRecord>> {
        sqlx::query(
            "SELECT * FROM web_sessions WHERE (?1 IS NULL OR user_name = ?1)
             AND revoked_at_ms IS NULL AND expires_at_ms > ?2 ORDER BY created_at_ms DESC, id",
        )
        .bind(user)
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(from_row)
        .collect()
    }

    async fn revoke_web_sessions(&self, user: &str, id: Option<&str>, now_ms: i64) -> Result<Vec<String>> {
        let mut tx = self.write_tx().await?;
        let ids = revoke(&mut tx, user, id, now_ms).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn touch_web_session(&self, id: &str, now_ms: i64) -> Result<()> {
        sqlx::query(
            "UPDATE web_sessions SET last_seen_ms = ?1 WHERE id = ?2 AND (last_seen_ms IS NULL OR last_seen_ms < ?1 - 60000)",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

async fn revoke(tx: &mut sqlx::SqliteConnection, user: &str, id: Option<&str>, now_ms: i64) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "UPDATE web_sessions SET revoked_at_ms = ?1
         WHERE user_name = ?2 AND (?3 IS NULL OR id = ?3) AND revoked_at_ms IS NULL AND expires_at_ms > ?1
         RETURNING id",
    )
    .bind(now_ms)
    .bind(user)
    .bind(id)
    .fetch_all(tx)
    .await?;
    rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
}

/// Ends all of a user's sessions and unspent links, inside a transaction of the caller's (a
/// removal, a reissue).
pub(crate) async fn revoke_all(tx: &mut sqlx::SqliteConnection, user: &str, now_ms: i64) -> Result<()> {
    revoke(&mut *tx, user, None, now_ms).await?;
    sqlx::query("DELETE FROM web_links WHERE user_name = ?")
        .bind(user)
        .execute(tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, user: &str, created: i64) -> WebSessionRecord {
        WebSessionRecord {
            id: id.into(),
            user: user.into(),
            role: Role::User,
            secret_hash: format!("hash-{id}"),
            created_at_ms: created,
            expires_at_ms: created + 1000,
            last_seen_ms: None,
            address: "127.0.0.1".into(),
            agent: "test".into(),
            revoked_at_ms: None,
        }
    }

    #[tokio::test]
    async fn a_link_works_once_and_not_after_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("river.db")).await.unwrap();
        s.insert_web_link("k1", "alice", Role::Viewer, 0, 100).await.unwrap();
        s.insert_web_link("k2", "alice", Role::User, 0, 100).await.unwrap();
        assert_eq!(
            s.take_web_link("k1", 50).await.unwrap(),
            Some(("alice".into(), Role::Viewer))
        );
        assert_eq!(s.take_web_link("k1", 50).await.unwrap(), None, "spent");
        assert_eq!(s.take_web_link("k2", 100).await.unwrap(), None, "expired");
        assert_eq!(s.take_web_link("nope", 0).await.unwrap(), None);
    }

    #[tokio::test]
    async fn sessions_are_listed_while_live_and_revoked_one_or_all() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("river.db")).await.unwrap();
        for (id, user, at) in [("a1", "alice", 10), ("a2", "alice", 20), ("b1", "bob", 30)] {
            s.insert_web_session(&session(id, user, at)).await.unwrap();
        }
        assert!(matches!(
            s.insert_web_session(&session("a1", "alice", 40)).await,
            Err(StoreError::Exists(_))
        ));
        let ids = |v: Vec<WebSessionRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(s.web_sessions(Some("alice"), 100).await.unwrap()), ["a2", "a1"]);
        assert_eq!(ids(s.web_sessions(None, 100).await.unwrap()), ["b1", "a2", "a1"]);
        // a1 expires at 1010.
        assert_eq!(ids(s.web_sessions(Some("alice"), 1015).await.unwrap()), ["a2"]);
        // Bob's session is not Alice's to end.
        assert!(s
            .revoke_web_sessions("alice", Some("b1"), 100)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(s.revoke_web_sessions("alice", Some("a1"), 100).await.unwrap(), ["a1"]);
        assert_eq!(s.web_session("a1").await.unwrap().unwrap().revoked_at_ms, Some(100));
        assert_eq!(s.revoke_web_sessions("alice", None, 200).await.unwrap(), ["a2"]);
        assert!(s.web_sessions(Some("alice"), 200).await.unwrap().is_empty());
        assert_eq!(ids(s.web_sessions(None, 200).await.unwrap()), ["b1"]);
        s.touch_web_session("b1", 500).await.unwrap();
        s.touch_web_session("b1", 530).await.unwrap();
        assert_eq!(s.web_session("b1").await.unwrap().unwrap().last_seen_ms, Some(500));
    }
}
