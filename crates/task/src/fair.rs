//! A fair queue: waiting tasks ordered so that the next free core goes to the waiting user with
//! the fewest tasks running, not to whoever queued first. Within one user, their own tasks keep
//! their order; with one user waiting, the queue is plain FIFO.

use std::collections::HashMap;

/// The order in which to consider `waiting` (`(id, owner)`, oldest first per owner), given how
/// many tasks each owner has `running`: a user's k-th waiting task (from 0) weighs their running
/// count plus k, lighter first, older first between equals. So a user running nothing gets the
/// next core even behind another's thousand queued tasks, and users take turns from then on.
pub fn fair_order<'a>(waiting: &[(u64, &'a str)], running: &HashMap<&'a str, usize>) -> Vec<u64> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut keyed: Vec<(usize, u64)> = waiting
        .iter()
        .map(|(id, owner)| {
            let k = seen.entry(owner).or_insert(0);
            let weight = running.get(owner).copied().unwrap_or(0) + *k;
            *k += 1;
            (weight, *id)
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, id)| id).collect()
}

/// Cores and GPUs: what a task asks for, what a user holds, or a user's limit (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hold {
    pub cores: u32,
    pub gpus: u32,
}

impl Hold {
    fn plus(self, o: Hold) -> Hold {
        Hold {
            cores: self.cores.saturating_add(o.cores),
            gpus: self.gpus.saturating_add(o.gpus),
        }
    }

    /// Whether `self` stays within `limit` (a 0 in it: no limit on that).
    pub fn within(self, limit: Hold) -> bool {
        (limit.cores == 0 || self.cores <= limit.cores) && (limit.gpus == 0 || self.gpus <= limit.gpus)
    }
}

/// The tasks of `queue` (`(id, owner, ask)`, in the order they are considered) that their owners'
/// limits leave room for, given what each owner `held` already: each counts against its owner as
/// it is let through, and one that would take its owner past a limit waits (a smaller one of
/// theirs after it may still fit).
pub fn within_limits<'a>(
    queue: &[(u64, &'a str, Hold)],
    held: &HashMap<&'a str, Hold>,
    limit: impl Fn(&str) -> Hold,
) -> Vec<u64> {
    let mut holds: HashMap<&str, Hold> = held.clone();
    let mut through = Vec::new();
    for (id, owner, ask) in queue {
        let now = holds.get(owner).copied().unwrap_or_default();
        if now.plus(*ask).within(limit(owner)) {
            holds.insert(owner, now.plus(*ask));
            through.push(*id);
        }
    }
    through
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_at_their_limit_waits_and_others_do_not() {
        let h = |cores, gpus| Hold { cores, gpus };
        let queue = [
            (1, "ann", h(4, 0)),
            (2, "ann", h(4, 1)),
            (3, "bob", h(8, 2)),
            (4, "ann", h(2, 0)),
            (5, "ann", h(1, 1)),
        ];
        // Ann may hold 8 cores and 1 GPU and holds 2 cores: 1 fits (6), 2 would be 10 cores,
        // 4 fits (8), 5 would be 9. Bob has no limit.
        let limit = |o: &str| if o == "ann" { h(8, 1) } else { Hold::default() };
        let held = HashMap::from([("ann", h(2, 0))]);
        assert_eq!(within_limits(&queue, &held, limit), vec![1, 3, 4]);
        // No limits: everything, in order.
        assert_eq!(
            within_limits(&queue, &HashMap::new(), |_| Hold::default()),
            vec![1, 2, 3, 4, 5]
        );
        // A GPU limit alone.
        let gpus = |_: &str| h(0, 1);
        assert_eq!(within_limits(&queue, &HashMap::new(), gpus), vec![1, 2, 4]);
    }

    #[test]
    fn one_user_waits_in_fifo_order() {
        let waiting: Vec<(u64, &str)> = (1..=5).map(|i| (i, "ann")).collect();
        assert_eq!(fair_order(&waiting, &HashMap::from([("ann", 3)])), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_user_running_nothing_goes_before_a_long_queue_and_then_users_take_turns() {
        // Ann queued 1..=6 and runs two; Bob queued 7 and 8 after her and runs nothing.
        let mut waiting: Vec<(u64, &str)> = (1..=6).map(|i| (i, "ann")).collect();
        waiting.extend([(7, "bob"), (8, "bob")]);
        let order = fair_order(&waiting, &HashMap::from([("ann", 2)]));
        assert_eq!(order, vec![7, 8, 1, 2, 3, 4, 5, 6]);
        // Running the same: turns, oldest first between equals.
        let order = fair_order(&waiting, &HashMap::from([("ann", 1), ("bob", 1)]));
        assert_eq!(order, vec![1, 7, 2, 8, 3, 4, 5, 6]);
    }
}
