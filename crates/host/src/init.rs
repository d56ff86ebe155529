//! The host's state directory: the CA, the host certificate and the first admin's credential,
//! made on first start and reused (renewed when due) after.
//!
//! Layout of `state_dir` (0700):
//! - `ca.crt`, `ca.key` (0600): the cluster CA;
//! - `host.crt` (host certificate followed by the CA), `host.key` (0600);
//! - `river.db`: the SQLite database;
//! - `admin/`: a credential bundle for the local CLI (`RIVER_CONFIG_DIR` can point at it).

use crate::clock::now_s;
use crate::config::HostConfig;
use anyhow::{bail, Context as _};
use river_creds::{private_dir, read_key, write_atomic, Bundle, Meta};
use river_mesh::Identity;
use river_pki::{Ca, Subject};
use river_proto::msg::Role;
use river_store::prelude::*;
use river_store::{Store, UserRecord};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) const ADMIN_USER: &str = "admin";

/// The meta key for the SHA-256 of the CA certificate this database belongs to.
const CA_FINGERPRINT: &str = "ca_fingerprint";

pub(crate) struct State {
    pub store: Store,
    pub ca: Ca,
    pub quic: river_mesh::ServerConfig,
    pub https_tls: Arc<rustls::ServerConfig>,
    /// This host's hold on the state directory, for as long as it runs.
    pub lock: river_creds::StateLock,
    /// The mesh's stateless-reset key: secret and the same at every start (made from the CA's
    /// key), so runners of a crashed host learn of the crash from the restarted one at once.
    pub reset_seed: [u8; 32],
}

pub(crate) async fn prepare(cfg: &HostConfig) -> anyhow::Result<State> {
    cfg.validate()?;
    private_dir(&cfg.state_dir)
        .with_context(|| format!("the host's state directory {} cannot be used", cfg.state_dir.display()))?;
    let lock = river_creds::StateLock::acquire(&cfg.state_dir, "host")?;
    let store = open_store(&cfg.state_dir).await?;
    let ca = load_or_create_ca(&cfg.state_dir, &store).await?;
    let (chain, key) = host_cert(cfg, &ca, &store).await?;
    let reset_seed = {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"river mesh stateless reset v1\0");
        h.update(ca.key_pem().as_bytes());
        h.finalize().into()
    };
    let quic = river_mesh::server_config(Identity::from_pem(&chain, &key)?, ca.cert_der())?;
    let https_tls = river_mesh::https_server_config(Identity::from_pem(&chain, &key)?, ca.cert_der())?;
    Ok(State {
        store,
        ca,
        quic,
        https_tls,
        lock,
        reset_seed,
    })
}

/// The database, refusing one that is missing beside an existing CA (a new, empty database would
/// tell every runner it is unknown) or that is damaged.
async fn open_store(dir: &Path) -> anyhow::Result<Store> {
    let db = dir.join("river.db");
    if !db.exists() && (dir.join("ca.crt").exists() || dir.join("ca.key").exists()) {
        bail!(
            "{} holds this cluster's CA but no database (river.db): the host will not start a new, empty \
             one, which knows none of the cluster's nodes, users or tasks. Restore the last backup \
             (`river host restore FILE --state-dir {}`), or, to start a different cluster, use another state directory",
            dir.display(),
            dir.display()
        );
    }
    match Store::open(&db).await {
        Ok(s) => Ok(s),
        Err(river_store::StoreError::Damaged(what)) => bail!(
            "the database {} is damaged ({what}); the host will not start on it. Restore the last backup \
             (`river host restore FILE --state-dir {}`); keep the damaged file for inspection",
            db.display(),
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("opening the database {}", db.display())),
    }
}

async fn load_or_create_ca(dir: &Path, store: &Store) -> anyhow::Result<Ca> {
    let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if crt.exists() && key.exists() {
        let ca = Ca::from_pem(&std::fs::read_to_string(&crt)?, &read_key(&key)?)
            .with_context(|| format!("loading the cluster CA from {}", dir.display()))?;
        let fingerprint = hex::encode(ca.fingerprint());
        match store.meta(CA_FINGERPRINT).await? {
            Some(fp) if fp == fingerprint => {}
            Some(_) => bail!(
                "the database in {} belongs to another cluster (its CA is not ca.crt): the host will not \
                 start on a CA and a database that do not belong together. Put back this cluster's river.db \
                 (`river host restore FILE`) or its ca.crt and ca.key",
                dir.display()
            ),
            None if store.is_empty().await? => bail!(
                "{} holds this cluster's CA but its database (river.db) is empty: it knows none of the \
                 cluster's nodes, users or tasks, and starting on it would leave every runner unknown. \
                 Restore the last backup (`river host restore FILE --state-dir {}`), or, to start a \
                 different cluster, use another state directory",
                dir.display(),
                dir.display()
            ),
            // A database from before the fingerprint was recorded, with the cluster in it.
            None => store.set_meta(CA_FINGERPRINT, &fingerprint).await?,
        }
        return Ok(ca);
    }
    if !store.nodes().await?.is_empty() || !store.users().await?.is_empty() {
        bail!(
            "{} has a database but no CA (ca.crt, ca.key): restore them from a backup; \
             making a new CA would lock out every node and user of this cluster",
            dir.display()
        );
    }
    let mut id = [0u8; 4];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
    let cluster_id = hex::encode(id);
    let ca = Ca::generate(&cluster_id, now_s())?;
    // Recorded before the CA's files exist: a start cut short between the two finds no CA and
    // makes a new one, never a CA without its database.
    store.set_meta(CA_FINGERPRINT, &hex::encode(ca.fingerprint())).await?;
    write_atomic(&key, ca.key_pem().as_bytes(), 0o600)?;
    write_atomic(&crt, ca.cert_pem().as_bytes(), 0o644)?;
    store.set_meta("cluster_id", &cluster_id).await?;
    tracing::info!(cluster = %cluster_id, fingerprint = %hex::encode(ca.fingerprint()), "created the cluster CA");
    Ok(ca)
}

/// Names in the host certificate: what was advertised, this machine's name and loopback.
fn host_names(cfg: &HostConfig) -> Vec<String> {
    let mut names: Vec<String> = cfg
        .advertise
        .iter()
        .map(|a| match a.parse::<std::net::SocketAddr>() {
            Ok(sa) => sa.ip().to_string(),
            Err(_) => a
                .rsplit_once(':')
                .filter(|(_, p)| p.parse::<u16>().is_ok())
                .map_or(a.clone(), |(h, _)| h.into()),
        })
        .collect();
    names.push(local_hostname());
    names.extend(["localhost".into(), "127.0.0.1".into(), "::1".into()]);
    if !cfg.listen.ip().is_unspecified() {
        names.push(cfg.listen.ip().to_string());
    }
    names.sort();
    names.dedup();
    names
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

async fn host_cert(cfg: &HostConfig, ca: &Ca, store: &Store) -> anyhow::Result<(String, String)> {
    let (crt, key) = (cfg.state_dir.join("host.crt"), cfg.state_dir.join("host.key"));
    let names = host_names(cfg)
        .into_iter()
        .filter(|n| !n.is_empty())
        .collect::<Vec<_>>();
    let wanted = names.join(",");
    if crt.exists() && key.exists() && store.meta("host_cert_names").await?.as_deref() == Some(wanted.as_str()) {
        let chain = std::fs::read_to_string(&crt)?;
        let info = river_pki::inspect(&river_pki::pem_to_der(&chain)?)?;
        if now_s() < river_pki::renew_at(info.not_before, info.not_after) {
            return Ok((chain, read_key(&key)?));
        }
    }
    let issued = ca.issue_host(&names, now_s(), river_pki::HOST_LIFETIME_SECS)?;
    let chain = format!("{}{}", issued.cert_pem, ca.cert_pem());
    write_atomic(&key, issued.key_pem.as_bytes(), 0o600)?;
    write_atomic(&crt, chain.as_bytes(), 0o644)?;
    store.set_meta("host_cert_names", &wanted).await?;
    tracing::info!(names = %wanted, "issued the host certificate");
    Ok((chain, issued.key_pem))
}

/// Makes sure the first admin's credential exists, is not due for renewal and names the address
/// the host is reachable at. Returns its directory.
pub(crate) async fn admin_bundle(cfg: &HostConfig, state: &State, host_addr: &str) -> anyhow::Result<PathBuf> {
    let dir = cfg.state_dir.join("admin");
    let lifetime = i64::try_from(cfg.user_cert_lifetime.as_secs()).unwrap_or(i64::MAX);
    let existing = if Bundle::exists(&dir) {
        Bundle::load(&dir).ok()
    } else {
        None
    };
    let fresh = existing.as_ref().and_then(|b| b.cert_info().ok()).is_some_and(|i| {
        now_s() < river_pki::renew_at(i.not_before, i.not_after) && i.subject == Some(Subject::User(ADMIN_USER.into()))
    });
    let same_ca = existing.as_ref().is_some_and(|b| b.ca_pem == state.ca.cert_pem());
    let bundle = match existing {
        Some(mut b) if fresh && same_ca => {
            if b.meta.host == host_addr {
                return Ok(dir);
            }
            b.meta.host = host_addr.to_owned();
            b
        }
        _ => {
            let issued = state.ca.issue_user_with_key(ADMIN_USER, now_s(), lifetime)?;
            let info = river_pki::inspect(&river_pki::pem_to_der(&issued.cert_pem)?)?;
            let cert = river_store::IssuedCert {
                serial: &info.serial,
                expires_at: info.not_after,
            };
            if state.store.user(ADMIN_USER).await?.is_some() {
                state.store.renew_user_cert(ADMIN_USER, &cert).await?;
            } else {
                let admin = UserRecord {
                    name: ADMIN_USER.into(),
                    role: Role::Admin,
                    created_at: now_s(),
                    disabled: false,
                    removed_at: None,
                };
                state.store.enrol_user(None, now_s(), &admin, &cert).await?;
            }
            Bundle {
                meta: Meta {
                    host: host_addr.to_owned(),
                    name: format!("user {ADMIN_USER}"),
                },
                ca_pem: state.ca.cert_pem().to_owned(),
                cert_pem: issued.cert_pem,
                key_pem: issued.key_pem.clone(),
            }
        }
    };
    bundle.save(&dir)?;
    Ok(dir)
}
