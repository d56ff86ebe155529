//! Overlay subnets and IP reservations.

use crate::{Result, Store, StoreError};

/// One reserved address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub ip: String,
    pub node: String,
    pub owner: String,
    pub nonce: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// The task that claimed it; it is released when that task ends.
    pub task_id: Option<u64>,
}

type ReservationRow = (String, String, String, String, i64, i64, Option<i64>);

fn reservation(r: ReservationRow) -> Reservation {
    Reservation {
        ip: r.0,
        node: r.1,
        owner: r.2,
        nonce: r.3,
        created_at_ms: r.4,
        expires_at_ms: r.5,
        task_id: r.6.and_then(|t| u64::try_from(t).ok()),
    }
}

/// The overlay's subnets per node and reserved addresses.
#[async_trait::async_trait]
pub trait Addresses: Send + Sync {
    /// Every member's subnet index and underlay address, by node name.
    async fn overlay_subnets(&self) -> Result<Vec<(String, u64, Option<String>)>>;

    /// Gives `node` subnet `idx` (chosen by the caller among the free ones), or records its new
    /// underlay address if it has one already. Returns the node's index; `Exists` if another
    /// node took `idx` meanwhile.
    async fn assign_subnet(&self, node: &str, idx: u64, underlay: Option<&str>) -> Result<u64>;

    /// Frees a removed node's subnet and drops its reservations.
    async fn remove_subnet(&self, node: &str) -> Result<()>;

    /// Records a reservation; `Exists` if the address is reserved already.
    async fn insert_reservation(&self, r: &Reservation) -> Result<()>;

    async fn reservations(&self) -> Result<Vec<Reservation>>;

    async fn reservation(&self, ip: &str) -> Result<Option<Reservation>>;

    /// Ties the unclaimed, unexpired reservation of `ip` with this `nonce` to `task`. False if
    /// it is gone, expired, claimed already or was reissued (another nonce).
    async fn claim_reservation(&self, ip: &str, nonce: &str, task: u64, now_ms: i64) -> Result<bool>;

    async fn delete_reservation(&self, ip: &str) -> Result<bool>;

    /// Releases what nobody can use any more: unclaimed reservations past their expiry, and
    /// claimed ones whose task has ended or no longer exists. Returns the addresses freed.
    async fn release_reservations(&self, now_ms: i64) -> Result<Vec<String>>;
}

#[async_trait::async_trait]
impl Addresses for Store {
    async fn overlay_subnets(&self) -> Result<Vec<(String, u64, Option<String>)>> {
        let rows: Vec<(String, i64, Option<String>)> =
            sqlx::query_as("SELECT node, idx, underlay FROM overlay_subnets ORDER BY idx")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(n, i, u)| (n, u64::try_from(i).unwrap_or(0), u))
            .collect())
    }

    async fn assign_subnet(&self, node: &str, idx: u64, underlay: Option<&str>) -> Result<u64> {
        let i = i64::try_from(idx).map_err(|_| StoreError::Corrupt("subnet index".into()))?;
        // One statement, so no read transaction has to be upgraded to a write (which SQLite
        // refuses at once, busy timeout or not, when another connection writes meanwhile).
        let got: i64 = sqlx::query_scalar(
            "INSERT INTO overlay_subnets (node, idx, underlay) VALUES (?, ?, ?)
             ON CONFLICT (node) DO UPDATE SET underlay = COALESCE(excluded.underlay, overlay_subnets.underlay)
             RETURNING idx",
        )
        .bind(node)
        .bind(i)
        .bind(underlay)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Exists(format!("overlay subnet {idx}")),
            e => e.into(),
        })?;
        Ok(u64::try_from(got).unwrap_or(0))
    }

    async fn remove_subnet(&self, node: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM overlay_subnets WHERE node = ?")
            .bind(node)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM ip_reservations WHERE node = ?")
            .bind(node)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_reservation(&self, r: &Reservation) -> Result<()> {
        sqlx::query(
            "INSERT INTO ip_reservations (ip, node, owner, nonce, created_at_ms, expires_at_ms, task_id)
             VALUES (?, ?, ?, ?, ?, ?, NULL)",
        )
        .bind(&r.ip)
        .bind(&r.node)
        .bind(&r.owner)
        .bind(&r.nonce)
        .bind(r.created_at_ms)
        .bind(r.expires_at_ms)
        .execute(&self.pool)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Exists(format!("reservation of {}", r.ip))
            }
            e => e.into(),
        })?;
        Ok(())
    }

    async fn reservations(&self) -> Result<Vec<Reservation>> {
        let rows: Vec<ReservationRow> = sqlx::query_as(
            "SELECT ip, node, owner, nonce, created_at_ms, expires_at_ms, task_id FROM ip_reservations ORDER BY node, ip",
        )
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(reservation).collect())
    }

    async fn reservation(&self, ip: &str) -> Result<Option<Reservation>> {
        let row: Option<ReservationRow> = sqlx::query_as(
            "SELECT ip, node, owner, nonce, created_at_ms, expires_at_ms, task_id FROM ip_reservations WHERE ip = ?",
        )
        .bind(ip)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(reservation))
    }

    async fn claim_reservation(&self, ip: &str, nonce: &str, task: u64, now_ms: i64) -> Result<bool> {
        let task = i64::try_from(task).map_err(|_| StoreError::Corrupt("task id".into()))?;
        let done = sqlx::query(
            "UPDATE ip_reservations SET task_id = ?
             WHERE ip = ? AND nonce = ? AND task_id IS NULL AND expires_at_ms > ?",
        )
        .bind(task)
        .bind(ip)
        .bind(nonce)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_reservation(&self, ip: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM ip_reservations WHERE ip = ?")
            .bind(ip)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_reservations(&self, now_ms: i64) -> Result<Vec<String>> {
        let freed: Vec<String> = sqlx::query_scalar(concat!(
            "DELETE FROM ip_reservations
                 WHERE (task_id IS NULL AND expires_at_ms <= ?)
                    OR (task_id IS NOT NULL AND NOT EXISTS (
                          SELECT 1 FROM tasks t WHERE t.id = ip_reservations.task_id
                          AND t.state NOT IN ",
            ended!(),
            "))
                 RETURNING ip"
        ))
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(freed)
    }
}
