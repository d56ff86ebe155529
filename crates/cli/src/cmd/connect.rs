//! `river connect`: a terminal (or one command) in a running task's container, through the host.

use crate::client::Client;
use anyhow::{bail, Context as _};
use river_mesh::{recv_msg, send_msg};
use river_proto::msg::{TermIn, TermOut, TerminalOpen};
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;

/// Puts the terminal in raw mode (keys go to the remote program as typed, Ctrl-C included) and
/// restores it when dropped, however the session ends.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    #[allow(unsafe_code)]
    fn enter() -> std::io::Result<Self> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own; errors are checked.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Self { saved })
        }
    }
}

impl Drop for RawMode {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

/// The terminal's (rows, cols), or (0, 0) when standard output is not one.
fn window_size() -> (u16, u16) {
    crate::output::window_size(1)
}

/// Standard input on a thread of its own (a blocked read must not keep the process alive at
/// exit); `None` at its end.
pub fn stdin_chunks() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(None);
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Waits while the task is queued or starting (showing the progress of its environment's fetch),
/// and fails with the reason if it ended instead.
pub async fn wait_running(client: &Client, task: u64) -> anyhow::Result<()> {
    let mut progress = crate::output::Progress::new("fetching the environment");
    let mut said = false;
    let starting = ["queued", "assigned", "lost"];
    loop {
        // At once when it starts; every 0.2 s meanwhile, for the bar.
        let t = crate::cmd::follow::wait_past(client, task, &starting, Duration::from_millis(200)).await?;
        match t.state.as_str() {
            "running" => break,
            "queued" | "assigned" | "lost" => {
                if !said {
                    eprintln!("waiting for task {task} to start ({})…", t.state);
                    said = true;
                }
                progress.show(t.fetch);
            }
            other => {
                progress.clear();
                bail!(
                    "task {task} is {other}{}",
                    t.message.map(|m| format!(": {m}")).unwrap_or_default()
                )
            }
        }
    }
    progress.clear();
    Ok(())
}

/// Runs `command` (empty: a shell) in task `task` and returns its exit code. Interactive (a
/// pseudo-terminal, raw mode, window size) when standard input and output are terminals.
pub async fn terminal(dir: &Path, task: u64, command: Vec<String>) -> anyhow::Result<i64> {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (rows, cols) = if tty { window_size() } else { (0, 0) };
    let client = Client::connect(dir).await?;
    wait_running(&client, task).await?;
    let (mut send, mut recv) = client.open(river_proto::StreamKind::Terminal).await?;
    send_msg(
        &mut send,
        &TerminalOpen {
            task,
            command,
            tty,
            rows,
            cols,
        },
    )
    .await?;
    match recv_msg::<TermOut>(&mut recv).await? {
        Some(TermOut::Started) => {}
        Some(TermOut::Error(why)) => bail!("{why}"),
        Some(other) => bail!("unexpected first frame {other:?}"),
        None => bail!("the host closed the stream without answering"),
    }
    let _raw = if tty {
        Some(RawMode::enter().context("putting the terminal in raw mode")?)
    } else {
        None
    };
    let mut input = stdin_chunks();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let code = {
        // Input goes on its own, so output is read while a send waits on flow control: a command
        // that stops reading (`yes | river connect 1 -- head -n 2`) holds up its input, never its
        // output.
        let input_side = async {
            let mut input_open = true;
            loop {
                tokio::select! {
                    chunk = input.recv(), if input_open => match chunk.flatten() {
                        Some(bytes) => send_msg(&mut send, &TermIn::Input(bytes)).await?,
                        None => {
                            input_open = false;
                            send_msg(&mut send, &TermIn::Eof).await?;
                        }
                    },
                    _ = winch.recv(), if tty => {
                        let (rows, cols) = window_size();
                        send_msg(&mut send, &TermIn::Resize { rows, cols }).await?;
                    }
                    else => return Ok::<(), river_mesh::FramedError>(()),
                }
            }
        };
        tokio::pin!(input_side);
        let mut sending = true;
        // Output frames may arrive in pieces while the other branch wins: the reader keeps them.
        let mut output = river_mesh::MsgReader::new(&mut recv);
        loop {
            tokio::select! {
                // The task stopped reading input (its command ended or closed it): what happened
                // comes on the output side.
                r = &mut input_side, if sending => {
                    sending = false;
                    if let Err(e) = r {
                        tracing::debug!("terminal input ended: {e}");
                    }
                }
                out = output.next::<TermOut>() => match out? {
                    Some(TermOut::Stdout(b)) => {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&b)?;
                        o.flush()?;
                    }
                    Some(TermOut::Stderr(b)) => {
                        let mut e = std::io::stderr().lock();
                        e.write_all(&b)?;
                        e.flush()?;
                    }
                    Some(TermOut::Exit { code }) => break code,
                    Some(TermOut::Error(why)) => bail!("{why}"),
                    Some(TermOut::Started) => {}
                    None => bail!("the connection to the task ended before the command did"),
                },
            }
        }
    };
    let _ = send.finish();
    client.close().await;
    Ok(code)
}
