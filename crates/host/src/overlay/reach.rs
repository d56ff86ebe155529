//! The overlay's reach sets: for each owner, the addresses of their containers that have not
//! ended. Each runner gets them with its plan and lets into a container only what comes from its
//! own set (`river_overlay::reach`). The sets are read from the store — the one record of which
//! task holds which address — whenever the scheduler has just given out addresses (before the
//! tasks' starts are sent) and every [`super::PERIOD`], and sent only when they changed.
//!
//! An address is only ever given to a new owner by the scheduler, after its earlier task ended;
//! the sets sent before that start therefore never let the new owner reach the old one's
//! containers. Between two reads a set may still hold the address of a task that has ended: it
//! belongs to no one then, and is gone from the set before anyone gets it again.

use super::Overlay;
use crate::Ctx;
use river_store::TaskRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The overlay address a task that has not ended holds: the one it was placed with, or the one
/// it asks for (a reservation, a group member's, a stopped VPS's).
pub(crate) fn address_of(t: &TaskRecord) -> Option<Ipv4Addr> {
    t.placement
        .as_ref()
        .and_then(|p| p.ip.as_ref())
        .or(t.assigned.ip.as_ref())
        .and_then(|ip| ip.parse().ok())
}

/// Each owner's addresses among `unfinished` (tasks that have not ended).
pub(crate) fn sets_of(unfinished: &[TaskRecord]) -> BTreeMap<String, BTreeSet<Ipv4Addr>> {
    let mut sets: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for t in unfinished {
        if let Some(ip) = address_of(t) {
            sets.entry(t.owner.clone()).or_default().insert(ip);
        }
    }
    sets
}

impl Overlay {
    /// Keeps `sets`; whether they differ from those kept before.
    pub(super) fn set_reach(&self, sets: BTreeMap<String, BTreeSet<Ipv4Addr>>) -> bool {
        let mut kept = self.reach.lock().unwrap_or_else(|e| e.into_inner());
        let changed = *kept != sets;
        *kept = sets;
        changed
    }

    /// The sets as a plan carries them.
    pub(super) fn reach_sets(&self) -> Vec<Vec<Ipv4Addr>> {
        let kept = self.reach.lock().unwrap_or_else(|e| e.into_inner());
        kept.values().map(|s| s.iter().copied().collect()).collect()
    }
}

/// Reads the reach sets from the store and, if they changed, sends every runner its plan.
pub(crate) async fn refresh_reach(ctx: &Ctx) -> anyhow::Result<()> {
    let Some(o) = ctx.overlay.as_ref() else { return Ok(()) };
    let sets = sets_of(&ctx.store.unfinished_tasks().await?);
    if o.set_reach(sets) {
        super::send_plans(ctx);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use river_proto::msg::{TaskPlacement, TaskSpec};

    fn task(id: u64, owner: &str, placed: Option<&str>, asked: Option<&str>) -> TaskRecord {
        let spec = TaskSpec::new("img", vec!["true".into()]);
        let assigned = river_proto::msg::Assigned {
            ip: asked.map(str::to_owned),
            ..Default::default()
        };
        let placement = placed.map(|ip| TaskPlacement {
            node: "a".into(),
            cores: vec![0],
            numa: None,
            gpus: Vec::new(),
            memory_bytes: 0,
            ip: Some(ip.to_owned()),
            owner: None,
        });
        TaskRecord {
            id,
            batch: id,
            name: None,
            owner: owner.into(),
            spec,
            assigned,
            target: None,
            state: river_task::state::TaskState::Running,
            placement,
            exit_code: None,
            message: None,
            submitted_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
        }
    }

    #[test]
    fn each_owner_gets_the_addresses_their_tasks_hold_or_ask_for() {
        let tasks = [
            task(1, "alice", Some("10.128.1.2"), None),
            task(2, "alice", None, Some("10.128.2.7")),
            task(3, "mallory", Some("10.128.1.3"), None),
            task(4, "mallory", None, None),
            task(5, "bob", Some("not an address"), None),
        ];
        let sets = sets_of(&tasks);
        let ips = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<BTreeSet<Ipv4Addr>>();
        assert_eq!(sets.len(), 2, "{sets:?}");
        assert_eq!(sets["alice"], ips(&["10.128.1.2", "10.128.2.7"]));
        assert_eq!(sets["mallory"], ips(&["10.128.1.3"]));
    }
}
