//! What runners report about their tasks: one state change at a time, and at the start of each
//! session everything the node has. A report is only as good as its record: when the database
//! cannot store it, the runner's session is ended, and the runner sends what it has again with the
//! next one (its snapshot carries every task's state and recorded end), so a full disk delays a
//! report and never loses it.

use crate::lifecycle::{self, state_of};
use crate::tasks::unfinished_on;
use crate::Ctx;
use river_proto::msg::{HostMsg, RunnerMsg, TaskReport};
use river_task::lifecycle::Event;
use river_task::state::TaskState;
use std::sync::Arc;

/// A report the host could not record; the runner must send it again.
#[derive(Debug, thiserror::Error)]
#[error("could not record what node {node} reported: {source}")]
pub(crate) struct Unrecorded {
    node: String,
    source: anyhow::Error,
}

/// Whether an error came from the database (worth a retry) rather than from the report itself.
fn from_store(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<river_store::StoreError>().is_some())
}

/// A runner reported on one of its tasks. Reports that would break the state machine (a late
/// "running" for a killed task, a task on another node) are logged and dropped; one that could
/// not be stored is an error.
pub(crate) async fn on_report(
    ctx: &Arc<Ctx>,
    node: &str,
    id: u64,
    state: &str,
    exit_code: Option<i64>,
    message: Option<String>,
) -> Result<(), Unrecorded> {
    // A change made meanwhile (a cancel, a signal's note) makes the host read the task again.
    let mut result = Ok(());
    for _ in 0..3 {
        result = async {
            let Some(mut t) = ctx.store.task(id).await? else {
                anyhow::bail!("unknown task {id}")
            };
            if t.placement.as_ref().map(|p| p.node.as_str()) != Some(node) {
                anyhow::bail!("task {id} is not placed on node {node}");
            }
            let to: TaskState = state.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let from = state_of(&t);
            let why = message.clone().or_else(|| {
                // "went offline; may still be running" no longer holds: say what became of it.
                (from == TaskState::Lost && to != TaskState::Lost).then(|| {
                    if to.is_final() {
                        format!("ended while node {node} was out of touch; its end arrived when it came back")
                    } else {
                        format!("node {node} came back; the task had kept running")
                    }
                })
            });
            let event = Event::Reported { state: to, exit_code };
            if lifecycle::change(ctx, &mut t, event, why).await? {
                tracing::info!(task = id, %node, state = to.as_str(), "task state");
            }
            Ok(())
        }
        .await;
        if !matches!(&result, Err(e) if lifecycle::is_stale(e)) {
            break;
        }
    }
    match result {
        Ok(()) => Ok(()),
        // Still overtaken after three reads: the runner sends it again with its next session.
        Err(e) if from_store(&e) || lifecycle::is_stale(&e) => Err(Unrecorded {
            node: node.to_owned(),
            source: e,
        }),
        Err(e) => {
            tracing::warn!(%node, task = id, "ignored a task report: {e}");
            Ok(())
        }
    }
}

/// Settles, at the start of a runner's session, every task the host placed on that node: what the
/// runner still runs carries on (a lost task comes back), what ended while the host could not hear
/// gets its end, a start order that never arrived is queued again, and a task the node no longer
/// has at all has failed.
///
/// What the node is told after its snapshot.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// VPSs whose containers the node should discard: they have moved to another node, or ended,
    /// while it was away.
    pub discard: Vec<u64>,
    /// Tasks whose end the host has stored: the node need not report them again.
    pub recorded: Vec<u64>,
}

/// Whether a reported state is an end, which the node keeps on disk until the host acknowledges
/// it.
pub(crate) fn is_end(state: &str) -> bool {
    state.parse::<TaskState>().is_ok_and(TaskState::is_final)
}

pub(crate) async fn reconcile(ctx: &Arc<Ctx>, node: &str, reports: Vec<TaskReport>) -> Result<Settled, Unrecorded> {
    let unrecorded = |source: anyhow::Error| Unrecorded {
        node: node.to_owned(),
        source,
    };
    let tasks = unfinished_on(ctx, node).await.map_err(unrecorded)?;
    let mut known: std::collections::HashMap<u64, TaskReport> = reports.into_iter().map(|r| (r.id, r)).collect();
    let mut settled = Settled::default();
    let strays: Vec<u64> = known
        .keys()
        .copied()
        .filter(|id| !tasks.iter().any(|t| t.id == *id))
        .collect();
    for id in strays {
        let Some(r) = known.remove(&id) else { continue };
        // A task the host has no record of (a database older than the task) keeps its end on
        // the node; one whose end the host has is acknowledged.
        if let Some(t) = ctx.store.task(id).await.map_err(|e| unrecorded(e.into()))? {
            if t.spec.vps.is_some() {
                tracing::info!(%node, vps = id, "the node still has a VPS that lives elsewhere now");
                settled.discard.push(id);
            } else if is_end(&r.state) {
                settled.recorded.push(id);
            }
        }
    }
    for mut t in tasks {
        if let Some(r) = known.get(&t.id) {
            on_report(ctx, node, t.id, &r.state, r.exit_code, r.message.clone()).await?;
            if is_end(&r.state) {
                settled.recorded.push(t.id);
            }
            continue;
        }
        let (event, why) = match state_of(&t) {
            // The start order never arrived: it waits to be placed again.
            TaskState::Assigned => (Event::Requeued, None),
            TaskState::Running | TaskState::Paused | TaskState::Lost => (
                Event::Ended(TaskState::Failed),
                Some(format!("node {node} no longer has this task (its container is gone)")),
            ),
            _ => continue,
        };
        match lifecycle::change(ctx, &mut t, event, why).await {
            // Changed since this session's settling read it (a cancel): that change stands.
            Err(e) if lifecycle::is_stale(&e) => {}
            other => {
                other.map_err(unrecorded)?;
            }
        }
    }
    ctx.kick.notify_one();
    Ok(settled)
}

/// Tells a node what its snapshot settled: VPSs to discard, ends the host has stored.
pub(crate) fn settle(ctx: &Ctx, name: &str, settled: Settled) {
    for id in settled.discard {
        ctx.registry.send(name, HostMsg::Discard { id });
    }
    for ids in settled.recorded.chunks(river_proto::msg::SNAPSHOT_PART) {
        ctx.registry.send(name, HostMsg::Recorded { ids: ids.to_vec() });
    }
}

/// One message from runner `name` during its session, whatever carries it: a task's change (an
/// end is acknowledged once stored), a snapshot sent again (gathered in `resent` until whole),
/// fetch progress, the overlay's health. `Err`: a report could not be stored, and the session
/// must end so that the runner sends it again.
pub(crate) async fn on_runner_msg(
    ctx: &Arc<Ctx>,
    name: &str,
    msg: RunnerMsg,
    resent: &mut Vec<TaskReport>,
) -> Result<(), Unrecorded> {
    match msg {
        RunnerMsg::Task {
            id,
            state,
            exit_code,
            message,
        } => {
            on_report(ctx, name, id, &state, exit_code, message).await?;
            if is_end(&state) {
                ctx.registry.send(name, HostMsg::Recorded { ids: vec![id] });
            }
        }
        RunnerMsg::Snapshot { tasks, more } => {
            resent.extend(tasks);
            if !more {
                let settled = reconcile(ctx, name, std::mem::take(resent)).await?;
                settle(ctx, name, settled);
            }
        }
        RunnerMsg::Fetch { id, done, total } => ctx.fetch_progress(id, done, total),
        RunnerMsg::Overlay(health) => {
            if let Some(o) = ctx.overlay.as_ref() {
                if !health.ok {
                    tracing::warn!(node = %name, "overlay: {}", health.detail);
                }
                o.record_health(name, health);
            }
        }
    }
    Ok(())
}
