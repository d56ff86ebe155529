//! The audit trail: who did what, when — joins, logins, role changes, removals, refusals.

use crate::{Result, Store};
use sqlx::Row as _;

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub at_ms: i64,
    /// Who acted: `user NAME`, `node NAME`, `host`.
    pub actor: String,
    /// What kind of thing happened: `user.login`, `task.submit`, `refused`, …
    pub action: String,
    pub detail: String,
}

/// The audit trail.
#[async_trait::async_trait]
pub trait Audit: Send + Sync {
    async fn event(&self, now_ms: i64, actor: &str, action: &str, detail: &str) -> Result<()>;

    /// The newest `limit` events, newest first: all of them, or those by or about user `user`
    /// (acting as `user NAME`, or named first in a `user.*` event's detail), at or after
    /// `since_ms`.
    async fn events(&self, user: Option<&str>, since_ms: Option<i64>, limit: u32) -> Result<Vec<EventRecord>>;
}

#[async_trait::async_trait]
impl Audit for Store {
    async fn event(&self, now_ms: i64, actor: &str, action: &str, detail: &str) -> Result<()> {
        sqlx::query("INSERT INTO events (at_ms, actor, action, detail) VALUES (?, ?, ?, ?)")
            .bind(now_ms)
            .bind(actor)
            .bind(action)
            .bind(detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn events(&self, user: Option<&str>, since_ms: Option<i64>, limit: u32) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(
            "SELECT at_ms, actor, action, detail FROM events
             WHERE at_ms >= ?1
               AND (?2 IS NULL OR actor = 'user ' || ?2
                    OR (substr(action, 1, 5) = 'user.' AND (detail = ?2 OR substr(detail, 1, length(?2) + 1) = ?2 || ':')))
             ORDER BY id DESC LIMIT ?3",
        )
        .bind(since_ms.unwrap_or(i64::MIN))
        .bind(user)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRecord {
                    at_ms: r.try_get("at_ms")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }
}
