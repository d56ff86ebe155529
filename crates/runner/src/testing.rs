//! A node in memory, for tests — this crate's executor tier and, with the `testing` feature, the
//! host's tests that join their services to a runner: the real executor (reports, ends recorded
//! on disk, kills, a VPS's rules, adoption after a restart) over two fake backends
//! ([`Fake`]: work "runs" until the test ends it). No engine, no cgroup, no socket.

use crate::backend::container::Containers;
pub use crate::backend::fake::Fake;
use crate::backend::Node;
pub use crate::backend::{Ended, Refused, Seen};
use crate::exec::Executor;
use river_proto::msg::{HostMsg, RunnerMsg, TaskOwner, TaskPlacement, TaskReport, TaskSpec};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A node: its executor, the fake backends under it, and what it reports to the host.
pub struct FakeNode {
    name: String,
    exec: Arc<Executor>,
    /// The container backend (containers and VPSs) and the process backend.
    pub containers: Arc<Fake>,
    pub processes: Arc<Fake>,
    reports: mpsc::UnboundedReceiver<RunnerMsg>,
    dir: PathBuf,
    /// Dropped: the runner stops, and its work with it.
    stop: Option<watch::Sender<()>>,
    #[cfg(test)]
    _temp: Option<Arc<tempfile::TempDir>>,
}

impl FakeNode {
    /// Node `name` keeping its state under `dir`.
    pub fn new(name: &str, dir: &Path) -> Self {
        Self::over(name, dir, Arc::default(), Arc::default())
    }

    /// A node in a temporary directory of its own.
    #[cfg(test)]
    pub(crate) fn in_temp() -> Self {
        let temp = Arc::new(tempfile::tempdir().unwrap());
        let mut node = Self::new("n1", temp.path());
        node._temp = Some(temp);
        node
    }

    /// A runner over these backends and state directory (a restart keeps them).
    fn over(name: &str, dir: &Path, containers: Arc<Fake>, processes: Arc<Fake>) -> Self {
        let node = Node {
            node: name.into(),
            cluster: "c0ffee00".into(),
            dir: dir.join("tasks"),
            fake_gpus: true,
            shared: None,
            scratch: dir.join("scratch"),
            allowed_mounts: Vec::new(),
            task_uid_base: 200_000,
            output_cap: None,
        };
        std::fs::create_dir_all(&node.dir).expect("the node's task directory");
        let (tx, reports) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(());
        let (host, host_rx) = watch::channel(None);
        let images = crate::images::Images::new(dir.join("blobs"), host_rx);
        let docker = Arc::new(Containers::new(node.clone(), None, images, tx.clone()));
        let exec = Executor::with_backends(node, containers.clone(), processes.clone(), docker, host, tx, stop_rx);
        Self {
            name: name.into(),
            exec: Arc::new(exec),
            containers,
            processes,
            reports,
            dir: dir.to_owned(),
            stop: Some(stop),
            #[cfg(test)]
            _temp: None,
        }
    }

    /// The runner stops and starts again on the same node: its work is where it was, and it
    /// adopts it (as at a real start). Reports the old runner had not sent are lost with it, as a
    /// process's queue would be; what it recorded on disk is not.
    pub async fn restart(mut self) -> Self {
        self.stop.take();
        #[allow(unused_mut)] // set again only in this crate's tests
        let mut next = Self::over(&self.name, &self.dir, self.containers.clone(), self.processes.clone());
        #[cfg(test)]
        {
            next._temp = self._temp.take();
        }
        next.exec.adopt().await;
        next
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the node keeps its state.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A message from the host.
    pub fn handle(&self, msg: HostMsg) {
        self.exec.handle(msg);
    }

    /// Starts task `id` as the host would, on two cores with 64 MiB, for user `alice`.
    pub fn start(&self, id: u64, spec: TaskSpec) {
        let placement = TaskPlacement {
            node: self.name.clone(),
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
        self.handle(HostMsg::Start {
            id,
            spec: Box::new(spec),
            assigned: Box::default(),
            placement,
        });
    }

    /// The next message the node sends the host (within 10 s).
    pub async fn next_msg(&mut self) -> RunnerMsg {
        tokio::time::timeout(Duration::from_secs(10), self.reports.recv())
            .await
            .expect("a message from the runner within 10 s")
            .expect("the executor is there")
    }

    /// The next message the node sends the host, however long it takes (`None`: it stopped).
    pub async fn recv(&mut self) -> Option<RunnerMsg> {
        self.reports.recv().await
    }

    /// A message the node has sent, if any, without waiting.
    pub fn try_msg(&mut self) -> Option<RunnerMsg> {
        self.reports.try_recv().ok()
    }

    /// The next change of a task's state reported: (id, state, exit code, message).
    pub async fn next(&mut self) -> (u64, String, Option<i64>, Option<String>) {
        loop {
            if let RunnerMsg::Task {
                id,
                state,
                exit_code,
                message,
            } = self.next_msg().await
            {
                return (id, state, exit_code, message);
            }
        }
    }

    /// Waits for task `id` to be reported `state`; its exit code and message.
    pub async fn expect(&mut self, id: u64, state: &str) -> (Option<i64>, Option<String>) {
        let (got, s, code, message) = self.next().await;
        assert_eq!((got, s.as_str()), (id, state), "{message:?}");
        (code, message)
    }

    /// No report of a task's state comes within a moment.
    pub async fn quiet(&mut self) {
        tokio::task::yield_now().await;
        let more = tokio::time::timeout(Duration::from_millis(200), self.next()).await;
        assert!(more.is_err(), "unexpected report {more:?}");
    }

    /// The end recorded on disk for task `id`.
    pub fn recorded(&self, id: u64) -> Option<serde_json::Value> {
        let path = self.dir.join("tasks").join(id.to_string()).join("result.json");
        Some(serde_json::from_slice(&std::fs::read(path).ok()?).expect("a recorded end is JSON"))
    }

    /// What the node tells the host at the start of a session.
    pub async fn snapshot(&self) -> Vec<TaskReport> {
        self.exec.snapshot().await
    }

    /// The snapshot as (id, state), in order of id.
    pub async fn snapshot_states(&self) -> Vec<(u64, String)> {
        let mut s: Vec<_> = self.snapshot().await.into_iter().map(|r| (r.id, r.state)).collect();
        s.sort();
        s
    }

    /// The node leaves the cluster: all its work goes.
    pub async fn stop_all(&self) {
        self.exec.stop_all().await;
    }
}
