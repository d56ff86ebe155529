//! VPS snapshots: taken on demand, when a VPS stops (the newest `auto_snapshots` kept) and before
//! a move; a stopped VPS restored from one, or started on another node from one.

use super::{home, vps_task};
use crate::auth::Caller;
use crate::lifecycle;
use crate::lifecycle::state_of;
use crate::reply::{refused, HostResult};
use crate::Ctx;
use river_proto::msg::{ErrorKind, ExportSource, HostMsg, Response, VpsSnapshot};
use river_store::TaskRecord;
use river_task::lifecycle::Event;
use river_task::state::TaskState;

/// The image a snapshot is committed to on its node (untagged there once the host has it).
fn snapshot_tag(id: u64) -> String {
    format!(
        "{}/{id}:{}",
        river_proto::msg::VPS_SNAPSHOT_REPO,
        crate::clock::now_ms()
    )
}

/// Commits VPS `t`'s container on its node and keeps the archive as its next snapshot. The error
/// is a sentence for the user.
async fn take_snapshot(
    ctx: &Ctx,
    t: &TaskRecord,
    by: &str,
    message: Option<String>,
    auto: bool,
) -> Result<VpsSnapshot, String> {
    let id = t.id;
    let state = state_of(t);
    if !matches!(state, TaskState::Running | TaskState::Paused | TaskState::Stopped) {
        return Err(format!(
            "VPS {id} is {}; a snapshot needs its container (running, paused or stopped)",
            t.state
        ));
    }
    let node = t.placement.as_ref().map(|p| p.node.clone()).unwrap_or_default();
    let Some(conn) = ctx.registry.connection(&node) else {
        return Err(format!("node {node}, where VPS {id}'s disk is, is not connected"));
    };
    // Charged to the VPS's owner, whoever takes it.
    let budget = crate::limits::archive_budget(ctx, &t.owner)
        .await
        .map_err(|e| format!("host: {e}"))??;
    let tag = snapshot_tag(id);
    let key = format!("snapshot:{id}");
    let archive = crate::envs::export(ctx, &conn, ExportSource::Task(id), &tag, true, budget, &key)
        .await
        .map_err(|why| format!("node {node} could not snapshot VPS {id}: {why}"))?;
    let mut snap = VpsSnapshot {
        vps: id,
        seq: 0,
        image: tag,
        archive,
        node,
        created_by: by.to_owned(),
        created_at_ms: ctx.clock.now_ms(),
        message,
        auto,
    };
    snap.seq = ctx.store.add_snapshot(&snap).await.map_err(|e| format!("host: {e}"))?;
    let _ = ctx
        .store
        .event(ctx.clock.now_ms(), by, "vps.snapshot", &format!("{id} #{}", snap.seq))
        .await;
    // Removed meanwhile: the snapshot has nothing to restore into.
    let gone = ctx
        .store
        .task(id)
        .await
        .ok()
        .flatten()
        .is_none_or(|t| state_of(&t).is_final());
    if gone {
        drop_snapshot(ctx, id, snap.seq).await;
        return Err(format!("VPS {id} was removed while its snapshot was taken"));
    }
    if auto {
        prune(ctx, id).await;
    }
    Ok(snap)
}

/// Removes a snapshot and, if nothing else uses it, its archive. Whether there was one.
pub(super) async fn drop_snapshot(ctx: &Ctx, id: u64, seq: u32) -> bool {
    match ctx.store.remove_snapshot(id, seq).await {
        Ok(Some(orphan)) => {
            if let Some(digest) = orphan {
                if let Err(e) = tokio::fs::remove_file(crate::envs::blobs(ctx).join(&digest)).await {
                    tracing::warn!(%digest, "removing a snapshot's archive: {e}");
                }
                crate::envs::announce_archives(ctx, None).await;
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(vps = id, seq, "removing a snapshot: {e}");
            false
        }
    }
}

/// Keeps the newest `auto_snapshots` automatic snapshots of a VPS.
async fn prune(ctx: &Ctx, id: u64) {
    let Ok(snaps) = ctx.store.snapshots(id).await else {
        return;
    };
    let autos: Vec<u32> = snaps.iter().filter(|s| s.auto).map(|s| s.seq).collect();
    let keep = ctx.cfg.vps.auto_snapshots as usize;
    for seq in autos.iter().take(autos.len().saturating_sub(keep)) {
        drop_snapshot(ctx, id, *seq).await;
    }
}

/// Each VPS that stopped (`Ctx::vps_stopped`) gets its automatic snapshot, in the background.
pub(crate) async fn snapshot_stopped(ctx: std::sync::Arc<Ctx>, mut stopped: tokio::sync::mpsc::UnboundedReceiver<u64>) {
    while let Some(id) = stopped.recv().await {
        if ctx.cfg.vps.auto_snapshots > 0 {
            tokio::spawn(auto_snapshot(ctx.clone(), id));
        }
    }
}

async fn auto_snapshot(ctx: std::sync::Arc<Ctx>, id: u64) {
    let Ok(Some(t)) = ctx.store.task(id).await else { return };
    if t.spec.vps.is_none() {
        return;
    }
    match take_snapshot(&ctx, &t, "host", Some("taken when it stopped".into()), true).await {
        Ok(s) => tracing::info!(vps = id, seq = s.seq, size = s.archive.size, "automatic snapshot"),
        Err(why) => tracing::warn!(vps = id, "automatic snapshot: {why}"),
    }
}

/// `river vps snapshot ID`.
pub(crate) async fn snapshot(ctx: &Ctx, caller: &Caller, id: u64, message: Option<String>) -> HostResult<Response> {
    let t = vps_task(ctx, caller, id).await?;
    Ok(match take_snapshot(ctx, &t, &caller.actor(), message, false).await {
        Ok(s) => Response::Snapshot(Box::new(s)),
        Err(why) => return Err(refused(ErrorKind::Conflict, why)),
    })
}

pub(crate) async fn snapshots(ctx: &Ctx, caller: &Caller, id: u64) -> HostResult<Response> {
    vps_task(ctx, caller, id).await?;
    Ok(Response::Snapshots(ctx.store.snapshots(id).await?))
}

pub(crate) async fn snapshot_rm(ctx: &Ctx, caller: &Caller, id: u64, seq: u32) -> HostResult<Response> {
    vps_task(ctx, caller, id).await?;
    if !drop_snapshot(ctx, id, seq).await {
        return Err(refused(
            ErrorKind::NotFound,
            format!("VPS {id} has no snapshot {seq}; `river vps snapshot list {id}` shows them"),
        ));
    }
    ctx.store
        .event(
            ctx.clock.now_ms(),
            &caller.actor(),
            "vps.snapshot.rm",
            &format!("{id} #{seq}"),
        )
        .await?;
    Ok(Response::Done {
        message: format!("removed snapshot {seq} of VPS {id}"),
    })
}

/// Points a VPS at a snapshot: its next start makes a new container from it (a new generation,
/// so a runner holding the old container replaces it). The caller queues it.
fn from_snapshot(t: &mut TaskRecord, s: &VpsSnapshot) {
    t.spec.image = s.image.clone();
    t.assigned.archive = Some(s.archive.clone());
    t.spec.environment = None;
    if let Some(v) = t.spec.vps.as_mut() {
        v.generation += 1;
    }
}

/// `river vps restore ID SEQ`: a stopped VPS starts again on its node from a snapshot.
pub(crate) async fn restore(ctx: &Ctx, caller: &Caller, id: u64, seq: u32) -> HostResult<Response> {
    let mut t = vps_task(ctx, caller, id).await?;
    if state_of(&t) != TaskState::Stopped {
        return Err(refused(
            ErrorKind::Conflict,
            format!(
                "VPS {id} is {}; stop it first (`river vps stop {id}`): restoring replaces its disk",
                t.state
            ),
        ));
    }
    let Some(snap) = ctx.store.snapshots(id).await?.into_iter().find(|s| s.seq == seq) else {
        return Err(refused(
            ErrorKind::NotFound,
            format!("VPS {id} has no snapshot {seq}; `river vps snapshot list {id}` shows them"),
        ));
    };
    let Some(p) = t.placement.take() else {
        return Err(refused(ErrorKind::Internal, format!("VPS {id} has no node on record")));
    };
    t.target = Some(home(&p));
    t.assigned.ip = p.ip.clone();
    from_snapshot(&mut t, &snap);
    lifecycle::change(ctx, &mut t, Event::Requeued, None).await?;
    ctx.store
        .event(
            ctx.clock.now_ms(),
            &caller.actor(),
            "vps.restore",
            &format!("{id} #{seq}"),
        )
        .await?;
    Ok(Response::Done {
        message: format!("starting VPS {id} on {} from snapshot {seq}", p.node),
    })
}

/// `river vps start ID --on NODE`: a stopped VPS (or one lost with its node) starts on another
/// node from a snapshot: a fresh one when its node is up, else its latest. Its overlay address
/// changes (addresses belong to nodes); its old container is removed when its node is reachable.
pub(super) async fn move_to(ctx: &Ctx, caller: &Caller, mut t: TaskRecord, on: String) -> HostResult<Response> {
    let id = t.id;
    let state = state_of(&t);
    if !matches!(state, TaskState::Stopped | TaskState::Lost) {
        return Err(refused(
            ErrorKind::Conflict,
            format!(
                "VPS {id} is {}; stop it first (`river vps stop {id}`), then start it elsewhere",
                t.state
            ),
        ));
    }
    if ctx.store.node(&on).await?.is_none() {
        return Err(refused(
            ErrorKind::NotFound,
            format!("no node {on}; `river node list` shows them"),
        ));
    }
    let old = t.placement.clone();
    let old_node = old.as_ref().map(|p| p.node.clone()).unwrap_or_default();
    let reachable = state == TaskState::Stopped && ctx.registry.connected(&old_node);
    let (snap, note) = if reachable {
        match take_snapshot(ctx, &t, &caller.actor(), Some(format!("moved to {on}")), false).await {
            Ok(s) => (s, String::new()),
            Err(why) => return Err(refused(ErrorKind::Conflict, why)),
        }
    } else {
        match ctx.store.snapshots(id).await?.pop() {
            Some(s) => {
                let note = format!(
                    " (node {old_node} is not reachable: changes made there after this snapshot are not included)"
                );
                (s, note)
            }
            None => {
                return Err(refused(
                    ErrorKind::Conflict,
                    format!(
                    "VPS {id} has no snapshot to start from and node {old_node}, which has its disk, is not reachable"
                ),
                ))
            }
        }
    };
    // The old container goes now if its node can hear it, else when the node comes back.
    ctx.registry.send(&old_node, HostMsg::Discard { id });
    let gpus = old.as_ref().map_or(0, |p| p.gpus.len());
    t.spec.gpus = t.spec.gpus.max(u32::try_from(gpus).unwrap_or(u32::MAX));
    t.assigned.ip = None;
    t.target = Some(on.clone());
    t.placement = None;
    from_snapshot(&mut t, &snap);
    lifecycle::change(ctx, &mut t, Event::Requeued, None).await?;
    ctx.store
        .event(
            ctx.clock.now_ms(),
            &caller.actor(),
            "vps.move",
            &format!("{id} {old_node} -> {on} #{}", snap.seq),
        )
        .await?;
    Ok(Response::Done {
        message: format!("starting VPS {id} on {on} from snapshot {}{note}", snap.seq),
    })
}
