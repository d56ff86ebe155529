//! When a node counts as offline. Time is passed in, so the rule is tested without waiting.

use crate::msg::NodeState;

/// Liveness settings, shared by host config and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessPolicy {
    pub heartbeat_interval_ms: u64,
    pub offline_after_ms: u64,
}

impl Default for LivenessPolicy {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 5_000,
            offline_after_ms: 30_000,
        }
    }
}

impl LivenessPolicy {
    /// A node is online while its last heartbeat is younger than `offline_after_ms`.
    pub fn state(&self, last_heartbeat_ms: Option<i64>, now_ms: i64) -> NodeState {
        match last_heartbeat_ms {
            Some(last) if now_ms.saturating_sub(last) < self.offline_after_ms as i64 => NodeState::Online,
            _ => NodeState::Offline,
        }
    }

    /// The nodes whose recorded state differs from what their heartbeats say now.
    pub fn changes<'a>(
        &self,
        nodes: impl IntoIterator<Item = (&'a str, NodeState, Option<i64>)>,
        now_ms: i64,
    ) -> Vec<(&'a str, NodeState)> {
        nodes
            .into_iter()
            .filter_map(|(name, recorded, last)| {
                let now_state = self.state(last, now_ms);
                (now_state != recorded).then_some((name, now_state))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_exactly_at_the_timeout() {
        let p = LivenessPolicy {
            heartbeat_interval_ms: 5_000,
            offline_after_ms: 30_000,
        };
        assert_eq!(p.state(Some(1_000), 30_999), NodeState::Online);
        assert_eq!(p.state(Some(1_000), 31_000), NodeState::Offline);
        assert_eq!(p.state(None, 0), NodeState::Offline);
        // A clock that went backwards never makes a node offline.
        assert_eq!(p.state(Some(50_000), 10_000), NodeState::Online);
    }

    #[test]
    fn changes_lists_only_transitions() {
        let p = LivenessPolicy::default();
        let nodes = [
            ("a", NodeState::Online, Some(0)),
            ("b", NodeState::Online, Some(95_000)),
            ("c", NodeState::Offline, Some(99_000)),
            ("d", NodeState::Offline, None),
        ];
        assert_eq!(
            p.changes(nodes, 100_000),
            vec![("a", NodeState::Offline), ("c", NodeState::Online)]
        );
    }
}
