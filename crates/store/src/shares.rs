//! VPSs shared with colleagues.

use crate::{Result, Store};

/// Who else may reach a VPS.
#[async_trait::async_trait]
pub trait Shares: Send + Sync {
    /// Lets `user` reach VPS `task`; whether they could not before.
    async fn share_vps(&self, task: u64, user: &str, now_ms: i64) -> Result<bool>;

    /// Stops letting `user` reach VPS `task`; whether they could.
    async fn unshare_vps(&self, task: u64, user: &str) -> Result<bool>;

    /// Who VPS `task` is shared with, by name.
    async fn vps_shares(&self, task: u64) -> Result<Vec<String>>;
}

#[async_trait::async_trait]
impl Shares for Store {
    async fn share_vps(&self, task: u64, user: &str, now_ms: i64) -> Result<bool> {
        let id = i64::try_from(task).unwrap_or(i64::MAX);
        Ok(
            sqlx::query("INSERT OR IGNORE INTO vps_shares (task_id, user_name, added_at_ms) VALUES (?, ?, ?)")
                .bind(id)
                .bind(user)
                .bind(now_ms)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }

    async fn unshare_vps(&self, task: u64, user: &str) -> Result<bool> {
        let id = i64::try_from(task).unwrap_or(i64::MAX);
        Ok(
            sqlx::query("DELETE FROM vps_shares WHERE task_id = ? AND user_name = ?")
                .bind(id)
                .bind(user)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }

    async fn vps_shares(&self, task: u64) -> Result<Vec<String>> {
        let id = i64::try_from(task).unwrap_or(i64::MAX);
        Ok(
            sqlx::query_scalar("SELECT user_name FROM vps_shares WHERE task_id = ? ORDER BY user_name")
                .bind(id)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
