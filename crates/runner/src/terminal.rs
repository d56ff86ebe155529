//! A `Terminal` stream from the host: a command (by default a shell) run in a task's container
//! through the engine's exec API, with its input, output, window size and exit code carried as
//! frames.

use futures_util::StreamExt as _;
use river_docker::{Output, Runtime};
use river_mesh::{send_msg, FramedError, RecvStream, SendStream};
use river_proto::msg::{TermIn, TermOut, TerminalOpen};
use tokio::io::AsyncWriteExt as _;

/// bash when the image has it, else sh.
fn shell() -> Vec<String> {
    [
        "/bin/sh",
        "-c",
        "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi",
    ]
    .map(str::to_owned)
    .to_vec()
}

pub(crate) async fn serve(
    rt: &Runtime,
    container: &str,
    req: TerminalOpen,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), FramedError> {
    let running = rt.status(container).await.is_ok_and(|s| s.running && !s.paused);
    if !running {
        send_msg(send, &TermOut::Error(format!("task {} is not running here", req.task))).await?;
        let _ = send.finish();
        return Ok(());
    }
    let cmd = if req.command.is_empty() {
        shell()
    } else {
        req.command.clone()
    };
    let exec = match rt.exec(container, cmd, req.tty).await {
        Ok(e) => e,
        Err(e) => {
            send_msg(send, &TermOut::Error(format!("could not start the command: {e}"))).await?;
            let _ = send.finish();
            return Ok(());
        }
    };
    if req.tty && req.rows > 0 && req.cols > 0 {
        let _ = rt.resize_exec(&exec.id, req.rows, req.cols).await;
    }
    send_msg(send, &TermOut::Started).await?;
    let river_docker::Exec {
        id: exec_id,
        output: mut exec_output,
        input: mut exec_input,
    } = exec;
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
                        let _ = rt.resize_exec(&exec_id, rows, cols).await;
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
    // The exec's output ends when the command exits.
    let last = match rt.exec_exit(&exec_id).await {
        Some(code) => TermOut::Exit { code },
        None => TermOut::Error("the command's exit code is unknown".into()),
    };
    send_msg(send, &last).await?;
    let _ = send.finish();
    Ok(())
}
