//! Running tasks on this node: each task's work through a [`Backend`] (a container on the node's
//! Docker engine, or a process in a cgroup), output in files under `state_dir/tasks/ID/`, and a
//! report to the host at each change of state. What every kind of work shares lives here: the
//! reports and the ends recorded on disk, kills and stops a user asked for, a VPS's rules, and
//! following output.

mod adopt;
mod ends;
mod logs;
pub(crate) mod records;

use crate::backend::container::Containers;
use crate::backend::process::Processes;
use crate::backend::{Backend, Ended, Job, Node, Seen};
use river_docker::Runtime;
use river_proto::msg::{Assigned, HostMsg, RunnerMsg, Signal, TaskPlacement, TaskReport, TaskSpec};
use river_task::state::TaskState;
use river_task::workload::Kind;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// What an executor is told about its node.
pub(crate) struct Settings {
    pub node: String,
    /// A short id of the cluster (its CA fingerprint's start), so clusters sharing a Docker engine
    /// never touch each other's containers.
    pub cluster: String,
    /// Where task output and results are kept.
    pub dir: PathBuf,
    pub socket: Option<PathBuf>,
    /// The node's GPUs are a fake inventory: tasks learn their GPUs from `RIVER_GPUS`, and no
    /// device is requested from the NVIDIA runtime.
    pub fake_gpus: bool,
    /// Mounted at `/shared` in every task.
    pub shared: Option<PathBuf>,
    /// Mounted at `/local_temp` in every task.
    pub scratch: PathBuf,
    /// Where else `--mount` sources may come from.
    pub allowed_mounts: Vec<PathBuf>,
    /// Where environment archives are kept while they arrive.
    pub blobs: PathBuf,
    /// Where uids of `--no-container` tasks start for owners without an account on the node,
    /// and the cgroup filesystem that confines them.
    pub task_uid_base: u32,
    pub cgroup_root: PathBuf,
    /// The most the node keeps of each of a task's output streams (its last part); `None`: all.
    pub output_cap: Option<u64>,
}

pub(crate) struct Executor {
    node: Node,
    /// The backend of container work (and VPSs), and of `--no-container` work.
    containers: Arc<dyn Backend>,
    processes: Arc<dyn Backend>,
    /// The node's Docker engine, for what only it does (environment images, exports, the
    /// overlay's network, SSH into a VPS); in a running node, the same as `containers`.
    docker: Arc<Containers>,
    reports: mpsc::UnboundedSender<RunnerMsg>,
    /// Tasks a user asked to kill, so their end reads `killed`, not `failed`.
    kills: Mutex<HashSet<u64>>,
    /// VPSs a user asked to stop or remove, so their end is reported as that.
    vps_ends: Mutex<HashMap<u64, VpsEnd>>,
    /// Closed when the runner stops: work spawned here stops with it, as in a process exit.
    stop: tokio::sync::watch::Receiver<()>,
    /// The current session's connection, for fetching environments.
    host: tokio::sync::watch::Sender<Option<river_mesh::Connection>>,
    /// Forwarded UDP flows of the current session.
    pub udp: Arc<crate::forward::UdpFlows>,
    /// This node's part of the overlay network.
    pub overlay: crate::overlay::NodeOverlay,
    /// Tasks whose work runs and whose output is still being written to their files.
    live: Mutex<HashSet<u64>>,
    /// Bumped whenever a task's output becomes whole (its work is over and saved), so followers
    /// learn of the end at once rather than at their next look.
    output_ends: tokio::sync::watch::Sender<u64>,
}

/// Why a VPS's work stopped, when a user asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VpsEnd {
    Stop,
    Remove,
    /// Removed because the VPS now lives elsewhere: nothing to report.
    Discard,
}

impl Executor {
    pub fn new(s: Settings, reports: mpsc::UnboundedSender<RunnerMsg>, stop: tokio::sync::watch::Receiver<()>) -> Self {
        let node = Node {
            node: s.node,
            cluster: s.cluster,
            dir: s.dir,
            fake_gpus: s.fake_gpus,
            shared: s.shared,
            scratch: s.scratch,
            allowed_mounts: s.allowed_mounts,
            task_uid_base: s.task_uid_base,
            output_cap: s.output_cap,
        };
        let (host, host_rx) = tokio::sync::watch::channel(None);
        let images = crate::images::Images::new(s.blobs, host_rx);
        let docker = Arc::new(Containers::new(node.clone(), s.socket, images, reports.clone()));
        let processes = Arc::new(Processes::new(node.clone(), &s.cgroup_root));
        Self::with_backends(node, docker.clone(), processes, docker, host, reports, stop)
    }

    /// An executor over these backends (tests give it fakes).
    pub(crate) fn with_backends(
        node: Node,
        containers: Arc<dyn Backend>,
        processes: Arc<dyn Backend>,
        docker: Arc<Containers>,
        host: tokio::sync::watch::Sender<Option<river_mesh::Connection>>,
        reports: mpsc::UnboundedSender<RunnerMsg>,
        stop: tokio::sync::watch::Receiver<()>,
    ) -> Self {
        Self {
            node,
            containers,
            processes,
            docker,
            reports,
            kills: Mutex::default(),
            vps_ends: Mutex::default(),
            stop,
            host,
            udp: Arc::default(),
            overlay: Default::default(),
            live: Mutex::default(),
            output_ends: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The session's connection to the host, or `None` between sessions.
    pub fn set_host(&self, conn: Option<river_mesh::Connection>) {
        self.host.send_replace(conn);
    }

    /// Serves an `Export` stream from the host.
    pub async fn export(&self, req: river_proto::msg::ExportRequest, send: &mut river_mesh::SendStream) {
        self.docker.export(req, send).await;
    }

    /// The backend whose work task `id` is.
    fn backend_of(&self, id: u64) -> &Arc<dyn Backend> {
        if self.processes.holds(id) {
            &self.processes
        } else {
            &self.containers
        }
    }

    /// The backend that runs `spec`'s kind of work.
    fn backend_for(&self, spec: &TaskSpec) -> &Arc<dyn Backend> {
        match Kind::of(spec) {
            Kind::Process => &self.processes,
            Kind::Container | Kind::Vps => &self.containers,
        }
    }

    /// Where a task's ports are: the pid whose network namespace to enter (a container), `None`
    /// for the node's own (a `--no-container` task), or why the task cannot be reached.
    pub async fn network_of(&self, id: u64) -> Result<Option<i64>, String> {
        self.backend_of(id).network(id).await
    }

    /// Serves a `Terminal` stream from the host.
    pub async fn terminal(
        &self,
        req: river_proto::msg::TerminalOpen,
        send: &mut river_mesh::SendStream,
        recv: &mut river_mesh::RecvStream,
    ) -> Result<(), river_mesh::FramedError> {
        let started = self.exec_in(&crate::terminal::Command::of(&req)).await;
        crate::terminal::serve(started, req, send, recv).await
    }

    /// Starts a command in task `cmd.task`'s running work.
    pub(crate) async fn exec_in(&self, cmd: &crate::terminal::Command) -> Result<crate::terminal::Started, String> {
        self.backend_of(cmd.task).exec(cmd).await
    }

    /// Runs `work` until it ends or the runner stops.
    pub(crate) fn spawn_work(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                // The stop first: work woken after the runner stopped does no more.
                biased;
                _ = stop.changed() => {}
                () = work => {}
            }
        });
    }

    /// The Docker engine, connected on first use.
    pub(crate) async fn docker(&self) -> Result<&Runtime, String> {
        self.docker.runtime().await
    }

    /// Sends a message to the host on the control stream (queued while disconnected).
    pub(crate) fn send_report(&self, msg: RunnerMsg) -> bool {
        self.reports.send(msg).is_ok()
    }

    /// Whether a container engine answers on this node now (within 2 s): the host places
    /// container tasks only where one does.
    pub async fn engine_answers(&self) -> bool {
        self.docker.engine_answers().await
    }

    /// Task `id`'s work runs: its output is followed in its files until it is whole.
    fn set_live(&self, id: u64) {
        if let Ok(mut l) = self.live.lock() {
            l.insert(id);
        }
    }

    /// Task `id`'s output files are whole.
    fn set_whole(&self, id: u64) {
        if let Ok(mut l) = self.live.lock() {
            l.remove(&id);
        }
        self.output_ends.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn is_live(&self, id: u64) -> bool {
        self.live.lock().is_ok_and(|l| l.contains(&id))
    }

    fn report(&self, id: u64, state: TaskState, exit_code: Option<i64>, message: Option<String>) {
        if state.is_final() {
            // On disk before anything else: the next session's snapshot repeats it, so an end the
            // host did not hear (host down, runner restarted) is never lost.
            let r = TaskReport {
                id,
                state: state.as_str().into(),
                exit_code,
                message: message.clone(),
            };
            if let Err(e) = self.record(&r) {
                tracing::error!(task = id, "recording how the task ended: {e}");
            }
        }
        let _ = self.reports.send(RunnerMsg::Task {
            id,
            state: state.as_str().into(),
            exit_code,
            message,
        });
    }

    pub fn handle(self: &Arc<Self>, msg: HostMsg) {
        let me = self.clone();
        match msg {
            HostMsg::Start {
                id,
                spec,
                assigned,
                placement,
            } => {
                self.spawn_work(async move { me.run(id, *spec, *assigned, placement).await });
            }
            HostMsg::Signal { id, signal } => {
                self.spawn_work(async move { me.signal(id, signal).await });
            }
            HostMsg::Overlay(cfg) => self.overlay.announce(self, &cfg),
            HostMsg::Remove { id } => {
                self.spawn_work(async move { me.remove_vps(id, VpsEnd::Remove).await });
            }
            HostMsg::Discard { id } => {
                self.spawn_work(async move { me.remove_vps(id, VpsEnd::Discard).await });
            }
            HostMsg::Recorded { ids } => records::acknowledge(&self.node.dir, &ids),
            HostMsg::Archives { keep } => {
                self.spawn_work(async move { me.docker.forget(&keep).await });
            }
        }
    }

    /// Starts a task's work and follows it to its end.
    async fn run(self: Arc<Self>, id: u64, spec: TaskSpec, assigned: Assigned, placement: TaskPlacement) {
        if let Some(ip) = &placement.ip {
            let ready = match ip.parse() {
                Ok(ip) => self.overlay.ready_for(ip).await,
                Err(_) => Err(format!("the host gave an unusable overlay address {ip}")),
            };
            if let Err(why) = ready {
                let message = format!("node {}: {why}", self.node.node);
                return self.report(id, TaskState::Failed, None, Some(message));
            }
        }
        let vps = spec.vps.is_some();
        let backend = self.backend_for(&spec).clone();
        // A kill can come before the work has started (the signal and the start are handled side
        // by side): the work then never starts, or is killed as soon as it has.
        if self.kills.lock().is_ok_and(|mut k| k.remove(&id)) {
            let message = Some("killed by its owner before it started".into());
            return self.report(id, TaskState::Killed, None, message);
        }
        let job = Job {
            id,
            spec: &spec,
            assigned: &assigned,
            placement: &placement,
        };
        if let Err(refused) = backend.start(job).await {
            // A VPS that could not start again is not lost: it can be started again.
            let state = if vps && refused.kept {
                TaskState::Stopped
            } else {
                TaskState::Failed
            };
            return self.report(id, state, None, Some(refused.message));
        }
        // Followed from its files from now on, before anyone hears it runs.
        self.set_live(id);
        self.report(id, TaskState::Running, None, None);
        if self.kills.lock().is_ok_and(|k| k.contains(&id)) {
            // Asked while it was starting, when there was nothing yet to signal.
            if let Err(e) = backend.signal(id, Signal::Kill).await {
                tracing::warn!(task = id, "a kill asked while starting: {e}");
            }
        }
        self.follow(&backend, id, Some(placement.memory_bytes), vps).await;
    }

    /// Follows started (or found) work to its end: its output whole, then the report, then what
    /// is left of it removed (a VPS's is kept, stopped, unless it is being removed).
    /// The caller has marked it live (`set_live`) before anyone could ask to follow it.
    async fn follow(&self, backend: &Arc<dyn Backend>, id: u64, memory: Option<u64>, vps: bool) {
        let ended = backend.wait(id).await;
        // The files are whole: followers read them to their end and stop.
        self.set_whole(id);
        let killed = self.kills.lock().map(|mut k| k.remove(&id)).unwrap_or(false);
        if vps {
            let asked = self.vps_ends.lock().ok().and_then(|mut e| e.remove(&id));
            if let Some(end) = ends::vps(asked, &ended, killed) {
                self.report(id, end.state, end.code, end.message);
            }
            if matches!(asked, Some(VpsEnd::Remove | VpsEnd::Discard)) {
                if let Err(e) = backend.remove(id, true).await {
                    tracing::warn!(task = id, "removing a VPS: {e}");
                }
            }
            return;
        }
        let incomplete = match &ended {
            Ended::Exited { output: Err(why), .. } => {
                tracing::error!(task = id, "output not saved: {why}");
                Some(records::output_incomplete(&self.node.task_dir(id), why))
            }
            _ => None,
        };
        let end = ends::task(&ended, killed, memory, incomplete);
        // Reported (and recorded) first: removing the work can take a while, and the node's
        // cores are free already.
        self.report(id, end.state, end.code, end.message);
        if let Err(e) = backend.remove(id, false).await {
            tracing::warn!(task = id, "removing the task's work: {e}");
        }
    }

    async fn signal(self: Arc<Self>, id: u64, signal: Signal) {
        let backend = self.backend_of(id).clone();
        match signal {
            Signal::Kill => {
                if let Ok(mut k) = self.kills.lock() {
                    k.insert(id);
                }
            }
            Signal::Stop => {
                if let Ok(mut e) = self.vps_ends.lock() {
                    e.insert(id, VpsEnd::Stop);
                }
            }
            Signal::Pause | Signal::Resume => {}
        }
        match backend.signal(id, signal).await {
            Ok(()) if signal == Signal::Pause => self.report(id, TaskState::Paused, None, None),
            Ok(()) if signal == Signal::Resume => self.report(id, TaskState::Running, None, None),
            Ok(()) => {}
            Err(e) => tracing::warn!(task = id, "{signal:?}: {e}"),
        }
    }

    /// Removes a VPS's work, running or not: reported as removed (`Remove`), or silently
    /// (`Discard`: the VPS lives elsewhere now).
    async fn remove_vps(self: Arc<Self>, id: u64, why: VpsEnd) {
        let backend = self.containers.clone();
        let running = matches!(backend.seen(id).await, Some(Seen::Running | Seen::Paused));
        if running {
            // Its follower reports the end, if any.
            if let Ok(mut e) = self.vps_ends.lock() {
                e.insert(id, why);
            }
        }
        if let Err(e) = backend.remove(id, true).await {
            tracing::warn!(task = id, "removing a VPS: {e}");
        }
        if !running && why == VpsEnd::Remove {
            self.report(id, TaskState::Killed, None, Some("removed".into()));
        }
    }
}

/// The overlay runs beside the tasks, on the executor's engine and session.
impl crate::overlay::OverlayNode for Executor {
    fn overlay(&self) -> &crate::overlay::NodeOverlay {
        &self.overlay
    }

    fn report(&self, msg: RunnerMsg) -> bool {
        self.send_report(msg)
    }

    async fn engine(&self) -> Result<&Runtime, String> {
        self.docker().await
    }

    fn spawn_work(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        Executor::spawn_work(self, work);
    }
}
