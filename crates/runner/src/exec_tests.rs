//! The runner's middle tier: the executor over fake backends, in memory — no engine, no cgroup,
//! no session. What it shows: how each end is reported and recorded, kills and stops a user asked
//! for, a VPS's rules, which backend gets which work, and what a restarted runner finds and says.

use crate::backend::container::Containers;
use crate::backend::fake::Fake;
use crate::backend::{Ended, Node, Refused, Seen};
use crate::exec::Executor;
use river_proto::msg::{HostMsg, RunnerMsg, Signal, TaskOwner, TaskPlacement, TaskSpec, VpsSpec};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A node: its executor, the fake backends under it, and what it reports to the host.
struct Runner {
    exec: Arc<Executor>,
    containers: Arc<Fake>,
    processes: Arc<Fake>,
    reports: mpsc::UnboundedReceiver<RunnerMsg>,
    dir: Arc<tempfile::TempDir>,
    /// Dropped: the runner stops, and its work with it.
    stop: Option<watch::Sender<()>>,
}

fn node(dir: &std::path::Path) -> Node {
    Node {
        node: "n1".into(),
        cluster: "c0ffee00".into(),
        dir: dir.join("tasks"),
        fake_gpus: true,
        shared: None,
        scratch: dir.join("scratch"),
        allowed_mounts: Vec::new(),
        task_uid_base: 200_000,
        output_cap: None,
    }
}

impl Runner {
    fn new() -> Self {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Self::over(dir, Arc::default(), Arc::default())
    }

    /// A runner over these backends and state directory (a restart keeps them).
    fn over(dir: Arc<tempfile::TempDir>, containers: Arc<Fake>, processes: Arc<Fake>) -> Self {
        let node = node(dir.path());
        std::fs::create_dir_all(&node.dir).unwrap();
        let (tx, reports) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(());
        let (host, host_rx) = watch::channel(None);
        let images = crate::images::Images::new(dir.path().join("blobs"), host_rx);
        let docker = Arc::new(Containers::new(node.clone(), None, images, tx.clone()));
        let exec = Executor::with_backends(node, containers.clone(), processes.clone(), docker, host, tx, stop_rx);
        Self {
            exec: Arc::new(exec),
            containers,
            processes,
            reports,
            dir,
            stop: Some(stop),
        }
    }

    /// The runner stops and starts again on the same node: its work is where it was.
    async fn restart(mut self) -> Self {
        self.stop.take();
        let next = Self::over(self.dir.clone(), self.containers.clone(), self.processes.clone());
        next.exec.adopt().await;
        next
    }

    fn start(&self, id: u64, spec: TaskSpec) {
        let placement = TaskPlacement {
            node: "n1".into(),
            cores: vec![0, 1],
            numa: None,
            gpus: Vec::new(),
            memory_bytes: 64 << 20,
            ip: None,
            owner: Some(TaskOwner {
                name: "alice".into(),
                number: 1,
                operator: false,
            }),
        };
        self.exec.handle(HostMsg::Start {
            id,
            spec: Box::new(spec),
            placement,
        });
    }

    fn send(&self, msg: HostMsg) {
        self.exec.handle(msg);
    }

    /// The next change of a task's state reported: (id, state, exit code, message).
    async fn next(&mut self) -> (u64, String, Option<i64>, Option<String>) {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), self.reports.recv())
                .await
                .expect("a report within 10 s")
                .expect("the executor is there");
            if let RunnerMsg::Task {
                id,
                state,
                exit_code,
                message,
            } = msg
            {
                return (id, state, exit_code, message);
            }
        }
    }

    /// Waits for task `id` to be reported `state`; its exit code and message.
    async fn expect(&mut self, id: u64, state: &str) -> (Option<i64>, Option<String>) {
        let (got, s, code, message) = self.next().await;
        assert_eq!((got, s.as_str()), (id, state), "{message:?}");
        (code, message)
    }

    /// No report of a task's state comes within a moment.
    async fn quiet(&mut self) {
        tokio::task::yield_now().await;
        let more = tokio::time::timeout(Duration::from_millis(200), self.next()).await;
        assert!(more.is_err(), "unexpected report {more:?}");
    }

    /// The end recorded on disk for task `id`.
    fn recorded(&self, id: u64) -> Option<serde_json::Value> {
        let path = self.dir.path().join("tasks").join(id.to_string()).join("result.json");
        Some(serde_json::from_slice(&std::fs::read(path).ok()?).unwrap())
    }

    async fn snapshot(&self) -> Vec<(u64, String)> {
        let mut s: Vec<_> = self
            .exec
            .snapshot()
            .await
            .into_iter()
            .map(|r| (r.id, r.state))
            .collect();
        s.sort();
        s
    }
}

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
    let mut r = Runner::new();
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
    let mut r = Runner::new();
    for id in 1..=3 {
        r.start(id, container());
        r.expect(id, "running").await;
    }
    r.containers.exit(1, 2);
    assert_eq!(r.expect(1, "failed").await, (Some(2), None));
    r.containers.exit(2, 143);
    let (_, message) = r.expect(2, "failed").await;
    assert!(message.unwrap().contains("SIGTERM, which river did not send"));
    r.send(HostMsg::Signal {
        id: 3,
        signal: Signal::Kill,
    });
    assert_eq!(r.expect(3, "killed").await, (Some(137), None));
}

#[tokio::test]
async fn a_task_over_its_memory_is_told_its_limit() {
    let mut r = Runner::new();
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
    let mut r = Runner::new();
    r.start(1, container());
    r.expect(1, "running").await;
    r.containers
        .end(1, ended(0, false, Err("writing stdout.log: no space left".into())));
    let (_, message) = r.expect(1, "completed").await;
    assert_eq!(
        message.as_deref(),
        Some("its output is incomplete: writing stdout.log: no space left")
    );
    let marker = r.dir.path().join("tasks/1").join(crate::exec::records::INCOMPLETE);
    assert!(marker.exists(), "task logs reads this and ends with an error");
}

#[tokio::test]
async fn work_the_backend_lost_track_of_fails_and_a_vps_only_stops() {
    let mut r = Runner::new();
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
    let mut r = Runner::new();
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
    let mut r = Runner::new();
    r.start(1, process());
    r.expect(1, "running").await;
    r.send(HostMsg::Signal {
        id: 1,
        signal: Signal::Pause,
    });
    r.expect(1, "paused").await;
    r.send(HostMsg::Signal {
        id: 1,
        signal: Signal::Resume,
    });
    r.expect(1, "running").await;
    r.send(HostMsg::Signal {
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
    let mut r = Runner::new();
    r.start(1, vps());
    r.expect(1, "running").await;
    r.send(HostMsg::Signal {
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
    let mut r = Runner::new();
    r.start(1, vps());
    r.start(2, vps());
    r.expect(1, "running").await;
    r.expect(2, "running").await;
    r.send(HostMsg::Remove { id: 1 });
    let (_, m) = r.expect(1, "killed").await;
    assert_eq!(m.as_deref(), Some("removed"));
    r.send(HostMsg::Signal {
        id: 2,
        signal: Signal::Stop,
    });
    r.expect(2, "stopped").await;
    r.send(HostMsg::Remove { id: 2 });
    let (_, m) = r.expect(2, "killed").await;
    assert_eq!(m.as_deref(), Some("removed"));
    r.quiet().await;
    assert_eq!(r.containers.state(1), None);
    assert_eq!(r.containers.state(2), None);
    assert!(r.containers.calls().contains(&"remove 1 vps".to_owned()));
}

#[tokio::test]
async fn a_vps_that_moved_elsewhere_is_removed_without_a_word() {
    let mut r = Runner::new();
    r.start(1, vps());
    r.expect(1, "running").await;
    r.send(HostMsg::Discard { id: 1 });
    r.quiet().await;
    assert_eq!(r.containers.state(1), None);
}

#[tokio::test]
async fn a_restarted_runner_follows_work_that_kept_running_and_reports_its_end() {
    let mut r = Runner::new();
    r.start(1, container());
    r.start(2, process());
    r.expect(1, "running").await;
    r.expect(2, "running").await;
    let mut r = r.restart().await;
    assert_eq!(
        r.snapshot().await,
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
    let r = Runner::new();
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
        r.snapshot().await,
        [
            (5, "failed".to_owned()),
            (6, "stopped".to_owned()),
            (7, "paused".to_owned())
        ]
    );
    // A second restart reports nothing again (5 is recorded), though the snapshot repeats it.
    let mut r = r.restart().await;
    r.quiet().await;
    assert_eq!(r.snapshot().await[0], (5, "failed".to_owned()));
}

#[tokio::test]
async fn ends_repeat_in_each_snapshot_until_the_host_has_stored_them() {
    let mut r = Runner::new();
    r.start(1, container());
    r.expect(1, "running").await;
    r.containers.exit(1, 0);
    r.expect(1, "completed").await;
    assert_eq!(r.snapshot().await, [(1, "completed".to_owned())]);
    let r = r.restart().await;
    assert_eq!(
        r.snapshot().await,
        [(1, "completed".to_owned())],
        "kept across a restart"
    );
    r.send(HostMsg::Recorded { ids: vec![1] });
    assert!(r.snapshot().await.is_empty());
}

#[tokio::test]
async fn a_node_that_leaves_takes_all_its_work_with_it() {
    let mut r = Runner::new();
    r.start(1, container());
    r.start(2, process());
    r.start(3, vps());
    for id in 1..=3 {
        r.expect(id, "running").await;
    }
    r.exec.stop_all().await;
    assert!(r.containers.found_ids().is_empty());
    assert!(r.processes.found_ids().is_empty());
}

#[tokio::test]
async fn a_kill_that_comes_before_or_during_the_start_still_kills() {
    let mut r = Runner::new();
    // Before: the work never starts.
    r.send(HostMsg::Signal {
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
    r.send(HostMsg::Signal {
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
