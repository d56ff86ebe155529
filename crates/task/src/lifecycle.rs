//! A task's life as one function: [`apply`] says what a task becomes after an event and what must
//! happen because of it. The host changes a task's state only through it, so what follows an end
//! (the rest of a distributed group ends, the overlay address goes back, the scheduler runs) is
//! decided here once rather than at each place a task can end.

use crate::state::{transition, InvalidTransition, TaskState};

/// What of a task its lifecycle reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Life {
    pub state: TaskState,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub exit_code: Option<i64>,
    /// A member of a distributed group (it has a rank).
    pub grouped: bool,
    /// It holds, or was promised, an overlay address.
    pub addressed: bool,
}

/// What happens to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An operator approved it.
    Approved,
    /// The scheduler placed it on a node.
    Placed,
    /// Back to the queue: its node could not take it or never got the order, or a stopped VPS is
    /// started again.
    Requeued,
    /// Its runner says it is in this state (and, when it ended, with this exit code).
    Reported { state: TaskState, exit_code: Option<i64> },
    /// Its node went offline: what it runs there may still run.
    NodeLost,
    /// The host ends it on its own authority — cancelled, rejected, removed, its node or its
    /// container gone — as `Killed` or `Failed`.
    Ended(TaskState),
    /// Another member of its group ended without success.
    GroupEnded,
}

/// What must happen because of a change, besides storing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The task waits to be placed again: its placement goes.
    Unplace,
    /// The other members of its group end: a distributed job cannot go on without one of its
    /// ranks.
    EndGroup,
    /// Its overlay address may go back to the pool.
    ReleaseAddress,
    /// Resources were freed or a task waits: the scheduler runs.
    Schedule,
    /// A VPS stopped: whoever waits for that hears.
    VpsStopped,
}

/// The task after `event`, and what must follow. An event that changes nothing (a report of the
/// state it is in, a node lost under a task that was not there) gives the task back unchanged and
/// no effects; one the state machine forbids is an error, and the task stays as it was.
pub fn apply(life: Life, event: Event, now_ms: i64) -> Result<(Life, Vec<Effect>), InvalidTransition> {
    let from = life.state;
    let to = match event {
        Event::Approved | Event::Requeued => TaskState::Queued,
        Event::Placed => TaskState::Assigned,
        Event::Reported { state, .. } | Event::Ended(state) => state,
        Event::NodeLost if matches!(from, TaskState::Assigned | TaskState::Running | TaskState::Paused) => {
            TaskState::Lost
        }
        Event::NodeLost => from,
        Event::GroupEnded => TaskState::Killed,
    };
    if to == from {
        return Ok((life, Vec::new()));
    }
    transition(from, to)?;
    let mut next = Life { state: to, ..life };
    let mut effects = Vec::new();
    if to == TaskState::Running && next.started_at_ms.is_none() {
        next.started_at_ms = Some(now_ms);
    }
    if to == TaskState::Queued {
        // A new start: nothing of how an earlier run ended holds.
        next.finished_at_ms = None;
        next.exit_code = None;
        if from != TaskState::PendingApproval {
            effects.push(Effect::Unplace);
        }
    }
    if to.is_final() {
        next.finished_at_ms = Some(now_ms);
        next.exit_code = match event {
            Event::Reported { exit_code, .. } => exit_code,
            _ => None,
        };
        if life.grouped && to != TaskState::Completed && event != Event::GroupEnded {
            effects.push(Effect::EndGroup);
        }
        if life.addressed {
            effects.push(Effect::ReleaseAddress);
        }
    }
    if to == TaskState::Stopped {
        effects.push(Effect::VpsStopped);
    }
    if !to.holds_resources() {
        // Its cores are free for others (an ended task's, a stopped VPS's), or it waits for some.
        effects.push(Effect::Schedule);
    }
    Ok((next, effects))
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
