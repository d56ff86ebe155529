//! Container tasks on the node's Docker engine: mounts and the container's spec, the start from
//! image to running container, a VPS's restart and removal, the wait over a running container
//! with its output pumped into the task's files (`pump`).

use super::pump::pump_output;
use super::{account, id_list, pin, Backend, Ended, Found, Job, Node, Refused, Seen};
use crate::terminal::{Command, Started};
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use river_docker::{ContainerSpec, Mount, Runtime};
use river_proto::msg::{RunnerMsg, Signal, TaskPlacement, TaskSpec};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use tokio::sync::{mpsc, OnceCell};

/// The label naming whose VPS a container is, and so whose an image committed from it is.
const OWNER: &str = "river.owner";

/// The container label holding the generation of the VPS's disk it was made for.
const VPS_GENERATION: &str = "river.vps.generation";

/// How long a stopping VPS gets between SIGTERM and SIGKILL.
const VPS_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The Docker backend.
pub(crate) struct Containers {
    node: Node,
    socket: Option<PathBuf>,
    /// Connected on first use; a failed attempt is not kept, so a Docker engine started after the
    /// runner is found by the next task.
    runtime: OnceCell<Runtime>,
    /// Environment images, fetched from the host as tasks need them.
    pub images: crate::images::Images,
    /// Fetch progress goes to the host on the control stream.
    reports: mpsc::UnboundedSender<RunnerMsg>,
    /// Containers' first processes (pid, start time), so a forwarded connection does not ask the
    /// engine each time; the start time tells a reused pid from the container's.
    pids: Mutex<HashMap<u64, (i64, u64)>>,
}

impl Containers {
    pub fn new(
        node: Node,
        socket: Option<PathBuf>,
        images: crate::images::Images,
        reports: mpsc::UnboundedSender<RunnerMsg>,
    ) -> Self {
        Self {
            node,
            socket,
            runtime: OnceCell::new(),
            images,
            reports,
            pids: Mutex::default(),
        }
    }

    /// `river-<cluster>-<node>-task-<id>`: unique per engine even when several runners or
    /// clusters share it.
    pub(crate) fn name(&self, id: u64) -> String {
        format!("river-{}-{}-task-{id}", self.node.cluster, self.node.node)
    }

    /// `river-tasks`: the bridge network of containers that are not on the overlay, with traffic
    /// between containers off, so one user's task never reaches another's services directly. One
    /// per engine, whatever clusters share it: with that traffic off, sharing it lets no container
    /// reach another, and a network per cluster would be left behind on the engine by each one
    /// (its address pools run out after about thirty).
    fn isolated_network(&self) -> String {
        "river-tasks".to_owned()
    }

    /// The Docker engine, connected on first use.
    pub(crate) async fn runtime(&self) -> Result<&Runtime, String> {
        self.runtime
            .get_or_try_init(|| Runtime::connect(self.socket.as_deref()))
            .await
            .map_err(|e| e.to_string())
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

    /// Serves an `Export` stream from the host: a task's container committed, or an image.
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
                let name = self.name(*id);
                rt.status(&name).await.ok().map(|_| name)
            }
            river_proto::msg::ExportSource::Image(_) => None,
        };
        crate::images::export(rt, container, req, send).await;
    }

    /// Drops environment images the host no longer keeps.
    pub async fn forget(&self, keep: &[String]) {
        if let Ok(rt) = self.runtime().await {
            self.images.forget(rt, keep).await;
        }
    }

    async fn start_job(&self, job: Job<'_>) -> Result<(), Refused> {
        let Job {
            id,
            spec,
            assigned,
            placement,
        } = job;
        let node = &self.node.node;
        let rt = self
            .runtime()
            .await
            .map_err(|e| Refused::failed(format!("node {node}: {e}")))?;
        let (mut cspec, pins) = self.container(id, spec, placement).map_err(Refused::failed)?;
        if placement.ip.is_none() {
            // By id: a name two networks share (made at once by two processes) is refused.
            let net = rt
                .ensure_isolated_network(&self.isolated_network())
                .await
                .map_err(|e| Refused::kept(format!("node {node}: {e}")))?;
            cspec.network = Some((net, None));
        }
        if spec.vps.is_some() {
            match self.restart_vps(rt, &cspec).await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => {}
                Err(e) => return Err(Refused::kept(format!("could not start again on {node}: {e}"))),
            }
        }
        // Only a new container needs its image (a VPS's existing one has its own disk).
        if let Some(a) = &assigned.archive {
            let progress = |task: u64, done: u64, total: u64| {
                let _ = self.reports.send(RunnerMsg::Fetch { id: task, done, total });
            };
            if let Err(why) = self.images.ensure(rt, id, a, &progress).await {
                let env = spec.environment.as_deref().unwrap_or(&spec.image);
                // A VPS is not lost for a failed fetch: it can be started again.
                return Err(Refused::kept(format!(
                    "node {node} could not get environment {env}: {why}"
                )));
            }
            // By id: a tag of the same name on a shared engine can never stand in for it.
            cspec.image = a.image_id.clone();
        }
        self.may_run(rt, &cspec.image, placement).await.map_err(Refused::kept)?;
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
            rt.start(&cid).await
        }
        .await;
        // The container holds its own copy of its mounts now (or will never start).
        drop(pins);
        if let Err(e) = started {
            let _ = rt.remove(&cspec.name).await;
            return Err(Refused::failed(format!("could not start on {node}: {e}")));
        }
        Ok(())
    }

    async fn wait_for(&self, id: u64) -> Ended {
        let rt = match self.runtime().await {
            Ok(rt) => rt,
            Err(e) => return Ended::Lost(format!("lost track of the container: {e}")),
        };
        let name = self.name(id);
        // Output and end together, so both stop if the runner does.
        let (exit, saved) = tokio::join!(
            rt.wait(&name),
            pump_output(rt.clone(), name.clone(), self.node.task_dir(id), self.node.output_cap)
        );
        if let Ok(mut p) = self.pids.lock() {
            p.remove(&id);
        }
        match exit {
            Ok(exit) => Ended::Exited {
                code: Some(exit.code),
                oom: exit.oom_killed,
                output: saved,
            },
            Err(e) => Ended::Lost(format!("lost track of the container: {e}")),
        }
    }

    async fn signal_to(&self, id: u64, signal: Signal) -> Result<(), String> {
        let rt = self.runtime().await?;
        let name = self.name(id);
        let done = match signal {
            Signal::Kill => rt.kill(&name).await,
            Signal::Pause => rt.pause(&name).await,
            Signal::Resume => rt.resume(&name).await,
            Signal::Stop => {
                // A frozen container cannot act on SIGTERM: thaw it first.
                if rt.status(&name).await.is_ok_and(|s| s.paused) {
                    let _ = rt.resume(&name).await;
                }
                rt.stop(&name, VPS_STOP_GRACE).await
            }
        };
        done.map_err(|e| e.to_string())
    }

    async fn seen_of(&self, id: u64) -> Option<Seen> {
        let rt = self.runtime().await.ok()?;
        let st = rt.status(&self.name(id)).await.ok()?;
        Some(seen(&st))
    }

    /// This node's river containers.
    async fn all(&self) -> Vec<Found> {
        let Ok(rt) = self.runtime().await else {
            return Vec::new();
        };
        let mine = format!("river.cluster={}", self.node.cluster);
        let listed = match rt.list(&mine).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("listing containers: {e}");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for c in listed {
            if c.labels.get("river.node") != Some(&self.node.node) {
                continue;
            }
            let Some(id) = c.labels.get("river.task").and_then(|t| t.parse().ok()) else {
                continue;
            };
            match rt.status(&c.id).await {
                Ok(st) => out.push(Found {
                    id,
                    vps: c.labels.contains_key("river.vps"),
                    seen: seen(&st),
                }),
                Err(e) => tracing::warn!(task = id, "inspecting a container: {e}"),
            }
        }
        out
    }

    async fn remove_work(&self, id: u64, vps: bool) -> Result<(), String> {
        let rt = self.runtime().await?;
        let name = self.name(id);
        let removed = if vps {
            remove_vps_container(rt, &name).await
        } else {
            rt.remove(&name).await
        };
        removed.map_err(|e| e.to_string())
    }

    async fn network_of(&self, id: u64) -> Result<Option<i64>, String> {
        let cached = self.pids.lock().ok().and_then(|p| p.get(&id).copied());
        if let Some((pid, started)) = cached {
            if start_time(pid) == Some(started) {
                return Ok(Some(pid));
            }
        }
        let rt = self.runtime().await?;
        match rt.pid(&self.name(id)).await {
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
}

/// What a container's status says of its task.
fn seen(st: &river_docker::Status) -> Seen {
    match &st.exit {
        Some(exit) => Seen::Exited {
            code: Some(exit.code),
            oom: exit.oom_killed,
        },
        None if st.paused => Seen::Paused,
        None => Seen::Running,
    }
}

/// When process `pid` started (clock ticks since boot): `/proc/PID/stat`'s 22nd field.
fn start_time(pid: i64) -> Option<u64> {
    crate::process::stat_field(pid, 22)
}

impl Backend for Containers {
    /// Containers are asked of the engine: the executor routes here what no cheaper backend holds.
    fn holds(&self, _id: u64) -> bool {
        false
    }

    fn start<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<(), Refused>> {
        self.start_job(job).boxed()
    }

    fn wait(&self, id: u64) -> BoxFuture<'_, Ended> {
        self.wait_for(id).boxed()
    }

    fn signal(&self, id: u64, signal: Signal) -> BoxFuture<'_, Result<(), String>> {
        self.signal_to(id, signal).boxed()
    }

    fn seen(&self, id: u64) -> BoxFuture<'_, Option<Seen>> {
        self.seen_of(id).boxed()
    }

    fn found(&self) -> BoxFuture<'_, Vec<Found>> {
        self.all().boxed()
    }

    fn remove(&self, id: u64, vps: bool) -> BoxFuture<'_, Result<(), String>> {
        self.remove_work(id, vps).boxed()
    }

    fn exec<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<Started, String>> {
        async move { crate::terminal::in_container(self.runtime().await?, &self.name(cmd.task), cmd).await }.boxed()
    }

    fn network(&self, id: u64) -> BoxFuture<'_, Result<Option<i64>, String>> {
        self.network_of(id).boxed()
    }
}

impl Containers {
    /// The task's mounts: `/shared` and its owner's `/local_temp`, then the ones it asked for,
    /// each resolved beneath one of those or `allowed_mounts` without following a link, and
    /// pinned (`pin`) until the container has started.
    fn mounts(&self, id: u64, spec: &TaskSpec, p: &TaskPlacement) -> Result<(Vec<Mount>, pin::Pins), String> {
        let owner = account::owner_of(p)?;
        let scratch = self.node.user_scratch(owner, self.node.ids(owner)?)?;
        let mut out = vec![Mount {
            source: scratch.clone(),
            target: "/local_temp".into(),
            read_only: false,
        }];
        if let Some(shared) = &self.node.shared {
            out.push(Mount {
                source: shared.clone(),
                target: "/shared".into(),
                read_only: false,
            });
        }
        // Each root as configured and as it resolves, so a source may name either.
        let roots: Vec<PathBuf> = self
            .node
            .shared
            .iter()
            .chain(std::iter::once(&scratch))
            .chain(&self.node.allowed_mounts)
            .flat_map(|r| [Some(r.clone()), std::fs::canonicalize(r).ok()])
            .flatten()
            .filter(|r| r.is_absolute())
            .collect();
        let mut pins = pin::Pins::default();
        let dir = self.node.task_dir(id).join("mounts");
        for (n, m) in spec.mounts.iter().enumerate() {
            let source = pins
                .pin(&m.source, &roots, &dir.join(n.to_string()))
                .map_err(|e| format!("{e} (node {})", self.node.node))?;
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
            format!("RIVER_NODE={}", self.node.node),
            format!("RIVER_CORES={}", p.cores.len()),
            format!("RIVER_GPUS={}", id_list(&p.gpus)),
        ];
        env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        let (mounts, pins) = self.mounts(id, spec, p)?;
        let c = ContainerSpec {
            name: self.name(id),
            image: spec.image.clone(),
            command: spec.command.clone(),
            env,
            workdir: spec.workdir.clone(),
            cpuset_cpus: Some(id_list(&p.cores)),
            cpuset_mems: p.numa.map(|n| n.to_string()),
            memory_bytes: (p.memory_bytes > 0).then_some(p.memory_bytes),
            gpus: if self.node.fake_gpus {
                Vec::new()
            } else {
                p.gpus.iter().map(u32::to_string).collect()
            },
            mounts,
            labels: BTreeMap::from_iter(
                [
                    ("river.task".to_owned(), id.to_string()),
                    ("river.node".to_owned(), self.node.node.clone()),
                    ("river.cluster".to_owned(), self.node.cluster.clone()),
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
