//! What the runner keeps across its own restarts: work found again through its backend, ends recorded
//! on disk until the host acknowledges them, and the snapshot a new session starts with.

use super::{ends, records, Executor};
use crate::backend::{Backend, Found, Seen};
use river_proto::msg::TaskReport;
use river_task::state::{exit_state, TaskState};
use std::collections::HashSet;
use std::sync::Arc;

impl Executor {
    pub(super) fn record(&self, r: &TaskReport) -> anyhow::Result<()> {
        let json = serde_json::json!({ "state": r.state, "exit_code": r.exit_code, "message": r.message });
        river_creds::write_atomic(
            &self.node.task_dir(r.id).join("result.json"),
            json.to_string().as_bytes(),
            0o644,
        )?;
        Ok(())
    }

    pub(super) fn recorded(&self) -> Vec<TaskReport> {
        let Ok(entries) = std::fs::read_dir(&self.node.dir) else {
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

    /// Every backend's work on the node, with its backend.
    async fn all_found(&self) -> Vec<(Arc<dyn Backend>, Found)> {
        let mut out = Vec::new();
        for b in [&self.processes, &self.containers] {
            out.extend(b.found().await.into_iter().map(|f| (b.clone(), f)));
        }
        out
    }

    /// At start: keeps following work that kept running while the runner was down, and records
    /// how the rest ended.
    pub async fn adopt(self: &Arc<Self>) {
        let recorded: HashSet<u64> = self.recorded().iter().map(|r| r.id).collect();
        for (backend, Found { id, vps, seen }) in self.all_found().await {
            match seen {
                Seen::Running | Seen::Paused => {
                    tracing::info!(task = id, vps, "re-adopted a running task");
                    // Live at once: a `logs -f` before the follower starts still follows.
                    self.set_live(id);
                    let me = self.clone();
                    self.spawn_work(async move { me.follow(&backend, id, None, vps).await });
                }
                // A stopped VPS keeps its work; the snapshot tells the host it is stopped.
                Seen::Exited { .. } if vps => {}
                Seen::Exited { .. } => {
                    if !recorded.contains(&id) {
                        // Its output, all of it, before the work goes.
                        if let crate::backend::Ended::Exited { code, oom, output } = backend.wait(id).await {
                            if let Err(e) = output {
                                tracing::warn!(task = id, "saving the output: {e}");
                            }
                            let state = exit_state(code.unwrap_or(-1), oom, false);
                            let message = Some("ended while the runner was down".into());
                            self.report(id, state, code, message);
                        }
                    }
                    if let Err(e) = backend.remove(id, false).await {
                        tracing::warn!(task = id, "removing the work of an ended task: {e}");
                    }
                }
            }
        }
    }

    /// The node left the cluster: its tasks' work goes too (it would otherwise hold cores and
    /// GPUs on a machine no one schedules on).
    pub async fn stop_all(&self) {
        for (backend, Found { id, .. }) in self.all_found().await {
            tracing::info!(task = id, "removing the work of a task of a node that left the cluster");
            // Removal kills what still runs (a forced container removal; a cgroup emptied first).
            if let Err(e) = backend.remove(id, false).await {
                tracing::warn!(task = id, "removing the work: {e}");
            }
        }
    }

    /// What the host should know at the start of a session.
    pub async fn snapshot(&self) -> Vec<TaskReport> {
        let acked: HashSet<u64> = records::acknowledged(&self.node.dir);
        let mut out = self.recorded();
        let done: HashSet<u64> = out.iter().map(|r| r.id).collect();
        for (_, Found { id, vps, seen }) in self.all_found().await {
            if done.contains(&id) {
                continue;
            }
            let report = |state: TaskState, exit_code, message| TaskReport {
                id,
                state: state.as_str().into(),
                exit_code,
                message,
            };
            match seen {
                Seen::Running => out.push(report(TaskState::Running, None, None)),
                Seen::Paused => out.push(report(TaskState::Paused, None, None)),
                // A VPS stopped while the host could not hear: it is kept, stopped.
                Seen::Exited { code, oom } if vps => out.push(report(
                    TaskState::Stopped,
                    code,
                    Some(ends::vps_stopped_message(None, code, oom)),
                )),
                Seen::Exited { .. } => {}
            }
        }
        // Ends the host has stored are not sent again: the snapshot does not grow with history.
        out.retain(|r| !acked.contains(&r.id));
        out
    }
}
