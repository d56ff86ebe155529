//! Following a task's output as it runs: `river task logs -f` and `river task submit --wait`, which
//! streams a task's stdout and stderr to this terminal's, as `docker run` and `srun` do.

use crate::client::Client;
use anyhow::bail;
use river_proto::msg::{Request, Response, Signal, TaskView};
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncWrite;

/// States in which a task has not started yet.
const WAITING: [&str; 3] = ["queued", "assigned", "pending_approval"];

/// States in which a task may still change (it has not ended).
const LIVE: [&str; 7] = [
    "queued",
    "assigned",
    "pending_approval",
    "running",
    "paused",
    "lost",
    "stopped",
];

/// Task `id` once its state is none of `past`, or as it is after `timeout`: the host answers
/// the moment the task changes, so nothing here polls.
pub async fn wait_past(client: &Client, id: u64, past: &[&str], timeout: Duration) -> anyhow::Result<TaskView> {
    let req = Request::TaskWait {
        id,
        past: past.iter().map(|s| (*s).to_owned()).collect(),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let Response::Task(t) = client.call(req).await? else {
        bail!("unexpected answer")
    };
    Ok(*t)
}

/// Waits until task `id` has started (or ended without), saying on stderr why it waits — once a
/// moment has passed, so a task that starts at once says nothing.
pub async fn until_started(client: &Client, id: u64) -> anyhow::Result<TaskView> {
    let mut said = String::new();
    let mut timeout = Duration::from_millis(300);
    loop {
        let t = wait_past(client, id, &WAITING, timeout).await?;
        if !WAITING.contains(&t.state.as_str()) {
            return Ok(t);
        }
        if said != t.state {
            let why = t.waiting.as_deref().map(|w| format!(": {w}")).unwrap_or_default();
            eprintln!(
                "task {id} is {}{why}; waiting for it to start…",
                t.state.replace('_', " ")
            );
            said = t.state.clone();
        }
        timeout = Duration::from_secs(10);
    }
}

/// Copies task `id`'s stdout (or stderr) to `out`: with `follow`, until the task ends. Output cut
/// short, incomplete or removed is an error that says so, never a clean end.
pub async fn stream(
    client: &Client,
    id: u64,
    stderr: bool,
    follow: bool,
    out: impl AsyncWrite + Unpin,
) -> anyhow::Result<()> {
    let (mut send, mut recv) = client.open(river_proto::StreamKind::Logs).await?;
    river_mesh::send_msg(&mut send, &river_proto::msg::LogsRequest { id, stderr, follow }).await?;
    let _ = send.finish();
    match river_mesh::recv_msg::<Response>(&mut recv).await? {
        Some(Response::Error { message, .. }) => bail!("{message}"),
        Some(_) => {}
        None => bail!("the host closed the stream without answering"),
    }
    // Every arrived piece per write: a write per QUIC frame held this at 20 MB/s.
    if let Err(e) = river_mesh::copy_down(&mut recv, out).await {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
        let code = e.get_ref().and_then(|i| i.downcast_ref::<river_mesh::ReadError>());
        if let Some(river_mesh::ReadError::Reset(c)) = code {
            if c.into_inner() == u64::from(river_proto::msg::LOGS_INCOMPLETE) {
                bail!(
                    "the output of task {id} is incomplete: its node could not save all of it; what it kept is above, and `river task status {id}` says why"
                );
            }
            if c.into_inner() == u64::from(river_proto::msg::LOGS_REMOVED) {
                bail!(
                    "the output of task {id} is no longer kept: its node removed it once the task had ended longer ago than the node's task_retention"
                );
            }
        }
        bail!(
            "the output of task {id} was cut short ({e}): its node or the host went away; `river task status {id}` says what became of it"
        );
    }
    Ok(())
}

/// `river task submit --wait` for one task: says its id, waits for it to start, streams its
/// stdout and stderr here until it ends, and exits as it did. Ctrl-C leaves it running (saying
/// how to follow or stop it), or kills it with `kill_on_interrupt`.
pub async fn attached(client: Client, id: u64, kill_on_interrupt: bool) -> anyhow::Result<ExitCode> {
    eprintln!("task {id} submitted");
    let run = async {
        until_started(&client, id).await?;
        let (out, err) = tokio::join!(
            stream(&client, id, false, true, tokio::io::stdout()),
            stream(&client, id, true, true, tokio::io::stderr()),
        );
        out.and(err)?;
        // The streams end with the task; its record may trail its output by a moment.
        loop {
            let t = wait_past(&client, id, &LIVE, Duration::from_secs(10)).await?;
            if !LIVE.contains(&t.state.as_str()) {
                return Ok::<TaskView, anyhow::Error>(t);
            }
        }
    };
    let t = tokio::select! {
        t = run => t?,
        _ = tokio::signal::ctrl_c() => {
            if kill_on_interrupt {
                let r = client.call(Request::TaskSignal { id, signal: Signal::Kill }).await?;
                match r {
                    Response::Error { message, .. } => eprintln!("\ncould not kill task {id}: {message}"),
                    _ => eprintln!("\nkilled task {id}"),
                }
            } else {
                eprintln!("\ntask {id} goes on: `river task logs -f {id}` follows it, `river task kill {id}` stops it");
            }
            client.close().await;
            return Ok(ExitCode::from(130));
        }
    };
    client.close().await;
    if t.state != "completed" {
        eprintln!(
            "task {id} {}{}{}",
            t.state,
            t.exit_code.map(|c| format!(" (exit code {c})")).unwrap_or_default(),
            t.message.map(|m| format!(": {m}")).unwrap_or_default()
        );
    }
    let code = match (t.state.as_str(), t.exit_code) {
        ("completed", _) => 0,
        (_, Some(c)) => c.clamp(1, 255),
        _ => 1,
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
