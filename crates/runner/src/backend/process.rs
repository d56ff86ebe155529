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
use super::{id_list, Backend, Ended, Found, Job, Node, Refused, Seen};
use crate::cgroup::{Cgroup, Cgroups};
use crate::terminal::{Command, Started};
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use river_proto::msg::Signal;
use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;
use std::sync::Mutex;
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

/// The process backend: each task a process tree in a cgroup of its own, as its owner's uid.
pub(crate) struct Processes {
    node: Node,
    cgroups: Cgroups,
    /// The shims this runner started, until their wait takes them; a task found after a restart
    /// has none and is followed through its cgroup.
    children: Mutex<HashMap<u64, tokio::process::Child>>,
}

impl Processes {
    pub fn new(node: Node, cgroup_root: &Path) -> Self {
        Self {
            node,
            cgroups: Cgroups::at(cgroup_root),
            children: Mutex::default(),
        }
    }

    pub(super) fn node(&self) -> &Node {
        &self.node
    }

    /// `<cluster>-<node>-task-<id>`: the cgroup of a `--no-container` task.
    fn cgroup_name(&self, id: u64) -> String {
        format!("{}-{}-task-{id}", self.node.cluster, self.node.node)
    }

    pub(super) fn cgroup(&self, id: u64) -> Cgroup {
        self.cgroups.task(&self.cgroup_name(id))
    }

    fn start_job(&self, job: Job<'_>) -> Result<(), Refused> {
        let id = job.id;
        match self.start_process(job) {
            Ok(child) => {
                if let Ok(mut c) = self.children.lock() {
                    c.insert(id, child);
                }
                Ok(())
            }
            Err(why) => {
                let cg = self.cgroup(id);
                cg.kill_all();
                let _ = cg.remove();
                Err(Refused::failed(why))
            }
        }
    }

    fn start_process(&self, job: Job<'_>) -> Result<tokio::process::Child, String> {
        let Job {
            id, spec, placement: p, ..
        } = job;
        let node = &self.node.node;
        let owner = account::owner_of(p)?;
        // Privileged tasks (operators, where the host allows them) keep root.
        let ids = self.node.ids(owner)?;
        let user = ids.filter(|_| !spec.privileged);
        let scratch = self.node.user_scratch(owner, ids)?;
        let cg = self.cgroup(id);
        let mems = p.numa.map(|n| n.to_string()).unwrap_or_default();
        let memory = (p.memory_bytes > 0).then_some(p.memory_bytes);
        cg.create(&self.cgroups, &id_list(&p.cores), &mems, memory)
            .map_err(|e| format!("node {node} could not set up the task's cgroup: {e}"))?;
        let procs = cg
            .open_procs()
            .map_err(|e| format!("node {node} could not open the task's cgroup: {e}"))?;

        let dir = self.node.task_dir(id);
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
            ("RIVER_NODE".into(), node.clone()),
            ("RIVER_CORES".into(), p.cores.len().to_string()),
            ("RIVER_GPUS".into(), id_list(&p.gpus)),
            ("RIVER_SCRATCH".into(), scratch.display().to_string()),
        ];
        if !p.gpus.is_empty() && !self.node.fake_gpus {
            env.push(("CUDA_VISIBLE_DEVICES".into(), id_list(&p.gpus)));
        }
        if let Some(shared) = &self.node.shared {
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
            .map_err(|e| format!("node {node} could not start the command: {e}"))
    }

    /// Follows a process task to its end: through the shim when this runner started it, else
    /// through its cgroup until that empties. Its files are kept within the cap as they grow.
    async fn wait_for(&self, id: u64) -> Ended {
        let cg = self.cgroup(id);
        let dir = self.node.task_dir(id);
        let child = self.children.lock().ok().and_then(|mut c| c.remove(&id));
        // The task writes its own files; they are kept within the cap while it runs.
        let mut warned = false;
        let mut trim = || {
            if let Some(cap) = self.node.output_cap {
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
        // The command is over; whatever it left running in the background goes with it, so
        // nothing writes to its files after its end.
        empty(&cg).await;
        let code = recorded_exit(&dir.join("exit_code")).or_else(|| {
            status.map(|s| {
                use std::os::unix::process::ExitStatusExt as _;
                s.code()
                    .map_or_else(|| 128 + i64::from(s.signal().unwrap_or(9)), i64::from)
            })
        });
        Ended::Exited {
            code,
            oom: cg.oom_kills() > 0,
            output: Ok(()),
        }
    }

    fn signal_to(&self, id: u64, signal: Signal) -> Result<(), String> {
        let cg = self.cgroup(id);
        match signal {
            Signal::Kill => {
                cg.kill_all();
                Ok(())
            }
            Signal::Pause => cg.freeze(true).map_err(|e| e.to_string()),
            Signal::Resume => cg.freeze(false).map_err(|e| e.to_string()),
            // Only VPSs stop, and a VPS is a container (the host refuses the rest).
            Signal::Stop => Ok(()),
        }
    }

    fn seen_of(cg: &Cgroup) -> Seen {
        if !cg.pids().is_empty() {
            if cg.frozen() {
                Seen::Paused
            } else {
                Seen::Running
            }
        } else {
            Seen::Exited {
                code: None,
                oom: cg.oom_kills() > 0,
            }
        }
    }

    /// Process tasks of this runner that have a cgroup.
    fn all(&self) -> Vec<Found> {
        let prefix = format!("{}-{}-task-", self.node.cluster, self.node.node);
        self.cgroups
            .existing(&prefix)
            .into_iter()
            .filter_map(|name| {
                let id = name.strip_prefix(&prefix)?.parse().ok()?;
                let seen = match Self::seen_of(&self.cgroups.task(&name)) {
                    Seen::Exited { oom, .. } => Seen::Exited {
                        code: recorded_exit(&self.node.task_dir(id).join("exit_code")),
                        oom,
                    },
                    s => s,
                };
                Some(Found { id, vps: false, seen })
            })
            .collect()
    }

    async fn remove_work(&self, id: u64) -> Result<(), String> {
        let cg = self.cgroup(id);
        empty(&cg).await;
        cg.remove().map_err(|e| format!("removing the task's cgroup: {e}"))
    }
}

/// Kills whatever is left in `cg` and waits (a second at most) for it to go.
async fn empty(cg: &Cgroup) {
    if cg.pids().is_empty() {
        return;
    }
    cg.kill_all();
    for _ in 0..50 {
        if cg.pids().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Backend for Processes {
    fn holds(&self, id: u64) -> bool {
        self.cgroup(id).exists()
    }

    fn start<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<(), Refused>> {
        std::future::ready(self.start_job(job)).boxed()
    }

    fn wait(&self, id: u64) -> BoxFuture<'_, Ended> {
        self.wait_for(id).boxed()
    }

    fn signal(&self, id: u64, signal: Signal) -> BoxFuture<'_, Result<(), String>> {
        std::future::ready(self.signal_to(id, signal)).boxed()
    }

    fn seen(&self, id: u64) -> BoxFuture<'_, Option<Seen>> {
        let cg = self.cgroup(id);
        std::future::ready(cg.exists().then(|| Self::seen_of(&cg))).boxed()
    }

    fn found(&self) -> BoxFuture<'_, Vec<Found>> {
        std::future::ready(self.all()).boxed()
    }

    fn remove(&self, id: u64, _vps: bool) -> BoxFuture<'_, Result<(), String>> {
        self.remove_work(id).boxed()
    }

    fn exec<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<Started, String>> {
        self.attach(cmd).boxed()
    }

    fn network(&self, id: u64) -> BoxFuture<'_, Result<Option<i64>, String>> {
        let here = self.cgroup(id).exists();
        std::future::ready(if here {
            Ok(None)
        } else {
            Err(format!("task {id} is not running here"))
        })
        .boxed()
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
