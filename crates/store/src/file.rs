//! The database file itself: opening it safely, noticing damage, and copying it while in use.

use crate::prelude::*;
use crate::{Result, Store, StoreError};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Connection as _;
use std::path::Path;
use std::time::Duration;

impl Store {
    /// Opens (creating if needed) the database file, checks that it is not damaged and brings its
    /// schema up to date. A damaged file is [`StoreError::Damaged`], before anything is written.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A connection whose COMMIT failed (a full disk) can come back still counting an open
            // transaction that SQLite has already rolled back; every later `BEGIN` on it would
            // fail. Such a connection is closed instead of being handed out again. The ping lets
            // the rollback its transaction queued when dropped run first.
            .before_acquire(|conn, _| {
                Box::pin(async move {
                    if !conn.is_in_transaction() {
                        return Ok(true);
                    }
                    conn.ping().await?;
                    Ok(!conn.is_in_transaction())
                })
            })
            .connect_with(opts)
            .await
            .map_err(damaged)?;
        let store = Self { pool };
        store.check().await?;
        sqlx::migrate!("./migrations").run(&store.pool).await?;
        Ok(store)
    }

    /// A consistent copy of the database file at `src`, which a running host may be using, into
    /// `dest` (which must not exist). Opens `src` read-only and runs no migration: the copy is
    /// the database exactly as the host has it. Refuses a damaged source.
    pub async fn copy_file(src: &Path, dest: &Path) -> Result<()> {
        if !src.exists() {
            return Err(StoreError::Corrupt(format!("no database at {}", src.display())));
        }
        let opts = SqliteConnectOptions::new()
            .filename(src)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(damaged)?;
        let store = Self { pool };
        let copied = async {
            store.check().await?;
            store.backup_into(dest).await
        }
        .await;
        store.close().await;
        copied
    }
}
/// The store as a whole: its check, backups, id floors.
#[async_trait::async_trait]
pub trait Maintenance: Send + Sync {
    /// SQLite's own consistency check of every page and index. `Damaged` says what it found.
    async fn check(&self) -> Result<()>;

    /// A consistent copy of the whole database at one moment, written to `dest` (which must not
    /// exist) while the database stays in use. The copy is a plain SQLite file, compacted.
    async fn backup_into(&self, dest: &Path) -> Result<()>;

    /// After a restore: ids handed out from now on start above `task_floor` (tasks and VPSs) and
    /// `user_floor` (users' numbers), so none repeats one given out after the backup was taken,
    /// which runners may still hold results or files for.
    async fn raise_id_floors(&self, task_floor: i64, user_floor: i64) -> Result<()>;

    /// Whether the database records any node or user: one that does not is a new cluster's.
    async fn is_empty(&self) -> Result<bool>;
}

#[async_trait::async_trait]
impl Maintenance for Store {
    async fn check(&self) -> Result<()> {
        let found: Vec<String> = sqlx::query_scalar("PRAGMA quick_check(5)")
            .fetch_all(&self.pool)
            .await
            .map_err(damaged)?;
        if found.len() == 1 && found[0] == "ok" {
            return Ok(());
        }
        Err(StoreError::Damaged(found.join("; ")))
    }

    async fn backup_into(&self, dest: &Path) -> Result<()> {
        let dest = dest
            .to_str()
            .ok_or_else(|| StoreError::Corrupt(format!("backup path {} is not UTF-8", dest.display())))?;
        sqlx::query("VACUUM INTO ?").bind(dest).execute(&self.pool).await?;
        Ok(())
    }

    async fn raise_id_floors(&self, task_floor: i64, user_floor: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for (table, floor) in [("tasks", task_floor), ("user_numbers", user_floor)] {
            // AUTOINCREMENT keeps its high-water mark here; a table that never had a row has none.
            sqlx::query("INSERT INTO sqlite_sequence (name, seq) SELECT ?1, 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?1)")
                .bind(table)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?")
                .bind(floor)
                .bind(table)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn is_empty(&self) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT (SELECT COUNT(*) FROM nodes) + (SELECT COUNT(*) FROM users)")
            .fetch_one(&self.pool)
            .await?;
        Ok(n == 0)
    }
}

impl StoreError {
    /// What the database could not do, in words an operator acts on, when the cause is the
    /// machine (a full disk, a read-only or failing one) rather than the request.
    pub fn machine_fault(&self) -> Option<&'static str> {
        let StoreError::Db(sqlx::Error::Database(d)) = self else {
            return None;
        };
        // SQLite's primary result codes (extended codes keep them in the low byte).
        match d.code()?.parse::<u32>().ok()? & 0xff {
            13 => Some("the host's disk is full"),
            8 => Some("the host's database is read-only (its file or directory cannot be written)"),
            10 => Some("the host's disk failed to read or write"),
            _ => None,
        }
    }
}

/// SQLite's words for a file that is not a sound database become [`StoreError::Damaged`].
fn damaged(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.code().is_some_and(|c| c == "11" || c == "26") => {
            StoreError::Damaged(d.message().to_owned())
        }
        _ => StoreError::Db(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_backup_is_a_consistent_copy_that_opens() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("river.db")).await.unwrap();
        assert!(s.is_empty().await.unwrap());
        s.set_meta("cluster_id", "abcd").await.unwrap();
        let copy = d.path().join("copy.db");
        s.backup_into(&copy).await.unwrap();
        assert!(s.backup_into(&copy).await.is_err(), "never overwrites");
        let c = Store::open(&copy).await.unwrap();
        assert_eq!(c.meta("cluster_id").await.unwrap().as_deref(), Some("abcd"));
        // Another process's view of a file in use: read-only, no migration.
        let again = d.path().join("again.db");
        Store::copy_file(&d.path().join("river.db"), &again).await.unwrap();
        assert_eq!(
            Store::open(&again)
                .await
                .unwrap()
                .meta("cluster_id")
                .await
                .unwrap()
                .as_deref(),
            Some("abcd")
        );
    }

    #[tokio::test]
    async fn ids_given_after_a_restore_start_above_the_floor_and_never_go_back() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("river.db")).await.unwrap();
        let spec = river_proto::msg::TaskSpec::new("img", vec!["true".into()]);
        assert_eq!(s.insert_tasks("user a", &spec, &[], 1).await.unwrap(), vec![1]);
        assert_eq!(s.user_number("a").await.unwrap(), 1);
        s.raise_id_floors(1 << 20, 5000).await.unwrap();
        assert_eq!(
            s.insert_tasks("user a", &spec, &[], 1).await.unwrap(),
            vec![(1 << 20) + 1]
        );
        assert_eq!(s.user_number("b").await.unwrap(), 5001);
        // A lower floor (a clock set back) changes nothing.
        s.raise_id_floors(10, 10).await.unwrap();
        assert_eq!(
            s.insert_tasks("user a", &spec, &[], 1).await.unwrap(),
            vec![(1 << 20) + 2]
        );
    }

    #[tokio::test]
    async fn a_damaged_file_is_refused_at_open() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("river.db");
        {
            let s = Store::open(&path).await.unwrap();
            for i in 0..400 {
                s.set_meta(&format!("k{i}"), &"x".repeat(500)).await.unwrap();
            }
            s.close().await;
        }
        // Random bytes over pages in the middle of the file, as a failing disk leaves them.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        for (i, b) in bytes[mid..mid + 8192].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
        std::fs::write(&path, bytes).unwrap();
        match Store::open(&path).await {
            Err(StoreError::Damaged(what)) => assert!(!what.is_empty()),
            other => panic!("opened a damaged file: {:?}", other.map(|_| ())),
        }
    }
}
