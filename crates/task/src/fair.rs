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

#[cfg(test)]
mod tests {
    use super::*;

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
