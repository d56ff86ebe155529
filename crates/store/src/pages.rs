//! Lists that grow with the cluster's history, a page at a time: no answer holds all of them.

use crate::{task_from_row, Result, Store, TaskRecord};

/// Which tasks a page is of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only tasks in this state.
    pub state: Option<String>,
    /// Only tasks placed on this node.
    pub node: Option<String>,
    /// Only VPSs.
    pub vps: bool,
    /// Only this owner's (`user NAME`).
    pub owner: Option<String>,
}

/// The filter, shared by the page and its count: `?1` state, `?2` node, `?3` VPSs only, `?4`
/// owner. A macro,
/// so the statements stay literals (sqlx takes no SQL built at run time).
macro_rules! task_filter {
    () => {
        "(?1 IS NULL OR state = ?1)
         AND (?2 IS NULL OR json_extract(placement_json, '$.node') = ?2)
         AND (?3 = 0 OR json_extract(spec_json, '$.vps') IS NOT NULL)
         AND (?4 IS NULL OR owner = ?4)"
    };
}

/// Tasks a page at a time, filtered.
#[async_trait::async_trait]
pub trait Pages: Send + Sync {
    /// Up to `limit` tasks matching `q` with ids below `before` (all, without it), newest first,
    /// and how many match `q` in all.
    async fn task_page(&self, q: &TaskQuery, before: Option<u64>, limit: u32) -> Result<(Vec<TaskRecord>, u64)>;
}

#[async_trait::async_trait]
impl Pages for Store {
    async fn task_page(&self, q: &TaskQuery, before: Option<u64>, limit: u32) -> Result<(Vec<TaskRecord>, u64)> {
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let rows = sqlx::query(concat!(
            "SELECT * FROM tasks WHERE ",
            task_filter!(),
            " AND id < ?5 ORDER BY id DESC LIMIT ?6"
        ))
        .bind(&q.state)
        .bind(&q.node)
        .bind(q.vps)
        .bind(&q.owner)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar(concat!("SELECT COUNT(*) FROM tasks WHERE ", task_filter!()))
            .bind(&q.state)
            .bind(&q.node)
            .bind(q.vps)
            .bind(&q.owner)
            .fetch_one(&self.pool)
            .await?;
        let tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
        Ok((tasks, u64::try_from(total).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use river_proto::msg::{TaskPlacement, TaskSpec, VpsSpec};
    use river_task::state::TaskState;

    #[tokio::test]
    async fn pages_go_newest_first_and_filter_in_the_database() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("river.db")).await.unwrap();
        let spec = TaskSpec::new("img", vec!["true".into()]);
        let none = river_proto::msg::Assigned::default();
        let members: Vec<_> = (0..25).map(|_| (&spec, &none, None)).collect();
        let ids = s.insert_batch("user a", &members, 1).await.unwrap();
        // Three run on node b, one of them a VPS.
        for (i, id) in ids.iter().take(3).enumerate() {
            let mut t = s.task(*id).await.unwrap().unwrap();
            t.state = TaskState::Running;
            if i == 0 {
                t.spec.vps = Some(VpsSpec {
                    ssh_keys: Vec::new(),
                    image_sshd: false,
                    generation: 0,
                });
            }
            t.placement = Some(TaskPlacement {
                node: "b".into(),
                cores: vec![0],
                numa: None,
                gpus: Vec::new(),
                memory_bytes: 0,
                ip: None,
                owner: None,
            });
            s.update_task(&t).await.unwrap();
        }
        let all = TaskQuery::default();
        let (first, total) = s.task_page(&all, None, 10).await.unwrap();
        assert_eq!(total, 25);
        assert_eq!(
            first.iter().map(|t| t.id).collect::<Vec<_>>(),
            (16..=25).rev().collect::<Vec<u64>>()
        );
        let (next, _) = s.task_page(&all, Some(16), 10).await.unwrap();
        assert_eq!(next.first().map(|t| t.id), Some(15));
        let (last, _) = s.task_page(&all, Some(3), 10).await.unwrap();
        assert_eq!(last.iter().map(|t| t.id).collect::<Vec<_>>(), vec![2, 1]);

        let on_b = TaskQuery {
            node: Some("b".into()),
            ..Default::default()
        };
        assert_eq!(s.task_page(&on_b, None, 10).await.unwrap().1, 3);
        let running = TaskQuery {
            state: Some("running".into()),
            ..Default::default()
        };
        assert_eq!(s.task_page(&running, None, 2).await.unwrap().0.len(), 2);
        let vpss = TaskQuery {
            vps: true,
            ..Default::default()
        };
        let (v, n) = s.task_page(&vpss, None, 10).await.unwrap();
        assert_eq!((v.len(), n, v[0].id), (1, 1, 1));
    }
}
