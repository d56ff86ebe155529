//! Per-user overrides of the cluster's limits.

use crate::{Result, Store};
use river_proto::msg::LimitValues;
use sqlx::Row as _;

fn value(r: &sqlx::sqlite::SqliteRow, col: &str) -> Result<Option<u32>> {
    Ok(r.try_get::<Option<i64>, _>(col)?
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX)))
}

/// Per-user limits and what counts against them.
#[async_trait::async_trait]
pub trait Limits: Send + Sync {
    /// Every user's overrides, by user name.
    async fn user_limits(&self) -> Result<Vec<(String, LimitValues)>>;

    /// The images (ids) of every archive the host keeps: environment versions and VPS snapshots.
    /// Nodes remove the images they loaded from the host that are not among them.
    async fn archive_image_ids(&self) -> Result<Vec<String>>;

    /// Bytes of archives the host keeps for `owner` (`user NAME`): the environment versions they
    /// made and their VPSs' snapshots (an archive two of them share counts for each).
    async fn archive_bytes_of(&self, owner: &str) -> Result<u64>;

    /// Replaces `user`'s overrides (all unset: the row goes).
    async fn set_user_limits(&self, user: &str, v: &LimitValues) -> Result<()>;
}

#[async_trait::async_trait]
impl Limits for Store {
    async fn user_limits(&self) -> Result<Vec<(String, LimitValues)>> {
        sqlx::query("SELECT * FROM user_limits ORDER BY user_name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("user_name")?,
                    LimitValues {
                        queued: value(r, "queued")?,
                        running_cores: value(r, "running_cores")?,
                        running_gpus: value(r, "running_gpus")?,
                        vps: value(r, "vps")?,
                        archive_mib: value(r, "archive_mib")?,
                    },
                ))
            })
            .collect()
    }

    async fn archive_image_ids(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT image_id FROM environment_versions WHERE image_id IS NOT NULL
             UNION SELECT image_id FROM vps_snapshots",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn archive_bytes_of(&self, owner: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT SUM(size) FROM environment_versions WHERE created_by = ?1), 0)
                  + COALESCE((SELECT SUM(s.size) FROM vps_snapshots s JOIN tasks t ON t.id = s.vps WHERE t.owner = ?1), 0)",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn set_user_limits(&self, user: &str, v: &LimitValues) -> Result<()> {
        if *v == LimitValues::default() {
            sqlx::query("DELETE FROM user_limits WHERE user_name = ?")
                .bind(user)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO user_limits (user_name, queued, running_cores, running_gpus, vps, archive_mib)
             VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT(user_name) DO UPDATE SET queued = excluded.queued, running_cores = excluded.running_cores,
             running_gpus = excluded.running_gpus, vps = excluded.vps, archive_mib = excluded.archive_mib",
        )
        .bind(user)
        .bind(v.queued.map(i64::from))
        .bind(v.running_cores.map(i64::from))
        .bind(v.running_gpus.map(i64::from))
        .bind(v.vps.map(i64::from))
        .bind(v.archive_mib.map(i64::from))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
