//! `--no-container` tasks: the command runs as a process on the node, in a cgroup of its own
//! (`crate::cgroup`) with the task's cores and memory, as an unprivileged user, its output in the
//! same files as a container's.
//!
//! A `sh` shim, started by the runner, writes its own pid into the cgroup before it runs the
//! command, so the command and everything it forks are confined from their first instruction.
//! The shim then records the command's exit code in `exit_code` next to the output: a runner that
//! restarts finds the task by its cgroup, waits for the cgroup to empty, and still learns how the
//! task ended.

use super::Executor;
use crate::cgroup::Cgroup;
use river_proto::msg::{Signal, TaskPlacement, TaskReport, TaskSpec};
use river_task::state::{exit_state, TaskState};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `'…'` quoting for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The uid and gid of `user` from `/etc/passwd`.
fn lookup_user(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The shim: enter the cgroup, run the command (as `user` when given), record its exit code.
fn shim(procs: &[std::path::PathBuf], user: Option<(u32, u32)>, exit_file: &Path) -> String {
    let mut s = String::new();
    for p in procs {
        s.push_str(&format!("echo $$ > {} || exit 125; ", quote(&p.display().to_string())));
    }
    if let Some((uid, gid)) = user {
        s.push_str(&format!("setpriv --reuid={uid} --regid={gid} --clear-groups -- "));
    }
    s.push_str(&format!(
        "\"$@\"; code=$?; echo $code > {}; exit $code",
        quote(&exit_file.display().to_string())
    ));
    s
}

impl Executor {
    /// `<cluster>-<node>-task-<id>`: the cgroup of a `--no-container` task.
    fn process_name(&self, id: u64) -> String {
        format!("{}-{}-task-{id}", self.cluster, self.node)
    }

    pub(super) fn process_cgroup(&self, id: u64) -> Cgroup {
        self.cgroups.task(&self.process_name(id))
    }

    pub(super) async fn run_process(self: Arc<Self>, id: u64, spec: TaskSpec, p: TaskPlacement) {
        match self.start_process(id, &spec, &p).await {
            Ok(child) => {
                self.report(id, TaskState::Running, None, None);
                self.watch_process(id, Some(child), Some(p.memory_bytes)).await;
            }
            Err(why) => {
                let cg = self.process_cgroup(id);
                cg.kill_all();
                let _ = cg.remove();
                self.report(id, TaskState::Failed, None, Some(why));
            }
        }
    }

    async fn start_process(
        &self,
        id: u64,
        spec: &TaskSpec,
        p: &TaskPlacement,
    ) -> Result<tokio::process::Child, String> {
        let user = if !running_as_root() {
            None
        } else if spec.privileged {
            Some((0, 0))
        } else {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            Some(lookup_user(&passwd, &self.task_user).ok_or_else(|| {
                format!(
                    "node {} has no user {:?} to run --no-container tasks as (task_user in the runner config)",
                    self.node, self.task_user
                )
            })?)
        };
        let cg = self.process_cgroup(id);
        let mems = p.numa.map(|n| n.to_string()).unwrap_or_default();
        let memory = (p.memory_bytes > 0).then_some(p.memory_bytes);
        cg.create(&self.cgroups, &super::cpuset(&p.cores), &mems, memory)
            .map_err(|e| format!("node {} could not set up the task's cgroup: {e}", self.node))?;

        let dir = self.dir.join(id.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let exit_file = dir.join("exit_code");
        let _ = std::fs::remove_file(&exit_file);
        let out = std::fs::File::create(dir.join("stdout.log")).map_err(|e| e.to_string())?;
        let err = std::fs::File::create(dir.join("stderr.log")).map_err(|e| e.to_string())?;
        // Its own working directory in the scratch space, owned by the user it runs as.
        let work = match &spec.workdir {
            Some(w) => std::path::PathBuf::from(w),
            None => {
                let w = self.scratch.join(format!("task-{id}"));
                std::fs::create_dir_all(&w).map_err(|e| format!("{}: {e}", w.display()))?;
                if let Some((uid, gid)) = user {
                    std::os::unix::fs::chown(&w, Some(uid), Some(gid)).map_err(|e| format!("{}: {e}", w.display()))?;
                }
                w
            }
        };
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(shim(&cg.procs_files(), user.filter(|u| u.0 != 0), &exit_file))
            .arg("river-task")
            .args(&spec.command)
            .current_dir(&work)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", &work)
            .env("RIVER_TASK_ID", id.to_string())
            .env("RIVER_NODE", &self.node)
            .env("RIVER_CORES", p.cores.len().to_string())
            .env("RIVER_GPUS", super::cpuset(&p.gpus))
            .env("RIVER_SCRATCH", &self.scratch)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: signals meant for the runner never reach it.
            .process_group(0)
            .kill_on_drop(false);
        if !p.gpus.is_empty() && !self.fake_gpus {
            cmd.env("CUDA_VISIBLE_DEVICES", super::cpuset(&p.gpus));
        }
        if let Some(shared) = &self.shared {
            cmd.env("RIVER_SHARED", shared);
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        cmd.spawn()
            .map_err(|e| format!("node {} could not start the command: {e}", self.node))
    }

    /// Follows a process task to its end. `child` is the shim when this runner started it; a
    /// re-adopted task is followed through its cgroup until that empties.
    pub(super) async fn watch_process(&self, id: u64, child: Option<tokio::process::Child>, memory: Option<u64>) {
        let cg = self.process_cgroup(id);
        let status = match child {
            Some(mut c) => c.wait().await.ok(),
            None => {
                while !cg.pids().is_empty() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None
            }
        };
        // The command is over; whatever it left running in the background goes with it.
        if !cg.pids().is_empty() {
            cg.kill_all();
            for _ in 0..50 {
                if cg.pids().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let dir = self.dir.join(id.to_string());
        let recorded: Option<i64> = std::fs::read_to_string(dir.join("exit_code"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let code = recorded.or_else(|| {
            status.map(|s| {
                use std::os::unix::process::ExitStatusExt as _;
                s.code()
                    .map_or_else(|| 128 + i64::from(s.signal().unwrap_or(9)), i64::from)
            })
        });
        let oom = cg.oom_kills() > 0;
        let killed = self.kills.lock().map(|mut k| k.remove(&id)).unwrap_or(false);
        let state = exit_state(code.unwrap_or(-1), oom, killed);
        let message = match (state, code) {
            (TaskState::Oom, _) => Some(format!(
                "killed by the kernel: it exceeded its memory limit{}",
                memory.map(|m| format!(" of {m} bytes")).unwrap_or_default()
            )),
            (_, None) if !killed => Some("ended without recording an exit code".into()),
            _ => None,
        };
        // Reported (and recorded) first: removing cgroups can take the kernel a while, and the
        // node's cores are free already.
        self.report(id, state, code, message);
        if let Err(e) = cg.remove() {
            tracing::warn!(task = id, "removing the task's cgroup: {e}");
        }
    }

    pub(super) async fn signal_process(&self, id: u64, signal: Signal) {
        let cg = self.process_cgroup(id);
        let result = match signal {
            Signal::Kill => {
                if let Ok(mut k) = self.kills.lock() {
                    k.insert(id);
                }
                cg.kill_all();
                Ok(())
            }
            Signal::Pause => cg.freeze(true).map(|()| self.report(id, TaskState::Paused, None, None)),
            Signal::Resume => cg
                .freeze(false)
                .map(|()| self.report(id, TaskState::Running, None, None)),
            // Only VPSs stop, and a VPS is a container (the host refuses the rest).
            Signal::Stop => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(task = id, "{signal:?}: {e}");
        }
    }

    /// `logs -f` of a running process task: its output file as it grows, until the task ends.
    pub(super) async fn follow_file(
        &self,
        id: u64,
        stderr: bool,
        out: &mut river_mesh::SendStream,
    ) -> anyhow::Result<()> {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let path = self
            .dir
            .join(id.to_string())
            .join(if stderr { "stderr.log" } else { "stdout.log" });
        let cg = self.process_cgroup(id);
        let mut sent = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Checked before reading, so the last read sees everything written before the end.
            let ended = !cg.exists() || cg.pids().is_empty();
            if let Ok(mut f) = tokio::fs::File::open(&path).await {
                f.seek(std::io::SeekFrom::Start(sent)).await?;
                loop {
                    let n = f.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n]).await?;
                    sent += n as u64;
                }
            }
            if ended {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Process tasks of this runner that have a cgroup: (id, cgroup).
    pub(super) fn processes(&self) -> Vec<(u64, Cgroup)> {
        let prefix = format!("{}-{}-task-", self.cluster, self.node);
        self.cgroups
            .existing(&prefix)
            .into_iter()
            .filter_map(|name| {
                let id = name.strip_prefix(&prefix)?.parse().ok()?;
                Some((id, self.cgroups.task(&name)))
            })
            .collect()
    }

    /// At start: keeps following process tasks that kept running, records those that ended.
    pub(super) fn adopt_processes(self: &Arc<Self>) {
        for (id, _) in self.processes() {
            tracing::info!(task = id, "re-adopted a process task");
            let me = self.clone();
            self.spawn(async move { me.watch_process(id, None, None).await });
        }
    }

    /// Process tasks still running, for the session's snapshot.
    pub(super) fn process_reports(&self) -> Vec<TaskReport> {
        self.processes()
            .into_iter()
            .filter(|(_, cg)| !cg.pids().is_empty())
            .map(|(id, cg)| TaskReport {
                id,
                state: if cg.frozen() {
                    TaskState::Paused
                } else {
                    TaskState::Running
                }
                .as_str()
                .into(),
                exit_code: None,
                message: None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_come_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(lookup_user(passwd, "nobody"), Some((65534, 65534)));
        assert_eq!(lookup_user(passwd, "nob"), None);
    }

    #[test]
    fn the_shim_enters_every_cgroup_before_the_command() {
        let s = shim(
            &["/cg/a/cgroup.procs".into(), "/cg/it's/cgroup.procs".into()],
            Some((65534, 65534)),
            Path::new("/t/exit_code"),
        );
        assert!(
            s.starts_with("echo $$ > '/cg/a/cgroup.procs' || exit 125; echo $$ > '/cg/it'\\''s/cgroup.procs'"),
            "{s}"
        );
        assert!(
            s.contains(
                "setpriv --reuid=65534 --regid=65534 --clear-groups -- \"$@\"; code=$?; echo $code > '/t/exit_code'"
            ),
            "{s}"
        );
    }
}
