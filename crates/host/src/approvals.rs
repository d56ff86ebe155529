//! Approvals: on a cluster that asks for them (`approval_roles` in the host config), what users of
//! those roles submit waits in `pending_approval`, unseen by the scheduler, until an operator
//! approves it (it joins the queue) or rejects it (it ends `killed`, with the reason). A batch — a
//! group, an array over targets — is approved or rejected whole, so a group never runs in part.

use crate::auth::Caller;
use crate::lifecycle;
use crate::reply::{refused, HostResult};
use crate::Ctx;
use river_proto::msg::{ErrorKind, Response};
use river_store::TaskRecord;
use river_task::lifecycle::Event;
use river_task::state::TaskState;

/// The state `caller`'s new tasks start in.
pub(crate) fn initial_state(ctx: &Ctx, caller: &Caller) -> TaskState {
    match caller {
        Caller::User { role, .. } if ctx.cfg.needs_approval(*role) => TaskState::PendingApproval,
        _ => TaskState::Queued,
    }
}

/// Task `id` if it waits for approval and `caller` may decide it: never their own.
async fn decidable(ctx: &Ctx, caller: &Caller, id: u64) -> HostResult<TaskRecord> {
    let Some(t) = ctx.store.task(id).await? else {
        return Err(refused(
            ErrorKind::NotFound,
            format!("no task {id}; `river task list -s pending_approval` shows what waits"),
        ));
    };
    if t.state != TaskState::PendingApproval {
        return Err(refused(
            ErrorKind::Conflict,
            format!("task {id} is {}, not waiting for approval", t.state),
        ));
    }
    if t.owner == caller.actor() {
        return Err(refused(
            ErrorKind::Forbidden,
            format!("task {id} is yours; another operator approves or rejects it"),
        ));
    }
    Ok(t)
}

/// Decides the batch of `t` as the lifecycle has it after `event`, all of it or none (another
/// operator may have decided it meanwhile); the ids moved.
async fn decide_batch(ctx: &Ctx, mut t: TaskRecord, event: Event, why: Option<String>) -> anyhow::Result<Vec<u64>> {
    let effects = lifecycle::decide(&mut t, event, why, ctx.clock.now_ms())?;
    let ids = ctx
        .store
        .move_batch(
            t.batch,
            TaskState::PendingApproval,
            t.state,
            t.message.as_deref(),
            t.finished_at_ms,
        )
        .await?;
    ctx.tasks_changed();
    ctx.events.tasks_changed(&ids, &t.owner, t.state);
    if !ids.is_empty() {
        lifecycle::carry_out(ctx, &t, &effects).await?;
    }
    Ok(ids)
}

fn ids_text(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

pub(crate) async fn approve(ctx: &Ctx, caller: &Caller, id: u64) -> HostResult<Response> {
    let t = decidable(ctx, caller, id).await?;
    let ids = decide_batch(ctx, t, Event::Approved, None).await?;
    if ids.is_empty() {
        return Err(refused(ErrorKind::Conflict, format!("task {id} was decided meanwhile")));
    }
    if let Some(t) = ctx.store.task(ids[0]).await? {
        ctx.queued_owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .insert(t.owner);
    }
    ctx.store
        .event(ctx.clock.now_ms(), &caller.actor(), "task.approve", &ids_text(&ids))
        .await?;
    Ok(Response::Done {
        message: format!("approved task(s) {}: queued", ids_text(&ids)),
    })
}

pub(crate) async fn reject(ctx: &Ctx, caller: &Caller, id: u64, reason: &str) -> HostResult<Response> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(refused(
            ErrorKind::Invalid,
            "give a reason (--reason): its owner reads it in `river task status`",
        ));
    }
    let t = decidable(ctx, caller, id).await?;
    // A group's members held overlay addresses from submission: the lifecycle releases them.
    let why = format!("rejected by {}: {reason}", caller.actor());
    let ids = decide_batch(ctx, t, Event::Ended(TaskState::Killed), Some(why)).await?;
    if ids.is_empty() {
        return Err(refused(ErrorKind::Conflict, format!("task {id} was decided meanwhile")));
    }
    ctx.store
        .event(
            ctx.clock.now_ms(),
            &caller.actor(),
            "task.reject",
            &format!("{}: {reason}", ids_text(&ids)),
        )
        .await?;
    Ok(Response::Done {
        message: format!("rejected task(s) {}", ids_text(&ids)),
    })
}
