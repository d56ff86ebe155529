//! A task's output, kept on its node: read whole (`Request::TaskLogs`, at most [`MAX_LOGS`]) or
//! streamed (`Logs` streams from users, `/api/tasks/ID/output`), relayed from the node chunk by
//! chunk under QUIC flow control.

use crate::auth::may_touch;
use crate::auth::Caller;
use crate::reply::{refused, HostResult};
use crate::Ctx;
use river_mesh::{open, send_msg};
use river_proto::msg::{ErrorKind, LogsRequest, Response};
use river_proto::StreamKind;

/// Largest log a single `task logs` answer carries.
const MAX_LOGS: usize = 16 << 20;

/// Where a task's output is: the connection to its node, `None` if it never started, or the
/// refusal to send back.
async fn logs_source(ctx: &Ctx, caller: &Caller, id: u64) -> HostResult<Option<river_mesh::Connection>> {
    let Some(t) = ctx.store.task(id).await? else {
        return Err(refused(
            ErrorKind::NotFound,
            format!("no task {id}; `river task list` shows the tasks"),
        ));
    };
    if !may_touch(caller, &t) {
        return Err(refused(
            ErrorKind::Forbidden,
            format!("task {id} belongs to {}", t.owner),
        ));
    }
    let Some(node) = t.placement.as_ref().map(|p| p.node.clone()) else {
        return Ok(None);
    };
    match ctx.registry.connection(&node) {
        Some(conn) => Ok(Some(conn)),
        None => Err(refused(
            ErrorKind::Conflict,
            format!("node {node}, which has the logs of task {id}, is offline"),
        )),
    }
}

/// A stream of a task's output so far from its node (none when it has not started), or why not.
pub(crate) async fn open_logs(
    ctx: &Ctx,
    caller: &Caller,
    id: u64,
    stderr: bool,
    follow: bool,
) -> HostResult<Option<river_mesh::RecvStream>> {
    let Some(conn) = logs_source(ctx, caller, id).await? else {
        return Ok(None);
    };
    let (mut send, recv) = open(&conn, StreamKind::Logs).await?;
    send_msg(&mut send, &LogsRequest { id, stderr, follow }).await?;
    let _ = send.finish();
    Ok(Some(recv))
}

/// A task's output so far, in one answer (at most 16 MiB: larger output is read as a stream).
pub(crate) async fn logs(ctx: &Ctx, caller: &Caller, id: u64, stderr: bool) -> HostResult<Response> {
    let Some(mut recv) = open_logs(ctx, caller, id, stderr, false).await? else {
        return Ok(Response::Logs(Vec::new()));
    };
    let bytes = recv
        .read_to_end(MAX_LOGS)
        .await
        .map_err(|e| anyhow::anyhow!("reading logs: {e}"))?;
    Ok(Response::Logs(bytes))
}

/// `river task logs -f`: a `Logs` stream from a user. The answer is a `Response` frame (an error,
/// or `Logs` with nothing in it), then the output as raw bytes, relayed from the task's runner as it
/// comes, until the task ends.
pub(crate) async fn stream_logs(
    ctx: &Ctx,
    caller: &Caller,
    send: &mut river_mesh::SendStream,
    recv: &mut river_mesh::RecvStream,
) -> Result<(), river_mesh::FramedError> {
    let req: LogsRequest = match crate::streams::first_msg(recv).await {
        Ok(r) => r,
        Err(river_mesh::FramedError::Ended) => return Ok(()),
        Err(e) => return Err(e),
    };
    let conn = match logs_source(ctx, caller, req.id).await {
        Ok(Some(conn)) => conn,
        // Not started: no output yet; following it is refused, reading it finds nothing.
        Ok(None) => {
            let answer = if req.follow {
                refused(
                    ErrorKind::Conflict,
                    format!("task {} has not started yet; it has no output", req.id),
                )
                .into_response()
            } else {
                Response::Logs(Vec::new())
            };
            send_msg(send, &answer).await?;
            let _ = send.finish();
            return Ok(());
        }
        Err(e) => {
            send_msg(send, &e.into_response()).await?;
            let _ = send.finish();
            return Ok(());
        }
    };
    send_msg(send, &Response::Logs(Vec::new())).await?;
    let (mut to_runner, mut from_runner) = open(&conn, StreamKind::Logs).await?;
    send_msg(&mut to_runner, &req).await?;
    let _ = to_runner.finish();
    // QUIC flow control slows the runner when the user reads slowly. Output cut short (the node
    // went away, or could not read it) resets the user's stream: what arrived so far is never
    // taken for all of it.
    if let Err(e) = river_mesh::pipe(&mut from_runner, send).await {
        tracing::info!(task = req.id, "logs cut short: {e}");
    }
    Ok(())
}
