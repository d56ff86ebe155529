//! Backups of a host's state: `river host backup FILE` while the host runs, `river host restore
//! FILE` into a stopped host's state directory.
//!
//! A backup is a tar archive (mode 0600: it holds the CA's key) of what cannot be made again:
//! a consistent copy of `river.db` taken with SQLite's `VACUUM INTO` (one read transaction, so
//! one moment, without stopping the host), the CA (`ca.crt`, `ca.key`), the overlay's and the VPS
//! host keys' seeds, and a `MANIFEST`. The host certificate and the admin credential are made
//! again at start; environment archives (`blobs/`, content-addressed and large) are not included.
//!
//! A restore checks the archive (integrity, and that the database belongs to the CA beside it)
//! before touching the state directory, sets aside what it replaces, and raises the id floors:
//! task ids and users' numbers handed out after the backup was taken are never handed out again.

use anyhow::{bail, Context as _};
use river_store::prelude::*;
use river_store::Store;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

const MANIFEST: &str = "MANIFEST";
const DB: &str = "river.db";
/// What a backup holds besides the database; the first two must be there.
const FILES: [&str; 4] = ["ca.crt", "ca.key", "overlay.key", "vps-host-keys.key"];
/// What a restore sets aside before putting the backup's files in place.
const REPLACED: [&str; 10] = [
    "river.db",
    "river.db-wal",
    "river.db-shm",
    "ca.crt",
    "ca.key",
    "host.crt",
    "host.key",
    "overlay.key",
    "vps-host-keys.key",
    "admin",
];
/// 2026-01-01T00:00:00Z: id floors count from here.
const EPOCH_S: i64 = 1_767_225_600;

/// Writes a backup of the host state in `state_dir` to `file`, replacing it atomically if it
/// exists. The host may be running. Returns a summary for the operator.
pub async fn create(state_dir: &Path, file: &Path) -> anyhow::Result<String> {
    for needed in ["ca.crt", "ca.key", DB] {
        if !state_dir.join(needed).exists() {
            bail!(
                "{} holds no host state ({needed} is missing); pass the host's --state-dir",
                state_dir.display()
            );
        }
    }
    let staging = sibling(file, "partial.d");
    let _ = std::fs::remove_dir_all(&staging);
    river_creds::private_dir(&staging)?;
    let made = async {
        Store::copy_file(&state_dir.join(DB), &staging.join(DB))
            .await
            .with_context(|| format!("copying the database {}", state_dir.join(DB).display()))?;
        let ca = std::fs::read(state_dir.join("ca.crt"))?;
        let fingerprint = hex::encode(river_pki::fingerprint(&river_pki::pem_to_der(&String::from_utf8_lossy(&ca))?));
        let manifest = format!(
            "river host backup\nriver {}\ncreated_at {}\nca_fingerprint {fingerprint}\n",
            env!("CARGO_PKG_VERSION"),
            crate::clock::now_s()
        );
        let partial = sibling(file, "partial");
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
        append(&mut tar, MANIFEST, manifest.as_bytes())?;
        append(&mut tar, DB, &std::fs::read(staging.join(DB))?)?;
        for name in FILES {
            match std::fs::read(state_dir.join(name)) {
                Ok(bytes) => append(&mut tar, name, &bytes)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("reading {}", state_dir.join(name).display())),
            }
        }
        let out = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()?;
        std::fs::rename(&partial, file).with_context(|| format!("writing {}", file.display()))?;
        let size = std::fs::metadata(file)?.len();
        Ok::<_, anyhow::Error>(format!(
            "wrote {} ({size} bytes): the database, the CA and the host's keys, as of now; it holds the CA's private key, so keep it where only admins can read it. Environment archives ({}) are not in it.",
            file.display(),
            state_dir.join("blobs").display()
        ))
    }
    .await;
    let _ = std::fs::remove_dir_all(&staging);
    made
}

fn append<W: std::io::Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(u64::try_from(crate::clock::now_s()).unwrap_or(0));
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, name, bytes)?;
    Ok(())
}

fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{suffix}"));
    file.with_file_name(name)
}

/// Puts the backup in `file` into `state_dir`, which no host may be using. A state directory
/// that already holds a cluster is refused unless `force`, and then what it held is moved to
/// `state_dir/replaced-TIME/`, never deleted. Returns a summary for the operator.
pub async fn restore(file: &Path, state_dir: &Path, force: bool) -> anyhow::Result<String> {
    river_creds::private_dir(state_dir)?;
    let _lock = river_creds::StateLock::acquire(state_dir, "host")?;
    let existing: Vec<&str> = ["river.db", "ca.crt", "ca.key"]
        .into_iter()
        .filter(|n| state_dir.join(n).exists())
        .collect();
    if !existing.is_empty() && !force {
        bail!(
            "{} already holds a cluster ({}); pass --force to set it aside in {}/replaced-TIME/ and restore over it",
            state_dir.display(),
            existing.join(", "),
            state_dir.display()
        );
    }
    let staging = state_dir.join(".restore");
    let _ = std::fs::remove_dir_all(&staging);
    river_creds::private_dir(&staging)?;
    let restored = async {
        let manifest = unpack(file, &staging)?;
        let fingerprint = manifest
            .lines()
            .find_map(|l| l.strip_prefix("ca_fingerprint "))
            .map(str::to_owned)
            .context("the backup's MANIFEST names no CA")?;
        let ca = std::fs::read_to_string(staging.join("ca.crt"))?;
        if hex::encode(river_pki::fingerprint(&river_pki::pem_to_der(&ca)?)) != fingerprint {
            bail!("the backup's ca.crt is not the CA its MANIFEST names; the file was altered");
        }
        let store = match Store::open(&staging.join(DB)).await {
            Ok(s) => s,
            Err(river_store::StoreError::Damaged(what)) => {
                bail!("the database in {} is damaged ({what}); use an older backup", file.display())
            }
            Err(e) => return Err(e.into()),
        };
        let checked = async {
            match store.meta("ca_fingerprint").await? {
                Some(fp) if fp != fingerprint => {
                    bail!("the backup's database belongs to another CA than the one beside it")
                }
                Some(_) => {}
                None => store.set_meta("ca_fingerprint", &fingerprint).await?,
            }
            let (task_floor, user_floor) = id_floors(crate::clock::now_s());
            store.raise_id_floors(task_floor, user_floor).await?;
            Ok::<_, anyhow::Error>((store.nodes().await?.len(), store.tasks(None).await?.len()))
        }
        .await;
        store.close().await;
        let (nodes, tasks) = checked?;
        // Everything checked: set aside what is there, then move the backup's files in.
        if !existing.is_empty() {
            let aside = state_dir.join(format!("replaced-{}", crate::clock::now_s()));
            std::fs::create_dir(&aside)?;
            for name in REPLACED {
                let from = state_dir.join(name);
                if from.exists() {
                    std::fs::rename(&from, aside.join(name))
                        .with_context(|| format!("setting {} aside", from.display()))?;
                }
            }
        }
        for entry in std::fs::read_dir(&staging)? {
            let entry = entry?;
            if entry.file_name() == MANIFEST {
                continue;
            }
            std::fs::rename(entry.path(), state_dir.join(entry.file_name()))?;
        }
        let created = manifest
            .lines()
            .find_map(|l| l.strip_prefix("created_at "))
            .unwrap_or("?");
        Ok(format!(
            "restored the backup taken at {created} (unix time) into {}: {nodes} nodes, {tasks} tasks. Start the host. \
             Nodes that joined (or renewed their certificate) after the backup keep their tasks and wait: `river node admit NAME`. \
             Nodes removed after the backup must be removed again. Tasks that ran after the backup are unknown to the host; new task ids start above any given before.",
            state_dir.display()
        ))
    }
    .await;
    let _ = std::fs::remove_dir_all(&staging);
    restored
}

/// Reads the archive into `dir`, accepting only the names a backup has. Returns the manifest.
fn unpack(file: &Path, dir: &Path) -> anyhow::Result<String> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    let mut manifest = None;
    for entry in archive.entries().context("reading the backup")? {
        let mut entry = entry.context("reading the backup")?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name != MANIFEST && name != DB && !FILES.contains(&name.as_str()) {
            bail!("{} holds {name:?}, which no river backup holds", file.display());
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)?;
        if name == MANIFEST {
            manifest = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(&name))?;
        out.write_all(&bytes)?;
        out.sync_all()?;
    }
    let manifest = manifest
        .filter(|m| m.starts_with("river host backup"))
        .with_context(|| format!("{} is not a river host backup (no MANIFEST)", file.display()))?;
    for needed in [DB, "ca.crt", "ca.key"] {
        if !dir.join(needed).exists() {
            bail!("the backup {} lacks {needed}", file.display());
        }
    }
    Ok(manifest)
}

/// The lowest task id and user number handed out after a restore at `now_s`: both count time
/// since 2026, so a restore's floor lies above every id given before it, unless more than 65,536
/// tasks a second (or a user a minute) were made since the previous restore.
fn id_floors(now_s: i64) -> (i64, i64) {
    let since = (now_s - EPOCH_S).max(0);
    (since << 16, since / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_floors_grow_with_time_and_stay_in_range() {
        let (t1, u1) = id_floors(EPOCH_S + 86_400 * 365);
        let (t2, u2) = id_floors(EPOCH_S + 86_400 * 365 + 1);
        assert!(t2 > t1 && t2 - t1 == 65_536);
        assert!(u2 >= u1);
        // Centuries on, still a JavaScript-safe id and a uid below 2^32 over the default base.
        let (t, u) = id_floors(EPOCH_S + 86_400 * 365 * 200);
        assert!(t < (1 << 53) && u + 2_000_000_000 < i64::from(u32::MAX));
    }
}
