//! `river connect` and `river forward`: the host checks that the user may reach the task, then
//! relays the `Terminal` or `Forward` stream to the task's runner and back, byte for byte. It never
//! looks inside the session.

use crate::auth::Caller;
use crate::reply::{refused, HostResult};
use crate::Ctx;
use river_mesh::{open, pipe, recv_msg, send_msg, FramedError, RecvStream, SendStream};
use river_proto::msg::{ErrorKind, ForwardOpen, ForwardReply, TermOut, TerminalOpen};
use river_proto::StreamKind;
use river_task::state::TaskState;

/// Which runner to relay to, or why not (the reason as the user reads it).
async fn route(ctx: &Ctx, caller: &Caller, task: u64) -> Result<river_mesh::Connection, String> {
    route_or_refusal(ctx, caller, task)
        .await
        .map_err(|e| e.kind_and_message().1)
}

/// [`route`], with the kind of each refusal.
async fn route_or_refusal(ctx: &Ctx, caller: &Caller, task: u64) -> HostResult<river_mesh::Connection> {
    let t = match ctx.task_for_stream(task).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(refused(
                ErrorKind::NotFound,
                format!("no task {task}; `river task list` shows the tasks"),
            ))
        }
        Err(e) => return Err(anyhow::anyhow!("host error: {e}").into()),
    };
    if !crate::auth::may_touch(caller, &t) && !crate::vps::shared_with(ctx, caller, &t).await {
        return Err(refused(
            ErrorKind::Forbidden,
            format!("task {task} belongs to {}; you may not reach it", t.owner),
        ));
    }
    if t.state != TaskState::Running {
        return Err(refused(
            ErrorKind::Conflict,
            format!("task {task} is {}; only a running task can be reached", t.state),
        ));
    }
    let node = t.placement.map(|p| p.node).unwrap_or_default();
    ctx.registry.connection(&node).ok_or_else(|| {
        refused(
            ErrorKind::Conflict,
            format!("node {node}, where task {task} runs, is offline"),
        )
    })
}

/// A `Terminal` stream to the runner of task `req.task`, opened once the caller may reach it (the
/// web dashboard's terminal, which has no mesh stream of its own to relay); the runner answers
/// with `TermOut` frames.
pub(crate) async fn open_terminal(
    ctx: &Ctx,
    caller: &Caller,
    req: &TerminalOpen,
) -> HostResult<(SendStream, RecvStream)> {
    let conn = route_or_refusal(ctx, caller, req.task).await?;
    let (mut to_runner, from_runner) = open(&conn, StreamKind::Terminal)
        .await
        .map_err(|e| anyhow::anyhow!("the node of task {}: {e}", req.task))?;
    send_msg(&mut to_runner, req)
        .await
        .map_err(|e| anyhow::anyhow!("the node of task {}: {e}", req.task))?;
    tracing::info!(who = %caller.actor(), task = req.task, "web terminal opened");
    Ok((to_runner, from_runner))
}

/// Checks the caller may reach `task`, then opens a stream of `kind` to its runner and sends it
/// `req`. On a refusal the caller gets `refused(why)` and `None` comes back.
async fn open_to_runner<M: serde::Serialize, R: serde::Serialize>(
    ctx: &Ctx,
    caller: &Caller,
    task: u64,
    send: &mut SendStream,
    kind: StreamKind,
    req: &M,
    refused: impl FnOnce(String) -> R,
) -> Result<Option<(river_mesh::Connection, SendStream, RecvStream)>, FramedError> {
    let conn = match route(ctx, caller, task).await {
        Ok(c) => c,
        Err(why) => {
            send_msg(send, &refused(why)).await?;
            let _ = send.finish();
            return Ok(None);
        }
    };
    let (mut to_runner, from_runner) = open(&conn, kind).await?;
    send_msg(&mut to_runner, req).await?;
    Ok(Some((conn, to_runner, from_runner)))
}

pub(crate) async fn relay(
    ctx: &Ctx,
    caller: &Caller,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), FramedError> {
    let req: TerminalOpen = match crate::streams::first_msg(recv).await {
        Ok(r) => r,
        Err(FramedError::Ended) => return Ok(()),
        Err(e) => return Err(e),
    };
    let opened = open_to_runner(ctx, caller, req.task, send, StreamKind::Terminal, &req, TermOut::Error).await?;
    let Some((_, mut to_runner, mut from_runner)) = opened else {
        return Ok(());
    };
    tracing::info!(who = %caller.actor(), task = req.task, tty = req.tty, "terminal opened");
    both_ways(send, recv, &mut to_runner, &mut from_runner).await
}

/// One forwarded connection: authorized here, connected by the runner inside the task.
pub(crate) async fn forward(
    ctx: &Ctx,
    user: &river_mesh::Connection,
    caller: &Caller,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), FramedError> {
    let req: ForwardOpen = match crate::streams::first_msg(recv).await {
        Ok(r) => r,
        Err(FramedError::Ended) => return Ok(()),
        Err(e) => return Err(e),
    };
    // Port 22 of a VPS is the SSH server its runner keeps for it.
    let vps_ssh = match ctx.task_for_stream(req.task).await {
        Ok(Some(t)) if !req.udp => match crate::vps::ssh_route(ctx, &t, req.port) {
            Some(mut serve) => {
                serve.keys.extend(crate::vps::extra_keys(ctx, caller, &t).await);
                Some(serve)
            }
            None => None,
        },
        _ => None,
    };
    if let Some(serve) = vps_ssh {
        let opened = open_to_runner(
            ctx,
            caller,
            req.task,
            send,
            StreamKind::Ssh,
            &serve,
            ForwardReply::Refused,
        )
        .await?;
        let Some((_, mut to_runner, mut from_runner)) = opened else {
            return Ok(());
        };
        tracing::debug!(who = %caller.actor(), task = req.task, "ssh to a VPS");
        return both_ways(send, recv, &mut to_runner, &mut from_runner).await;
    }
    let opened = open_to_runner(
        ctx,
        caller,
        req.task,
        send,
        StreamKind::Forward,
        &req,
        ForwardReply::Refused,
    )
    .await?;
    let Some((conn, mut to_runner, mut from_runner)) = opened else {
        return Ok(());
    };
    tracing::debug!(who = %caller.actor(), task = req.task, port = req.port, udp = req.udp, "forwarded connection");
    if !req.udp {
        return both_ways(send, recv, &mut to_runner, &mut from_runner).await;
    }
    // A UDP flow: once the runner has its socket, datagrams are routed until either side closes
    // the stream.
    let Some(reply) = recv_msg::<ForwardReply>(&mut from_runner).await? else {
        return Ok(());
    };
    send_msg(send, &reply).await?;
    if reply != ForwardReply::Ok {
        let _ = send.finish();
        return Ok(());
    }
    let user_side = crate::udp::Side { conn: user, send, recv };
    let runner_side = crate::udp::Side {
        conn: &conn,
        send: &mut to_runner,
        recv: &mut from_runner,
    };
    crate::udp::relay(ctx, user_side, runner_side).await;
    Ok(())
}

/// A TCP connection to `port` inside `task` for the SSH gateway, which has no mesh stream of its
/// own to relay: checked like a forward (port 22 of a VPS is its runner's SSH server), then the
/// runner's streams once it has connected, or why not.
pub(crate) async fn open_tcp(
    ctx: &Ctx,
    caller: &Caller,
    task: u64,
    port: u16,
) -> Result<(SendStream, RecvStream), String> {
    let conn = route(ctx, caller, task).await?;
    let vps_ssh = match ctx.task_for_stream(task).await {
        Ok(Some(t)) => crate::vps::ssh_route(ctx, &t, port),
        _ => None,
    };
    let opened = async {
        let (to_runner, mut from_runner) = match &vps_ssh {
            Some(serve) => {
                let (mut s, r) = open(&conn, StreamKind::Ssh).await?;
                send_msg(&mut s, serve).await?;
                (s, r)
            }
            None => {
                let (mut s, r) = open(&conn, StreamKind::Forward).await?;
                send_msg(&mut s, &ForwardOpen { task, port, udp: false }).await?;
                (s, r)
            }
        };
        let reply = recv_msg::<ForwardReply>(&mut from_runner).await?;
        Ok::<_, FramedError>((reply, to_runner, from_runner))
    };
    match opened.await {
        Ok((Some(ForwardReply::Ok), send, recv)) => Ok((send, recv)),
        Ok((Some(ForwardReply::Refused(why)), ..)) => Err(why),
        Ok((None, ..)) => Err(format!("the node of task {task} ended the connection")),
        Err(e) => Err(format!("the node of task {task}: {e}")),
    }
}

/// Relays a user's stream and a runner's both ways until the runner's side ends (after the user's
/// has, or on its own).
async fn both_ways(
    send: &mut SendStream,
    recv: &mut RecvStream,
    to_runner: &mut SendStream,
    from_runner: &mut RecvStream,
) -> Result<(), FramedError> {
    let up = pipe(recv, to_runner);
    let down = pipe(from_runner, send);
    tokio::pin!(up, down);
    tokio::select! {
        // The runner ends the session.
        r = &mut down => { r?; }
        r = &mut up => match r {
            // A half-close: the runner may still answer.
            Ok(_) => { down.await?; }
            // The user's side failed, or the runner stopped reading it (it refused the connection
            // and said why, or its end closed): the runner's last words still reach the user. The
            // failure was passed on, so the runner's side ends soon; a bound keeps a runner that
            // does not from holding the stream.
            Err(e) => {
                let _ = tokio::time::timeout(LAST_WORDS, &mut down).await;
                return Err(e);
            }
        },
    }
    Ok(())
}

/// How long the runner's side of a relay may take to end once the user's side has failed.
const LAST_WORDS: std::time::Duration = std::time::Duration::from_secs(5);
