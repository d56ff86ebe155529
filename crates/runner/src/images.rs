//! Environment images on this node: archives fetched from the host over the mesh (resumable,
//! checksummed, one fetch per archive however many tasks wait for it) and loaded into the engine,
//! and images saved for the host when it makes an environment version.

use river_docker::Runtime;
use river_mesh::{open, recv_msg, send_msg, Connection, SendStream};
use river_proto::msg::{ArchiveRef, BlobReply, BlobRequest, ExportReply, ExportRequest, ExportSource};
use river_proto::StreamKind;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

/// Attempts at fetching one archive before the tasks waiting for it fail.
const ATTEMPTS: u32 = 6;
/// How long an attempt waits for a session with the host.
const HOST_WAIT: Duration = Duration::from_secs(30);
/// How often waiting tasks hear how far the fetch is.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// One archive being fetched: the tasks waiting for it, and a lock only the fetcher holds.
#[derive(Default)]
struct Flight {
    lock: tokio::sync::Mutex<()>,
    waiting: Mutex<Vec<u64>>,
}

pub(crate) struct Images {
    /// Partial archives, named by digest, kept between attempts so a retry resumes.
    dir: PathBuf,
    host: watch::Receiver<Option<Connection>>,
    flights: Mutex<HashMap<String, Arc<Flight>>>,
    /// Held while the record of loaded images is rewritten.
    record: Mutex<()>,
}

/// Why an attempt failed, which decides what the next one does.
enum Failure {
    /// The transfer broke off: resume from what arrived.
    Broken(String),
    /// What arrived is wrong: start again from nothing.
    Corrupt(String),
    /// The host does not have it: no point retrying.
    Missing(String),
}

impl Images {
    pub fn new(dir: PathBuf, host: watch::Receiver<Option<Connection>>) -> Self {
        Self {
            dir,
            host,
            flights: Mutex::default(),
            record: Mutex::default(),
        }
    }

    /// Makes sure the engine has the archive's image, fetching and loading it if not. `progress`
    /// hears (task, bytes so far, total) for every task waiting on the same archive.
    pub async fn ensure(
        &self,
        rt: &Runtime,
        task: u64,
        a: &ArchiveRef,
        progress: &(dyn Fn(u64, u64, u64) + Sync),
    ) -> Result<(), String> {
        if rt.image_present(&a.image_id).await.map_err(|e| e.to_string())? {
            return Ok(());
        }
        let flight = self
            .flights
            .lock()
            .map_err(|_| "lock poisoned".to_string())?
            .entry(a.digest.clone())
            .or_default()
            .clone();
        if let Ok(mut w) = flight.waiting.lock() {
            w.push(task);
        }
        let result = async {
            let _only_fetcher = flight.lock.lock().await;
            // Whoever held the lock before may have loaded it already.
            if rt.image_present(&a.image_id).await.map_err(|e| e.to_string())? {
                return Ok(());
            }
            let report = |done: u64| {
                let waiting = flight.waiting.lock().map(|w| w.clone()).unwrap_or_default();
                for id in waiting {
                    progress(id, done, a.size);
                }
            };
            self.fetch_and_load(rt, a, &report).await
        }
        .await;
        if let Ok(mut w) = flight.waiting.lock() {
            w.retain(|&id| id != task);
        }
        result
    }

    async fn fetch_and_load(&self, rt: &Runtime, a: &ArchiveRef, report: &(dyn Fn(u64) + Sync)) -> Result<(), String> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let part = self.dir.join(format!("{}.partial", a.digest));
        let mut last = String::new();
        let mut fetched = false;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << attempt.min(5))).await;
            }
            match self.fetch_once(a, &part, report).await {
                Ok(()) => {
                    fetched = true;
                    break;
                }
                Err(Failure::Missing(m)) => return Err(m),
                Err(Failure::Corrupt(m)) => {
                    tracing::warn!(digest = %a.digest, "discarding a corrupt archive: {m}");
                    let _ = tokio::fs::remove_file(&part).await;
                    last = m;
                }
                Err(Failure::Broken(m)) => {
                    tracing::info!(digest = %a.digest, attempt, "fetching an archive broke off, will resume: {m}");
                    last = m;
                }
            }
        }
        if !fetched {
            return Err(format!(
                "fetching the environment failed {ATTEMPTS} times; last: {last}"
            ));
        }
        report(a.size);
        let loaded = rt.load(&part).await.map_err(|e| e.to_string());
        let _ = tokio::fs::remove_file(&part).await;
        loaded?;
        if !rt.image_present(&a.image_id).await.map_err(|e| e.to_string())? {
            return Err(format!("the archive {} did not contain image {}", a.digest, a.image_id));
        }
        tracing::info!(digest = %a.digest, image = %a.image_id, "loaded an environment from the host");
        self.note_loaded(&a.image_id);
        Ok(())
    }

    /// The images this node loaded from the host's archives (not those it had already): the
    /// only ones it removes when the host no longer keeps their archive.
    fn loaded_file(&self) -> PathBuf {
        self.dir.join("loaded")
    }

    fn loaded(&self) -> Vec<String> {
        std::fs::read_to_string(self.loaded_file())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn note_loaded(&self, image_id: &str) {
        let _guard = self.record.lock();
        let mut ids = self.loaded();
        if !ids.iter().any(|i| i == image_id) {
            ids.push(image_id.to_owned());
            self.write_loaded(&ids);
        }
    }

    fn write_loaded(&self, ids: &[String]) {
        let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
        let tmp = self.dir.join("loaded.tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, self.loaded_file())) {
            tracing::warn!("recording the images loaded from the host: {e}");
        }
    }

    /// Removes the images this node loaded whose archives the host no longer keeps (a removed
    /// environment or snapshot). One a running container uses stays, to be tried again at the
    /// next announcement.
    pub async fn forget(&self, rt: &Runtime, keep: &[String]) {
        let before = self.loaded();
        let mut still = Vec::new();
        for id in before.clone() {
            if keep.contains(&id) {
                still.push(id);
                continue;
            }
            match rt.remove_image(&id).await {
                Ok(()) => tracing::info!(image = %id, "removed an image whose archive the host no longer keeps"),
                Err(e) => {
                    tracing::info!(image = %id, "keeping an image the host no longer keeps, for now: {e}");
                    still.push(id);
                }
            }
        }
        let _guard = self.record.lock();
        // Loaded meanwhile: kept too.
        for id in self.loaded() {
            if !before.contains(&id) && !still.contains(&id) {
                still.push(id);
            }
        }
        self.write_loaded(&still);
    }

    async fn connection(&self) -> Option<Connection> {
        let mut rx = self.host.clone();
        let found = match tokio::time::timeout(HOST_WAIT, rx.wait_for(Option::is_some)).await {
            Ok(Ok(current)) => current.clone(),
            _ => None,
        };
        found
    }

    /// One attempt: asks for the bytes after what `part` holds, appends them, then checks the
    /// whole file's SHA-256.
    async fn fetch_once(&self, a: &ArchiveRef, part: &Path, report: &(dyn Fn(u64) + Sync)) -> Result<(), Failure> {
        let broken = |e: &dyn std::fmt::Display| Failure::Broken(e.to_string());
        let conn = self
            .connection()
            .await
            .ok_or_else(|| Failure::Broken("not connected to the host".into()))?;
        let mut offset = tokio::fs::metadata(part).await.map(|m| m.len()).unwrap_or(0);
        if offset > a.size {
            let _ = tokio::fs::remove_file(part).await;
            offset = 0;
        }
        let (mut send, mut recv) = open(&conn, StreamKind::Blob).await.map_err(|e| broken(&e))?;
        send_msg(
            &mut send,
            &BlobRequest {
                digest: a.digest.clone(),
                offset,
            },
        )
        .await
        .map_err(|e| broken(&e))?;
        let _ = send.finish();
        match recv_msg::<BlobReply>(&mut recv).await.map_err(|e| broken(&e))? {
            Some(BlobReply::Ok { size }) if size == a.size => {}
            Some(BlobReply::Ok { size }) => {
                return Err(Failure::Missing(format!(
                    "the host's archive {} has {size} bytes, not {}",
                    a.digest, a.size
                )))
            }
            Some(BlobReply::Missing { message }) => return Err(Failure::Missing(message)),
            None => return Err(Failure::Broken("the host ended the stream without an answer".into())),
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .await
            .map_err(|e| Failure::Missing(format!("{}: {e}", part.display())))?;
        let mut done = offset;
        let mut last_report = Instant::now();
        loop {
            let chunk = match recv.read_chunk(256 * 1024, true).await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    let _ = file.flush().await;
                    return Err(broken(&e));
                }
            };
            file.write_all(&chunk.bytes)
                .await
                .map_err(|e| Failure::Missing(format!("writing {}: {e}", part.display())))?;
            done += chunk.bytes.len() as u64;
            if last_report.elapsed() >= PROGRESS_EVERY {
                report(done);
                last_report = Instant::now();
            }
        }
        file.sync_all().await.map_err(|e| broken(&e))?;
        if done < a.size {
            return Err(Failure::Broken(format!(
                "the stream ended at {done} of {} bytes",
                a.size
            )));
        }
        let digest = sha256_file(part).await.map_err(|e| broken(&e))?;
        if digest != a.digest {
            return Err(Failure::Corrupt(format!("checksum {digest}, expected {}", a.digest)));
        }
        Ok(())
    }
}

async fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex::encode(hash.finalize()))
}

/// Serves the host's `Export` stream: makes the tag, answers, then sends its archive.
pub(crate) async fn export(rt: &Runtime, container: Option<String>, req: ExportRequest, send: &mut SendStream) {
    let made = async {
        match &req.source {
            ExportSource::Image(image) => {
                if !rt.image_present(image).await.map_err(|e| e.to_string())? {
                    rt.pull(image).await.map_err(|e| e.to_string())?;
                }
                rt.tag(image, &req.tag).await.map_err(|e| e.to_string())?;
            }
            ExportSource::Task(id) => {
                let name = container.ok_or_else(|| format!("task {id} has no container here"))?;
                rt.commit(&name, &req.tag)
                    .await
                    .map_err(|e| format!("committing task {id}: {e}"))?;
            }
        }
        let id = rt
            .image_id(&req.tag)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("image {} vanished", req.tag))?;
        let size = rt.image_size(&req.tag).await.ok().flatten().unwrap_or(0);
        Ok((id, size))
    }
    .await;
    let reply = match made {
        Ok((image_id, size)) => ExportReply::Ok { image_id, size },
        Err(message) => ExportReply::Failed { message },
    };
    let ok = matches!(reply, ExportReply::Ok { .. });
    if send_msg(send, &reply).await.is_err() || !ok {
        let _ = send.finish();
        return;
    }
    let mut archive = std::pin::pin!(rt.save(&req.tag));
    while let Some(chunk) = futures_util::StreamExt::next(&mut archive).await {
        let sent = match chunk {
            Ok(bytes) => send.write_all(&bytes).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            tracing::warn!(tag = %req.tag, "sending an archive: {e}");
            // A reset tells the host the archive is incomplete.
            let _ = send.reset(1u32.into());
            return;
        }
    }
    let _ = send.finish();
    if req.drop_after {
        if let Err(e) = rt.remove_image(&req.tag).await {
            tracing::warn!(tag = %req.tag, "untagging a sent snapshot: {e}");
        }
    }
}
