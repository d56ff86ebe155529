//! Commands run in a running container (terminals, `river connect`), attached, with resize and
//! exit code.

use crate::{docker_err, log_item, Output, Result, Runtime, RuntimeError};
use futures_util::{Stream, StreamExt};

impl Runtime {
    /// Starts `cmd` in a running container, attached: its input and output are returned.
    pub async fn exec(&self, container: &str, cmd: Vec<String>, tty: bool) -> Result<Exec> {
        let env = if tty {
            vec!["TERM=xterm-256color".to_owned()]
        } else {
            Vec::new()
        };
        self.exec_as(
            container,
            ExecRequest {
                cmd,
                tty,
                env,
                user: None,
                workdir: None,
            },
        )
        .await
    }

    /// Starts a command in a running container as `req` says, attached.
    pub async fn exec_as(&self, container: &str, req: ExecRequest) -> Result<Exec> {
        let tty = req.tty;
        let opts = bollard::exec::CreateExecOptions {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty),
            cmd: Some(req.cmd),
            env: (!req.env.is_empty()).then_some(req.env),
            user: req.user,
            working_dir: req.workdir,
            ..Default::default()
        };
        let id = self.docker.create_exec(container, opts).await.map_err(docker_err)?.id;
        let started = self
            .docker
            .start_exec(
                &id,
                Some(bollard::exec::StartExecOptions {
                    detach: false,
                    tty,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(docker_err)?;
        match started {
            bollard::exec::StartExecResults::Attached { output, input } => Ok(Exec {
                id,
                output: Box::pin(output.filter_map(|item| async move { log_item(item) })),
                input,
            }),
            bollard::exec::StartExecResults::Detached => Err(RuntimeError::Docker("exec started detached".into())),
        }
    }

    pub async fn resize_exec(&self, id: &str, rows: u16, cols: u16) -> Result<()> {
        let opts = bollard::query_parameters::ResizeExecOptions {
            h: i32::from(rows),
            w: i32::from(cols),
        };
        self.docker.resize_exec(id, opts).await.map_err(docker_err)
    }

    /// The process an exec runs, as this machine's pid (the engine reports it outside the
    /// container's pid namespace); `None` once it has ended or when the engine does not say.
    pub async fn exec_pid(&self, id: &str) -> Option<i64> {
        let e = self.docker.inspect_exec(id).await.ok()?;
        if e.running != Some(true) {
            return None;
        }
        e.pid.filter(|p| *p > 0)
    }

    /// The exit code of an exec whose output has ended: the engine may take a moment to record it,
    /// so this waits up to a second; `None` if it is still unknown then.
    pub async fn exec_exit(&self, id: &str) -> Option<i64> {
        for _ in 0..50 {
            match self.docker.inspect_exec(id).await {
                Ok(e) if e.exit_code.is_some() => return e.exit_code,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Err(_) => return None,
            }
        }
        None
    }
}

/// A command to run in a container.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub tty: bool,
    /// `NAME=value`, on top of the container's own.
    pub env: Vec<String>,
    /// A user name or uid (the image's default when `None`).
    pub user: Option<String>,
    pub workdir: Option<String>,
}

/// A command started in a container: its id (to resize and to read its exit code), output and
/// input.
pub struct Exec {
    pub id: String,
    pub output: std::pin::Pin<Box<dyn Stream<Item = Result<Output>> + Send>>,
    pub input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
}
