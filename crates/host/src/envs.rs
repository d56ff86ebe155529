//! Container environments: named, versioned images that the host keeps as content-addressed
//! `docker save` archives in `state_dir/blobs/` and serves to runners over the mesh.
//!
//! - `create` asks a node to save an image (pulling it if needed) and stores the archive;
//! - `shell` starts (or finds) a task of the caller's named `env:NAME` that keeps a container of
//!   the environment running, for `river env shell` to connect to;
//! - `commit` asks that task's node to commit its container, stores the archive as the next
//!   version and ends the task;
//! - runners fetch a version's archive on a `Blob` stream (`serve_blob`) when their engine lacks
//!   the image, resuming from an offset after a failure.

use crate::auth::{env_not_theirs, Caller};
use crate::reply::{refused, HostResult};
use crate::Ctx;
use river_mesh::{open, recv_msg, send_msg, FramedError, RecvStream, SendStream};
use river_proto::msg::{
    ArchiveRef, BlobReply, BlobRequest, EnvVersion, ErrorKind, ExportReply, ExportRequest, ExportSource, Response,
    TaskSpec,
};
use river_proto::StreamKind;
use sha2::{Digest as _, Sha256};
use std::path::PathBuf;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

/// The environment a task runs in when it names neither one nor an image.
pub(crate) const DEFAULT_ENV: &str = "default";

/// Chunk size for archives on the mesh and on disk.
const CHUNK: usize = 256 * 1024;

/// Environment names become image names (`river-env/NAME:vN`), so they are stricter than node
/// names: lower-case letters, digits and `-`.
pub(crate) fn check_name(name: &str) -> HostResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(refused(
            ErrorKind::Invalid,
            format!("invalid environment name {name:?}: use 1-63 lower-case letters, digits or '-', starting with a letter or digit"),
        ))
    }
}

pub(crate) fn tag(name: &str, version: u32) -> String {
    format!("river-env/{name}:v{version}")
}

/// The name of the task that holds an environment's editing container.
pub(crate) fn session_name(env: &str) -> String {
    format!("env:{env}")
}

pub(crate) fn blobs(ctx: &Ctx) -> PathBuf {
    ctx.cfg.state_dir.join("blobs")
}

fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Makes the `default` environment at first start: version 1 refers to `default_image`.
pub(crate) async fn ensure_default(ctx: &Ctx) -> anyhow::Result<()> {
    if ctx.store.env(DEFAULT_ENV).await?.is_some() {
        return Ok(());
    }
    let first = EnvVersion {
        version: 1,
        image: ctx.cfg.default_image.clone(),
        archive: None,
        created_by: "host".into(),
        created_at_ms: ctx.clock.now_ms(),
        message: Some("created at host init".into()),
        fetches: 0,
    };
    match ctx
        .store
        .create_env(DEFAULT_ENV, "host", ctx.clock.now_ms(), &first)
        .await
    {
        Ok(()) | Err(river_store::StoreError::Exists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Turns a submission's environment (named, or the default when it names no image) into the
/// image its runner runs, and the archive it is loaded from (none for a plain image). The
/// refusal is the answer to send back.
pub(crate) async fn resolve(ctx: &Ctx, spec: &mut TaskSpec) -> HostResult<Option<ArchiveRef>> {
    let wanted = match (&spec.environment, spec.image.trim().is_empty()) {
        (Some(_), false) => {
            return Err(refused(
                ErrorKind::Invalid,
                "choose an environment (--env) or an image (--image), not both",
            ))
        }
        (Some(e), true) => e.clone(),
        (None, true) => DEFAULT_ENV.to_owned(),
        (None, false) => return Ok(None),
    };
    let (name, version) = match wanted.split_once(":v") {
        Some((n, v)) => match v.parse::<u32>() {
            Ok(v) => (n.to_owned(), Some(v)),
            Err(_) => {
                return Err(refused(
                    ErrorKind::Invalid,
                    format!("invalid environment {wanted:?}: use NAME or NAME:vN"),
                ))
            }
        },
        None => (wanted.clone(), None),
    };
    let Some(env) = ctx.store.env(&name).await? else {
        return Err(refused(
            ErrorKind::NotFound,
            format!("no environment {name}; `river env list` shows them, `river env create` makes one"),
        ));
    };
    let chosen = match version {
        Some(v) => env.versions.iter().find(|x| x.version == v),
        None => env.versions.last(),
    };
    let Some(v) = chosen else {
        return Err(refused(
            ErrorKind::NotFound,
            format!("environment {name} has no version {wanted}; `river env list` shows its versions"),
        ));
    };
    spec.environment = Some(format!("{name}:v{}", v.version));
    spec.image = v.image.clone();
    Ok(v.archive.clone())
}

/// The connection to `node`, or to any connected node when `None`.
pub(crate) fn pick_node(ctx: &Ctx, node: Option<&str>) -> HostResult<(String, river_mesh::Connection)> {
    match node {
        Some(n) => ctx
            .registry
            .connection(n)
            .map(|c| (n.to_owned(), c))
            .ok_or_else(|| refused(ErrorKind::Conflict, format!("node {n} is not connected"))),
        None => ctx.registry.connected_nodes().into_iter().next().ok_or_else(|| {
            refused(
                ErrorKind::Conflict,
                "no node is connected to build the environment on; start a runner first",
            )
        }),
    }
}

pub(crate) async fn create(
    ctx: &Ctx,
    caller: &Caller,
    name: &str,
    from: &str,
    node: Option<&str>,
) -> HostResult<Response> {
    check_name(name)?;
    if from.trim().is_empty() {
        return Err(refused(ErrorKind::Invalid, "no image given; use --from IMAGE"));
    }
    if ctx.store.env(name).await?.is_some() {
        return Err(refused(
            ErrorKind::Conflict,
            format!("environment {name} already exists; `river env shell {name}` then `river env commit {name}` makes a new version"),
        ));
    }
    let (node, conn) = pick_node(ctx, node)?;
    let budget = match crate::limits::archive_budget(ctx, &caller.actor()).await? {
        Ok(b) => b,
        Err(why) => return Err(refused(ErrorKind::Conflict, why)),
    };
    let source = ExportSource::Image(from.to_owned());
    let archive = match export(ctx, &conn, source, &tag(name, 1), false, budget, &format!("env:{name}")).await {
        Ok(a) => a,
        Err(why) => {
            return Err(refused(
                ErrorKind::Conflict,
                format!("node {node} could not save image {from}: {why}"),
            ))
        }
    };
    let first = EnvVersion {
        version: 1,
        image: tag(name, 1),
        archive: Some(archive),
        created_by: caller.actor(),
        created_at_ms: ctx.clock.now_ms(),
        message: Some(format!("from {from}")),
        fetches: 0,
    };
    match ctx
        .store
        .create_env(name, &caller.actor(), ctx.clock.now_ms(), &first)
        .await
    {
        Ok(()) => {}
        Err(river_store::StoreError::Exists(_)) => {
            return Err(refused(
                ErrorKind::Conflict,
                format!("environment {name} already exists"),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    ctx.store
        .event(
            ctx.clock.now_ms(),
            &caller.actor(),
            "env.create",
            &format!("{name} from {from} on {node}"),
        )
        .await?;
    show(ctx, name).await
}

pub(crate) async fn show(ctx: &Ctx, name: &str) -> HostResult<Response> {
    Ok(match ctx.store.env(name).await? {
        Some(e) => Response::Env(Box::new(e)),
        None => return Err(refused(ErrorKind::NotFound, format!("no environment {name}"))),
    })
}

pub(crate) async fn list(ctx: &Ctx) -> HostResult<Response> {
    Ok(Response::Envs(ctx.store.envs().await?))
}

pub(crate) async fn remove(ctx: &Ctx, caller: &Caller, name: &str) -> HostResult<Response> {
    if name == DEFAULT_ENV {
        return Err(refused(
            ErrorKind::Conflict,
            "the default environment cannot be removed; commit a new version of it instead",
        ));
    }
    let Some(env) = ctx.store.env(name).await? else {
        return Err(refused(ErrorKind::NotFound, format!("no environment {name}")));
    };
    if let Some(refusal) = env_not_theirs(caller, &env, env.name == DEFAULT_ENV) {
        return Err(refusal);
    }
    let Some(orphans) = ctx.store.remove_env(name).await? else {
        return Err(refused(ErrorKind::NotFound, format!("no environment {name}")));
    };
    for digest in orphans {
        if let Err(e) = tokio::fs::remove_file(blobs(ctx).join(&digest)).await {
            tracing::warn!(%digest, "removing an archive: {e}");
        }
    }
    ctx.store
        .event(ctx.clock.now_ms(), &caller.actor(), "env.rm", name)
        .await?;
    announce_archives(ctx, None).await;
    Ok(Response::Done {
        message: format!("removed environment {name}"),
    })
}

/// Tells `node` (every connected node when `None`) which archives the host still keeps, so that
/// nodes remove the images of removed environments and snapshots they loaded.
pub(crate) async fn announce_archives(ctx: &Ctx, node: Option<&str>) {
    let keep = match ctx.store.archive_image_ids().await {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!("listing the archives kept: {e}");
            return;
        }
    };
    let nodes = match node {
        Some(n) => vec![n.to_owned()],
        None => ctx.registry.connected_nodes().into_iter().map(|(n, _)| n).collect(),
    };
    for n in nodes {
        ctx.registry
            .send(&n, river_proto::msg::HostMsg::Archives { keep: keep.clone() });
    }
}

/// Asks a node to make `tag` from `source` and send its archive, which is stored under its
/// SHA-256; how far it has got is under `progress` in `ctx.ops` meanwhile. The error is a
/// sentence for the user.
pub(crate) async fn export(
    ctx: &Ctx,
    conn: &river_mesh::Connection,
    source: ExportSource,
    tag: &str,
    drop_after: bool,
    budget: Option<u64>,
    progress: &str,
) -> Result<ArchiveRef, String> {
    let io = |e: std::io::Error| format!("host could not store the archive: {e}");
    let op = ctx.ops.start(
        progress.to_owned(),
        match source {
            ExportSource::Task(_) => "committing the container",
            ExportSource::Image(_) => "saving the image",
        },
    );
    let (mut send, mut recv) = open(conn, StreamKind::Export).await.map_err(|e| e.to_string())?;
    send_msg(
        &mut send,
        &ExportRequest {
            source,
            tag: tag.to_owned(),
            drop_after,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let _ = send.finish();
    let (image_id, expected) = match recv_msg::<ExportReply>(&mut recv).await.map_err(|e| e.to_string())? {
        Some(ExportReply::Ok { image_id, size }) => (image_id, size),
        Some(ExportReply::Failed { message }) => return Err(message),
        None => return Err("the node ended the stream without an answer".into()),
    };
    let dir = blobs(ctx);
    tokio::fs::create_dir_all(&dir).await.map_err(io)?;
    let tmp = dir.join(format!(".incoming-{:016x}", rand::random::<u64>()));
    let sending = "sending the archive to the host";
    op.update(sending, 0, expected);
    let received = receive(&mut recv, &tmp, budget, &|done| {
        op.update(sending, done, expected.max(done))
    })
    .await;
    let (digest, size) = match received {
        Ok(x) => x,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    tokio::fs::rename(&tmp, dir.join(&digest)).await.map_err(io)?;
    tracing::info!(%digest, size, %tag, "stored an environment archive");
    Ok(ArchiveRef { image_id, digest, size })
}

/// Writes the rest of `recv` to `path`, at most `budget` bytes (else it stops, with the reason);
/// returns its SHA-256 (hex) and length.
async fn receive(
    recv: &mut RecvStream,
    path: &std::path::Path,
    budget: Option<u64>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(String, u64), String> {
    let io = |e: std::io::Error| format!("host could not store the archive: {e}");
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = recv
        .read_chunk(CHUNK, true)
        .await
        .map_err(|e| format!("the transfer broke off: {e}"))?
    {
        hash.update(&chunk.bytes);
        file.write_all(&chunk.bytes).await.map_err(io)?;
        size += chunk.bytes.len() as u64;
        progress(size);
        if budget.is_some_and(|b| size > b) {
            let _ = recv.stop(river_mesh::close::DONE);
            return Err(format!(
                "the archive is larger than what its owner may still keep ({} MiB): they are at their limit of archives; remove some first (`river vps snapshot rm ID SEQ`, `river env rm NAME`) or ask an operator (`river user limits`)",
                budget.unwrap_or(0) >> 20
            ));
        }
    }
    file.sync_all().await.map_err(io)?;
    Ok((hex::encode(hash.finalize()), size))
}

/// A runner fetches an archive: a `BlobReply`, then the bytes from the offset it asked for.
pub(crate) async fn serve_blob(ctx: &Ctx, send: &mut SendStream, recv: &mut RecvStream) -> Result<(), FramedError> {
    let Some(req) = recv_msg::<BlobRequest>(recv).await? else {
        return Ok(());
    };
    let missing = |message: String| BlobReply::Missing { message };
    // Only digests of known versions: the path is made from checked hex, nothing else.
    let known = is_digest(&req.digest) && ctx.store.archive_known(&req.digest).await.unwrap_or(false);
    let path = blobs(ctx).join(&req.digest);
    let file = match known {
        true => tokio::fs::File::open(&path).await.ok(),
        false => None,
    };
    let (mut file, size) = match file {
        Some(f) => {
            let size = f.metadata().await.map(|m| m.len()).unwrap_or(0);
            (f, size)
        }
        None => {
            send_msg(send, &missing(format!("the host has no archive {}", req.digest))).await?;
            let _ = send.finish();
            return Ok(());
        }
    };
    if req.offset > size {
        send_msg(
            send,
            &missing(format!("offset {} is past the archive's {size} bytes", req.offset)),
        )
        .await?;
        let _ = send.finish();
        return Ok(());
    }
    send_msg(send, &BlobReply::Ok { size }).await?;
    if file.seek(std::io::SeekFrom::Start(req.offset)).await.is_err() {
        let _ = send.reset(1u32.into());
        return Ok(());
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(digest = %req.digest, "reading an archive: {e}");
                let _ = send.reset(1u32.into());
                return Ok(());
            }
        };
        send.write_all(&buf[..n]).await?;
    }
    let _ = send.finish();
    if let Err(e) = ctx.store.count_fetch(&req.digest).await {
        tracing::warn!("counting a fetch: {e}");
    }
    Ok(())
}
