//! Environments and their versions, VPS snapshots, and the archives both keep (content-addressed:
//! equal archives are stored once).

use crate::{Result, Store, StoreError};
use river_proto::msg::{ArchiveRef, EnvVersion, EnvView, VpsSnapshot};
use sqlx::Row;

/// How many environment versions and VPS snapshots refer to the archive with digest `?1`.
const DIGEST_USES: &str = "SELECT (SELECT COUNT(*) FROM environment_versions WHERE digest = ?1)
                                + (SELECT COUNT(*) FROM vps_snapshots WHERE digest = ?1)";

impl Store {
    async fn envs_where(&self, name: Option<&str>) -> Result<Vec<EnvView>> {
        let envs = sqlx::query("SELECT * FROM environments WHERE ?1 IS NULL OR name = ?1 ORDER BY name")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        let versions = sqlx::query("SELECT * FROM environment_versions WHERE ?1 IS NULL OR name = ?1 ORDER BY version")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        let mut out: Vec<EnvView> = envs
            .iter()
            .map(|r| EnvView {
                name: r.get("name"),
                owner: r.get("owner"),
                created_at_ms: r.get("created_at_ms"),
                versions: Vec::new(),
            })
            .collect();
        for r in &versions {
            let env: String = r.get("name");
            let Some(view) = out.iter_mut().find(|e| e.name == env) else {
                continue;
            };
            let archive = match (
                r.get::<Option<String>, _>("image_id"),
                r.get::<Option<String>, _>("digest"),
            ) {
                (Some(image_id), Some(digest)) => Some(ArchiveRef {
                    image_id,
                    digest,
                    size: u64::try_from(r.get::<Option<i64>, _>("size").unwrap_or(0)).unwrap_or(0),
                }),
                _ => None,
            };
            view.versions.push(EnvVersion {
                version: u32::try_from(r.get::<i64, _>("version")).unwrap_or(0),
                image: r.get("image"),
                archive,
                created_by: r.get("created_by"),
                created_at_ms: r.get("created_at_ms"),
                message: r.get("message"),
                fetches: u64::try_from(r.get::<i64, _>("fetches")).unwrap_or(0),
            });
        }
        Ok(out)
    }
}
/// Environments, their versions and archives, and VPS snapshots.
#[async_trait::async_trait]
pub trait Archives: Send + Sync {
    /// A new environment with its first version; `Exists` if the name is taken.
    async fn create_env(&self, name: &str, owner: &str, now_ms: i64, first: &EnvVersion) -> Result<()>;

    /// Adds `v` as the environment's next version and returns its number (`v.version` is ignored).
    async fn add_env_version(&self, name: &str, v: &EnvVersion) -> Result<u32>;

    async fn env(&self, name: &str) -> Result<Option<EnvView>>;

    async fn envs(&self) -> Result<Vec<EnvView>>;

    /// Removes an environment; returns the archive digests no other version refers to any more
    /// (the caller deletes those files), or `None` if there was no such environment.
    async fn remove_env(&self, name: &str) -> Result<Option<Vec<String>>>;

    /// Whether some environment version or VPS snapshot refers to the archive with this digest.
    async fn archive_known(&self, digest: &str) -> Result<bool>;

    /// Records a snapshot under the VPS's next number (its `seq` is ignored); returns that number.
    async fn add_snapshot(&self, s: &VpsSnapshot) -> Result<u32>;

    /// A VPS's snapshots, oldest first.
    async fn snapshots(&self, vps: u64) -> Result<Vec<VpsSnapshot>>;

    /// Removes a snapshot. `None`: there was none; `Some(orphan)`: its archive's digest if
    /// nothing else refers to it any more (the caller deletes that file).
    async fn remove_snapshot(&self, vps: u64, seq: u32) -> Result<Option<Option<String>>>;

    /// Counts one complete fetch of the archive with this digest.
    async fn count_fetch(&self, digest: &str) -> Result<()>;
}

#[async_trait::async_trait]
impl Archives for Store {
    async fn create_env(&self, name: &str, owner: &str, now_ms: i64, first: &EnvVersion) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(
            "INSERT INTO environments (name, owner, created_at_ms) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(owner)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Exists(format!("environment {name}")));
        }
        insert_version(&mut tx, name, first).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn add_env_version(&self, name: &str, v: &EnvVersion) -> Result<u32> {
        let mut tx = self.write_tx().await?;
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM environment_versions WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let Some(last) = last else {
            return Err(StoreError::Corrupt(format!("environment {name} has no versions")));
        };
        let next = u32::try_from(last + 1).map_err(|_| StoreError::Corrupt(format!("version {last}")))?;
        insert_version(
            &mut tx,
            name,
            &EnvVersion {
                version: next,
                ..v.clone()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(next)
    }

    async fn env(&self, name: &str) -> Result<Option<EnvView>> {
        Ok(self.envs_where(Some(name)).await?.pop())
    }

    async fn envs(&self) -> Result<Vec<EnvView>> {
        self.envs_where(None).await
    }

    async fn remove_env(&self, name: &str) -> Result<Option<Vec<String>>> {
        let mut tx = self.write_tx().await?;
        let digests: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT digest FROM environment_versions WHERE name = ? AND digest IS NOT NULL",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM environment_versions WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM environments WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Ok(None);
        }
        let mut orphans = Vec::new();
        for d in digests {
            let used: i64 = sqlx::query_scalar(DIGEST_USES).bind(&d).fetch_one(&mut *tx).await?;
            if used == 0 {
                orphans.push(d);
            }
        }
        tx.commit().await?;
        Ok(Some(orphans))
    }

    async fn archive_known(&self, digest: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(DIGEST_USES)
            .bind(digest)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    async fn add_snapshot(&self, s: &VpsSnapshot) -> Result<u32> {
        let mut tx = self.write_tx().await?;
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM vps_snapshots WHERE vps = ?")
            .bind(s.vps as i64)
            .fetch_one(&mut *tx)
            .await?;
        let seq = last.unwrap_or(0) + 1;
        sqlx::query(
            "INSERT INTO vps_snapshots (vps, seq, image, image_id, digest, size, node, created_by, created_at_ms, message, auto)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.vps as i64)
        .bind(seq)
        .bind(&s.image)
        .bind(&s.archive.image_id)
        .bind(&s.archive.digest)
        .bind(s.archive.size as i64)
        .bind(&s.node)
        .bind(&s.created_by)
        .bind(s.created_at_ms)
        .bind(&s.message)
        .bind(s.auto)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(u32::try_from(seq).unwrap_or(u32::MAX))
    }

    async fn snapshots(&self, vps: u64) -> Result<Vec<VpsSnapshot>> {
        let rows = sqlx::query("SELECT * FROM vps_snapshots WHERE vps = ? ORDER BY seq")
            .bind(vps as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| VpsSnapshot {
                vps,
                seq: u32::try_from(r.get::<i64, _>("seq")).unwrap_or(0),
                image: r.get("image"),
                archive: ArchiveRef {
                    image_id: r.get("image_id"),
                    digest: r.get("digest"),
                    size: u64::try_from(r.get::<i64, _>("size")).unwrap_or(0),
                },
                node: r.get("node"),
                created_by: r.get("created_by"),
                created_at_ms: r.get("created_at_ms"),
                message: r.get("message"),
                auto: r.get::<i64, _>("auto") != 0,
            })
            .collect())
    }

    async fn remove_snapshot(&self, vps: u64, seq: u32) -> Result<Option<Option<String>>> {
        let mut tx = self.write_tx().await?;
        let digest: Option<String> =
            sqlx::query_scalar("DELETE FROM vps_snapshots WHERE vps = ? AND seq = ? RETURNING digest")
                .bind(vps as i64)
                .bind(seq)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(digest) = digest else {
            return Ok(None);
        };
        let used: i64 = sqlx::query_scalar(DIGEST_USES)
            .bind(&digest)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some((used == 0).then_some(digest)))
    }

    async fn count_fetch(&self, digest: &str) -> Result<()> {
        sqlx::query("UPDATE environment_versions SET fetches = fetches + 1 WHERE digest = ?")
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

async fn insert_version(tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, name: &str, v: &EnvVersion) -> Result<()> {
    let a = v.archive.as_ref();
    sqlx::query(
        "INSERT INTO environment_versions (name, version, image, image_id, digest, size, created_by, created_at_ms, message)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(name)
    .bind(i64::from(v.version))
    .bind(&v.image)
    .bind(a.map(|a| &a.image_id))
    .bind(a.map(|a| &a.digest))
    .bind(a.map(|a| i64::try_from(a.size).unwrap_or(i64::MAX)))
    .bind(&v.created_by)
    .bind(v.created_at_ms)
    .bind(&v.message)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
