//! A `Terminal` stream from the host: a command (by default a shell) run in a task — in its
//! container through the engine's exec API, or beside a `--no-container` task's processes
//! (`backend/attach.rs`) — with its input, output, window size and exit code carried as frames.

use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt as _};
use river_docker::{Output, Runtime};
use river_mesh::{send_msg, FramedError, RecvStream, SendStream};
use river_proto::msg::{TermIn, TermOut, TerminalOpen};
use std::pin::Pin;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

/// bash when the image (or node) has it, else sh.
fn shell() -> Vec<String> {
    [
        "/bin/sh",
        "-c",
        "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A command to start in a task's work: for `river connect` (a `Terminal` stream) or an SSH
/// session into a VPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    pub task: u64,
    pub argv: Vec<String>,
    /// On a pseudo-terminal of `rows` × `cols` (0: not known); else on pipes, stdout and stderr
    /// apart.
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
    /// `NAME=value`, on top of the work's own.
    pub env: Vec<String>,
    /// Who it runs as inside the work (`None`: the work's own user).
    pub user: Option<String>,
}

impl Command {
    /// What a `Terminal` stream asks to run: its command, or a shell.
    pub(crate) fn of(req: &TerminalOpen) -> Self {
        Self {
            task: req.task,
            argv: if req.command.is_empty() {
                shell()
            } else {
                req.command.clone()
            },
            tty: req.tty,
            rows: req.rows,
            cols: req.cols,
            env: if req.tty {
                vec!["TERM=xterm-256color".into()]
            } else {
                Vec::new()
            },
            user: None,
        }
    }
}

/// A command started for a terminal, whatever runs it.
pub(crate) struct Started {
    pub output: Pin<Box<dyn Stream<Item = Result<Output, String>> + Send>>,
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    pub control: Box<dyn Control>,
}

/// The rest of a started command: its window and how it ended.
pub(crate) trait Control: Send + Sync {
    fn resize(&self, rows: u16, cols: u16) -> BoxFuture<'_, ()>;
    /// Its process while it runs (as the node sees it), to hang its terminal up.
    fn pid(&self) -> BoxFuture<'_, Option<i64>>;
    /// The exit code, once the output has ended (`None`: unknown).
    fn exit(&self) -> BoxFuture<'_, Option<i64>>;
}

/// An exec in a container.
struct DockerExec {
    rt: Runtime,
    id: String,
}

impl Control for DockerExec {
    fn resize(&self, rows: u16, cols: u16) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.rt.resize_exec(&self.id, rows, cols).await;
        })
    }

    fn pid(&self) -> BoxFuture<'_, Option<i64>> {
        Box::pin(self.rt.exec_pid(&self.id))
    }

    fn exit(&self) -> BoxFuture<'_, Option<i64>> {
        Box::pin(self.rt.exec_exit(&self.id))
    }
}

/// Starts the command in `container`, or says why not.
pub(crate) async fn in_container(rt: &Runtime, container: &str, cmd: &Command) -> Result<Started, String> {
    let running = rt.status(container).await.is_ok_and(|s| s.running && !s.paused);
    if !running {
        return Err(format!("task {} is not running here", cmd.task));
    }
    let req = river_docker::ExecRequest {
        cmd: cmd.argv.clone(),
        tty: cmd.tty,
        env: cmd.env.clone(),
        user: cmd.user.clone().filter(|u| !u.is_empty()),
        workdir: None,
    };
    let exec = rt
        .exec_as(container, req)
        .await
        .map_err(|e| format!("could not start the command: {e}"))?;
    let control = DockerExec {
        rt: rt.clone(),
        id: exec.id,
    };
    if cmd.tty && cmd.rows > 0 && cmd.cols > 0 {
        control.resize(cmd.rows, cmd.cols).await;
    }
    Ok(Started {
        output: Box::pin(exec.output.map(|o| o.map_err(|e| e.to_string()))),
        input: exec.input,
        control: Box::new(control),
    })
}

/// Carries a started command's input, output, window and exit code over the stream; `started`
/// failed: says why.
pub(crate) async fn serve(
    started: Result<Started, String>,
    req: TerminalOpen,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), FramedError> {
    let Started {
        output: mut exec_output,
        input: mut exec_input,
        control,
    } = match started {
        Ok(s) => s,
        Err(why) => {
            send_msg(send, &TermOut::Error(why)).await?;
            let _ = send.finish();
            return Ok(());
        }
    };
    send_msg(send, &TermOut::Started).await?;
    {
        // Input goes on its own: a command whose input is full because its output is not being
        // read must still have its output read, or neither side moves again.
        let input_side = async {
            // Input frames may arrive in pieces while output goes out: the reader keeps them.
            let mut input = river_mesh::MsgReader::new(recv);
            loop {
                match input.next::<TermIn>().await {
                    Ok(Some(TermIn::Input(b))) => {
                        // The command closed its input (or ended): stop reading the user's.
                        if exec_input.write_all(&b).await.is_err() {
                            return Ok(());
                        }
                        let _ = exec_input.flush().await;
                    }
                    Ok(Some(TermIn::Resize { rows, cols })) => {
                        control.resize(rows, cols).await;
                    }
                    // A terminal has no end of input (Ctrl-D is a byte like any other), and
                    // closing a pseudo-terminal's input hangs up the program: only a pipe gets
                    // an EOF.
                    Ok(Some(TermIn::Eof)) if req.tty => {}
                    Ok(Some(TermIn::Eof) | None) => {
                        let _ = exec_input.shutdown().await;
                        return Ok(());
                    }
                    // A malformed frame or a dropped user: stop feeding input.
                    Err(e) => {
                        tracing::debug!(task = req.task, "terminal input: {e}");
                        let _ = exec_input.shutdown().await;
                        return Err(e);
                    }
                }
            }
        };
        tokio::pin!(input_side);
        let mut reading = true;
        loop {
            tokio::select! {
                r = &mut input_side, if reading => {
                    reading = false;
                    // The user is gone or spoke garbage: the command's output has nowhere to
                    // go, so it is stopped below. A user who only ended the input still waits.
                    if r.is_err_and(|e| !matches!(e, FramedError::Ended)) {
                        break;
                    }
                }
                out = exec_output.next() => match out {
                    Some(Ok(Output::Stdout(b))) => send_msg(send, &TermOut::Stdout(b)).await?,
                    Some(Ok(Output::Stderr(b))) => send_msg(send, &TermOut::Stderr(b)).await?,
                    Some(Err(e)) => {
                        tracing::debug!(task = req.task, "terminal output: {e}");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
    // The output ends when the command exits.
    let last = match control.exit().await {
        Some(code) => TermOut::Exit { code },
        None => TermOut::Error("the command's exit code is unknown".into()),
    };
    send_msg(send, &last).await?;
    let _ = send.finish();
    Ok(())
}
