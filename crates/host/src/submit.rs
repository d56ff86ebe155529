//! The front door for new work: a submission is checked (can it ever run? within the user's
//! limits?), its environment and VPS settings resolved, a group or an overlay address arranged,
//! and its tasks stored to wait for the scheduler (`tasks.rs`).

use crate::auth::Caller;
use crate::cluster_view::{ask, sched_node};
use crate::lifecycle;
use crate::reply::{refused, HostResult};
use crate::Ctx;
use river_proto::msg::{Assigned, ErrorKind, Response, Role, TaskSpec};
use river_task::lifecycle::Event;
use river_task::place;
use river_task::state::TaskState;
use river_task::workload::{self, Kind, Network, Shape};

pub(crate) async fn submit(ctx: &Ctx, caller: &Caller, spec: TaskSpec) -> HostResult<Response> {
    let mut spec = spec;
    // Whether it can run at all, judged once for every kind of work (`river_task::workload`).
    let work = workload::parse(&spec).map_err(|why| refused(ErrorKind::Invalid, why))?;
    crate::vps::prepare(&mut spec)?;
    if spec.privileged {
        if !ctx.cfg.allow_privileged {
            return Err(refused(
                ErrorKind::Forbidden,
                "privileged tasks are off on this cluster; an admin can allow them with `allow_privileged = true` in the host config",
            ));
        }
        if !matches!(caller, Caller::User { role, .. } if *role >= Role::Operator) {
            return Err(refused(ErrorKind::Forbidden, "privileged tasks need the operator role"));
        }
    }
    // What the host decides for it, apart from what the user asked.
    let mut assigned = Assigned::default();
    if work.kind != Kind::Process {
        assigned.archive = crate::envs::resolve(ctx, &mut spec).await?;
    }
    if work.network == Network::Overlay && ctx.overlay.is_none() && !matches!(work.shape, Shape::Group(_)) {
        return Err(refused(
            ErrorKind::Invalid,
            "the overlay network is off on this cluster; an admin turns it on with `[overlay] enabled = true` in the host config",
        ));
    }
    let adding = u64::from(spec.nodes.unwrap_or(0)).max(spec.targets.len().max(1) as u64);
    crate::limits::check_submit(ctx, caller, &spec, adding).await?;
    if let Shape::Group(members) = work.shape {
        return crate::groups::submit(ctx, caller, spec, members, assigned).await;
    }
    let reserved = crate::overlay::take_token(ctx, &mut spec).await?;
    assigned.ip = reserved.as_ref().map(|(ip, _)| ip.clone());
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
            Err(e) => return Err(refused(ErrorKind::Invalid, e)),
        };
        let judgeable = match &a.target {
            Some(t) => !unknown(t.node.as_str()),
            None => !nodes.is_empty() || all.is_empty(),
        };
        if judgeable {
            if let Err(why) = place::check(&a, &nodes) {
                return Err(refused(ErrorKind::Invalid, why));
            }
        }
    }
    let first = crate::approvals::initial_state(ctx, caller);
    let members: Vec<(&TaskSpec, &Assigned, Option<&str>)> = if spec.targets.is_empty() {
        vec![(&spec, &assigned, None)]
    } else {
        spec.targets
            .iter()
            .map(|t| (&spec, &assigned, Some(t.as_str())))
            .collect()
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
            return Err(refused(
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
