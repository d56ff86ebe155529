//! Container tasks on the node's Docker engine: mounts and the container's spec, the run from
//! create to end, a VPS's restart and removal, the watch over a running container, its output
//! pumped into the task's files.

use super::*;

impl Executor {
    /// The task's mounts: `/shared` and its owner's `/local_temp`, then the ones it asked for,
    /// each resolved beneath one of those or `allowed_mounts` without following a link, and
    /// pinned (`pin`) until the container has started.
    pub(super) fn mounts(
        &self,
        id: u64,
        spec: &TaskSpec,
        p: &TaskPlacement,
    ) -> Result<(Vec<Mount>, pin::Pins), String> {
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
    pub(super) fn container(
        &self,
        id: u64,
        spec: &TaskSpec,
        p: &TaskPlacement,
    ) -> Result<(ContainerSpec, pin::Pins), String> {
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

    pub(super) async fn run(self: Arc<Self>, id: u64, spec: TaskSpec, placement: TaskPlacement) {
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
    pub(super) async fn may_run(&self, rt: &Runtime, image: &str, p: &TaskPlacement) -> Result<(), String> {
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
    pub(super) async fn restart_vps(
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
    pub(super) async fn remove_vps(self: Arc<Self>, id: u64, why: VpsEnd) {
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
    pub(super) async fn watch(&self, id: u64, cid: String, memory: Option<u64>, vps: bool) {
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
}

/// Why a container ended with `code` when river did not end it: a signal from outside (the node
/// shutting down, its engine stopped, someone on the node).
pub(super) fn signalled(code: i64) -> Option<String> {
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
pub(super) async fn remove_vps_container(rt: &Runtime, name: &str) -> Result<(), river_docker::RuntimeError> {
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
pub(super) fn vps_stopped_message(why: Option<&str>, exit: &river_docker::Exit) -> String {
    match why {
        Some(why) => format!("{why}; its container and files are kept"),
        None if exit.oom_killed => "killed by the kernel for exceeding its memory limit; its files are kept".to_owned(),
        None => format!(
            "its main process exited with code {}; its container and files are kept",
            exit.code
        ),
    }
}

/// Copies a container's output into `dir/stdout.log` and `dir/stderr.log` until it stops.
/// Saves a container's output as it is written. An error means some of it is not saved (a full
/// disk, the engine gone): it says what, and the task's record and `task logs` say the output is
/// incomplete.
pub(super) async fn pump_output(rt: Runtime, cid: String, dir: PathBuf, cap: Option<u64>) -> Result<(), String> {
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
