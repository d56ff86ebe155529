//! The queue as the scheduler reads it: each user's oldest waiting tasks, so that one user with a
//! thousand tasks waiting does not hide everyone else's behind them.

use crate::{task_from_row, Result, Store, TaskRecord};

impl Store {
    /// The users who have tasks waiting.
    pub async fn queued_owners(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT owner FROM tasks WHERE state = 'queued'")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Up to `per_owner` of each of `owners`' waiting tasks, oldest first per user (ordered by id
    /// overall). With one user (or none) named, that is just the queue's head.
    pub async fn queued_per_owner(&self, owners: &[String], per_owner: u32) -> Result<Vec<TaskRecord>> {
        if owners.len() <= 1 {
            return self.queued(per_owner).await;
        }
        let mut all = Vec::new();
        for owner in owners {
            let rows = sqlx::query("SELECT * FROM tasks WHERE state = 'queued' AND owner = ? ORDER BY id LIMIT ?")
                .bind(owner)
                .bind(i64::from(per_owner))
                .fetch_all(&self.pool)
                .await?;
            for r in &rows {
                all.push(task_from_row(r)?);
            }
        }
        all.sort_by_key(|t| t.id);
        Ok(all)
    }

    /// How many tasks `owner` has waiting.
    pub async fn queued_of(&self, owner: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE state = 'queued' AND owner = ?")
            .bind(owner)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
