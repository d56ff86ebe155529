//! Distributed launches: `river task submit --nodes N` (or several targets with `--group`) runs
//! one member per node, each with an overlay address held from submit to its end and the
//! environment a launcher needs (torchrun reads `PET_*`, most others `MASTER_ADDR` and friends),
//! and ends the whole group when one member fails.

use crate::auth::Caller;
use crate::cluster_view::{ask, sched_node, usage_by_node};
use crate::reply::{refused, HostResult};
use crate::Ctx;
use river_proto::msg::{Assigned, ErrorKind, Response, TaskSpec};
use river_task::place;
use std::net::Ipv4Addr;

/// The rendezvous port members are told (PyTorch's customary one).
pub(crate) const MASTER_PORT: u16 = 29500;

/// A group of `n` members (`river_task::workload` has judged its shape), each with what the host
/// assigned the submission (its archive) and an address and rank of its own.
pub(crate) async fn submit(
    ctx: &Ctx,
    caller: &Caller,
    spec: TaskSpec,
    n: u32,
    assigned: Assigned,
) -> HostResult<Response> {
    let Some(overlay) = ctx.overlay.as_ref() else {
        return Err(refused(
            ErrorKind::Invalid,
            "a distributed launch needs the overlay network (members reach each other by address); an admin turns it on with `[overlay] enabled = true` in the host config",
        ));
    };
    let nodes: Vec<place::Node> = ctx.store.nodes().await?.iter().map(|r| sched_node(ctx, r)).collect();
    let used = usage_by_node(&ctx.store.holding_tasks().await?);
    // Which node each member runs on: the targets given, or the n online nodes on the overlay
    // that can hold one member, most free cores first.
    let targets: Vec<String> = if spec.targets.is_empty() {
        let a = match ask(&spec, None) {
            Ok(a) => a,
            Err(e) => return Err(refused(ErrorKind::Invalid, e)),
        };
        let mut fit: Vec<&place::Node> = nodes
            .iter()
            .filter(|node| node.online && overlay.subnet_of(&node.name).is_some())
            .filter(|node| place::check(&a, std::slice::from_ref(*node)).is_ok())
            .collect();
        let free = |node: &place::Node| {
            node.cpus()
                .saturating_sub(used.get(&node.name).map_or(0, |u| u.cores.len()))
        };
        fit.sort_by_key(|node| (std::cmp::Reverse(free(node)), node.name.clone()));
        if fit.len() < n as usize {
            return Err(refused(
                ErrorKind::Invalid,
                format!(
                    "a group of {n} needs {n} online nodes on the overlay that can each run one member ({} cores, {} GPUs); {} can",
                    spec.cores,
                    spec.gpus,
                    fit.len()
                ),
            ));
        }
        fit.iter().take(n as usize).map(|node| node.name.clone()).collect()
    } else {
        spec.targets.clone()
    };
    let mut names: Vec<&str> = targets.iter().map(|t| t.split(':').next().unwrap_or(t)).collect();
    for t in &targets {
        let a = match ask(&spec, Some(t)) {
            Ok(a) => a,
            Err(e) => return Err(refused(ErrorKind::Invalid, e)),
        };
        if let Err(why) = place::check(&a, &nodes) {
            return Err(refused(ErrorKind::Invalid, why));
        }
    }
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(refused(
            ErrorKind::Invalid,
            "group members run on different nodes: one target per node",
        ));
    }
    // Addresses for every member, held from now on.
    let mut taken = crate::overlay::taken(ctx).await?;
    let mut ips: Vec<Ipv4Addr> = Vec::with_capacity(targets.len());
    for t in &targets {
        let node = t.split(':').next().unwrap_or(t);
        let Some(ip) = overlay.free_ip(node, &taken) else {
            return Err(refused(
                ErrorKind::Conflict,
                format!("node {node} has no free overlay address (or no overlay subnet yet)"),
            ));
        };
        taken.insert(ip);
        ips.push(ip);
    }
    let master = ips[0];
    let specs: Vec<(TaskSpec, Assigned)> = ips
        .iter()
        .enumerate()
        .map(|(rank, ip)| member(&spec, &assigned, rank as u32, n, *ip, master))
        .collect();
    let members: Vec<(&TaskSpec, &Assigned, Option<&str>)> = specs
        .iter()
        .zip(&targets)
        .map(|((s, a), t)| (s, a, Some(t.as_str())))
        .collect();
    let ids = ctx
        .store
        .insert_batch_as(
            &caller.actor(),
            &members,
            ctx.clock.now_ms(),
            crate::approvals::initial_state(ctx, caller),
        )
        .await?;
    ctx.events
        .tasks_changed(&ids, &caller.actor(), crate::approvals::initial_state(ctx, caller));
    for ((id, ip), t) in ids.iter().zip(&ips).zip(&targets) {
        crate::overlay::hold(ctx, &caller.actor(), t.split(':').next().unwrap_or(t), *ip, *id).await?;
    }
    ctx.store
        .event(
            ctx.clock.now_ms(),
            &caller.actor(),
            "task.group",
            &format!("{ids:?} master {master}"),
        )
        .await?;
    ctx.kick.notify_one();
    Ok(Response::TaskSubmitted { batch: ids[0], ids })
}

/// Member `rank`'s spec, with the launcher's environment, and what the host assigns it: its
/// rank and its pinned address, beside the submission's `assigned`.
fn member(
    spec: &TaskSpec,
    assigned: &Assigned,
    rank: u32,
    size: u32,
    ip: Ipv4Addr,
    master: Ipv4Addr,
) -> (TaskSpec, Assigned) {
    let mut s = spec.clone();
    s.nodes = None;
    s.group = false;
    s.targets = Vec::new();
    s.network = Some("overlay".into());
    let assigned = Assigned {
        rank: Some(rank),
        ip: Some(ip.to_string()),
        ..assigned.clone()
    };
    let mut env = vec![
        ("MASTER_ADDR", master.to_string()),
        ("MASTER_PORT", MASTER_PORT.to_string()),
        ("WORLD_SIZE", size.to_string()),
        ("NODE_RANK", rank.to_string()),
        ("RIVER_MASTER_ADDR", master.to_string()),
        ("RIVER_GROUP_SIZE", size.to_string()),
        ("RIVER_NODE_RANK", rank.to_string()),
        ("RIVER_IP", ip.to_string()),
        // torchrun takes every option from PET_<OPTION>: `torchrun train.py` needs no flags.
        ("PET_NNODES", size.to_string()),
        ("PET_NODE_RANK", rank.to_string()),
        ("PET_MASTER_ADDR", master.to_string()),
        ("PET_MASTER_PORT", MASTER_PORT.to_string()),
    ];
    if spec.gpus > 0 {
        env.push(("PET_NPROC_PER_NODE", spec.gpus.to_string()));
    }
    // The user's own settings win over ours.
    for (k, v) in env {
        if !s.env.iter().any(|(uk, _)| uk == k) {
            s.env.push((k.to_owned(), v));
        }
    }
    (s, assigned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_get_the_launcher_environment_and_keep_the_users_own() {
        let mut spec = TaskSpec::new("img", vec!["torchrun".into(), "train.py".into()]);
        spec.gpus = 8;
        spec.env.push(("MASTER_PORT".into(), "1234".into()));
        let given = Assigned::default();
        let (m, a) = member(
            &spec,
            &given,
            1,
            2,
            Ipv4Addr::new(10, 128, 2, 2),
            Ipv4Addr::new(10, 128, 1, 2),
        );
        let get = |k: &str| m.env.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MASTER_ADDR"), Some("10.128.1.2"));
        assert_eq!(get("MASTER_PORT"), Some("1234"), "the user's value is kept");
        assert_eq!(m.env.iter().filter(|(k, _)| k == "MASTER_PORT").count(), 1);
        assert_eq!(get("WORLD_SIZE"), Some("2"));
        assert_eq!(get("NODE_RANK"), Some("1"));
        assert_eq!(get("PET_NPROC_PER_NODE"), Some("8"));
        assert_eq!(a.rank, Some(1));
        assert_eq!(a.ip.as_deref(), Some("10.128.2.2"));
        assert_eq!(m.nodes, None);
    }
}
