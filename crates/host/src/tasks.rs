//! Command tasks on the host: submission (refused only when impossible), the queue and the
//! scheduler, signals, pages of tasks. Runners' reports are in `reports.rs`, output in `logs.rs`.
//! Placement rules live in `river_task::place`;
//! this module feeds them the cluster as it is and applies what they decide.

use crate::auth::may_touch;
use crate::auth::Caller;
pub(crate) use crate::cluster_view::{ask, sched_node, usage_by_node};
use crate::lifecycle;
use crate::reply::{refused, HostError, HostResult};
use crate::Ctx;
use river_proto::msg::{ErrorKind, HostMsg, Response, Signal, TaskPlacement, TaskView};
use river_store::TaskRecord;
use river_task::fair::{within_limits, Hold};
use river_task::lifecycle::Event;
use river_task::place::{self, Ask, Usage};
use river_task::state::{transition, TaskState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use crate::lifecycle::state_of;

/// `t` as `caller` may see it. For those who may not touch it, its variables are left out (users
/// pass passwords that way), and so is a VPS's image (its owner's snapshot, once restored or
/// moved), which they could otherwise ask to run.
pub(crate) fn view(ctx: &Ctx, caller: &Caller, mut t: TaskRecord) -> TaskView {
    let fetch = (state_of(&t) == TaskState::Assigned)
        .then(|| ctx.fetching(t.id))
        .flatten();
    if !may_touch(caller, &t) {
        t.spec.env = Default::default();
        if t.spec.vps.is_some() {
            t.assigned.archive = None;
            t.spec.image = String::new();
        }
    }
    TaskView {
        fetch,
        waiting: None,
        id: t.id,
        batch: t.batch,
        name: t.name,
        owner: t.owner,
        state: t.state.as_str().into(),
        spec: t.spec,
        assigned: t.assigned,
        placement: t.placement,
        exit_code: t.exit_code,
        message: t.message,
        submitted_at_ms: t.submitted_at_ms,
        started_at_ms: t.started_at_ms,
        finished_at_ms: t.finished_at_ms,
    }
}

/// Starts what can start. Runs on every submission, task end and node arrival, and every 2 s.
pub(crate) async fn scheduler(ctx: Arc<Ctx>) {
    loop {
        if let Err(e) = schedule_once(&ctx).await {
            tracing::error!("scheduling: {e}");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), ctx.kick.notified()).await;
    }
}

/// How long the list of users with tasks waiting is used before it is read again (a submission
/// adds its user at once): it spares every scheduling pass a query.
pub(crate) const OWNERS_FRESH: Duration = Duration::from_millis(500);

/// The users with tasks waiting.
async fn queued_owners(ctx: &Ctx) -> anyhow::Result<Vec<String>> {
    {
        let cached = ctx.queued_owners.lock().unwrap_or_else(|e| e.into_inner());
        if cached.0.is_some_and(|at| at.elapsed() < OWNERS_FRESH) {
            return Ok(cached.1.iter().cloned().collect());
        }
    }
    let owners = ctx.store.queued_owners().await?;
    let mut cached = ctx.queued_owners.lock().unwrap_or_else(|e| e.into_inner());
    *cached = (Some(std::time::Instant::now()), owners.iter().cloned().collect());
    Ok(owners)
}

/// How many waiting tasks one scheduling pass considers, in queue order (Slurm's backfill has
/// the same kind of window, `bf_max_job_test`): a deep queue costs each pass this much, not all.
const SCHEDULE_WINDOW: u32 = 500;
/// The part of the window read first.
const SCHEDULE_HEAD: u32 = 32;

pub(crate) async fn schedule_once(ctx: &Ctx) -> anyhow::Result<()> {
    // What holds resources first: a cluster with no free core starts nothing, so the queue is
    // not even read (every task needs a core).
    let holding = ctx.store.holding_tasks().await?;
    let nodes: Vec<place::Node> = ctx.store.nodes().await?.iter().map(|n| sched_node(ctx, n)).collect();
    let used = usage_by_node(&holding);
    let free = |used: &BTreeMap<String, Usage>| {
        nodes
            .iter()
            .any(|n| n.online && n.cpus() > used.get(&n.name).map_or(0, |u| u.cores.len()))
    };
    if !free(&used) {
        return Ok(());
    }
    // The head of the queue usually fills what is free; only if cores are left after it is the
    // whole window read, and the pass made again over it (so backfill sees the same window).
    let mut pass = None;
    // Each user's oldest waiting tasks, the users' turns set by what they run now.
    let mut running: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for t in holding.iter().filter(|t| state_of(t).holds_resources()) {
        *running.entry(t.owner.as_str()).or_default() += 1;
    }
    let held = crate::cluster_view::held_by_owner(&holding);
    let owners = queued_owners(ctx).await?;
    for limit in [SCHEDULE_HEAD, SCHEDULE_WINDOW] {
        let mut tasks = ctx.store.queued_per_owner(&owners, limit).await?;
        let waiting: Vec<(u64, &str)> = tasks.iter().map(|t| (t.id, t.owner.as_str())).collect();
        let order = river_task::fair::fair_order(&waiting, &running);
        let position: std::collections::HashMap<u64, usize> =
            order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        tasks.sort_by_key(|t| position.get(&t.id).copied().unwrap_or(usize::MAX));
        let fetched = tasks.len();
        tasks.truncate(limit as usize);
        // What users' limits on cores and GPUs held at once leave room for; the rest wait.
        let asks: Vec<(u64, &str, Hold)> = tasks
            .iter()
            .map(|t| {
                let h = Hold {
                    cores: t.spec.cores,
                    gpus: t.spec.gpus,
                };
                (t.id, t.owner.as_str(), h)
            })
            .collect();
        let through: std::collections::HashSet<u64> =
            within_limits(&asks, &held, |owner| crate::limits::hold_limit(ctx, owner))
                .into_iter()
                .collect();
        tasks.retain(|t| through.contains(&t.id));
        let queue: Vec<(u64, Ask)> = tasks
            .iter()
            .filter_map(|t| ask(&t.spec, t.target.as_deref()).ok().map(|a| (t.id, a)))
            .collect();
        let mut after = used.clone();
        let placed = place::schedule(&queue, &nodes, &mut after);
        let whole = fetched < limit as usize || limit == SCHEDULE_WINDOW;
        if whole || !free(&after) {
            pass = Some((tasks, placed));
            break;
        }
    }
    let Some((tasks, placed)) = pass else {
        return Ok(());
    };
    // Overlay addresses in use, read once per pass and only if a placed task needs one.
    let mut taken = None;
    let mut starts = Vec::new();
    for (id, p) in placed {
        let Some(mut t) = tasks.iter().find(|t| t.id == id).cloned() else {
            continue;
        };
        // By default a task joins the overlay where its node is on it; asked for explicitly (or
        // with a reserved address), it waits for an address there.
        let explicit = t.spec.network.as_deref() == Some("overlay") || t.assigned.ip.is_some();
        let node_on = ctx.overlay.as_ref().is_some_and(|o| o.subnet_of(&p.node).is_some());
        let on_overlay = ctx.overlay.is_some()
            && !t.spec.no_container
            && t.spec.network.as_deref() != Some("bridge")
            && (node_on || explicit);
        let ip = match (&ctx.overlay, on_overlay) {
            (Some(o), true) => match &t.assigned.ip {
                Some(reserved) => Some(reserved.clone()),
                None => {
                    if taken.is_none() {
                        taken = Some(crate::overlay::taken(ctx).await?);
                    }
                    let taken = taken.get_or_insert_with(Default::default);
                    match o.free_ip(&p.node, taken) {
                        Some(ip) => {
                            taken.insert(ip);
                            Some(ip.to_string())
                        }
                        None => {
                            tracing::warn!(task = id, node = %p.node, "no free overlay address on the node (or no subnet yet); the task waits");
                            continue;
                        }
                    }
                }
            },
            _ => None,
        };
        let placement = TaskPlacement {
            node: p.node.clone(),
            cores: p.cores,
            numa: p.numa,
            gpus: p.gpus,
            memory_bytes: p.memory,
            ip,
            owner: Some(ctx.task_owner(&t.owner).await?),
        };
        t.placement = Some(placement.clone());
        match lifecycle::change(ctx, &mut t, Event::Placed, None).await {
            Ok(_) => starts.push((t, placement)),
            // Cancelled (or otherwise changed) since this pass read the queue: not placed.
            Err(e) if lifecycle::is_stale(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    // Before any of them starts, every runner learns whose the new overlay addresses are (and
    // that an address given again is no longer its old owner's); if that cannot be read, they
    // wait for the next pass rather than start with sets that may be stale.
    let mut reach_known = true;
    if starts.iter().any(|(_, p)| p.ip.is_some()) {
        if let Err(e) = crate::overlay::refresh_reach(ctx).await {
            tracing::error!("overlay: reading who holds which address: {e}; tasks on the overlay wait");
            reach_known = false;
        }
    }
    for (mut t, placement) in starts {
        let id = t.id;
        let node = placement.node.clone();
        if (placement.ip.is_none() || reach_known)
            && ctx.registry.send(
                &node,
                HostMsg::Start {
                    id,
                    spec: Box::new(t.spec.clone()),
                    assigned: Box::new(t.assigned.clone()),
                    placement,
                },
            )
        {
            tracing::info!(task = id, %node, "task assigned");
        } else {
            // The runner left between the snapshot and now: back to the queue (unless something
            // else changed it meanwhile, which then stands).
            match lifecycle::change(ctx, &mut t, Event::Requeued, None).await {
                Err(e) if !lifecycle::is_stale(&e) => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

pub(crate) async fn signal(ctx: &Ctx, caller: &Caller, id: u64, signal: Signal) -> HostResult<Response> {
    // A task that changed between the read and the write (the scheduler placed it, its runner
    // reported) is read again and the signal decided anew: the user asked once, and the answer is
    // for the task as it is now.
    let mut tries = 0;
    loop {
        match signal_once(ctx, caller, id, signal).await {
            Err(HostError::Failed(e)) if lifecycle::is_stale(&e) && tries < 5 => tries += 1,
            done => return done,
        }
    }
}

async fn signal_once(ctx: &Ctx, caller: &Caller, id: u64, signal: Signal) -> HostResult<Response> {
    let Some(mut t) = ctx.store.task(id).await? else {
        return Err(refused(
            ErrorKind::NotFound,
            format!("no task {id}; `river task list` shows the tasks"),
        ));
    };
    if !may_touch(caller, &t) {
        return Err(refused(
            ErrorKind::Forbidden,
            format!("task {id} belongs to {}", t.owner),
        ));
    }
    let state = state_of(&t);
    let wanted = match signal {
        Signal::Kill => TaskState::Killed,
        Signal::Pause => TaskState::Paused,
        Signal::Resume => TaskState::Running,
        Signal::Stop if t.spec.vps.is_none() => {
            return Err(refused(
                ErrorKind::Invalid,
                format!("task {id} is not a VPS: only a VPS is stopped and kept (`river task kill` ends a task)"),
            ))
        }
        // A queued VPS has nothing to stop: it is cancelled like a task.
        Signal::Stop if matches!(state, TaskState::Queued | TaskState::PendingApproval) => TaskState::Killed,
        Signal::Stop => TaskState::Stopped,
    };
    if state == TaskState::Stopped {
        return Err(refused(
            ErrorKind::Conflict,
            format!("VPS {id} is stopped; `river vps start {id}` starts it, `river vps rm {id}` removes it"),
        ));
    }
    if state.is_final() {
        return Err(refused(
            ErrorKind::Conflict,
            format!(
                "task {id} has already ended ({}); there is nothing to {}",
                t.state,
                format!("{signal:?}").to_lowercase()
            ),
        ));
    }
    if let Err(e) = transition(state, wanted) {
        return Err(refused(ErrorKind::Conflict, format!("task {id}: {e}")));
    }
    if matches!(state, TaskState::Queued | TaskState::PendingApproval) {
        // Never started: cancel it here.
        let why = format!("cancelled by {}", caller.actor());
        lifecycle::change(ctx, &mut t, Event::Ended(TaskState::Killed), Some(why)).await?;
        return Ok(Response::Done {
            message: format!("cancelled queued task {id}"),
        });
    }
    let node = t.placement.as_ref().map(|p| p.node.clone()).unwrap_or_default();
    if !ctx.registry.send(&node, HostMsg::Signal { id, signal }) {
        return Err(refused(
            ErrorKind::Conflict,
            format!("node {node} of task {id} is not connected; try again when it is back"),
        ));
    }
    ctx.store
        .event(
            ctx.clock.now_ms(),
            &caller.actor(),
            "task.signal",
            &format!("{id} {signal:?}"),
        )
        .await?;
    Ok(Response::Done {
        message: format!("sent {} to task {id} on {node}", format!("{signal:?}").to_lowercase()),
    })
}

/// Bytes of task views one answer may carry: well inside a frame's 4 MiB, whatever the specs hold.
const PAGE_BYTES: usize = 3 << 20;

/// The views, in order, as many as fit in [`PAGE_BYTES`] (at least one): a page of large specs
/// comes back shorter, and the next page starts where it stopped.
pub(crate) fn fit_page(views: impl Iterator<Item = river_proto::msg::TaskView>) -> Vec<river_proto::msg::TaskView> {
    let mut used = 0;
    let mut out = Vec::new();
    for v in views {
        let size = river_proto::frame::encoded_len(&v);
        if !out.is_empty() && used + size > PAGE_BYTES {
            break;
        }
        used = used.saturating_add(size);
        out.push(v);
    }
    out
}

/// The tasks placed on `node` that have not ended.
pub(crate) async fn unfinished_on(ctx: &Ctx, node: &str) -> anyhow::Result<Vec<TaskRecord>> {
    let tasks = ctx.store.unfinished_tasks().await?;
    Ok(tasks
        .into_iter()
        .filter(|t| t.placement.as_ref().is_some_and(|p| p.node == node))
        .collect())
}

/// The node's tasks whose fate the host cannot know while it is offline.
pub(crate) async fn node_lost(ctx: &Ctx, node: &str) {
    let Ok(tasks) = unfinished_on(ctx, node).await else {
        return;
    };
    for mut t in tasks {
        let why = format!("node {node} went offline; the task may still be running there");
        if let Err(e) = lifecycle::change(ctx, &mut t, Event::NodeLost, Some(why)).await {
            tracing::error!(task = t.id, "marking lost: {e}");
        }
    }
}

/// A node was removed from the cluster: what it was running is gone with it.
pub(crate) async fn node_removed(ctx: &Ctx, node: &str) -> anyhow::Result<()> {
    for mut t in unfinished_on(ctx, node).await? {
        let why = format!("node {node} was removed from the cluster");
        lifecycle::change(ctx, &mut t, Event::Ended(TaskState::Failed), Some(why)).await?;
    }
    ctx.kick.notify_one();
    Ok(())
}
