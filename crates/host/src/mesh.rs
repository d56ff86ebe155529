//! Serving the mesh: every connection is identified by its certificate, and every stream it
//! opens is checked against what that identity may do before anything is read from it.

use crate::auth::Caller;
use crate::events::HostEvent;
use crate::streams::{first_msg, FIRST_FRAME_TIMEOUT};
use crate::{join, rpc, Ctx};
use river_mesh::{close, peer_subject, read_header, recv_msg, send_msg, Connection, Endpoint, FramedError, Peer};
use river_mesh::{RecvStream, SendStream};
use river_pki::Subject;
use river_proto::msg::{Heartbeat, HeartbeatAck, Hello, HelloReply, Request, RunnerMsg};
use river_proto::StreamKind;
use std::sync::Arc;

/// Stream error codes.
const STREAM_REFUSED: u32 = 1;
const STREAM_MALFORMED: u32 = 2;

pub(crate) async fn serve(ctx: Arc<Ctx>, endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => connection(ctx, conn).await,
                // Garbage on the port, a wrong CA, a client certificate from elsewhere: the
                // handshake fails and only this peer is affected.
                Err(e) => tracing::info!(%remote, "refused a connection: {e}"),
            }
        });
    }
}

async fn connection(ctx: Arc<Ctx>, conn: Connection) {
    let remote = conn.remote_address();
    match peer_subject(&conn) {
        Peer::Anonymous => {
            let Some(_admitted) = ctx.anonymous.admit(remote.ip()) else {
                conn.close(
                    close::UNAVAILABLE,
                    b"too many connections without a certificate from your address; try again shortly",
                );
                return;
            };
            join::serve_joiner(ctx, conn).await;
        }
        Peer::Known(Subject::Node(name), info) => {
            match ctx.store.node_standing(&name, &info.serial).await {
                Ok(river_store::Standing::Accepted) => {}
                Ok(river_store::Standing::Revoked) => {
                    tracing::warn!(node = %name, %remote, "refused node: removed from the cluster");
                    conn.close(close::REVOKED, b"this node was removed from the cluster and its certificate revoked; join again with a new token (`river token create` on the host)");
                    return;
                }
                // Not a removal: the database may be older than this node. Its work stays.
                Ok(river_store::Standing::Unknown) => {
                    tracing::warn!(node = %name, %remote, serial = %info.serial, "refused node: no record of it or of its certificate (was river.db restored from an older backup?); `river node admit` lets it back in");
                    ctx.registry.unknown(&name, &info.serial, info.not_after);
                    let reason = format!("the host has no record of node {name} or of its certificate (was its database restored from an older backup?); this node keeps its tasks and tries again; an admin can let it back in with `river node admit {name}`");
                    conn.close(close::UNKNOWN, reason.as_bytes());
                    return;
                }
                Err(e) => {
                    tracing::error!(node = %name, %remote, "cannot check the node's standing: {e}");
                    conn.close(close::UNAVAILABLE, b"the host cannot read its database now; try again");
                    return;
                }
            }
            if info.not_after <= ctx.clock.now_s() {
                // Its certificate ran out while it could not reach the host: it may renew, and
                // only that, then come back with the new one.
                tracing::warn!(node = %name, %remote, "node with an expired certificate: renewal only");
                renewal_only(&ctx, &conn, name).await;
                return;
            }
            streams(&ctx, &conn, Caller::Node(name)).await;
        }
        Peer::Known(Subject::User(name), info) => {
            if info.not_after <= ctx.clock.now_s() {
                conn.close(
                    close::REVOKED,
                    b"your certificate has expired; log in again with an invite (`river login`)",
                );
                return;
            }
            // Held before the checks: a revocation that lands after them finds it and closes it.
            let Some(_held) = ctx.sessions.hold(&name, crate::sessions::Closer::Mesh(conn.clone())) else {
                tracing::warn!(user = %name, %remote, "refused a connection: the user has {} open", crate::sessions::PER_USER);
                let why = format!(
                    "you have {} connections open to the host (commands, forwards, terminals); close some and try again",
                    crate::sessions::PER_USER
                );
                conn.close(close::PROTOCOL, why.as_bytes());
                return;
            };
            let role = match (ctx.store.user(&name).await, ctx.store.is_revoked(&info.serial).await) {
                (Ok(Some(u)), Ok(false)) if u.disabled => {
                    tracing::warn!(user = %name, %remote, "refused a disabled user");
                    conn.close(
                        close::REVOKED,
                        b"an admin has disabled your account; ask them to enable it (`river user enable`)",
                    );
                    return;
                }
                (Ok(Some(u)), Ok(false)) => u.role,
                _ => {
                    tracing::warn!(user = %name, %remote, "refused user: unknown or certificate revoked");
                    conn.close(close::REVOKED, b"this user is not known to the host or its certificate was revoked; log in again with an invite (`river login`)");
                    return;
                }
            };
            streams(&ctx, &conn, Caller::User { name, role }).await;
        }
        Peer::Known(Subject::Host, _) | Peer::Unrecognised => {
            tracing::warn!(%remote, "refused a certificate that names no node or user");
            conn.close(close::PROTOCOL, b"certificate names no river node or user");
        }
    }
}

/// A node whose certificate expired: `Rpc` streams (where a node may only renew), nothing else.
async fn renewal_only(ctx: &Arc<Ctx>, conn: &Connection, name: String) {
    let caller = Caller::Node(name);
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let (ctx, caller) = (ctx.clone(), caller.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(FIRST_FRAME_TIMEOUT, read_header(&mut recv)).await {
                Ok(Ok(h)) if h.kind == StreamKind::Rpc => {
                    if let Err(e) = request(&ctx, &caller, &mut send, &mut recv).await {
                        tracing::info!(who = %caller.actor(), "renewal stream: {e}");
                    }
                }
                _ => refuse(&mut send, &mut recv, STREAM_REFUSED),
            }
        });
    }
}

async fn streams(ctx: &Arc<Ctx>, conn: &Connection, caller: Caller) {
    // Forwarded UDP packets, from users and runners alike, ride datagrams beside the streams.
    tokio::spawn(crate::udp::pump(ctx.clone(), conn.clone()));
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(who = %caller.actor(), "connection ended: {e}");
                return;
            }
        };
        let (ctx, conn, caller) = (ctx.clone(), conn.clone(), caller.clone());
        tokio::spawn(async move {
            if let Err(e) = stream(&ctx, &conn, &caller, send, recv).await {
                tracing::info!(who = %caller.actor(), "stream closed with an error: {e}");
            }
        });
    }
}

async fn stream(
    ctx: &Arc<Ctx>,
    conn: &Connection,
    caller: &Caller,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), FramedError> {
    let header = match tokio::time::timeout(FIRST_FRAME_TIMEOUT, read_header(&mut recv)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            refuse(&mut send, &mut recv, STREAM_MALFORMED);
            return Err(e);
        }
        Err(_) => {
            refuse(&mut send, &mut recv, STREAM_MALFORMED);
            return Err(FramedError::Ended);
        }
    };
    // HTTP (the dashboard's) takes the stream itself: a WebSocket on it outlives this call.
    if let (StreamKind::Http, Caller::User { name, .. }) = (header.kind, caller) {
        crate::api::serve_stream(ctx.clone(), name.clone(), send, recv).await;
        return Ok(());
    }
    let result = match (header.kind, caller) {
        (StreamKind::Control, Caller::Node(name)) => control(ctx, conn, name, &mut send, &mut recv).await,
        (StreamKind::Heartbeat, Caller::Node(name)) => heartbeats(ctx, name, &mut send, &mut recv).await,
        (StreamKind::Rpc, _) => request(ctx, caller, &mut send, &mut recv).await,
        (StreamKind::Logs, Caller::User { .. }) => crate::logs::stream_logs(ctx, caller, &mut send, &mut recv).await,
        (StreamKind::Blob, Caller::Node(_)) => crate::envs::serve_blob(ctx, &mut send, &mut recv).await,
        (StreamKind::Terminal, Caller::User { .. }) => crate::terminal::relay(ctx, caller, &mut send, &mut recv).await,
        (StreamKind::Forward, Caller::User { .. }) => {
            crate::terminal::forward(ctx, conn, caller, &mut send, &mut recv).await
        }
        (kind, _) => {
            tracing::warn!(who = %caller.actor(), ?kind, "refused a stream kind this identity may not open");
            refuse(&mut send, &mut recv, STREAM_REFUSED);
            return Ok(());
        }
    };
    if let Err(FramedError::Frame(_)) = &result {
        refuse(&mut send, &mut recv, STREAM_MALFORMED);
    }
    result
}

fn refuse(send: &mut SendStream, recv: &mut RecvStream, code: u32) {
    let _ = send.reset(code.into());
    let _ = recv.stop(code.into());
}

/// A runner's session: its hello, then the stream stays open for host-initiated messages.
async fn control(
    ctx: &Arc<Ctx>,
    conn: &Connection,
    name: &str,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), FramedError> {
    let hello: Hello = first_msg(recv).await?;
    let address = conn.remote_address().to_string();
    if let Err(e) = ctx
        .store
        .node_session(name, &hello.info, &address, ctx.clock.now_ms())
        .await
    {
        tracing::error!(node = %name, "recording session: {e}");
    }
    send_msg(
        send,
        &HelloReply::Welcome {
            heartbeat_interval_ms: ctx.policy.heartbeat_interval_ms,
        },
    )
    .await?;
    // What the runner has must be settled before anything new is scheduled on it; otherwise a task
    // assigned a moment ago could look like one the runner lost.
    let mut snapshot = Vec::new();
    loop {
        match first_msg::<RunnerMsg>(recv).await? {
            RunnerMsg::Snapshot { tasks, more } => {
                snapshot.extend(tasks);
                if !more {
                    break;
                }
            }
            other => {
                tracing::warn!(node = %name, "session began with {other:?} instead of a snapshot");
                return Err(FramedError::Ended);
            }
        }
    }
    let settled = match crate::reports::reconcile(ctx, name, snapshot).await {
        Ok(s) => s,
        Err(e) => return unrecorded(conn, e),
    };
    // The session, not the connection, is what the registry tracks: a runner's short renewal
    // connection must not replace its session.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    ctx.registry.attach(name, conn.clone(), tx);
    // Online only now that it is attached: a node that connects but cannot settle is not.
    if ctx.registry.seen(name, ctx.clock.now_ms()) {
        tracing::info!(node = %name, %address, cores = hello.info.cores, gpus = hello.info.gpus.len(), "node is online");
        ctx.events.publish(HostEvent::NodeOnline {
            name: name.to_owned(),
            why: address.to_string(),
        });
    }
    crate::reports::settle(ctx, name, settled);
    crate::envs::announce_archives(ctx, Some(name)).await;
    // The overlay plan goes ahead of any task, on the same ordered stream.
    crate::overlay::attached(ctx, name, conn.remote_address()).await;
    ctx.kick.notify_one();
    // Messages are read through a reader that keeps a partly arrived one when the other branch
    // of the loop wins.
    let mut incoming = river_mesh::MsgReader::new(recv);
    let mut resent = Vec::new();
    let result = async {
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(msg) => send_msg(send, &msg).await?,
                    None => return Ok(()),
                },
                msg = incoming.next::<RunnerMsg>() => match msg? {
                    Some(msg) => {
                        if let Err(e) = crate::reports::on_runner_msg(ctx, name, msg, &mut resent).await {
                            return unrecorded(conn, e);
                        }
                    }
                    None => return Ok(()),
                },
            }
        }
    }
    .await;
    ctx.registry.detach(name, conn);
    result
}

/// A runner's report could not be stored: its session ends, and the runner, reconnecting, sends
/// everything it has again in its snapshot. Nothing it reported is lost while the database
/// cannot be written.
fn unrecorded(conn: &Connection, e: crate::reports::Unrecorded) -> Result<(), FramedError> {
    tracing::error!("{e}; ending the session so that the node sends it again");
    conn.close(
        close::UNAVAILABLE,
        b"the host could not record a task report (its database failed); reconnect and send it again",
    );
    Err(FramedError::Ended)
}

async fn heartbeats(
    ctx: &Arc<Ctx>,
    name: &str,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), FramedError> {
    // Acks are tiny; keep them ahead of anything else the host sends this runner.
    let _ = send.set_priority(100);
    while let Some(hb) = recv_msg::<Heartbeat>(recv).await? {
        let now = ctx.clock.now_ms();
        // Heartbeats keep an attached node online; one whose session never settled stays as it is.
        if ctx.registry.connected(name) && ctx.registry.seen(name, now) {
            tracing::info!(node = %name, "node is online");
            ctx.events.publish(HostEvent::NodeOnline {
                name: name.to_owned(),
                why: "heartbeat".into(),
            });
        }
        match ctx.store.heartbeat(name, &hb.usage, now).await {
            Ok(()) => {
                ctx.usage.record(name, now, &hb.usage);
                ctx.events.publish(HostEvent::NodeUsage { name: name.to_owned() });
            }
            Err(e) => tracing::error!(node = %name, "recording heartbeat: {e}"),
        }
        send_msg(send, &HeartbeatAck { seq: hb.seq }).await?;
    }
    Ok(())
}

async fn request(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), FramedError> {
    let req: Request = match first_msg(recv).await {
        Ok(r) => r,
        Err(e @ FramedError::Frame(_)) => {
            let msg = crate::reply::refused(river_proto::msg::ErrorKind::Invalid, e.to_string()).into_response();
            let _ = send_msg(send, &msg).await;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let resp = rpc::handle(ctx, caller, req).await;
    send_msg(send, &resp).await?;
    let _ = send.finish();
    Ok(())
}
