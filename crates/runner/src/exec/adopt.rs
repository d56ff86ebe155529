//! What the runner keeps across its own restarts: containers re-adopted by label, ends recorded
//! on disk until the host acknowledges them, and the snapshot a new session starts with.

use super::container::{pump_output, vps_stopped_message};
use super::*;

impl Executor {
    pub(super) fn record(&self, r: &TaskReport) -> anyhow::Result<()> {
        let json = serde_json::json!({ "state": r.state, "exit_code": r.exit_code, "message": r.message });
        river_creds::write_atomic(
            &self.dir.join(r.id.to_string()).join("result.json"),
            json.to_string().as_bytes(),
            0o644,
        )?;
        Ok(())
    }

    pub(super) fn recorded(&self) -> Vec<TaskReport> {
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
    pub(super) async fn containers(&self, rt: &Runtime) -> Vec<Mine> {
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
}
