//! Running tasks on this node: containers through `river_docker`, output to files under
//! `state_dir/tasks/ID/`, and a report to the host at each change of state.

mod account;
mod adopt;
mod attach;
mod container;
mod output;
mod pin;
mod process;
pub(crate) mod records;

use futures_util::StreamExt;
use river_docker::{ContainerSpec, Mount, Output, Runtime};
use river_proto::msg::{HostMsg, RunnerMsg, Signal, TaskPlacement, TaskReport, TaskSpec};
use river_task::state::{exit_state, TaskState};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, OnceCell};

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
    node: String,
    cluster: String,
    dir: PathBuf,
    socket: Option<PathBuf>,
    fake_gpus: bool,
    shared: Option<PathBuf>,
    scratch: PathBuf,
    allowed_mounts: Vec<PathBuf>,
    /// Connected on first use; a failed attempt is not kept, so a Docker engine started after the
    /// runner is found by the next task.
    runtime: OnceCell<Runtime>,
    reports: mpsc::UnboundedSender<RunnerMsg>,
    /// Tasks a user asked to kill, so their end reads `killed`, not `failed`.
    kills: Mutex<HashSet<u64>>,
    /// VPSs a user asked to stop or remove, so their end is reported as that.
    vps_ends: Mutex<std::collections::HashMap<u64, VpsEnd>>,
    /// Containers' first processes (pid, start time), so a forwarded connection does not ask the
    /// engine each time; the start time tells a reused pid from the container's.
    pids: Mutex<std::collections::HashMap<u64, (i64, u64)>>,
    /// Closed when the runner stops: work spawned here stops with it, as in a process exit.
    stop: tokio::sync::watch::Receiver<()>,
    /// The current session's connection, for fetching environments.
    host: tokio::sync::watch::Sender<Option<river_mesh::Connection>>,
    images: crate::images::Images,
    cgroups: crate::cgroup::Cgroups,
    task_uid_base: u32,
    /// Forwarded UDP flows of the current session.
    pub udp: Arc<crate::forward::UdpFlows>,
    /// This node's part of the overlay network.
    pub overlay: crate::overlay::NodeOverlay,
    /// The most kept of each output stream of a task.
    output_cap: Option<u64>,
    /// Tasks whose container's output is being written to their files now.
    pumps: Mutex<HashSet<u64>>,
    /// Bumped whenever a task's output becomes whole (its pump or its process is done), so
    /// followers learn of the end at once rather than at their next look.
    output_ends: tokio::sync::watch::Sender<u64>,
}

impl Executor {
    /// `river-<cluster>-<node>-task-<id>`: unique per engine even when several runners or
    /// clusters share it.
    pub(crate) fn container_name(&self, id: u64) -> String {
        format!("river-{}-{}-task-{id}", self.cluster, self.node)
    }

    /// `river-tasks`: the bridge network of containers that are not on the overlay, with traffic
    /// between containers off, so one user's task never reaches another's services directly. One
    /// per engine, whatever clusters share it: with that traffic off, sharing it lets no container
    /// reach another, and a network per cluster would be left behind on the engine by each one
    /// (its address pools run out after about thirty).
    fn isolated_network(&self) -> String {
        "river-tasks".to_owned()
    }
}

/// Why a VPS's container stopped, when a user asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VpsEnd {
    Stop,
    Remove,
    /// Removed because the VPS now lives elsewhere: nothing to report.
    Discard,
}

/// The label naming whose VPS a container is, and so whose an image committed from it is.
const OWNER: &str = "river.owner";

/// The container label holding the generation of the VPS's disk it was made for.
const VPS_GENERATION: &str = "river.vps.generation";

/// How long a stopping VPS gets between SIGTERM and SIGKILL.
const VPS_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A river container on this node.
struct Mine {
    task: u64,
    id: String,
    /// A VPS: its container is kept when it stops.
    vps: bool,
}

fn cpuset(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

impl Executor {
    pub fn new(s: Settings, reports: mpsc::UnboundedSender<RunnerMsg>, stop: tokio::sync::watch::Receiver<()>) -> Self {
        let (host, host_rx) = tokio::sync::watch::channel(None);
        Self {
            host,
            images: crate::images::Images::new(s.blobs, host_rx),
            cgroups: crate::cgroup::Cgroups::at(&s.cgroup_root),
            task_uid_base: s.task_uid_base,
            udp: Arc::default(),
            overlay: Default::default(),
            output_cap: s.output_cap,
            pumps: Mutex::default(),
            output_ends: tokio::sync::watch::Sender::new(0),
            node: s.node,
            cluster: s.cluster,
            dir: s.dir,
            socket: s.socket,
            fake_gpus: s.fake_gpus,
            shared: s.shared,
            scratch: s.scratch,
            allowed_mounts: s.allowed_mounts,
            runtime: OnceCell::new(),
            reports,
            kills: Mutex::new(HashSet::new()),
            vps_ends: Mutex::default(),
            pids: Mutex::default(),
            stop,
        }
    }

    /// The session's connection to the host, or `None` between sessions.
    pub fn set_host(&self, conn: Option<river_mesh::Connection>) {
        self.host.send_replace(conn);
    }

    /// Serves an `Export` stream from the host.
    pub async fn export(&self, req: river_proto::msg::ExportRequest, send: &mut river_mesh::SendStream) {
        let rt = match self.runtime().await {
            Ok(rt) => rt,
            Err(message) => {
                let _ = river_mesh::send_msg(send, &river_proto::msg::ExportReply::Failed { message }).await;
                let _ = send.finish();
                return;
            }
        };
        let container = match &req.source {
            river_proto::msg::ExportSource::Task(id) => {
                let name = self.container_name(*id);
                rt.status(&name).await.ok().map(|_| name)
            }
            river_proto::msg::ExportSource::Image(_) => None,
        };
        crate::images::export(rt, container, req, send).await;
    }

    /// Where a task's ports are: the pid whose network namespace to enter (a container), `None`
    /// for the node's own (a `--no-container` task), or why the task cannot be reached.
    pub async fn network_of(&self, id: u64) -> Result<Option<i64>, String> {
        if self.process_cgroup(id).exists() {
            return Ok(None);
        }
        let cached = self.pids.lock().ok().and_then(|p| p.get(&id).copied());
        if let Some((pid, started)) = cached {
            if start_time(pid) == Some(started) {
                return Ok(Some(pid));
            }
        }
        let rt = self.runtime().await?;
        match rt.pid(&self.container_name(id)).await {
            Ok(Some(pid)) => {
                if let (Some(started), Ok(mut p)) = (start_time(pid), self.pids.lock()) {
                    p.insert(id, (pid, started));
                }
                Ok(Some(pid))
            }
            Ok(None) => Err(format!("task {id} is not running here")),
            Err(e) => Err(format!("task {id} has no container here: {e}")),
        }
    }

    /// Serves a `Terminal` stream from the host.
    pub async fn terminal(
        &self,
        req: river_proto::msg::TerminalOpen,
        send: &mut river_mesh::SendStream,
        recv: &mut river_mesh::RecvStream,
    ) -> Result<(), river_mesh::FramedError> {
        let started = if self.process_cgroup(req.task).exists() {
            self.attach_process(&req).await
        } else {
            match self.runtime().await {
                Ok(rt) => crate::terminal::in_container(rt, &self.container_name(req.task), &req).await,
                Err(e) => Err(e),
            }
        };
        crate::terminal::serve(started, req, send, recv).await
    }

    /// Runs `work` until it ends or the runner stops.
    pub(crate) fn spawn_work(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.spawn(work)
    }

    /// The Docker engine, connected on first use.
    pub(crate) async fn docker(&self) -> Result<&Runtime, String> {
        self.runtime().await
    }

    /// Sends a message to the host on the control stream (queued while disconnected).
    pub(crate) fn send_report(&self, msg: RunnerMsg) -> bool {
        self.reports.send(msg).is_ok()
    }

    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = work => {}
                _ = stop.changed() => {}
            }
        });
    }

    async fn runtime(&self) -> Result<&Runtime, String> {
        self.runtime
            .get_or_try_init(|| Runtime::connect(self.socket.as_deref()))
            .await
            .map_err(|e| e.to_string())
    }

    /// Task `id`'s output is being pumped into its files (its container runs).
    fn pumping(&self, id: u64) {
        if let Ok(mut p) = self.pumps.lock() {
            p.insert(id);
        }
    }

    /// Task `id`'s output files are whole.
    fn pumped(&self, id: u64) {
        if let Ok(mut p) = self.pumps.lock() {
            p.remove(&id);
        }
        self.output_ended();
    }

    /// Wakes those following output: a task's output is whole.
    fn output_ended(&self) {
        self.output_ends.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn is_pumping(&self, id: u64) -> bool {
        self.pumps.lock().is_ok_and(|p| p.contains(&id))
    }

    /// Whether a container engine answers on this node now (within 2 s): the host places
    /// container tasks only where one does.
    pub async fn engine_answers(&self) -> bool {
        let ask = async {
            match self.runtime().await {
                Ok(rt) => rt.ping().await,
                Err(_) => false,
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(2), ask)
            .await
            .unwrap_or(false)
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
            HostMsg::Start { id, spec, placement } if spec.no_container => {
                self.spawn(async move { me.run_process(id, *spec, placement).await });
            }
            HostMsg::Start { id, spec, placement } => {
                self.spawn(async move { me.run(id, *spec, placement).await });
            }
            HostMsg::Signal { id, signal } if self.process_cgroup(id).exists() => {
                self.spawn(async move { me.signal_process(id, signal).await });
            }
            HostMsg::Signal { id, signal } => {
                self.spawn(async move { me.signal(id, signal).await });
            }
            HostMsg::Overlay(cfg) => self.overlay.announce(self, &cfg),
            HostMsg::Remove { id } => {
                self.spawn(async move { me.remove_vps(id, VpsEnd::Remove).await });
            }
            HostMsg::Discard { id } => {
                self.spawn(async move { me.remove_vps(id, VpsEnd::Discard).await });
            }
            HostMsg::Recorded { ids } => records::acknowledge(&self.dir, &ids),
            HostMsg::Archives { keep } => {
                self.spawn(async move {
                    if let Ok(rt) = me.runtime().await {
                        me.images.forget(rt, &keep).await;
                    }
                });
            }
        }
    }

    async fn signal(self: Arc<Self>, id: u64, signal: Signal) {
        let Ok(rt) = self.runtime().await else { return };
        let name = self.container_name(id);
        let result = match signal {
            Signal::Kill => {
                if let Ok(mut k) = self.kills.lock() {
                    k.insert(id);
                }
                rt.kill(&name).await
            }
            Signal::Pause => rt
                .pause(&name)
                .await
                .map(|()| self.report(id, TaskState::Paused, None, None)),
            Signal::Resume => rt
                .resume(&name)
                .await
                .map(|()| self.report(id, TaskState::Running, None, None)),
            Signal::Stop => {
                if let Ok(mut e) = self.vps_ends.lock() {
                    e.insert(id, VpsEnd::Stop);
                }
                // A frozen container cannot act on SIGTERM: thaw it first.
                if rt.status(&name).await.is_ok_and(|s| s.paused) {
                    let _ = rt.resume(&name).await;
                }
                rt.stop(&name, VPS_STOP_GRACE).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(task = id, "{signal:?}: {e}");
        }
    }

    /// Sends a task's output to `out`: with `follow` and a running container, as it comes until the
    /// container stops (from the engine, which keeps it all); otherwise what was saved.
    pub async fn send_logs(
        &self,
        id: u64,
        stderr: bool,
        follow: bool,
        out: &mut river_mesh::SendStream,
    ) -> anyhow::Result<()> {
        let cg = self.process_cgroup(id);
        if follow && cg.exists() {
            return self
                .follow_file(id, stderr, out, || !cg.exists() || cg.pids().is_empty())
                .await;
        }
        // A container's output is followed in the file its pump writes, not in the engine's
        // live stream: that stream can end before the container's last bytes (seen with short
        // tasks: `logs -f` got "one" of "one\ntwo"), while the pump makes its file whole
        // before it lets go of the task.
        if follow && self.is_pumping(id) {
            return self.follow_file(id, stderr, out, || !self.is_pumping(id)).await;
        }
        let path = self
            .dir
            .join(id.to_string())
            .join(if stderr { "stderr.log" } else { "stdout.log" });
        // Streamed from the file, however large, in large pieces handed to the stream without a
        // copy: QUIC flow control paces the reads.
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && records::was_removed(&self.dir, id) => {
                let _ = out.reset(river_proto::msg::LOGS_REMOVED.into());
                anyhow::bail!("the output of task {id} was removed after the node's task_retention")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // What the node no longer keeps is skipped, with a line saying so. (A running container
        // followed above comes from its engine, which keeps all of it.)
        let dropped = output::dropped(&path);
        if dropped > 0 {
            out.write_all(output::dropped_line(dropped, self.output_cap).as_bytes())
                .await?;
            tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(dropped)).await?;
        }
        let mut buf = bytes::BytesMut::new();
        loop {
            buf.reserve(256 << 10);
            if tokio::io::AsyncReadExt::read_buf(&mut file, &mut buf).await? == 0 {
                break;
            }
            out.write_chunk(buf.split().freeze()).await?;
        }
        // What was kept has gone out; if that is not all there was, the stream does not end
        // cleanly: the reader sees why.
        match std::fs::read_to_string(self.dir.join(id.to_string()).join(records::INCOMPLETE)) {
            Ok(why) => {
                let _ = out.reset(river_proto::msg::LOGS_INCOMPLETE.into());
                anyhow::bail!("the output of task {id} is incomplete: {why}")
            }
            Err(_) => Ok(()),
        }
    }
}

/// When process `pid` started (clock ticks since boot): `/proc/PID/stat`'s 22nd field.
fn start_time(pid: i64) -> Option<u64> {
    crate::process::stat_field(pid, 22)
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

#[cfg(test)]
mod tests {
    #[test]
    fn start_time_of_this_process() {
        let me = i64::from(std::process::id());
        let t = super::start_time(me).expect("this process has a start time");
        assert_eq!(super::start_time(me), Some(t));
        assert_eq!(super::start_time(i64::from(i32::MAX)), None);
    }
}
