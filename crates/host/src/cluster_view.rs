//! The cluster as the scheduler sees it: nodes (online, cores by NUMA node, GPUs, whether a
//! container engine answers), what a task asks for, and what tasks hold now.

use crate::Ctx;
use river_proto::msg::{NodeState, TaskPlacement, TaskSpec};
use river_store::{NodeRecord, TaskRecord};
use river_task::fair::Hold;
use river_task::place::{self, Ask, GpuSlot, Numa, Usage};
use river_task::target::Target;
use std::collections::{BTreeMap, HashMap};

/// The scheduler's view of a node.
pub(crate) fn sched_node(ctx: &Ctx, n: &NodeRecord) -> place::Node {
    let numa = if n.info.numa.is_empty() {
        vec![Numa {
            id: 0,
            cpus: (0..n.info.cores).collect(),
        }]
    } else {
        n.info
            .numa
            .iter()
            .map(|x| Numa {
                id: x.id,
                cpus: x.cpus.clone(),
            })
            .collect()
    };
    place::Node {
        name: n.name.clone(),
        online: ctx.registry.state(&n.name) == Some(NodeState::Online) && ctx.registry.connected(&n.name),
        memory: n.info.memory_bytes,
        numa,
        gpus: n
            .info
            .gpus
            .iter()
            .map(|g| GpuSlot {
                index: g.index,
                numa: g.numa,
            })
            .collect(),
        // As its last heartbeat says, else its session's start.
        containers: !n.usage.as_ref().map_or(n.info.no_engine, |u| u.no_engine),
    }
}

pub(crate) fn ask(spec: &TaskSpec, target: Option<&str>) -> Result<Ask, String> {
    Ok(Ask {
        cores: spec.cores,
        memory: spec.memory_bytes.unwrap_or(0),
        gpus: spec.gpus,
        target: target.map(Target::parse).transpose()?,
        container: !spec.no_container,
    })
}

/// Whether `t` holds resources on its node now.
fn holds(t: &TaskRecord) -> bool {
    t.state.holds_resources()
}

/// The cores and GPUs each owner's tasks hold now: what their limits are measured against.
pub(crate) fn held_by_owner(holding: &[TaskRecord]) -> HashMap<&str, Hold> {
    let mut held: HashMap<&str, Hold> = HashMap::new();
    for t in holding.iter().filter(|t| holds(t)) {
        let h = held.entry(t.owner.as_str()).or_default();
        h.cores += t.spec.cores;
        h.gpus += t.spec.gpus;
    }
    held
}

/// What the tasks holding resources use, per node.
pub(crate) fn usage_by_node(holding: &[TaskRecord]) -> BTreeMap<String, Usage> {
    let mut used: BTreeMap<String, Usage> = BTreeMap::new();
    for t in holding.iter().filter(|t| holds(t)) {
        if let Some(p) = &t.placement {
            used.entry(p.node.clone()).or_default().add(&to_place(p));
        }
    }
    used
}

fn to_place(p: &TaskPlacement) -> place::Placement {
    place::Placement {
        node: p.node.clone(),
        cores: p.cores.clone(),
        numa: p.numa,
        gpus: p.gpus.clone(),
        memory: p.memory_bytes,
    }
}
