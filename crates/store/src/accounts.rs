//! Users' numbers: what a node makes a user's uid from where it has no account of their name.

use crate::{Result, Store, StoreError};

/// Users' numbers, which name their uids on nodes.
#[async_trait::async_trait]
pub trait Accounts: Send + Sync {
    /// `name`'s number, given on first ask and the same ever after; never another user's, even
    /// one who is gone.
    async fn user_number(&self, name: &str) -> Result<u32>;
}

#[async_trait::async_trait]
impl Accounts for Store {
    async fn user_number(&self, name: &str) -> Result<u32> {
        let mut tx = self.write_tx().await?;
        sqlx::query("INSERT OR IGNORE INTO user_numbers (name) VALUES (?)")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let n: i64 = sqlx::query_scalar("SELECT number FROM user_numbers WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("user number {n} of {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    #[tokio::test]
    async fn numbers_are_stable_and_never_shared() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("db")).await.unwrap();
        let ann = s.user_number("ann").await.unwrap();
        let bob = s.user_number("bob").await.unwrap();
        assert_ne!(ann, bob);
        assert_eq!(s.user_number("ann").await.unwrap(), ann);
        s.close().await;
        let s = Store::open(&d.path().join("db")).await.unwrap();
        assert_eq!(s.user_number("bob").await.unwrap(), bob, "kept across a restart");
        assert!(s.user_number("cy").await.unwrap() > bob);
    }
}
