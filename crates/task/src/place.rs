//! Placement and the queue: which node, cores, NUMA node and GPUs a task gets, and in what order
//! waiting tasks start.
//!
//! - **Refused at submit** only when no node could ever run the task ([`check`]), with the reason.
//!   Otherwise a task waits in the queue; a busy cluster never refuses.
//! - **FIFO with backfill** ([`schedule`]): tasks start in submission order; a task that cannot
//!   start yet does not block smaller ones behind it, but the *first* such task reserves the node
//!   it will fit on soonest, and later tasks may not use that node, so a large task is never
//!   starved by a stream of small ones. (No run-time estimates are needed, unlike EASY backfill.)
//! - **Packing**: among nodes that fit, the one left with the fewest free GPUs, then cores, so
//!   whole machines stay free for large jobs.
//! - **NUMA**: cores come from one NUMA node when they fit (that node's memory too, through
//!   cpuset-mems), preferring the NUMA node of the task's GPUs; a `HOST:NUMA` target insists.

use crate::target::Target;
use std::collections::{BTreeMap, BTreeSet};

/// What a task asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub cores: u32,
    pub memory: u64,
    /// How many GPUs; with GPU ids in the target this must be 0 or their number.
    pub gpus: u32,
    pub target: Option<Target>,
    /// It runs in a container, so only where a container engine answers.
    pub container: bool,
}

impl Ask {
    fn gpu_ids(&self) -> &[u32] {
        self.target.as_ref().map_or(&[], |t| t.gpus.as_slice())
    }

    fn gpu_count(&self) -> u32 {
        let ids = self.gpu_ids();
        if ids.is_empty() {
            self.gpus
        } else {
            u32::try_from(ids.len()).unwrap_or(u32::MAX)
        }
    }
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub online: bool,
    pub memory: u64,
    /// At least one entry: a machine without NUMA information is one NUMA node 0.
    pub numa: Vec<Numa>,
    pub gpus: Vec<GpuSlot>,
    /// A container engine answers there (its runner says so at every heartbeat).
    pub containers: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numa {
    pub id: u32,
    pub cpus: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuSlot {
    pub index: u32,
    pub numa: Option<u32>,
}

impl Node {
    /// How many cores the node has.
    pub fn cpus(&self) -> usize {
        self.numa.iter().map(|n| n.cpus.len()).sum()
    }
}

/// What is in use on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub cores: BTreeSet<u32>,
    pub memory: u64,
    pub gpus: BTreeSet<u32>,
}

impl Usage {
    pub fn add(&mut self, p: &Placement) {
        self.cores.extend(&p.cores);
        self.gpus.extend(&p.gpus);
        self.memory += p.memory;
    }

    pub fn remove(&mut self, p: &Placement) {
        for c in &p.cores {
            self.cores.remove(c);
        }
        for g in &p.gpus {
            self.gpus.remove(g);
        }
        self.memory = self.memory.saturating_sub(p.memory);
    }
}

/// Where a task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    pub cores: Vec<u32>,
    /// The NUMA node all cores are on (its memory is used), when they are on one.
    pub numa: Option<u32>,
    pub gpus: Vec<u32>,
    pub memory: u64,
}

fn list(ids: impl IntoIterator<Item = u32>) -> String {
    let v: Vec<String> = ids.into_iter().map(|i| i.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Could this node ever run the task (ignoring what runs there now)? The error says why not.
fn fits_total(ask: &Ask, node: &Node) -> Result<(), String> {
    let n = &node.name;
    if ask.container && !node.containers {
        return Err(format!(
            "node {n} has no container engine answering (Docker): it runs --no-container tasks only, until one does"
        ));
    }
    let target_numa = ask.target.as_ref().and_then(|t| t.numa);
    let cpus = match target_numa {
        Some(id) => match node.numa.iter().find(|x| x.id == id) {
            Some(x) => x.cpus.len(),
            None => {
                return Err(format!(
                    "node {n} has no NUMA node {id} (it has {})",
                    list(node.numa.iter().map(|x| x.id))
                ))
            }
        },
        None => node.cpus(),
    };
    if ask.cores as usize > cpus {
        let scope = target_numa.map_or(String::new(), |id| format!(" on NUMA node {id}"));
        return Err(format!("asks for {} cores but node {n} has {cpus}{scope}", ask.cores));
    }
    if ask.memory > node.memory {
        return Err(format!(
            "asks for {} of memory but node {n} has {}",
            crate::size::human(ask.memory),
            crate::size::human(node.memory)
        ));
    }
    for id in ask.gpu_ids() {
        if !node.gpus.iter().any(|g| g.index == *id) {
            return Err(format!(
                "node {n} has no GPU {id} (it has {})",
                list(node.gpus.iter().map(|g| g.index))
            ));
        }
    }
    if ask.gpu_count() as usize > node.gpus.len() {
        return Err(format!(
            "asks for {} GPUs but node {n} has {}",
            ask.gpu_count(),
            node.gpus.len()
        ));
    }
    Ok(())
}

/// Refuses, at submit time, a task no node could ever run; the message says why.
pub fn check(ask: &Ask, nodes: &[Node]) -> Result<(), String> {
    if ask.cores == 0 {
        return Err("a task needs at least one core".into());
    }
    let ids = ask.gpu_ids();
    if !ids.is_empty() && ask.gpus != 0 && ask.gpus as usize != ids.len() {
        return Err(format!(
            "--gpus {} does not match the {} GPUs named in the target",
            ask.gpus,
            ids.len()
        ));
    }
    match &ask.target {
        Some(t) => {
            let node = nodes
                .iter()
                .find(|n| n.name == t.node.as_str())
                .ok_or_else(|| format!("no node named {}; `river node list` shows the nodes", t.node))?;
            fits_total(ask, node)
        }
        None => {
            if nodes.is_empty() {
                return Err("the cluster has no nodes yet; join one with `river token create`".into());
            }
            let reasons: Vec<String> = nodes.iter().filter_map(|n| fits_total(ask, n).err()).collect();
            if reasons.len() < nodes.len() {
                Ok(())
            } else {
                Err(format!("no node can ever run this task: {}", reasons.join("; ")))
            }
        }
    }
}

/// Picks cores (and GPUs) for a task on one node given what is in use, or `None` if it does not
/// fit now.
pub fn place_on(ask: &Ask, node: &Node, used: &Usage) -> Option<Placement> {
    if ask.memory > node.memory.saturating_sub(used.memory) {
        return None;
    }
    let target_numa = ask.target.as_ref().and_then(|t| t.numa);
    let free_cpus =
        |numa: &Numa| -> Vec<u32> { numa.cpus.iter().copied().filter(|c| !used.cores.contains(c)).collect() };
    let free_gpus: Vec<GpuSlot> = node
        .gpus
        .iter()
        .copied()
        .filter(|g| !used.gpus.contains(&g.index))
        .collect();

    // GPUs first: named ones must all be free; a count prefers GPUs sharing a NUMA node with
    // enough free cores.
    let ids = ask.gpu_ids();
    let count = ask.gpu_count() as usize;
    let gpus: Vec<GpuSlot> = if !ids.is_empty() {
        let chosen: Vec<GpuSlot> = free_gpus.iter().copied().filter(|g| ids.contains(&g.index)).collect();
        if chosen.len() != ids.len() {
            return None;
        }
        chosen
    } else if count > 0 {
        if free_gpus.len() < count {
            return None;
        }
        let local = node
            .numa
            .iter()
            .filter(|n| target_numa.is_none_or(|t| t == n.id))
            .find_map(|n| {
                let here: Vec<GpuSlot> = free_gpus.iter().copied().filter(|g| g.numa == Some(n.id)).collect();
                (here.len() >= count && free_cpus(n).len() >= ask.cores as usize).then(|| here[..count].to_vec())
            });
        local.unwrap_or_else(|| free_gpus[..count].to_vec())
    } else {
        Vec::new()
    };
    let gpu_numa = gpus
        .first()
        .and_then(|g| g.numa)
        .filter(|n| gpus.iter().all(|g| g.numa == Some(*n)));

    // Cores: one NUMA node if possible (the GPUs' first, then the tightest fit); spread only
    // when no NUMA node was asked for.
    let want = ask.cores as usize;
    let mut order: Vec<&Numa> = node
        .numa
        .iter()
        .filter(|n| target_numa.is_none_or(|t| t == n.id))
        .collect();
    order.sort_by_key(|n| (Some(n.id) != gpu_numa, free_cpus(n).len(), n.id));
    if let Some(n) = order.iter().find(|n| free_cpus(n).len() >= want) {
        return Some(Placement {
            node: node.name.clone(),
            cores: free_cpus(n)[..want].to_vec(),
            numa: Some(n.id),
            gpus: gpus.iter().map(|g| g.index).collect(),
            memory: ask.memory,
        });
    }
    if target_numa.is_some() {
        return None;
    }
    let mut cores: Vec<u32> = Vec::with_capacity(want);
    order.sort_by_key(|n| std::cmp::Reverse(free_cpus(n).len()));
    for n in order {
        cores.extend(free_cpus(n).into_iter().take(want - cores.len()));
    }
    (cores.len() == want).then(|| Placement {
        node: node.name.clone(),
        cores,
        numa: None,
        gpus: gpus.iter().map(|g| g.index).collect(),
        memory: ask.memory,
    })
}

/// Starts what can start, in queue order with backfill (see the module docs). `used` is updated
/// with every placement made. Returns `(task id, placement)` pairs; the rest stay queued.
pub fn schedule<Id: Copy>(
    queue: &[(Id, Ask)],
    nodes: &[Node],
    used: &mut BTreeMap<String, Usage>,
) -> Vec<(Id, Placement)> {
    let mut out = Vec::new();
    let mut reserved: Option<&str> = None;
    for (id, ask) in queue {
        let eligible = |n: &&Node| {
            n.online
                && (n.containers || !ask.container)
                && ask.target.as_ref().is_none_or(|t| t.node.as_str() == n.name)
        };
        let best = nodes
            .iter()
            .filter(eligible)
            .filter(|n| Some(n.name.as_str()) != reserved)
            .filter_map(|n| {
                let u = used.get(&n.name).cloned().unwrap_or_default();
                let p = place_on(ask, n, &u)?;
                // Saturating: usage reported by a runner is input, not an invariant.
                let free_gpus = n.gpus.len().saturating_sub(u.gpus.len() + p.gpus.len());
                let free_cores = n.cpus().saturating_sub(u.cores.len() + p.cores.len());
                Some(((free_gpus, free_cores, n.name.clone()), p))
            })
            .min_by(|a, b| a.0.cmp(&b.0));
        match best {
            Some((_, p)) => {
                used.entry(p.node.clone()).or_default().add(&p);
                out.push((*id, p));
            }
            None if reserved.is_none() => {
                // The first task that must wait holds the node it will fit on soonest.
                reserved = nodes
                    .iter()
                    .filter(eligible)
                    .filter(|n| fits_total(ask, n).is_ok())
                    .max_by_key(|n| {
                        let u = used.get(&n.name).cloned().unwrap_or_default();
                        (
                            n.gpus.len().saturating_sub(u.gpus.len()),
                            n.cpus().saturating_sub(u.cores.len()),
                        )
                    })
                    .map(|n| n.name.as_str());
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
