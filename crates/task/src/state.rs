//! Task states and the transitions between them. The host refuses any other transition, so a late
//! or duplicated report from a runner can never, say, revive a killed task.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Accepted, waiting for resources.
    Queued,
    /// Placed on a node; the runner is preparing it (image, container).
    Assigned,
    Running,
    Paused,
    /// Exited 0.
    Completed,
    /// Exited non-zero, or could not start.
    Failed,
    /// Stopped by a user.
    Killed,
    /// Killed by the kernel for exceeding its memory limit (read from the container's state).
    Oom,
    /// Its node went offline; it may come back.
    Lost,
    /// Submitted by a role the cluster asks approval for: an operator approves it (it is queued)
    /// or rejects it (it ends killed, with the reason). The scheduler does not see it.
    PendingApproval,
    /// A VPS whose container is stopped and kept on its node: it holds no resources and can be
    /// started again (back through the queue, to the same node).
    Stopped,
}

impl TaskState {
    /// Every state.
    pub const ALL: [TaskState; 11] = [
        Self::Queued,
        Self::Assigned,
        Self::Running,
        Self::Paused,
        Self::Completed,
        Self::Failed,
        Self::Killed,
        Self::Oom,
        Self::Lost,
        Self::Stopped,
        Self::PendingApproval,
    ];

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Killed | Self::Oom)
    }

    /// Whether the task holds resources on a node (so the scheduler must count them).
    pub fn holds_resources(self) -> bool {
        // A lost task may still be running on its node: keep its resources until it is settled.
        matches!(self, Self::Assigned | Self::Running | Self::Paused | Self::Lost)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Assigned => "assigned",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Killed => "killed",
            Self::Oom => "oom",
            Self::Lost => "lost",
            Self::Stopped => "stopped",
            Self::PendingApproval => "pending_approval",
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown task state {s:?}; use pending_approval, queued, assigned, running, paused, completed, failed, killed, oom, lost or stopped"))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a {} task cannot become {}", from.as_str(), to.as_str())]
pub struct InvalidTransition {
    pub from: TaskState,
    pub to: TaskState,
}

/// Checks a transition and returns the new state.
pub fn transition(from: TaskState, to: TaskState) -> Result<TaskState, InvalidTransition> {
    use TaskState::*;
    let ok = match from {
        PendingApproval => matches!(to, Queued | Killed),
        Queued => matches!(to, Assigned | Killed),
        // Back to the queue when the runner could not take it after all (resources raced).
        Assigned => matches!(to, Queued | Running | Failed | Killed | Oom | Lost | Stopped),
        Running => matches!(to, Paused | Completed | Failed | Killed | Oom | Lost | Stopped),
        Paused => matches!(to, Running | Killed | Failed | Lost | Stopped),
        // The node came back: with the task still running or paused, or with how it ended; or a
        // VPS was started elsewhere from a snapshot while its node was away.
        Lost => matches!(
            to,
            Queued | Running | Paused | Completed | Failed | Killed | Oom | Stopped
        ),
        // Started again (queued for its node), or removed.
        Stopped => matches!(to, Queued | Killed | Failed),
        Completed | Failed | Killed | Oom => false,
    };
    if ok {
        Ok(to)
    } else {
        Err(InvalidTransition { from, to })
    }
}

/// How a task ended, from what the container runtime says: OOM only when the runtime says the
/// kernel killed it for memory, never guessed from exit code 137 (any SIGKILL gives 137).
pub fn exit_state(exit_code: i64, oom_killed: bool, kill_requested: bool) -> TaskState {
    if oom_killed {
        TaskState::Oom
    } else if kill_requested {
        TaskState::Killed
    } else if exit_code == 0 {
        TaskState::Completed
    } else {
        TaskState::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState::*;
    use super::*;

    const ALL: [TaskState; 11] = TaskState::ALL;

    #[test]
    fn names_round_trip() {
        for s in ALL {
            assert_eq!(s.as_str().parse::<TaskState>(), Ok(s));
        }
        assert!("done".parse::<TaskState>().is_err());
    }

    #[test]
    fn final_states_are_final() {
        for from in ALL.into_iter().filter(|s| s.is_final()) {
            for to in ALL {
                assert!(transition(from, to).is_err(), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn the_normal_lives_of_a_task() {
        let path = [Queued, Assigned, Running, Paused, Running, Completed];
        for w in path.windows(2) {
            assert_eq!(transition(w[0], w[1]), Ok(w[1]));
        }
        assert!(transition(Queued, Killed).is_ok(), "cancel while queued");
        assert!(
            transition(Running, Lost).and_then(|s| transition(s, Running)).is_ok(),
            "recovery"
        );
        assert!(transition(Lost, Completed).is_ok(), "finished while the node was away");
    }

    #[test]
    fn impossible_moves_are_refused_with_a_reason() {
        let e = transition(Queued, Running).unwrap_err();
        assert_eq!(e.to_string(), "a queued task cannot become running");
        assert!(transition(Killed, Running).is_err());
        assert!(transition(Paused, Completed).is_err());
    }

    #[test]
    fn oom_comes_from_the_runtime_not_from_137() {
        assert_eq!(exit_state(137, false, false), Failed);
        assert_eq!(exit_state(137, true, false), Oom);
        assert_eq!(exit_state(137, false, true), Killed);
        assert_eq!(exit_state(0, false, false), Completed);
        assert_eq!(exit_state(1, false, false), Failed);
    }

    #[test]
    fn a_vps_stops_and_starts_again_without_holding_resources() {
        let path = [
            Queued, Assigned, Running, Stopped, Queued, Assigned, Running, Paused, Stopped, Killed,
        ];
        for w in path.windows(2) {
            assert_eq!(transition(w[0], w[1]), Ok(w[1]), "{:?} -> {:?}", w[0], w[1]);
        }
        assert!(!Stopped.is_final() && !Stopped.holds_resources());
        assert!(transition(Stopped, Running).is_err(), "a start goes through the queue");
        assert!(transition(Lost, Stopped).is_ok(), "stopped while its node was away");
    }

    #[test]
    fn a_task_waiting_for_approval_is_queued_or_killed_and_nothing_else() {
        for to in ALL {
            let ok = transition(PendingApproval, to).is_ok();
            assert_eq!(ok, matches!(to, Queued | Killed), "{to:?}");
        }
        assert!(!PendingApproval.is_final() && !PendingApproval.holds_resources());
        assert!(transition(Queued, PendingApproval).is_err());
    }

    #[test]
    fn resources_are_held_until_a_task_is_settled() {
        assert!(Lost.holds_resources() && Paused.holds_resources());
        assert!(!Queued.holds_resources() && !Completed.holds_resources());
    }
}
