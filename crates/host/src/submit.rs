//! The front door for new work: a submission is checked (can it ever run? within the user's
//! limits?), its environment and VPS settings resolved, a group or an overlay address arranged,
//! and its tasks stored to wait for the scheduler (`tasks.rs`).

use crate::auth::Caller;
use crate::cluster_view::{ask, sched_node};
use crate::lifecycle;
use crate::reply::err;
use crate::Ctx;
use river_proto::msg::{ErrorKind, Response, Role, TaskSpec};
use river_task::lifecycle::Event;
use river_task::place;
use river_task::state::TaskState;

pub(crate) async fn submit(ctx: &Ctx, caller: &Caller, spec: TaskSpec) -> anyhow::Result<Response> {
    let mut spec = spec;
    if let Err(refusal) = crate::vps::prepare(&mut spec) {
        return Ok(refusal);
    }
    if spec.command.is_empty() {
        return Ok(err(
            ErrorKind::Invalid,
            "no command given; put it after `--`, e.g. river task submit -- python train.py",
        ));
    }
    if spec.privileged {
        if !ctx.cfg.allow_privileged {
            return Ok(err(
                ErrorKind::Forbidden,
                "privileged tasks are off on this cluster; an admin can allow them with `allow_privileged = true` in the host config",
            ));
        }
        if !matches!(caller, Caller::User { role, .. } if *role >= Role::Operator) {
            return Ok(err(ErrorKind::Forbidden, "privileged tasks need the operator role"));
        }
    }
    if spec.no_container {
        if !spec.image.trim().is_empty() || spec.environment.is_some() {
            return Ok(err(
                ErrorKind::Invalid,
                "--no-container runs the command on the node itself; drop --image and --env",
            ));
        }
        if !spec.mounts.is_empty() {
            return Ok(err(
                ErrorKind::Invalid,
                "--no-container tasks see the node's own files; --mount does not apply (RIVER_SHARED and RIVER_SCRATCH name the shared and scratch directories)",
            ));
        }
    } else if let Err(refusal) = crate::envs::resolve(ctx, &mut spec).await? {
        return Ok(refusal);
    }
    match spec.network.as_deref() {
        None | Some("bridge") => {}
        Some("overlay") if ctx.overlay.is_none() => {
            return Ok(err(
                ErrorKind::Invalid,
                "the overlay network is off on this cluster; an admin turns it on with `[overlay] enabled = true` in the host config",
            ))
        }
        Some("overlay") if spec.no_container => {
            return Ok(err(
                ErrorKind::Invalid,
                "--no-container tasks share the node's own network; --network does not apply",
            ))
        }
        Some("overlay") => {}
        Some(other) => {
            return Ok(err(
                ErrorKind::Invalid,
                format!("--network {other}: the networks are `overlay` and `bridge`"),
            ))
        }
    }
    // Only the host sets these.
    spec.ip = None;
    spec.rank = None;
    let adding = u64::from(spec.nodes.unwrap_or(0)).max(spec.targets.len().max(1) as u64);
    if let Err(refusal) = crate::limits::check_submit(ctx, caller, &spec, adding).await? {
        return Ok(refusal);
    }
    if spec.nodes.is_some() || spec.group {
        if spec.ip_token.is_some() {
            return Ok(err(
                ErrorKind::Invalid,
                "a group reserves its members' addresses itself; drop --ip-token",
            ));
        }
        return crate::groups::submit(ctx, caller, spec).await;
    }
    let reserved = match crate::overlay::take_token(ctx, &mut spec).await? {
        Ok(r) => r,
        Err(refusal) => return Ok(refusal),
    };
    // Impossible requests are refused now, with the reason; possible ones wait their turn. A
    // node that joined but has not reported its machine yet cannot judge: its tasks just wait.
    let all = ctx.store.nodes().await?;
    let unknown = |name: &str| all.iter().any(|n| n.name == name && n.info.cores == 0);
    let nodes: Vec<place::Node> = all
        .iter()
        .filter(|n| n.info.cores > 0)
        .map(|n| sched_node(ctx, n))
        .collect();
    let targets: Vec<Option<&str>> = if spec.targets.is_empty() {
        vec![None]
    } else {
        spec.targets.iter().map(|t| Some(t.as_str())).collect()
    };
    for t in &targets {
        let a = match ask(&spec, *t) {
            Ok(a) => a,
            Err(e) => return Ok(err(ErrorKind::Invalid, e)),
        };
        let judgeable = match &a.target {
            Some(t) => !unknown(t.node.as_str()),
            None => !nodes.is_empty() || all.is_empty(),
        };
        if judgeable {
            if let Err(why) = place::check(&a, &nodes) {
                return Ok(err(ErrorKind::Invalid, why));
            }
        }
    }
    let first = crate::approvals::initial_state(ctx, caller);
    let members: Vec<(&TaskSpec, Option<&str>)> = if spec.targets.is_empty() {
        vec![(&spec, None)]
    } else {
        spec.targets.iter().map(|t| (&spec, Some(t.as_str()))).collect()
    };
    let ids = ctx
        .store
        .insert_batch_as(&caller.actor(), &members, ctx.clock.now_ms(), first)
        .await?;
    ctx.events.tasks_changed(&ids, &caller.actor(), first);
    ctx.queued_owners
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .1
        .insert(caller.actor());
    if let Some((ip, nonce)) = reserved {
        if !crate::overlay::claim(ctx, &ip, &nonce, ids[0]).await? {
            // Another submission claimed it between the check and now.
            if let Some(mut t) = ctx.store.task(ids[0]).await? {
                let why = format!("the reservation of {ip} was used by another task");
                lifecycle::change(ctx, &mut t, Event::Ended(TaskState::Killed), Some(why)).await?;
            }
            return Ok(err(
                ErrorKind::Conflict,
                format!("the reservation of {ip} was just used by another task"),
            ));
        }
    }
    ctx.store
        .event(ctx.clock.now_ms(), &caller.actor(), "task.submit", &format!("{ids:?}"))
        .await?;
    ctx.kick.notify_one();
    Ok(Response::TaskSubmitted { batch: ids[0], ids })
}
