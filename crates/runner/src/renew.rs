//! Certificate renewal at 70% of the lifetime, on a short connection of its own so the session
//! connection is never interrupted. The new key is made here; the bundle on disk is replaced
//! atomically, and later sessions use it.

use crate::{identity_dir, RunnerConfig, RunnerStatus};
use river_creds::Bundle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub(crate) fn now_s() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    )
    .unwrap_or(i64::MAX)
}

pub(crate) async fn keep_renewed(cfg: RunnerConfig, status: watch::Sender<RunnerStatus>) {
    let dir = identity_dir(&cfg);
    loop {
        let info = match Bundle::load(&dir).map(|b| b.cert_info()) {
            Ok(Ok(info)) => info,
            _ => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                continue;
            }
        };
        let wait = river_pki::renew_at(info.not_before, info.not_after) - now_s();
        if wait > 0 {
            // Wake at least every minute: a suspended machine's sleep does not count wall time.
            tokio::time::sleep(Duration::from_secs(u64::try_from(wait.min(60)).unwrap_or(60))).await;
            continue;
        }
        match renew_once(&dir).await {
            Ok(not_after) => {
                status.send_modify(|s| s.renewals += 1);
                tracing::info!(valid_until = not_after, "renewed the node certificate");
            }
            Err(e) => {
                // Retry well before expiry: a tenth of what is left, between 1 s and 5 min.
                let left = (info.not_after - now_s()).max(10);
                let retry = (left / 10).clamp(1, 300);
                tracing::warn!("renewing the node certificate failed ({e}); retrying in {retry}s");
                tokio::time::sleep(Duration::from_secs(u64::try_from(retry).unwrap_or(1))).await;
            }
        }
    }
}

async fn renew_once(dir: &std::path::Path) -> anyhow::Result<i64> {
    let bundle = Bundle::load(dir)?;
    let name = bundle.meta.name.trim_start_matches("node ").to_owned();
    let (endpoint, conn) = river_mesh::client::connect_bundle(&bundle).await?;
    let renewed = river_mesh::client::renew(&conn, &bundle, &name).await;
    conn.close(river_mesh::close::DONE, b"");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    let renewed = renewed?;
    renewed.save(dir)?;
    Ok(renewed.cert_info()?.not_after)
}
