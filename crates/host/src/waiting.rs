//! Why a queued task waits, in a sentence for its owner: what it needs that no node has free now
//! (and which node comes closest), or the owner's own limit, and how many older tasks wait.

use crate::auth::Caller;
use crate::cluster_view::{ask, sched_node, usage_by_node};
use crate::reply::{refused, HostError, HostResult};
use crate::Ctx;
use river_proto::msg::{ErrorKind, Response};
use river_store::TaskRecord;
use river_task::size::human;
use river_task::state::TaskState;
use std::time::{Duration, Instant};

/// The longest a `TaskWait` holds its request.
const WAIT_MAX: Duration = Duration::from_secs(30);

/// How often a wait looks again even without news of a write (a safety net, not the way it
/// learns of changes).
const RECHECK: Duration = Duration::from_millis(250);

/// Task `id` as `river task status` shows it: with why it waits, if it does.
pub(crate) async fn show(ctx: &Ctx, caller: &Caller, id: u64) -> HostResult<Response> {
    Ok(match ctx.store.task(id).await? {
        Some(t) => Response::Task(Box::new(view(ctx, caller, t).await?)),
        None => return Err(not_found(id)),
    })
}

/// Every state task `id` has been in (who may see a task may see its history: states, times,
/// the host's messages — nothing a task list hides).
pub(crate) async fn history(ctx: &Ctx, id: u64) -> HostResult<Response> {
    if ctx.store.task(id).await?.is_none() {
        return Err(not_found(id));
    }
    Ok(Response::TaskHistory(ctx.store.task_history(id).await?))
}

async fn view(ctx: &Ctx, caller: &Caller, t: TaskRecord) -> anyhow::Result<river_proto::msg::TaskView> {
    let waiting = why(ctx, &t).await?;
    let mut v = crate::tasks::view(ctx, caller, t);
    v.waiting = waiting;
    Ok(v)
}

fn not_found(id: u64) -> HostError {
    refused(
        ErrorKind::NotFound,
        format!("no task {id}; `river task list` shows the tasks"),
    )
}

/// Task `id` once its state is none of `past`, or as it is after `timeout` (at most
/// [`WAIT_MAX`]): woken by every write of a task, so a client learns of a start or an end at
/// once instead of at its next poll.
pub(crate) async fn wait(
    ctx: &Ctx,
    caller: &Caller,
    id: u64,
    past: &[String],
    timeout: Duration,
) -> HostResult<Response> {
    let mut changed = ctx.task_changed.subscribe();
    let deadline = Instant::now() + timeout.min(WAIT_MAX);
    loop {
        // Marked seen before the read: a write after this wakes the wait below.
        changed.borrow_and_update();
        let Some(t) = ctx.store.task(id).await? else {
            return Err(not_found(id));
        };
        let now = Instant::now();
        if !past.iter().any(|p| p == t.state.as_str()) || now >= deadline {
            return Ok(Response::Task(Box::new(view(ctx, caller, t).await?)));
        }
        let _ = tokio::time::timeout((deadline - now).min(RECHECK), changed.changed()).await;
    }
}

/// The sentence for queued task `t`; `None` for a task that is not queued.
pub(crate) async fn why(ctx: &Ctx, t: &TaskRecord) -> anyhow::Result<Option<String>> {
    if t.state != TaskState::Queued {
        return Ok(None);
    }
    let Ok(a) = ask(&t.spec, t.target.as_deref()) else {
        return Ok(None);
    };
    let older = ctx.store.queued_before(t.id).await?;
    let holding = ctx.store.holding_tasks().await?;
    let used = usage_by_node(&holding);
    let nodes: Vec<_> = ctx.store.nodes().await?.iter().map(|n| sched_node(ctx, n)).collect();
    let mut parts = Vec::new();
    // The owner's own limit, first: it holds the task back whatever is free.
    let limit = crate::limits::hold_limit(ctx, &t.owner);
    let river_task::fair::Hold { cores, gpus } = crate::cluster_view::held_by_owner(&holding)
        .get(t.owner.as_str())
        .copied()
        .unwrap_or_default();
    if limit.cores > 0 && cores + a.cores > limit.cores {
        parts.push(format!(
            "its owner holds {cores} of the {} cores they may hold at once (`river user limits`)",
            limit.cores
        ));
    } else if limit.gpus > 0 && gpus + a.gpus > limit.gpus {
        parts.push(format!(
            "its owner holds {gpus} of the {} GPUs they may hold at once (`river user limits`)",
            limit.gpus
        ));
    } else {
        let eligible: Vec<_> = nodes
            .iter()
            .filter(|n| a.target.as_ref().is_none_or(|x| x.node.as_str() == n.name))
            .filter(|n| n.containers || !a.container)
            .collect();
        let fits_now = eligible.iter().any(|n| {
            n.online && river_task::place::place_on(&a, n, &used.get(&n.name).cloned().unwrap_or_default()).is_some()
        });
        if fits_now && older == 0 {
            parts.push("it fits now and starts at the next scheduling pass".to_owned());
        } else if fits_now {
            // Backfill lets it pass older tasks, unless one of them holds the node it fits on.
            parts.push("it would fit now; older tasks go first, and one waiting for a larger share may hold the node it fits on".to_owned());
        } else {
            let mut need = format!("{} core{}", a.cores, if a.cores == 1 { "" } else { "s" });
            if a.gpus > 0 {
                need += &format!(", {} GPU{}", a.gpus, if a.gpus == 1 { "" } else { "s" });
            }
            if a.memory > 0 {
                need += &format!(", {} of memory", human(a.memory));
            }
            let free = |n: &river_task::place::Node| {
                let u = used.get(&n.name).cloned().unwrap_or_default();
                (
                    n.cpus().saturating_sub(u.cores.len()),
                    n.gpus.len().saturating_sub(u.gpus.len()),
                    n.memory.saturating_sub(u.memory),
                )
            };
            let closest = eligible.iter().filter(|n| n.online).max_by_key(|n| {
                let (c, g, _) = free(n);
                (g.min(a.gpus as usize), c)
            });
            parts.push(match closest {
                Some(n) => {
                    let (c, g, m) = free(n);
                    format!(
                        "it needs {need}; the most free now is on {}: {c} core{}, {g} GPU{}, {} of memory",
                        n.name,
                        if c == 1 { "" } else { "s" },
                        if g == 1 { "" } else { "s" },
                        human(m)
                    )
                }
                None => format!("it needs {need}, and no node it may run on is online"),
            });
        }
    }
    if older > 0 {
        parts.push(format!(
            "{older} older task{} wait{} too",
            if older == 1 { "" } else { "s" },
            if older == 1 { "s" } else { "" }
        ));
    }
    Ok(Some(parts.join("; ")))
}
