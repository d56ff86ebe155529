//! What a task's end is reported as, from how its work ended and what a user asked for: pure
//! rules, the same whatever backend ran the work.

use super::VpsEnd;
use crate::backend::Ended;
use river_task::state::{exit_state, TaskState};

/// A report of a task's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct End {
    pub state: TaskState,
    pub code: Option<i64>,
    pub message: Option<String>,
}

/// A task's end: `killed` when a user asked for it, `memory` its limit, `incomplete` what is
/// missing of its output.
pub(super) fn task(ended: &Ended, killed: bool, memory: Option<u64>, incomplete: Option<String>) -> End {
    let (code, oom) = match ended {
        Ended::Exited { code, oom, .. } => (*code, *oom),
        Ended::Lost(why) => {
            return End {
                state: TaskState::Failed,
                code: None,
                message: Some(why.clone()),
            }
        }
    };
    let state = exit_state(code.unwrap_or(-1), oom, killed);
    let message = match (state, code) {
        (TaskState::Oom, _) => Some(format!(
            "killed by the kernel: it exceeded its memory limit{}",
            memory
                .map(|m| format!(" of {}", river_task::size::human(m)))
                .unwrap_or_default()
        )),
        (_, None) if !killed => Some("ended without recording an exit code".into()),
        (TaskState::Failed, Some(code)) => signalled(code),
        _ => None,
    };
    let message = match (message, incomplete) {
        (Some(m), Some(i)) => Some(format!("{m}; {i}")),
        (m, i) => m.or(i),
    };
    End { state, code, message }
}

/// A VPS's end (`None`: nothing to report, it now lives elsewhere). It stops, its disk kept,
/// unless its owner removed it.
pub(super) fn vps(asked: Option<VpsEnd>, ended: &Ended, killed: bool) -> Option<End> {
    let end = match (asked, ended) {
        (Some(VpsEnd::Discard), _) => return None,
        (Some(VpsEnd::Remove), _) => End {
            state: TaskState::Killed,
            code: None,
            message: Some("removed".into()),
        },
        (asked, Ended::Exited { code, oom, .. }) => {
            let why = match asked {
                Some(_) => Some("stopped by its owner"),
                None if killed => Some("killed by its owner"),
                None => None,
            };
            End {
                state: TaskState::Stopped,
                code: *code,
                message: Some(vps_stopped_message(why, *code, *oom)),
            }
        }
        (_, Ended::Lost(why)) => End {
            state: TaskState::Stopped,
            code: None,
            message: Some(why.clone()),
        },
    };
    Some(end)
}

/// What a stopped VPS's record says about why.
pub(super) fn vps_stopped_message(why: Option<&str>, code: Option<i64>, oom: bool) -> String {
    match (why, code) {
        (Some(why), _) => format!("{why}; its container and files are kept"),
        (None, _) if oom => "killed by the kernel for exceeding its memory limit; its files are kept".to_owned(),
        (None, Some(code)) => format!("its main process exited with code {code}; its container and files are kept"),
        (None, None) => "its main process ended; its container and files are kept".to_owned(),
    }
}

/// Why work ended with `code` when river did not end it: a signal from outside (the node
/// shutting down, its engine stopped, someone on the node).
fn signalled(code: i64) -> Option<String> {
    let name = match code - 128 {
        9 => "SIGKILL",
        15 => "SIGTERM",
        2 => "SIGINT",
        1 => "SIGHUP",
        6 => "SIGABRT",
        11 => "SIGSEGV",
        _ => return None,
    };
    Some(match name {
        "SIGSEGV" | "SIGABRT" => format!("the task's main process died of {name}"),
        _ => format!(
            "ended by {name}, which river did not send (the node shutting down, its container engine stopping, someone on the node, or the task itself)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i64) -> Ended {
        Ended::Exited {
            code: Some(code),
            oom: false,
            output: Ok(()),
        }
    }

    #[test]
    fn an_end_is_told_by_its_code_the_kernel_and_the_user() {
        assert_eq!(task(&exited(0), false, None, None).state, TaskState::Completed);
        let failed = task(&exited(3), false, None, None);
        assert_eq!(
            (failed.state, failed.code, failed.message),
            (TaskState::Failed, Some(3), None)
        );
        let outside = task(&exited(143), false, None, None);
        assert!(outside.message.unwrap().contains("SIGTERM, which river did not send"));
        assert_eq!(task(&exited(137), true, None, None).state, TaskState::Killed);
        let oom = Ended::Exited {
            code: Some(137),
            oom: true,
            output: Ok(()),
        };
        let end = task(&oom, false, Some(64 << 20), None);
        assert_eq!(end.state, TaskState::Oom);
        assert_eq!(
            end.message.as_deref(),
            Some("killed by the kernel: it exceeded its memory limit of 64 MiB")
        );
        let lost = task(
            &Ended::Lost("lost track of the container: gone".into()),
            false,
            None,
            None,
        );
        assert_eq!(lost.state, TaskState::Failed);
        let unknown = Ended::Exited {
            code: None,
            oom: false,
            output: Ok(()),
        };
        assert_eq!(
            task(&unknown, false, None, None).message.as_deref(),
            Some("ended without recording an exit code")
        );
        let cut = task(
            &exited(0),
            false,
            None,
            Some("its output is incomplete: disk full".into()),
        );
        assert_eq!(cut.message.as_deref(), Some("its output is incomplete: disk full"));
    }

    #[test]
    fn a_vps_stops_with_its_disk_kept_unless_removed() {
        let stopped = vps(Some(VpsEnd::Stop), &exited(143), false).unwrap();
        assert_eq!(stopped.state, TaskState::Stopped);
        assert_eq!(
            stopped.message.as_deref(),
            Some("stopped by its owner; its container and files are kept")
        );
        let exit = vps(None, &exited(2), false).unwrap();
        assert_eq!(
            exit.message.as_deref(),
            Some("its main process exited with code 2; its container and files are kept")
        );
        assert_eq!(vps(None, &exited(137), true).unwrap().state, TaskState::Stopped);
        assert_eq!(
            vps(Some(VpsEnd::Remove), &exited(137), false).unwrap().state,
            TaskState::Killed
        );
        assert_eq!(vps(Some(VpsEnd::Discard), &exited(137), false), None);
    }
}
