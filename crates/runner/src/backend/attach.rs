//! `river connect` into a `--no-container` task: a command (by default a shell) started beside
//! the task's processes, as they are — in the task's cgroup (its cores and memory, frozen and
//! killed with it), as its owner's uid with `no_new_privs`, in its working directory with its
//! environment — on a pseudo-terminal of its own when the user has one, else on pipes.
//!
//! What the command needs is saved when the task starts (`attach.json` beside its output, only
//! root reads it: the environment may hold secrets), so a runner that restarted can still attach.

use super::account::Ids;
use super::process::Processes;
use crate::terminal::{Command, Control, Started};
use futures_util::future::BoxFuture;
use river_docker::Output;
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;

/// Beside a process task's output: what a command attached to it runs with.
const FILE: &str = "attach.json";

/// Run as the user: into the task's working directory (`$1`, relative to the scratch directory
/// the runner starts it in), then the command. A directory that is gone leaves it in scratch.
const SHIM: &str = "cd -- \"$1\" 2>/dev/null; shift; exec \"$@\"";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Saved {
    pub scratch: PathBuf,
    pub work: PathBuf,
    pub user: Option<Ids>,
    pub env: Vec<(String, String)>,
}

impl Saved {
    pub fn save(&self, task_dir: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(task_dir.join(FILE))?;
        f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)
    }

    fn load(task_dir: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(task_dir.join(FILE)).ok()?).ok()
    }
}

/// The attached command's process group, killed when the session ends first.
struct Attached {
    child: tokio::sync::Mutex<tokio::process::Child>,
    pid: i32,
    pty: Option<Arc<AsyncFd<OwnedFd>>>,
}

impl Control for Attached {
    fn resize(&self, rows: u16, cols: u16) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(pty) = &self.pty {
                let _ = set_size(pty.get_ref(), rows, cols);
            }
        })
    }

    fn pid(&self) -> BoxFuture<'_, Option<i64>> {
        Box::pin(async move {
            let running = matches!(self.child.lock().await.try_wait(), Ok(None));
            (running && self.pid > 0).then_some(i64::from(self.pid))
        })
    }

    fn exit(&self) -> BoxFuture<'_, Option<i64>> {
        Box::pin(async move {
            use std::os::unix::process::ExitStatusExt as _;
            let status = self.child.lock().await.wait().await.ok()?;
            Some(
                status
                    .code()
                    .map_or_else(|| 128 + i64::from(status.signal().unwrap_or(9)), i64::from),
            )
        })
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let running = self
            .child
            .try_lock()
            .is_ok_and(|mut c| matches!(c.try_wait(), Ok(None)));
        if running {
            // The user went away: what they started goes too.
            // SAFETY: kill(2) on the process group this runner made for the command.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-self.pid, libc::SIGKILL);
            }
        }
    }
}

impl Processes {
    /// Starts the user's command in process task `req.task`, or says why not.
    pub(super) async fn attach(&self, req: &Command) -> Result<Started, String> {
        let id = req.task;
        if req.user.is_some() {
            return Err(format!(
                "task {id} runs as its owner; a command in it cannot run as another user"
            ));
        }
        let cg = self.cgroup(id);
        if cg.pids().is_empty() {
            return Err(format!("task {id} is not running here"));
        }
        if cg.frozen() {
            return Err(format!("task {id} is paused; resume it first (river task resume {id})"));
        }
        let saved = Saved::load(&self.node().task_dir(id))
            .ok_or_else(|| format!("task {id} was started by an older runner, which kept nothing to connect with"))?;
        let procs = cg
            .open_procs()
            .map_err(|e| format!("node {} could not open the task's cgroup: {e}", self.node().node))?;
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SHIM)
            .arg("river-connect")
            .arg(&saved.work)
            .args(&req.argv)
            .current_dir(&saved.scratch)
            .env_clear()
            .envs(saved.env.iter().map(|(k, v)| (k, v)))
            .envs(req.env.iter().filter_map(|kv| kv.split_once('=')))
            .kill_on_drop(false);
        let fail = |e: std::io::Error| format!("node {} could not start the command: {e}", self.node().node);
        if req.tty {
            let (master, slave) = open_pty().map_err(fail)?;
            if req.rows > 0 && req.cols > 0 {
                let _ = set_size(&master, req.rows, req.cols);
            }
            cmd.stdin(slave.try_clone().map_err(fail)?)
                .stdout(slave.try_clone().map_err(fail)?)
                .stderr(slave);
            confine(&mut cmd, procs, saved.user, true);
            let child = cmd.spawn().map_err(fail)?;
            // SAFETY: `master` is an open descriptor owned by the `OwnedFd` moved in, which
            // keeps it open, unchanged, for as long as the `AsyncFd` lives.
            #[allow(unsafe_code)]
            let pty = unsafe { AsyncFd::register(master) }.map_err(|e| fail(e.into()))?;
            let pty = Arc::new(pty);
            let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
            Ok(Started {
                output: Box::pin(reads(pty.clone())),
                input: Box::pin(PtyInput(pty.clone())),
                control: Box::new(Attached {
                    child: tokio::sync::Mutex::new(child),
                    pid,
                    pty: Some(pty),
                }),
            })
        } else {
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            confine(&mut cmd, procs, saved.user, false);
            let mut child = cmd.spawn().map_err(fail)?;
            let (Some(stdin), Some(stdout), Some(stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                return Err("the command's pipes were not made".into());
            };
            let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
            let out = pipe_reads(stdout, Output::Stdout);
            let err = pipe_reads(stderr, Output::Stderr);
            Ok(Started {
                output: Box::pin(futures_util::stream::select(out, err)),
                input: Box::pin(PipeInput(Some(stdin))),
                control: Box::new(Attached {
                    child: tokio::sync::Mutex::new(child),
                    pid,
                    pty: None,
                }),
            })
        }
    }
}

/// What the forked child does before `exec`, as root: a session of its own (with the terminal
/// as its controlling one when `tty`), into the task's cgroup, then the task's user for good.
#[allow(unsafe_code)]
fn confine(cmd: &mut tokio::process::Command, procs: Vec<std::fs::File>, user: Option<Ids>, tty: bool) {
    // SAFETY: runs between fork and exec: plain system calls on memory prepared before the fork,
    // no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            super::process::enter_and_become(&procs, user)
        });
    }
}

/// A new pseudo-terminal: (master, non-blocking; slave).
#[allow(unsafe_code)]
fn open_pty() -> std::io::Result<(OwnedFd, std::fs::File)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty(3) writes two descriptors into the integers given; no name, default modes.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made by openpty and are owned by nothing else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) };
    // SAFETY: fcntl(2) on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
    }
    Ok((master, slave))
}

#[allow(unsafe_code)]
fn set_size(pty: &OwnedFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer given.
    if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The terminal's output until the command and everything holding the terminal have gone (the
/// kernel then answers `EIO`).
fn reads(pty: Arc<AsyncFd<OwnedFd>>) -> impl futures_util::Stream<Item = Result<Output, String>> + Send {
    futures_util::stream::unfold(pty, |pty| async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let Ok(mut ready) = pty.readable().await else {
                return None;
            };
            #[allow(unsafe_code)]
            let r = ready.try_io(|fd| {
                // SAFETY: read(2) into a buffer of the length given.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
            });
            match r {
                Ok(Ok(0)) => return None,
                Ok(Ok(n)) => {
                    buf.truncate(n);
                    return Some((Ok(Output::Stdout(buf)), pty));
                }
                // EIO: the other side is closed for good.
                Ok(Err(_)) => return None,
                Err(_would_block) => {}
            }
        }
    })
}

/// A pipe's output as frames of one kind, until it ends.
fn pipe_reads<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    r: R,
    kind: fn(Vec<u8>) -> Output,
) -> impl futures_util::Stream<Item = Result<Output, String>> + Send {
    futures_util::stream::unfold(r, move |mut r| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 32 * 1024];
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(kind(buf)), r))
            }
        }
    })
}

/// Input on a pipe; shutting it down closes the pipe, so the command reads its end.
struct PipeInput(Option<tokio::process::ChildStdin>);

impl tokio::io::AsyncWrite for PipeInput {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.0.as_mut() {
            Some(w) => Pin::new(w).poll_write(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(w) => Pin::new(w).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.0 = None;
        Poll::Ready(Ok(()))
    }
}

/// Input to the terminal.
struct PtyInput(Arc<AsyncFd<OwnedFd>>);

impl tokio::io::AsyncWrite for PtyInput {
    #[allow(unsafe_code)]
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        loop {
            let mut ready = ready!(self.0.poll_write_ready(cx))?;
            // SAFETY: write(2) from a buffer of the length given.
            let r = ready.try_io(|fd| {
                let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
                usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
            });
            if let Ok(done) = r {
                return Poll::Ready(done);
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
