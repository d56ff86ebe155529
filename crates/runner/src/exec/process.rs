//! `--no-container` tasks: the command runs as a process on the node, in a cgroup of its own
//! (`crate::cgroup`) with the task's cores and memory, as its owner's uid (`super::account`), its
//! output in the same files as a container's.
//!
//! The privileged part of a start happens in the runner's forked child before `exec`, with
//! nothing of the user's in it: it enters the cgroup (writing `0`, "this process", to files the
//! runner opened), clears supplementary groups, sets the gid and uid, and sets `no_new_privs` so
//! no setuid binary can give root back. Only then is the user's environment applied, by `execve`
//! of `/bin/sh`, which runs a shim as the user: it enters the working directory and runs the
//! command, then records its exit code in `exit_code` next to the output. A runner that restarts
//! finds the task by its cgroup, waits for the cgroup to empty, and still learns how it ended.

use super::account::{self, Ids};
use super::Executor;
use crate::cgroup::Cgroup;
use river_proto::msg::{Signal, TaskPlacement, TaskReport, TaskSpec};
use river_task::state::{exit_state, TaskState};
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The shim, run as the task's user: into the working directory (`$1`, relative to the owner's
/// scratch directory, where the runner started it; made if missing), run the command (the rest,
/// without the shim's descriptor 3), record its exit code on descriptor 3. `command -p` finds
/// `mkdir` on the standard path whatever `PATH` the user set; it runs only when `cd` fails, as the
/// default directory is made before (`confine`): a process less per start.
const SHIM: &str = "{ cd -- \"$1\" 2>/dev/null || { command -p mkdir -p -- \"$1\" && cd -- \"$1\"; }; } || exit 125; shift; \"$@\" 3>&-; code=$?; echo $code >&3; exit $code";

/// The descriptor the shim records the exit code on: the runner's file, opened before the child
/// became the user, so the user needs no way to it.
const EXIT_FD: libc::c_int = 3;

/// What the forked child does before `exec`, as root: enter the cgroup through `procs` (opened by
/// the runner), give the shim `exit` as descriptor 3, then become `user` for good, unable to gain
/// privileges again; then, as the user, make `workdir` (one name, in the directory it was started
/// in) if given.
#[allow(unsafe_code)]
fn confine(
    cmd: &mut tokio::process::Command,
    procs: Vec<std::fs::File>,
    exit: std::fs::File,
    user: Option<Ids>,
    workdir: Option<std::ffi::CString>,
) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: it makes plain system calls on memory the parent prepared, and allocates
    // nothing (an `io::Error` from an OS code does not allocate).
    unsafe {
        cmd.pre_exec(move || {
            // First: a cgroup file may be descriptor 3 until `dup2` below replaces it.
            enter_and_become(&procs, user)?;
            // Every descriptor the runner opens is close-on-exec; the copy made here is not.
            if exit.as_raw_fd() == EXIT_FD {
                check(libc::fcntl(EXIT_FD, libc::F_SETFD, 0))?;
            } else if libc::dup2(exit.as_raw_fd(), EXIT_FD) != EXIT_FD {
                return Err(std::io::Error::last_os_error());
            }
            // Made as the user; one that exists already (or cannot be made) is the shim's to
            // enter or report.
            if let Some(dir) = &workdir {
                libc::mkdir(dir.as_ptr(), 0o755);
            }
            Ok(())
        });
    }
}

/// A system call's return code as a result (async-signal-safe: an OS error does not allocate).
fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// In a forked child before `exec`, as root: enters the cgroup through `procs` (opened by the
/// runner, writing `0`, "this process"), then becomes `user` for good — no supplementary groups,
/// unable to gain privileges again (no setuid binary gives root back). Async-signal-safe: plain
/// system calls, no allocation.
#[allow(unsafe_code)]
pub(super) fn enter_and_become(procs: &[std::fs::File], user: Option<Ids>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: system calls on descriptors the runner owns and on plain integers.
    unsafe {
        for f in procs {
            if libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if let Some((uid, gid)) = user {
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        }
    }
    Ok(())
}

/// The exit code a shim recorded. The shim runs as the task's user, who may write anything on its
/// descriptor: read no more than a number needs.
fn recorded_exit(path: &Path) -> Option<i64> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(32)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
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
        let owner = account::owner_of(p)?;
        // Privileged tasks (operators, where the host allows them) keep root.
        let ids = self.ids(owner)?;
        let user = ids.filter(|_| !spec.privileged);
        let scratch = self.user_scratch(owner, ids)?;
        let cg = self.process_cgroup(id);
        let mems = p.numa.map(|n| n.to_string()).unwrap_or_default();
        let memory = (p.memory_bytes > 0).then_some(p.memory_bytes);
        cg.create(&self.cgroups, &super::cpuset(&p.cores), &mems, memory)
            .map_err(|e| format!("node {} could not set up the task's cgroup: {e}", self.node))?;
        let procs = cg
            .open_procs()
            .map_err(|e| format!("node {} could not open the task's cgroup: {e}", self.node))?;

        let dir = self.dir.join(id.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let exit_file = dir.join("exit_code");
        let out = std::fs::File::create(dir.join("stdout.log")).map_err(|e| e.to_string())?;
        let err = std::fs::File::create(dir.join("stderr.log")).map_err(|e| e.to_string())?;
        let exit = std::fs::File::create(&exit_file).map_err(|e| format!("{}: {e}", exit_file.display()))?;
        // Its own working directory in its owner's scratch space, made by the shim as the user.
        // The runner enters the scratch directory itself (a directory, in one only root writes), so
        // the task reaches it even where the way there is closed to its user.
        let (work, made) = match &spec.workdir {
            Some(w) => (std::path::PathBuf::from(w), None),
            None => {
                let name = format!("task-{id}");
                (std::path::PathBuf::from(&name), std::ffi::CString::new(name).ok())
            }
        };
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), PATH.into()),
            ("HOME".into(), scratch.join(&work).display().to_string()),
            ("RIVER_TASK_ID".into(), id.to_string()),
            ("RIVER_NODE".into(), self.node.clone()),
            ("RIVER_CORES".into(), p.cores.len().to_string()),
            ("RIVER_GPUS".into(), super::cpuset(&p.gpus)),
            ("RIVER_SCRATCH".into(), scratch.display().to_string()),
        ];
        if !p.gpus.is_empty() && !self.fake_gpus {
            env.push(("CUDA_VISIBLE_DEVICES".into(), super::cpuset(&p.gpus)));
        }
        if let Some(shared) = &self.shared {
            env.push(("RIVER_SHARED".into(), shared.display().to_string()));
        }
        // Applied by `execve`, after the child has become the user.
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        // What `river connect` into this task starts with.
        let attach = super::attach::Saved {
            scratch: scratch.clone(),
            work: work.clone(),
            user,
            env,
        };
        attach.save(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SHIM)
            .arg("river-task")
            .arg(&work)
            .args(&spec.command)
            .current_dir(&scratch)
            .env_clear()
            .envs(attach.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: signals meant for the runner never reach it.
            .process_group(0)
            .kill_on_drop(false);
        confine(&mut cmd, procs, exit, user, made);
        cmd.spawn()
            .map_err(|e| format!("node {} could not start the command: {e}", self.node))
    }

    /// Follows a process task to its end. `child` is the shim when this runner started it; a
    /// re-adopted task is followed through its cgroup until that empties.
    pub(super) async fn watch_process(&self, id: u64, child: Option<tokio::process::Child>, memory: Option<u64>) {
        let cg = self.process_cgroup(id);
        let dir = self.dir.join(id.to_string());
        // The task writes its own files; they are kept within the cap while it runs.
        let mut warned = false;
        let mut trim = || {
            if let Some(cap) = self.output_cap {
                super::output::trim_task(&dir, cap, &mut warned);
            }
        };
        let status = match child {
            Some(mut c) => loop {
                tokio::select! {
                    s = c.wait() => break s.ok(),
                    () = tokio::time::sleep(Duration::from_millis(500)) => trim(),
                }
            },
            None => {
                while !cg.pids().is_empty() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    trim();
                }
                None
            }
        };
        trim();
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
        self.output_ended();
        let recorded = recorded_exit(&dir.join("exit_code"));
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
                memory
                    .map(|m| format!(" of {}", river_task::size::human(m)))
                    .unwrap_or_default()
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

    /// `logs -f` of a running task: its output file as it grows, until `ended` says the task is
    /// over and everything it wrote is in the file (then one last read).
    pub(super) async fn follow_file(
        &self,
        id: u64,
        stderr: bool,
        out: &mut river_mesh::SendStream,
        ended: impl Fn() -> bool,
    ) -> anyhow::Result<()> {
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let path = self
            .dir
            .join(id.to_string())
            .join(if stderr { "stderr.log" } else { "stdout.log" });
        let mut sent = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut ends = self.output_ends.subscribe();
        loop {
            // Marked seen before the check: an end after it wakes the wait below.
            ends.borrow_and_update();
            // Checked before reading, so the last read sees everything written before the end.
            let ended = ended();
            // What the node no longer keeps is skipped, with a line saying so.
            let dropped = super::output::dropped(&path);
            if sent < dropped {
                out.write_all(super::output::dropped_line(dropped - sent, self.output_cap).as_bytes())
                    .await?;
                sent = dropped;
            }
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
            // New output is looked for every 0.1 s; the end is heard of at once.
            let _ = tokio::time::timeout(Duration::from_millis(100), ends.changed()).await;
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
    fn the_shim_runs_the_command_in_its_directory_and_records_its_exit() {
        let d = tempfile::tempdir().unwrap();
        let exit = d.path().join("exit_code");
        let work = d.path().join("work dir");
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("exec 3> '{}'; {SHIM}", exit.display()))
            .arg("river-task")
            .arg(&work)
            .args(["/bin/sh", "-c", "pwd; echo >&3 || echo no-fd-3 >&2; exit 7"])
            .env("PATH", "/nowhere")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), work.display().to_string());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no-fd-3"),
            "the command has no descriptor 3"
        );
        assert_eq!(recorded_exit(&exit), Some(7));
    }
}
