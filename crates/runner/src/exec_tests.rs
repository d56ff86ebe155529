//! The runner's middle tier: the executor over fake backends, in memory — no engine, no cgroup,
//! no session. What it shows: how each end is reported and recorded, kills and stops a user asked
//! for, a VPS's rules, which backend gets which work, and what a restarted runner finds and says.

use crate::testing::{Ended, FakeNode as Runner, Refused, Seen};
use river_proto::msg::{HostMsg, Signal, TaskSpec, VpsSpec};
use std::time::Duration;

fn container() -> TaskSpec {
    TaskSpec::new("img", vec!["work".into()])
}

fn process() -> TaskSpec {
    let mut s = container();
    s.no_container = true;
    s
}

fn vps() -> TaskSpec {
    let mut s = container();
    s.vps = Some(VpsSpec {
        ssh_keys: Vec::new(),
        image_sshd: false,
        generation: 1,
    });
    s
}

fn ended(code: i64, oom: bool, output: Result<(), String>) -> Ended {
    Ended::Exited {
        code: Some(code),
        oom,
        output,
    }
}

#[tokio::test]
async fn a_task_runs_ends_is_recorded_on_disk_and_its_work_removed() {
    let mut r = Runner::in_temp();
    r.start(1, container());
    r.expect(1, "running").await;
    r.containers.exit(1, 0);
    assert_eq!(r.expect(1, "completed").await, (Some(0), None));
    let rec = r.recorded(1).expect("the end is on disk");
    assert_eq!(rec["state"], "completed");
    // Removed after the report (the report does not wait for the removal).
    for _ in 0..100 {
        if r.containers.calls().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(r.containers.calls(), ["start 1", "remove 1"]);
    assert!(r.processes.calls().is_empty());
}

#[tokio::test]
async fn a_failure_a_signal_from_outside_and_a_kill_asked_for_are_told_apart() {
    let mut r = Runner::in_temp();
    for id in 1..=3 {
        r.start(id, container());
        r.expect(id, "running").await;
    }
    r.containers.exit(1, 2);
    assert_eq!(r.expect(1, "failed").await, (Some(2), None));
    r.containers.exit(2, 143);
    let (_, message) = r.expect(2, "failed").await;
    assert!(message.unwrap().contains("SIGTERM, which river did not send"));
    r.handle(HostMsg::Signal {
        id: 3,
        signal: Signal::Kill,
    });
    assert_eq!(r.expect(3, "killed").await, (Some(137), None));
}

#[tokio::test]
async fn a_task_over_its_memory_is_told_its_limit() {
    let mut r = Runner::in_temp();
    r.start(1, container());
    r.expect(1, "running").await;
    r.containers.end(1, ended(137, true, Ok(())));
    let (_, message) = r.expect(1, "oom").await;
    assert_eq!(
        message.as_deref(),
        Some("killed by the kernel: it exceeded its memory limit of 64 MiB")
    );
}

#[tokio::test]
async fn output_that_could_not_be_saved_is_said_in_the_end_and_beside_the_files() {
    let mut r = Runner::in_temp();
    r.start(1, container());
    r.expect(1, "running").await;
    r.containers
        .end(1, ended(0, false, Err("writing stdout.log: no space left".into())));
    let (_, message) = r.expect(1, "completed").await;
    assert_eq!(
        message.as_deref(),
        Some("its output is incomplete: writing stdout.log: no space left")
    );
    let marker = r.dir().join("tasks/1").join(crate::exec::records::INCOMPLETE);
    assert!(marker.exists(), "task logs reads this and ends with an error");
}

#[tokio::test]
async fn work_the_backend_lost_track_of_fails_and_a_vps_only_stops() {
    let mut r = Runner::in_temp();
    r.start(1, container());
    r.start(2, vps());
    r.expect(1, "running").await;
    r.expect(2, "running").await;
    r.containers
        .end(1, Ended::Lost("lost track of the container: engine gone".into()));
    let (_, m) = r.expect(1, "failed").await;
    assert_eq!(m.as_deref(), Some("lost track of the container: engine gone"));
    r.containers
        .end(2, Ended::Lost("lost track of the container: engine gone".into()));
    r.expect(2, "stopped").await;
}

#[tokio::test]
async fn a_refused_start_fails_a_task_and_only_stops_a_vps_whose_disk_is_kept() {
    let mut r = Runner::in_temp();
    r.containers
        .refuse_next(Refused::kept("node n1 could not get environment e: gone"));
    r.start(1, container());
    let (_, m) = r.expect(1, "failed").await;
    assert_eq!(m.as_deref(), Some("node n1 could not get environment e: gone"));
    r.containers
        .refuse_next(Refused::kept("could not start again on n1: busy"));
    r.start(2, vps());
    r.expect(2, "stopped").await;
    r.containers
        .refuse_next(Refused::failed("could not start on n1: no such image"));
    r.start(3, vps());
    r.expect(3, "failed").await;
    assert!(
        r.recorded(1).is_some() && r.recorded(2).is_none(),
        "a stopped VPS is not an end"
    );
}

#[tokio::test]
async fn process_work_goes_to_the_process_backend_and_its_signals_follow_it() {
    let mut r = Runner::in_temp();
    r.start(1, process());
    r.expect(1, "running").await;
    r.handle(HostMsg::Signal {
        id: 1,
        signal: Signal::Pause,
    });
    r.expect(1, "paused").await;
    r.handle(HostMsg::Signal {
        id: 1,
        signal: Signal::Resume,
    });
    r.expect(1, "running").await;
    r.handle(HostMsg::Signal {
        id: 1,
        signal: Signal::Kill,
    });
    r.expect(1, "killed").await;
    assert_eq!(
        &r.processes.calls()[..4],
        ["start 1", "signal 1 Pause", "signal 1 Resume", "signal 1 Kill"]
    );
    assert!(r.containers.calls().is_empty());
}

#[tokio::test]
async fn a_vps_stopped_by_its_owner_keeps_its_work_and_starts_again() {
    let mut r = Runner::in_temp();
    r.start(1, vps());
    r.expect(1, "running").await;
    r.handle(HostMsg::Signal {
        id: 1,
        signal: Signal::Stop,
    });
    let (code, m) = r.expect(1, "stopped").await;
    assert_eq!(code, Some(143));
    assert_eq!(
        m.as_deref(),
        Some("stopped by its owner; its container and files are kept")
    );
    assert!(matches!(r.containers.state(1), Some(Seen::Exited { .. })), "kept");
    r.start(1, vps());
    r.expect(1, "running").await;
    // Its own end is a stop too, with the code said.
    r.containers.exit(1, 3);
    let (_, m) = r.expect(1, "stopped").await;
    assert_eq!(
        m.as_deref(),
        Some("its main process exited with code 3; its container and files are kept")
    );
    assert!(!r.containers.calls().iter().any(|c| c.starts_with("remove")));
}

#[tokio::test]
async fn removing_a_vps_running_or_stopped_reports_it_removed_once() {
    let mut r = Runner::in_temp();
    r.start(1, vps());
    r.start(2, vps());
    r.expect(1, "running").await;
    r.expect(2, "running").await;
    r.handle(HostMsg::Remove { id: 1 });
    let (_, m) = r.expect(1, "killed").await;
    assert_eq!(m.as_deref(), Some("removed"));
    r.handle(HostMsg::Signal {
        id: 2,
        signal: Signal::Stop,
    });
    r.expect(2, "stopped").await;
    r.handle(HostMsg::Remove { id: 2 });
    let (_, m) = r.expect(2, "killed").await;
    assert_eq!(m.as_deref(), Some("removed"));
    r.quiet().await;
    assert_eq!(r.containers.state(1), None);
    assert_eq!(r.containers.state(2), None);
    assert!(r.containers.calls().contains(&"remove 1 vps".to_owned()));
}

#[tokio::test]
async fn a_vps_that_moved_elsewhere_is_removed_without_a_word() {
    let mut r = Runner::in_temp();
    r.start(1, vps());
    r.expect(1, "running").await;
    r.handle(HostMsg::Discard { id: 1 });
    r.quiet().await;
    assert_eq!(r.containers.state(1), None);
}

#[tokio::test]
async fn a_restarted_runner_follows_work_that_kept_running_and_reports_its_end() {
    let mut r = Runner::in_temp();
    r.start(1, container());
    r.start(2, process());
    r.expect(1, "running").await;
    r.expect(2, "running").await;
    let mut r = r.restart().await;
    assert_eq!(
        r.snapshot_states().await,
        [(1, "running".to_owned()), (2, "running".to_owned())]
    );
    r.containers.exit(1, 0);
    r.processes.exit(2, 1);
    let mut ends = [r.next().await, r.next().await];
    ends.sort();
    assert_eq!(ends[0].1, "completed", "{ends:?} {:?}", r.containers.calls());
    assert_eq!(ends[1].1, "failed", "{ends:?}");
}

#[tokio::test]
async fn work_that_ended_while_the_runner_was_down_is_reported_once() {
    let r = Runner::in_temp();
    r.containers.place(
        5,
        false,
        Seen::Exited {
            code: Some(3),
            oom: false,
        },
    );
    r.containers.place(
        6,
        true,
        Seen::Exited {
            code: Some(0),
            oom: false,
        },
    );
    r.processes.place(7, false, Seen::Paused);
    let mut r = r.restart().await;
    let (code, m) = r.expect(5, "failed").await;
    assert_eq!((code, m.as_deref()), (Some(3), Some("ended while the runner was down")));
    assert_eq!(r.containers.state(5), None, "its work is removed");
    // The stopped VPS is kept and told as stopped; the paused process as paused.
    assert_eq!(
        r.containers.state(6),
        Some(Seen::Exited {
            code: Some(0),
            oom: false
        })
    );
    assert_eq!(
        r.snapshot_states().await,
        [
            (5, "failed".to_owned()),
            (6, "stopped".to_owned()),
            (7, "paused".to_owned())
        ]
    );
    // A second restart reports nothing again (5 is recorded), though the snapshot repeats it.
    let mut r = r.restart().await;
    r.quiet().await;
    assert_eq!(r.snapshot_states().await[0], (5, "failed".to_owned()));
}

#[tokio::test]
async fn ends_repeat_in_each_snapshot_until_the_host_has_stored_them() {
    let mut r = Runner::in_temp();
    r.start(1, container());
    r.expect(1, "running").await;
    r.containers.exit(1, 0);
    r.expect(1, "completed").await;
    assert_eq!(r.snapshot_states().await, [(1, "completed".to_owned())]);
    let r = r.restart().await;
    assert_eq!(
        r.snapshot_states().await,
        [(1, "completed".to_owned())],
        "kept across a restart"
    );
    r.handle(HostMsg::Recorded { ids: vec![1] });
    assert!(r.snapshot_states().await.is_empty());
}

#[tokio::test]
async fn a_node_that_leaves_takes_all_its_work_with_it() {
    let mut r = Runner::in_temp();
    r.start(1, container());
    r.start(2, process());
    r.start(3, vps());
    for id in 1..=3 {
        r.expect(id, "running").await;
    }
    r.stop_all().await;
    assert!(r.containers.found_ids().is_empty());
    assert!(r.processes.found_ids().is_empty());
}

#[tokio::test]
async fn a_kill_that_comes_before_or_during_the_start_still_kills() {
    let mut r = Runner::in_temp();
    // Before: the work never starts.
    r.handle(HostMsg::Signal {
        id: 1,
        signal: Signal::Kill,
    });
    r.start(1, container());
    let (_, m) = r.expect(1, "killed").await;
    assert_eq!(m.as_deref(), Some("killed by its owner before it started"));
    assert!(!r.containers.calls().contains(&"start 1".to_owned()));
    // During: there is nothing to signal yet; it is killed once it runs.
    r.containers.hold_starts(true);
    r.start(2, container());
    while !r.containers.calls().contains(&"start 2".to_owned()) {
        tokio::task::yield_now().await;
    }
    r.handle(HostMsg::Signal {
        id: 2,
        signal: Signal::Kill,
    });
    while !r.containers.calls().contains(&"signal 2 Kill".to_owned()) {
        tokio::task::yield_now().await;
    }
    r.containers.hold_starts(false);
    r.expect(2, "running").await;
    assert_eq!(r.expect(2, "killed").await, (Some(137), None));
}
