//! A short history of each node's usage — cores, memory, each GPU — from its heartbeats, for the
//! dashboard's charts and `river node show`. Kept in memory, for the last hour at most: it starts
//! again empty when the host restarts (usage is not work; the store keeps the latest sample).

use river_proto::msg::{NodeUsage, UsageSample};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How far back the history goes.
pub(crate) const SPAN_MS: i64 = 60 * 60 * 1000;

/// At most this many samples a node (an hour of heartbeats every 5 s, with room for faster ones).
const MOST: usize = 1024;

#[derive(Default)]
pub(crate) struct History(Mutex<HashMap<String, VecDeque<UsageSample>>>);

impl History {
    /// Node `name` reported `usage` at `now_ms`.
    pub(crate) fn record(&self, name: &str, now_ms: i64, usage: &NodeUsage) {
        let mut all = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let samples = all.entry(name.to_owned()).or_default();
        samples.push_back(UsageSample {
            at_ms: now_ms,
            cpu_percent: usage.cpu_percent,
            memory_used_bytes: usage.memory_used_bytes,
            gpus: usage.gpus.clone(),
        });
        while samples.len() > MOST || samples.front().is_some_and(|s| s.at_ms < now_ms - SPAN_MS) {
            samples.pop_front();
        }
    }

    /// Node `name`'s samples of the last hour before `now_ms`, oldest first.
    pub(crate) fn of(&self, name: &str, now_ms: i64) -> Vec<UsageSample> {
        let all = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.get(name)
            .map(|s| s.iter().filter(|s| s.at_ms >= now_ms - SPAN_MS).cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets a node that was removed.
    pub(crate) fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu: f32) -> NodeUsage {
        NodeUsage {
            cpu_percent: cpu,
            memory_used_bytes: 1 << 30,
            gpus: Vec::new(),
            no_engine: false,
        }
    }

    #[test]
    fn an_hour_is_kept_and_older_samples_go() {
        let h = History::default();
        for i in 0..10 {
            h.record("n1", i * 10 * 60 * 1000, &usage(i as f32));
        }
        // At 90 min: the samples of the last hour (30…90 min), oldest first.
        let now = 90 * 60 * 1000;
        let kept: Vec<f32> = h.of("n1", now).iter().map(|s| s.cpu_percent).collect();
        assert_eq!(kept, vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        // Later, with no heartbeat meanwhile, nothing is that recent.
        assert!(h.of("n1", now + 2 * SPAN_MS).is_empty());
        assert!(h.of("other", now).is_empty());
        h.forget("n1");
        assert!(h.of("n1", now).is_empty());
    }

    #[test]
    fn a_node_holds_at_most_so_many_samples() {
        let h = History::default();
        for i in 0..(MOST as i64 + 50) {
            h.record("n1", i, &usage(0.0));
        }
        let kept = h.of("n1", MOST as i64 + 50);
        assert_eq!(kept.len(), MOST);
        assert_eq!(kept[0].at_ms, 50);
    }
}
