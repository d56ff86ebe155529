//! Tasks: submitted one at a time or as a batch (one id shared by a group or an array), read
//! back, and changed — the host changes a task only through its lifecycle, then [`Store::update_task`].

use crate::{json, task_from_row, Result, Store, StoreError, TaskRecord};
use river_proto::msg::{Assigned, TaskSpec, TaskStateChange};
use river_task::state::TaskState;
use sqlx::Row as _;

impl Store {
    async fn write_task(&self, t: &TaskRecord, was: Option<TaskState>) -> Result<bool> {
        let id = i64::try_from(t.id).map_err(|_| StoreError::Corrupt(format!("task id {}", t.id)))?;
        let done = sqlx::query(
            "UPDATE tasks SET spec_json = ?, assigned_json = ?, target = ?, state = ?, placement_json = ?, exit_code = ?,
             message = ?, started_at_ms = ?, finished_at_ms = ?
             WHERE id = ? AND (? IS NULL OR state = ?)",
        )
        .bind(json(&t.spec)?)
        .bind(json(&t.assigned)?)
        .bind(&t.target)
        .bind(t.state.as_str())
        .bind(t.placement.as_ref().map(json).transpose()?)
        .bind(t.exit_code)
        .bind(&t.message)
        .bind(t.started_at_ms)
        .bind(t.finished_at_ms)
        .bind(id)
        .bind(was.map(TaskState::as_str))
        .bind(was.map(TaskState::as_str))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
/// Tasks: inserted, read, and changed only from the state a change was decided on.
#[async_trait::async_trait]
pub trait Tasks: Send + Sync {
    /// Queues one task per target (one untargeted task when `targets` is empty), sharing a batch
    /// id (the first task's id), in one transaction. Returns the ids.
    async fn insert_tasks(&self, owner: &str, spec: &TaskSpec, targets: &[String], now_ms: i64) -> Result<Vec<u64>>;

    /// Queues one task per `(spec, target)`, sharing a batch id (the first task's id), in one
    /// transaction: the members of a distributed group, each with its own spec. Returns the ids.
    async fn insert_batch(
        &self,
        owner: &str,
        members: &[(&TaskSpec, &Assigned, Option<&str>)],
        now_ms: i64,
    ) -> Result<Vec<u64>>;

    /// [`Self::insert_batch`], the tasks starting in `state` (`queued`, or `pending_approval`).
    async fn insert_batch_as(
        &self,
        owner: &str,
        members: &[(&TaskSpec, &Assigned, Option<&str>)],
        now_ms: i64,
        state: TaskState,
    ) -> Result<Vec<u64>>;

    async fn task(&self, id: u64) -> Result<Option<TaskRecord>>;

    /// Tasks that have not ended, oldest first: what the scheduler and reconciliation look at, so
    /// their cost does not grow with the history.
    async fn unfinished_tasks(&self) -> Result<Vec<TaskRecord>>;

    /// Tasks that hold a node's resources or may again (assigned, running, paused, lost).
    async fn holding_tasks(&self) -> Result<Vec<TaskRecord>>;

    /// The first `limit` queued tasks, oldest first.
    async fn queued(&self, limit: u32) -> Result<Vec<TaskRecord>>;

    /// Tasks, oldest first; with `state`, only those in it.
    async fn tasks(&self, state: Option<&str>) -> Result<Vec<TaskRecord>>;

    /// Writes a task's mutable fields (a VPS's spec and target change: its keys, its node).
    async fn update_task(&self, t: &TaskRecord) -> Result<()>;

    /// Writes `t` only if its stored state is still `was`; whether it did. A change decided on
    /// a record read earlier never overwrites one made meanwhile (a cancel racing the scheduler).
    async fn update_task_from(&self, t: &TaskRecord, was: TaskState) -> Result<bool>;

    /// Every state task `id` has been in, oldest first (empty for no such task).
    async fn task_history(&self, id: u64) -> Result<Vec<TaskStateChange>>;
}

#[async_trait::async_trait]
impl Tasks for Store {
    async fn insert_tasks(&self, owner: &str, spec: &TaskSpec, targets: &[String], now_ms: i64) -> Result<Vec<u64>> {
        let none = Assigned::default();
        let members: Vec<(&TaskSpec, &Assigned, Option<&str>)> = if targets.is_empty() {
            vec![(spec, &none, None)]
        } else {
            targets.iter().map(|t| (spec, &none, Some(t.as_str()))).collect()
        };
        self.insert_batch(owner, &members, now_ms).await
    }

    async fn insert_batch(
        &self,
        owner: &str,
        members: &[(&TaskSpec, &Assigned, Option<&str>)],
        now_ms: i64,
    ) -> Result<Vec<u64>> {
        self.insert_batch_as(owner, members, now_ms, TaskState::Queued).await
    }

    async fn insert_batch_as(
        &self,
        owner: &str,
        members: &[(&TaskSpec, &Assigned, Option<&str>)],
        now_ms: i64,
        state: TaskState,
    ) -> Result<Vec<u64>> {
        let mut tx = self.write_tx().await?;
        let mut ids = Vec::with_capacity(members.len());
        for (spec, assigned, target) in members {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO tasks (batch, name, owner, spec_json, assigned_json, target, state, submitted_at_ms)
                 VALUES (0, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(&spec.name)
            .bind(owner)
            .bind(json(spec)?)
            .bind(json(assigned)?)
            .bind(target)
            .bind(state.as_str())
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

    async fn task(&self, id: u64) -> Result<Option<TaskRecord>> {
        // An id no row can have (a user may ask for any number) is no task, not a damaged store.
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        sqlx::query("SELECT * FROM tasks WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(task_from_row)
            .transpose()
    }

    async fn unfinished_tasks(&self) -> Result<Vec<TaskRecord>> {
        sqlx::query(concat!(
            "SELECT * FROM tasks WHERE state NOT IN ",
            ended!(),
            " ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(task_from_row)
        .collect()
    }

    async fn holding_tasks(&self) -> Result<Vec<TaskRecord>> {
        sqlx::query(concat!(
            "SELECT * FROM tasks WHERE state IN ",
            holding!(),
            " ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(task_from_row)
        .collect()
    }

    async fn queued(&self, limit: u32) -> Result<Vec<TaskRecord>> {
        sqlx::query("SELECT * FROM tasks WHERE state = 'queued' ORDER BY id LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(task_from_row)
            .collect()
    }

    async fn tasks(&self, state: Option<&str>) -> Result<Vec<TaskRecord>> {
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

    async fn update_task(&self, t: &TaskRecord) -> Result<()> {
        self.write_task(t, None).await.map(|_| ())
    }

    async fn update_task_from(&self, t: &TaskRecord, was: TaskState) -> Result<bool> {
        self.write_task(t, Some(was)).await
    }

    async fn task_history(&self, id: u64) -> Result<Vec<TaskStateChange>> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(Vec::new());
        };
        let rows =
            sqlx::query("SELECT state, at_ms, message, exit_code FROM task_history WHERE task_id = ? ORDER BY seq")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(TaskStateChange {
                    state: r.try_get("state")?,
                    at_ms: r.try_get("at_ms")?,
                    message: r.try_get("message")?,
                    exit_code: r.try_get("exit_code")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    /// Every way of changing a task is in its history, in order, with the task's own times.
    #[tokio::test]
    async fn a_task_history_has_every_state_it_was_in() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("river.db")).await.unwrap();
        let spec = TaskSpec::new("img", vec!["true".into()]);
        let none = Assigned::default();
        let members = vec![(&spec, &none, Some("a")), (&spec, &none, Some("b"))];
        let ids = s
            .insert_batch_as("user gus", &members, 1, TaskState::PendingApproval)
            .await
            .unwrap();
        s.move_batch(ids[0], TaskState::PendingApproval, TaskState::Queued, None, None)
            .await
            .unwrap();
        let states = |h: Vec<TaskStateChange>| h.into_iter().map(|c| c.state).collect::<Vec<_>>();
        assert_eq!(
            states(s.task_history(ids[0]).await.unwrap()),
            ["pending_approval", "queued"]
        );
        let mut t = s.task(ids[0]).await.unwrap().unwrap();
        t.state = TaskState::Running;
        t.started_at_ms = Some(5000);
        s.update_task_from(&t, TaskState::Queued).await.unwrap();
        t.message = Some("node lost".into());
        s.update_task(&t).await.unwrap(); // no change of state: no entry
        t.state = TaskState::Failed;
        t.exit_code = Some(3);
        t.finished_at_ms = Some(9000);
        s.update_task_from(&t, TaskState::Running).await.unwrap();
        // A write decided on a state the task is no longer in changes nothing, history included.
        assert!(!s.update_task_from(&t, TaskState::Queued).await.unwrap());
        let h = s.task_history(ids[0]).await.unwrap();
        assert_eq!(states(h.clone()), ["pending_approval", "queued", "running", "failed"]);
        assert_eq!((h[0].at_ms, h[2].at_ms, h[3].at_ms), (1, 5000, 9000));
        assert_eq!((h[3].exit_code, h[3].message.as_deref()), (Some(3), Some("node lost")));
        assert_eq!(
            states(s.task_history(ids[1]).await.unwrap()),
            ["pending_approval", "queued"]
        );
        assert!(s.task_history(u64::MAX).await.unwrap().is_empty());
    }
}
