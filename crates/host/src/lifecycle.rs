//! The one way the host changes a task's state: [`change`] runs the task's lifecycle
//! ([`river_task::lifecycle::apply`]), stores the result and carries out what follows from it —
//! the rest of a group ends, an overlay address goes back, the scheduler runs, a stopped VPS gets
//! its snapshot. A new place where a task can end needs no wiring of its own.

use crate::events::HostEvent;
use crate::Ctx;
use river_proto::msg::{HostMsg, Signal};
use river_store::TaskRecord;
use river_task::lifecycle::{apply, Effect, Event, Life};
use river_task::state::TaskState;

/// The task's state.
pub(crate) fn state_of(t: &TaskRecord) -> TaskState {
    t.state
}

fn life_of(t: &TaskRecord) -> Life {
    Life {
        state: state_of(t),
        started_at_ms: t.started_at_ms,
        finished_at_ms: t.finished_at_ms,
        exit_code: t.exit_code,
        grouped: t.assigned.rank.is_some(),
        addressed: t.assigned.ip.is_some() || t.placement.as_ref().is_some_and(|p| p.ip.is_some()),
    }
}

/// What the lifecycle decides for `t` after `event`, written into `t` (with `why` as its message
/// when given) but not stored: for a change the caller stores in a batch of its own. The effects
/// are the caller's to carry out.
pub(crate) fn decide(
    t: &mut TaskRecord,
    event: Event,
    why: Option<String>,
    now_ms: i64,
) -> anyhow::Result<Vec<Effect>> {
    let before = life_of(t);
    let (after, effects) = apply(before, event, now_ms)?;
    if after == before {
        return Ok(effects);
    }
    t.state = after.state;
    t.started_at_ms = after.started_at_ms;
    t.finished_at_ms = after.finished_at_ms;
    t.exit_code = after.exit_code;
    if effects.contains(&Effect::Unplace) {
        t.placement = None;
        t.message = None;
    }
    if why.is_some() {
        t.message = why;
    }
    Ok(effects)
}

pub(crate) use crate::reply::{is_stale, Stale};

/// Applies `event` to `t`, stores it and carries out what follows. Returns whether the task
/// changed: an event that changes nothing (a repeated report) stores nothing. An event the state
/// machine forbids is an error and leaves `t` as it was; one overtaken by another change is a
/// [`Stale`] error, and `t` then holds what was not stored.
pub(crate) async fn change(ctx: &Ctx, t: &mut TaskRecord, event: Event, why: Option<String>) -> anyhow::Result<bool> {
    let before = t.state;
    let effects = decide(t, event, why, ctx.clock.now_ms())?;
    if t.state == before {
        return Ok(false);
    }
    if !ctx.save_task(t, before).await? {
        anyhow::bail!(Stale { id: t.id });
    }
    ctx.events.publish(HostEvent::TaskChanged {
        id: t.id,
        owner: t.owner.clone(),
        state: t.state,
    });
    carry_out(ctx, t, &effects).await?;
    Ok(true)
}

/// Does what a change of `t` calls for, after it is stored.
pub(crate) async fn carry_out(ctx: &Ctx, t: &TaskRecord, effects: &[Effect]) -> anyhow::Result<()> {
    for e in effects {
        match e {
            Effect::Unplace => {}
            Effect::EndGroup => Box::pin(end_group(ctx, t)).await?,
            Effect::ReleaseAddress => {
                ctx.store.release_reservations(ctx.clock.now_ms()).await?;
            }
            Effect::Schedule => ctx.kick.notify_one(),
            Effect::VpsStopped => {
                // Its automatic snapshot is taken by the loop that reads these.
                let _ = ctx.vps_stopped.send(t.id);
            }
        }
    }
    Ok(())
}

/// `failed`, a group member, ended without success: the others are ended too, since a
/// distributed job cannot go on without one of its ranks.
async fn end_group(ctx: &Ctx, failed: &TaskRecord) -> anyhow::Result<()> {
    let Some(rank) = failed.assigned.rank else {
        return Ok(());
    };
    let why = format!(
        "member {rank} of group {} (task {}) ended as {}",
        failed.batch, failed.id, failed.state
    );
    for mut t in ctx.store.unfinished_tasks().await? {
        if t.batch != failed.batch || t.id == failed.id || t.assigned.rank.is_none() {
            continue;
        }
        let node = t.placement.as_ref().map(|p| p.node.clone());
        let told = state_of(&t) != TaskState::Queued
            && node.is_some_and(|n| {
                ctx.registry.send(
                    &n,
                    HostMsg::Signal {
                        id: t.id,
                        signal: Signal::Kill,
                    },
                )
            });
        if told {
            // Its node kills it; the runner's report of the kill keeps this reason.
            t.message = Some(why.clone());
            // Unless it changed meanwhile (then the message no longer fits).
            ctx.save_task(&t, t.state).await?;
        } else {
            change(ctx, &mut t, Event::GroupEnded, Some(why.clone())).await?;
        }
        tracing::info!(task = t.id, group = failed.batch, "ending a group member: {why}");
    }
    Ok(())
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
