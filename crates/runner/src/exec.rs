//! Running tasks on this node: containers through `river_docker`, output to files under
//! `state_dir/tasks/ID/`, and a report to the host at each change of state.

mod account;
mod attach;
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

    fn record(&self, r: &TaskReport) -> anyhow::Result<()> {
        let json = serde_json::json!({ "state": r.state, "exit_code": r.exit_code, "message": r.message });
        river_creds::write_atomic(
            &self.dir.join(r.id.to_string()).join("result.json"),
            json.to_string().as_bytes(),
            0o644,
        )?;
        Ok(())
    }

    fn recorded(&self) -> Vec<TaskReport> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let id: u64 = e.file_name().to_str()?.parse().ok()?;
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.path().join("result.json")).ok()?).ok()?;
                Some(TaskReport {
                    id,
                    state: v["state"].as_str()?.to_owned(),
                    exit_code: v["exit_code"].as_i64(),
                    message: v["message"].as_str().map(str::to_owned),
                })
            })
            .collect()
    }

    /// This node's river containers.
    async fn containers(&self, rt: &Runtime) -> Vec<Mine> {
        let mine = format!("river.cluster={}", self.cluster);
        match rt.list(&mine).await {
            Ok(found) => found
                .into_iter()
                .filter(|c| c.labels.get("river.node") == Some(&self.node))
                .filter_map(|c| {
                    Some(Mine {
                        task: c.labels.get("river.task")?.parse().ok()?,
                        vps: c.labels.contains_key("river.vps"),
                        id: c.id,
                    })
                })
                .collect(),
            Err(e) => {
                tracing::warn!("listing containers: {e}");
                Vec::new()
            }
        }
    }

    /// At start: keeps watching tasks whose containers kept running while the runner was down, and
    /// records how the others ended.
    pub async fn adopt(self: &Arc<Self>) {
        self.adopt_processes();
        let Ok(rt) = self.runtime().await else { return };
        let recorded: HashSet<u64> = self.recorded().iter().map(|r| r.id).collect();
        for Mine { task: id, id: cid, vps } in self.containers(rt).await {
            match rt.status(&cid).await {
                Ok(st) if st.exit.is_none() => {
                    tracing::info!(task = id, vps, "re-adopted a running task");
                    self.pumping(id);
                    let me = self.clone();
                    self.spawn(async move { me.watch(id, cid, None, vps).await });
                }
                // A stopped VPS keeps its container; the snapshot tells the host it is stopped.
                Ok(_) if vps => {}
                Ok(st) => {
                    if !recorded.contains(&id) {
                        // Its output, all of it, before the container goes.
                        if let Err(e) =
                            pump_output(rt.clone(), cid.clone(), self.dir.join(id.to_string()), self.output_cap).await
                        {
                            tracing::warn!(task = id, "saving the output: {e}");
                        }
                        if let Some(exit) = st.exit {
                            let state = exit_state(exit.code, exit.oom_killed, false);
                            self.report(
                                id,
                                state,
                                Some(exit.code),
                                Some("ended while the runner was down".into()),
                            );
                        }
                    }
                    let _ = rt.remove(&cid).await;
                }
                Err(e) => tracing::warn!(task = id, "inspecting a container: {e}"),
            }
        }
    }

    /// The node left the cluster: its tasks' containers go too (they would otherwise hold cores
    /// and GPUs on a machine no one schedules on).
    pub async fn stop_all(&self) {
        for (id, cg) in self.processes() {
            tracing::info!(task = id, "killing a process task of a node that left the cluster");
            cg.kill_all();
        }
        let Ok(rt) = self.runtime().await else { return };
        for Mine { task: id, id: cid, .. } in self.containers(rt).await {
            tracing::info!(
                task = id,
                "removing the container of a task of a node that left the cluster"
            );
            let _ = rt.remove(&cid).await;
        }
    }

    /// What the host should know at the start of a session.
    pub async fn snapshot(&self) -> Vec<TaskReport> {
        let acked: HashSet<u64> = records::acknowledged(&self.dir);
        let mut out = self.recorded();
        let done: HashSet<u64> = out.iter().map(|r| r.id).collect();
        out.extend(self.process_reports().into_iter().filter(|r| !done.contains(&r.id)));
        if let Ok(rt) = self.runtime().await {
            for Mine { task: id, id: cid, vps } in self.containers(rt).await {
                if done.contains(&id) {
                    continue;
                }
                if let Ok(st) = rt.status(&cid).await {
                    let state = if st.paused {
                        TaskState::Paused
                    } else {
                        TaskState::Running
                    };
                    match st.exit {
                        None => out.push(TaskReport {
                            id,
                            state: state.as_str().into(),
                            exit_code: None,
                            message: None,
                        }),
                        // A VPS stopped while the host could not hear: it is kept, stopped.
                        Some(exit) if vps => out.push(TaskReport {
                            id,
                            state: TaskState::Stopped.as_str().into(),
                            exit_code: Some(exit.code),
                            message: Some(vps_stopped_message(None, &exit)),
                        }),
                        Some(_) => {}
                    }
                }
            }
        }
        // Ends the host has stored are not sent again: the snapshot does not grow with history.
        out.retain(|r| !acked.contains(&r.id));
        out
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

    /// The task's mounts: `/shared` and its owner's `/local_temp`, then the ones it asked for,
    /// each resolved beneath one of those or `allowed_mounts` without following a link, and
    /// pinned (`pin`) until the container has started.
    fn mounts(&self, id: u64, spec: &TaskSpec, p: &TaskPlacement) -> Result<(Vec<Mount>, pin::Pins), String> {
        let owner = account::owner_of(p)?;
        let scratch = self.user_scratch(owner, self.ids(owner)?)?;
        let mut out = vec![Mount {
            source: scratch.clone(),
            target: "/local_temp".into(),
            read_only: false,
        }];
        if let Some(shared) = &self.shared {
            out.push(Mount {
                source: shared.clone(),
                target: "/shared".into(),
                read_only: false,
            });
        }
        // Each root as configured and as it resolves, so a source may name either.
        let roots: Vec<PathBuf> = self
            .shared
            .iter()
            .chain(std::iter::once(&scratch))
            .chain(&self.allowed_mounts)
            .flat_map(|r| [Some(r.clone()), std::fs::canonicalize(r).ok()])
            .flatten()
            .filter(|r| r.is_absolute())
            .collect();
        let mut pins = pin::Pins::default();
        let dir = self.dir.join(id.to_string()).join("mounts");
        for (n, m) in spec.mounts.iter().enumerate() {
            let source = pins
                .pin(&m.source, &roots, &dir.join(n.to_string()))
                .map_err(|e| format!("{e} (node {})", self.node))?;
            out.push(Mount {
                source,
                target: m.target.clone(),
                read_only: m.read_only,
            });
        }
        Ok((out, pins))
    }

    /// The container to create, and the pinned mount sources it needs until it has started.
    fn container(&self, id: u64, spec: &TaskSpec, p: &TaskPlacement) -> Result<(ContainerSpec, pin::Pins), String> {
        let mut env: Vec<String> = vec![
            format!("RIVER_TASK_ID={id}"),
            format!("RIVER_NODE={}", self.node),
            format!("RIVER_CORES={}", p.cores.len()),
            format!("RIVER_GPUS={}", cpuset(&p.gpus)),
        ];
        env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        let (mounts, pins) = self.mounts(id, spec, p)?;
        let c = ContainerSpec {
            name: self.container_name(id),
            image: spec.image.clone(),
            command: spec.command.clone(),
            env,
            workdir: spec.workdir.clone(),
            cpuset_cpus: Some(cpuset(&p.cores)),
            cpuset_mems: p.numa.map(|n| n.to_string()),
            memory_bytes: (p.memory_bytes > 0).then_some(p.memory_bytes),
            gpus: if self.fake_gpus {
                Vec::new()
            } else {
                p.gpus.iter().map(u32::to_string).collect()
            },
            mounts,
            labels: BTreeMap::from_iter(
                [
                    ("river.task".to_owned(), id.to_string()),
                    ("river.node".to_owned(), self.node.clone()),
                    ("river.cluster".to_owned(), self.cluster.clone()),
                ]
                .into_iter()
                .chain(spec.vps.iter().flat_map(|v| {
                    [
                        ("river.vps".to_owned(), "1".to_owned()),
                        (VPS_GENERATION.to_owned(), v.generation.to_string()),
                        // Carried into every image committed from it: its snapshots are theirs.
                        (
                            OWNER.to_owned(),
                            account::owner_of(p).map(|o| o.name.clone()).unwrap_or_default(),
                        ),
                    ]
                })),
            ),
            // The host allowed it: the cluster permits it and the submitter is an operator.
            privileged: spec.privileged,
            network: Some(match &p.ip {
                Some(ip) => (crate::overlay::NETWORK.to_owned(), Some(ip.clone())),
                None => (self.isolated_network(), None),
            }),
        };
        Ok((c, pins))
    }

    async fn run(self: Arc<Self>, id: u64, spec: TaskSpec, placement: TaskPlacement) {
        let rt = match self.runtime().await {
            Ok(rt) => rt,
            Err(e) => return self.report(id, TaskState::Failed, None, Some(format!("node {}: {e}", self.node))),
        };
        let (mut cspec, pins) = match self.container(id, &spec, &placement) {
            Ok(c) => c,
            Err(why) => return self.report(id, TaskState::Failed, None, Some(why)),
        };
        if placement.ip.is_none() {
            match rt.ensure_isolated_network(&self.isolated_network()).await {
                // By id: a name two networks share (made at once by two processes) is refused.
                Ok(net) => cspec.network = Some((net, None)),
                Err(e) => {
                    let state = if spec.vps.is_some() {
                        TaskState::Stopped
                    } else {
                        TaskState::Failed
                    };
                    return self.report(id, state, None, Some(format!("node {}: {e}", self.node)));
                }
            }
        }
        if let Some(ip) = &placement.ip {
            let ready = match ip.parse() {
                Ok(ip) => self.overlay.ready_for(ip).await,
                Err(_) => Err(format!("the host gave an unusable overlay address {ip}")),
            };
            if let Err(why) = ready {
                return self.report(id, TaskState::Failed, None, Some(format!("node {}: {why}", self.node)));
            }
        }
        let vps = spec.vps.is_some();
        if vps {
            match self.restart_vps(rt, &cspec).await {
                Ok(Some(cid)) => {
                    drop(pins);
                    self.pumping(id);
                    self.report(id, TaskState::Running, None, None);
                    return self.watch(id, cid, Some(placement.memory_bytes), true).await;
                }
                Ok(None) => {}
                Err(e) => {
                    return self.report(
                        id,
                        TaskState::Stopped,
                        None,
                        Some(format!("could not start again on {}: {e}", self.node)),
                    )
                }
            }
        }
        // Only a new container needs its image (a VPS's existing one has its own disk).
        if let Some(a) = &spec.archive {
            let progress = |task: u64, done: u64, total: u64| {
                let _ = self.reports.send(RunnerMsg::Fetch { id: task, done, total });
            };
            if let Err(why) = self.images.ensure(rt, id, a, &progress).await {
                let env = spec.environment.as_deref().unwrap_or(&spec.image);
                return self.report(
                    id,
                    // A VPS is not lost for a failed fetch: it can be started again.
                    if vps { TaskState::Stopped } else { TaskState::Failed },
                    None,
                    Some(format!("node {} could not get environment {env}: {why}", self.node)),
                );
            }
            // By id: a tag of the same name on a shared engine can never stand in for it.
            cspec.image = a.image_id.clone();
        }
        if let Err(why) = self.may_run(rt, &cspec.image, &placement).await {
            let state = if vps { TaskState::Stopped } else { TaskState::Failed };
            return self.report(id, state, None, Some(why));
        }
        let started = async {
            // A container of the name left from before (the task ran here, and its runner went
            // away) is removed only when it is there: one call fewer on every start.
            let cid = match rt.create(&cspec).await {
                Err(river_docker::RuntimeError::Conflict(_)) => {
                    rt.remove(&cspec.name).await?;
                    rt.create(&cspec).await?
                }
                made => made?,
            };
            rt.start(&cid).await?;
            Ok::<String, river_docker::RuntimeError>(cid)
        }
        .await;
        // The container holds its own copy of its mounts now (or will never start).
        drop(pins);
        let cid = match started {
            Ok(cid) => cid,
            Err(e) => {
                let _ = rt.remove(&cspec.name).await;
                return self.report(
                    id,
                    TaskState::Failed,
                    None,
                    Some(format!("could not start on {}: {e}", self.node)),
                );
            }
        };
        // Followed from its file from now on, before anyone hears it runs.
        self.pumping(id);
        self.report(id, TaskState::Running, None, None);
        self.watch(id, cid, Some(placement.memory_bytes), vps).await;
    }

    /// Whether the task's owner may run `image`: one made from a user's VPS (a snapshot, or
    /// anything built on one) is that user's, and operators'. Judged by the image the engine
    /// has, whatever name or id the task gave for it.
    async fn may_run(&self, rt: &Runtime, image: &str, p: &TaskPlacement) -> Result<(), String> {
        let owner = account::owner_of(p)?;
        // An image the engine lacks is pulled from a registry by the create that follows.
        let labels = rt.image_labels(image).await.unwrap_or_default();
        match labels.get(OWNER) {
            Some(of) if *of != owner.name && !owner.operator => Err(format!(
                "image {image} was made from another user's VPS; only they (and operators) may run it"
            )),
            _ => Ok(()),
        }
    }

    /// Starts a VPS's existing container again with its new cores and memory (its files as they
    /// were). `None`: there is no container to start (a first start, or it was lost), or the one
    /// there was made for an earlier generation of the VPS's disk (before a restore or a move),
    /// and has been removed.
    async fn restart_vps(
        &self,
        rt: &Runtime,
        cspec: &ContainerSpec,
    ) -> Result<Option<String>, river_docker::RuntimeError> {
        let Ok(st) = rt.status(&cspec.name).await else {
            return Ok(None);
        };
        // A container from before generations existed is generation 0.
        let made_for = st.labels.get(VPS_GENERATION).map_or("0", String::as_str);
        if Some(made_for) != cspec.labels.get(VPS_GENERATION).map(String::as_str) {
            tracing::info!(container = %cspec.name, "replacing a VPS container from an earlier generation");
            remove_vps_container(rt, &cspec.name).await?;
            return Ok(None);
        }
        if st.exit.is_some() || !st.running {
            rt.update_limits(
                &cspec.name,
                cspec.cpuset_cpus.clone(),
                cspec.cpuset_mems.clone(),
                cspec.memory_bytes,
            )
            .await?;
            rt.start(&cspec.name).await?;
        }
        Ok(Some(cspec.name.clone()))
    }

    /// Removes a VPS's container, running or not: reported as removed (`Remove`), or silently
    /// (`Discard`: the VPS lives elsewhere now).
    async fn remove_vps(self: Arc<Self>, id: u64, why: VpsEnd) {
        let Ok(rt) = self.runtime().await else { return };
        let name = self.container_name(id);
        let report = why == VpsEnd::Remove;
        let running = rt.status(&name).await.is_ok_and(|s| s.exit.is_none());
        if running {
            // Its watcher reports the end, if any.
            if let Ok(mut e) = self.vps_ends.lock() {
                e.insert(id, why);
            }
        }
        if let Err(e) = remove_vps_container(rt, &name).await {
            tracing::warn!(task = id, "removing a VPS: {e}");
        }
        if !running && report {
            self.report(id, TaskState::Killed, None, Some("removed".into()));
        }
    }

    /// Follows a started container to its end: output to files, then the report, then removal (a
    /// VPS's container is kept, stopped, unless it is being removed).
    async fn watch(&self, id: u64, cid: String, memory: Option<u64>, vps: bool) {
        let Ok(rt) = self.runtime().await else {
            self.pumped(id);
            return;
        };
        self.pumping(id);
        // Output and end together, so both stop if the runner does.
        let dir = self.dir.join(id.to_string());
        let (exit, saved) = tokio::join!(
            rt.wait(&cid),
            pump_output(rt.clone(), cid.clone(), dir.clone(), self.output_cap)
        );
        // The file is whole: followers read it to its end and stop.
        self.pumped(id);
        let incomplete = saved.err().map(|why| {
            tracing::error!(task = id, "output not saved: {why}");
            records::output_incomplete(&dir, &why)
        });
        let killed = self.kills.lock().map(|mut k| k.remove(&id)).unwrap_or(false);
        if let Ok(mut p) = self.pids.lock() {
            p.remove(&id);
        }
        if vps {
            let asked = self.vps_ends.lock().ok().and_then(|mut e| e.remove(&id));
            match (asked, exit) {
                (Some(VpsEnd::Remove), _) => {
                    self.report(id, TaskState::Killed, None, Some("removed".into()));
                    if let Err(e) = remove_vps_container(rt, &cid).await {
                        tracing::warn!(task = id, "removing a VPS: {e}");
                    }
                }
                (Some(VpsEnd::Discard), _) => {
                    if let Err(e) = remove_vps_container(rt, &cid).await {
                        tracing::warn!(task = id, "removing a VPS: {e}");
                    }
                }
                (asked, Ok(exit)) => {
                    let why = match asked {
                        Some(_) => Some("stopped by its owner"),
                        None if killed => Some("killed by its owner"),
                        None => None,
                    };
                    let message = vps_stopped_message(why, &exit);
                    self.report(id, TaskState::Stopped, Some(exit.code), Some(message));
                }
                (_, Err(e)) => self.report(
                    id,
                    TaskState::Stopped,
                    None,
                    Some(format!("lost track of the container: {e}")),
                ),
            }
            return;
        }
        match exit {
            Ok(exit) => {
                let state = exit_state(exit.code, exit.oom_killed, killed);
                let limit = memory
                    .map(|m| format!(" of {}", river_task::size::human(m)))
                    .unwrap_or_default();
                let message = match state {
                    TaskState::Oom => Some(format!("killed by the kernel: it exceeded its memory limit{limit}")),
                    TaskState::Failed => signalled(exit.code),
                    _ => None,
                };
                let message = match (message, incomplete) {
                    (Some(m), Some(i)) => Some(format!("{m}; {i}")),
                    (m, i) => m.or(i),
                };
                self.report(id, state, Some(exit.code), message);
            }
            Err(e) => self.report(
                id,
                TaskState::Failed,
                None,
                Some(format!("lost track of the container: {e}")),
            ),
        }
        let _ = rt.remove(&cid).await;
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

/// Why a container ended with `code` when river did not end it: a signal from outside (the node
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

/// Removes a VPS's container, then the snapshot image it was made from, if it was one (a restore
/// or a move loads the snapshot's archive into this node's engine; the host keeps the archive).
/// A snapshot's image stays only while a container of it does: the engine refuses to drop the
/// last name of an image still in use, and that refusal is the check. Only the container's
/// removal can fail this: an image left behind is logged, never a reason a VPS cannot start.
async fn remove_vps_container(rt: &Runtime, name: &str) -> Result<(), river_docker::RuntimeError> {
    let image = rt.status(name).await.ok().and_then(|s| s.image);
    rt.remove(name).await?;
    let Some(image) = image else { return Ok(()) };
    let repo = format!("{}/", river_proto::msg::VPS_SNAPSHOT_REPO);
    let dropped = async {
        for tag in rt.image_tags(&image).await? {
            if tag.starts_with(&repo) {
                rt.untag(&tag).await?;
            }
        }
        Ok::<(), river_docker::RuntimeError>(())
    };
    if let Err(e) = dropped.await {
        tracing::warn!(container = name, %image, "dropping a snapshot's image: {e}");
    }
    Ok(())
}

/// What a stopped VPS's record says about why.
fn vps_stopped_message(why: Option<&str>, exit: &river_docker::Exit) -> String {
    match why {
        Some(why) => format!("{why}; its container and files are kept"),
        None if exit.oom_killed => "killed by the kernel for exceeding its memory limit; its files are kept".to_owned(),
        None => format!(
            "its main process exited with code {}; its container and files are kept",
            exit.code
        ),
    }
}

/// When process `pid` started (clock ticks since boot): `/proc/PID/stat`'s 22nd field.
fn start_time(pid: i64) -> Option<u64> {
    crate::process::stat_field(pid, 22)
}

/// Copies a container's output into `dir/stdout.log` and `dir/stderr.log` until it stops.
/// Saves a container's output as it is written. An error means some of it is not saved (a full
/// disk, the engine gone): it says what, and the task's record and `task logs` say the output is
/// incomplete.
async fn pump_output(rt: Runtime, cid: String, dir: PathBuf, cap: Option<u64>) -> Result<(), String> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |e: std::io::Error| format!("{what}: {e}")
    };
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(io("the task directory"))?;
    let mut out = tokio::fs::File::create(dir.join("stdout.log"))
        .await
        .map_err(io("stdout.log"))?;
    let mut err = tokio::fs::File::create(dir.join("stderr.log"))
        .await
        .map_err(io("stderr.log"))?;
    // The files are new: so is what they keep.
    output::forget_dropped(&dir);
    let (mut live_out, mut live_err) = (0usize, 0usize);
    let (mut unchecked, mut warned) = (0usize, false);
    let mut s = Box::pin(rt.output(&cid, true));
    while let Some(chunk) = s.next().await {
        let n = match chunk {
            Ok(Output::Stdout(b)) => {
                out.write_all(&b).await.map_err(io("writing stdout.log"))?;
                live_out += b.len();
                b.len()
            }
            Ok(Output::Stderr(b)) => {
                err.write_all(&b).await.map_err(io("writing stderr.log"))?;
                live_err += b.len();
                b.len()
            }
            Err(e) => return Err(format!("reading the container's output: {e}")),
        };
        unchecked += n;
        // Looked at every quarter of the cap (at most every 4 MiB): the files exceed it by that
        // much at most.
        if let Some(cap) = cap.filter(|c| unchecked as u64 >= (c / 4).min(output::CHECK_EVERY as u64)) {
            unchecked = 0;
            out.flush().await.map_err(io("writing stdout.log"))?;
            err.flush().await.map_err(io("writing stderr.log"))?;
            output::trim_task(&dir, cap, &mut warned);
        }
    }
    // The live stream can end before the engine has handed over all of it (seen under load: the
    // last 14 KB of 25 MB, and the task still `completed`). Once the container has ended, its
    // whole log is read again and what the live stream missed is appended.
    rt.wait(&cid)
        .await
        .map_err(|e| format!("waiting for the container's end: {e}"))?;
    let (mut seen_out, mut seen_err) = (0usize, 0usize);
    let mut missed = 0usize;
    let mut s = Box::pin(rt.output(&cid, false));
    while let Some(chunk) = s.next().await {
        let (b, file, live, seen, what) = match chunk {
            Ok(Output::Stdout(b)) => (b, &mut out, live_out, &mut seen_out, "writing stdout.log"),
            Ok(Output::Stderr(b)) => (b, &mut err, live_err, &mut seen_err, "writing stderr.log"),
            Err(e) => return Err(format!("reading the container's output: {e}")),
        };
        let skip = live.saturating_sub(*seen).min(b.len());
        *seen += b.len();
        if skip < b.len() {
            file.write_all(&b[skip..]).await.map_err(io(what))?;
            missed += b.len() - skip;
        }
    }
    if missed > 0 {
        tracing::warn!(container = %cid, bytes = missed, "the engine's live output missed the end; took it from its log");
    }
    out.flush().await.map_err(io("writing stdout.log"))?;
    err.flush().await.map_err(io("writing stderr.log"))?;
    // On disk before the end is reported; both at once.
    let (o, e) = tokio::join!(out.sync_all(), err.sync_all());
    o.map_err(io("writing stdout.log"))?;
    e.map_err(io("writing stderr.log"))?;
    if let Some(cap) = cap {
        output::trim_task(&dir, cap, &mut warned);
    }
    Ok(())
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
