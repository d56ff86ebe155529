//! The queue as the scheduler reads it: each user's oldest waiting tasks, so that one user with a
//! thousand tasks waiting does not hide everyone else's behind them.

use crate::prelude::*;
use crate::{task_from_row, Result, Store, TaskRecord};
use river_task::state::TaskState;

/// The queue: who waits, in what order, moved as a batch.
#[async_trait::async_trait]
pub trait Queue: Send + Sync {
    /// The users who have tasks waiting.
    async fn queued_owners(&self) -> Result<Vec<String>>;

    /// Up to `per_owner` of each of `owners`' waiting tasks, oldest first per user (ordered by id
    /// overall). With one user (or none) named, that is just the queue's head.
    async fn queued_per_owner(&self, owners: &[String], per_owner: u32) -> Result<Vec<TaskRecord>>;

    /// How many tasks `owner` has waiting, for the queue or for approval.
    async fn queued_of(&self, owner: &str) -> Result<u64>;

    /// Moves the tasks of batch `batch` that are in state `from` to `to`, with `message` (and a
    /// finish time when `finished_ms`), in one statement: a task that left `from` meanwhile (killed
    /// by its owner while an operator approved it) is left alone. Returns the ids moved.
    async fn move_batch(
        &self,
        batch: u64,
        from: TaskState,
        to: TaskState,
        message: Option<&str>,
        finished_ms: Option<i64>,
    ) -> Result<Vec<u64>>;

    /// How many tasks wait in the queue that were submitted before task `id`.
    async fn queued_before(&self, id: u64) -> Result<u64>;
}

#[async_trait::async_trait]
impl Queue for Store {
    async fn queued_owners(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT owner FROM tasks WHERE state = 'queued'")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn queued_per_owner(&self, owners: &[String], per_owner: u32) -> Result<Vec<TaskRecord>> {
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

    async fn queued_of(&self, owner: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tasks WHERE state IN ('queued', 'pending_approval') AND owner = ?",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn move_batch(
        &self,
        batch: u64,
        from: TaskState,
        to: TaskState,
        message: Option<&str>,
        finished_ms: Option<i64>,
    ) -> Result<Vec<u64>> {
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE tasks SET state = ?, message = COALESCE(?, message), finished_at_ms = COALESCE(?, finished_at_ms)
             WHERE batch = ? AND state = ? RETURNING id",
        )
        .bind(to.as_str())
        .bind(message)
        .bind(finished_ms)
        .bind(batch)
        .bind(from.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut ids: Vec<u64> = ids.into_iter().filter_map(|i| u64::try_from(i).ok()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    async fn queued_before(&self, id: u64) -> Result<u64> {
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE state = 'queued' AND id < ?")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
