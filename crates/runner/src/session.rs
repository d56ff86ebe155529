//! One session with the host: connect, hello, then heartbeats until the connection ends.

use crate::exec::Executor;
use crate::{Backoff, RunnerStatus};
use river_creds::Bundle;
use river_inventory::Inventory;
use river_mesh::client::{connect_bundle, ClientError};
use river_mesh::{ended, open, recv_msg, send_msg, ConnectionError, Ended, FramedError, MeshError};
use river_proto::msg::{Heartbeat, HeartbeatAck, Hello, HelloReply, HostMsg, LogsRequest, RunnerMsg};
use river_proto::StreamKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::watch;

#[derive(Debug)]
pub(crate) enum SessionError {
    /// The host removed this node from the cluster.
    Removed(String),
    /// The host will never accept this node again as it is.
    Fatal(String),
    /// Try again later.
    Retry(String),
}

fn classify_conn(e: &ConnectionError) -> SessionError {
    match ended(e) {
        Ended::Removed(r) => SessionError::Removed(r),
        Ended::Refused(r) => SessionError::Fatal(r),
        Ended::Transient(r) => SessionError::Retry(r),
    }
}

fn classify(e: ClientError) -> SessionError {
    match e {
        ClientError::Mesh(MeshError::Connection { source, .. }) => classify_conn(&source),
        ClientError::Framed(FramedError::Connection(source)) => classify_conn(&source),
        other => SessionError::Retry(other.to_string()),
    }
}

pub(crate) async fn run(
    bundle: &Bundle,
    inventory: &mut Inventory,
    status: &watch::Sender<RunnerStatus>,
    backoff: &mut Backoff,
    exec: &Arc<Executor>,
    reports: &mut mpsc::UnboundedReceiver<RunnerMsg>,
) -> Result<(), SessionError> {
    let (endpoint, conn) = connect_bundle(bundle).await.map_err(classify)?;
    let result = session(&conn, inventory, status, backoff, exec, reports).await;
    exec.set_host(None);
    // Prefer the host's own reason for ending the connection over a stream error it caused.
    let result = match (result, conn.close_reason()) {
        (Err(_), Some(reason)) => Err(classify_conn(&reason)),
        (r, _) => r,
    };
    conn.close(river_mesh::close::DONE, b"");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    result
}

async fn session(
    conn: &river_mesh::Connection,
    inventory: &mut Inventory,
    status: &watch::Sender<RunnerStatus>,
    backoff: &mut Backoff,
    exec: &Arc<Executor>,
    reports: &mut mpsc::UnboundedReceiver<RunnerMsg>,
) -> Result<(), SessionError> {
    let retry = |e: FramedError| match e {
        FramedError::Connection(c) => classify_conn(&c),
        other => SessionError::Retry(other.to_string()),
    };
    let (mut csend, mut crecv) = open(conn, StreamKind::Control).await.map_err(retry)?;
    let mut info = inventory.info(&river_inventory::hostname());
    info.no_engine = !exec.engine_answers().await;
    if info.no_engine {
        tracing::warn!("no container engine (Docker) answers on this node: it takes --no-container tasks only, until one does (docker_socket in the runner config, or DOCKER_HOST)");
    }
    send_msg(&mut csend, &Hello { info }).await.map_err(retry)?;
    let interval = match recv_msg::<HelloReply>(&mut crecv).await.map_err(retry)? {
        Some(HelloReply::Welcome { heartbeat_interval_ms }) => Duration::from_millis(heartbeat_interval_ms.max(100)),
        Some(HelloReply::Refused { reason }) => return Err(SessionError::Fatal(reason)),
        None => {
            return Err(SessionError::Retry(
                "host closed the session before welcoming it".into(),
            ))
        }
    };
    // However long the history, in parts that each fit a frame.
    let snapshot = exec.snapshot().await;
    let mut parts = snapshot.chunks(river_proto::msg::SNAPSHOT_PART).peekable();
    if parts.peek().is_none() {
        send_msg(
            &mut csend,
            &RunnerMsg::Snapshot {
                tasks: Vec::new(),
                more: false,
            },
        )
        .await
        .map_err(retry)?;
    }
    while let Some(part) = parts.next() {
        let more = parts.peek().is_some();
        send_msg(
            &mut csend,
            &RunnerMsg::Snapshot {
                tasks: part.to_vec(),
                more,
            },
        )
        .await
        .map_err(retry)?;
    }
    backoff.reset();
    exec.set_host(Some(conn.clone()));
    status.send_modify(|s| {
        s.connected = true;
        s.sessions += 1;
    });
    tracing::info!(remote = %conn.remote_address(), "connected to the host");

    let (mut hsend, mut hrecv) = open(conn, StreamKind::Heartbeat).await.map_err(retry)?;
    // Heartbeats go ahead of any bulk data this runner sends on the same connection.
    let _ = hsend.set_priority(100);
    let beats = async {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for seq in 0u64.. {
            tick.tick().await;
            let mut usage = inventory.usage();
            usage.no_engine = !exec.engine_answers().await;
            send_msg(&mut hsend, &Heartbeat { seq, usage }).await?;
        }
        Ok::<(), FramedError>(())
    };
    let acks = async {
        while recv_msg::<HeartbeatAck>(&mut hrecv).await?.is_some() {
            status.send_modify(|s| s.acked += 1);
        }
        Ok::<(), FramedError>(())
    };
    // The control stream: the host's orders in, task reports out.
    let control = async {
        // A partly arrived order stays in the reader when a report goes out first.
        let mut orders = river_mesh::MsgReader::new(&mut crecv);
        loop {
            tokio::select! {
                msg = orders.next::<HostMsg>() => match msg? {
                    Some(m) => exec.handle(m),
                    None => return Ok::<(), FramedError>(()),
                },
                Some(report) = reports.recv() => send_msg(&mut csend, &report).await?,
            }
        }
    };
    // Streams the host opens toward this runner.
    let incoming = async {
        tokio::spawn(crate::forward::udp_in(conn.clone(), exec.udp.clone()));
        while let Ok((send, recv)) = conn.accept_bi().await {
            tokio::spawn(host_stream(exec.clone(), conn.clone(), send, recv));
        }
    };
    tokio::select! {
        r = beats => r.map_err(retry),
        r = acks => r.map_err(retry),
        r = control => r.map_err(retry),
        () = incoming => Err(SessionError::Retry("the host stopped opening streams".into())),
        e = conn.closed() => Err(classify_conn(&e)),
    }
}

/// A stream the host opened: `Logs` or `Export`.
async fn host_stream(
    exec: Arc<Executor>,
    conn: river_mesh::Connection,
    mut send: river_mesh::SendStream,
    mut recv: river_mesh::RecvStream,
) {
    let served = async {
        let header = river_mesh::read_header(&mut recv).await?;
        match header.kind {
            StreamKind::Logs => {}
            StreamKind::Export => {
                if let Some(req) = recv_msg::<river_proto::msg::ExportRequest>(&mut recv).await? {
                    exec.export(req, &mut send).await;
                }
                return Ok(());
            }
            StreamKind::Forward => {
                if let Some(req) = recv_msg::<river_proto::msg::ForwardOpen>(&mut recv).await? {
                    let target = exec.network_of(req.task).await;
                    if req.udp {
                        crate::forward::serve_udp(target, req, conn, exec.udp.clone(), send, recv).await;
                    } else {
                        crate::forward::serve(target, req, send, recv).await;
                    }
                }
                return Ok(());
            }
            StreamKind::Ssh => {
                if let Some(req) = recv_msg::<river_proto::msg::SshServe>(&mut recv).await? {
                    crate::ssh::serve(exec, req, send, recv).await;
                }
                return Ok(());
            }
            StreamKind::Terminal => {
                if let Some(req) = recv_msg::<river_proto::msg::TerminalOpen>(&mut recv).await? {
                    exec.terminal(req, &mut send, &mut recv).await?;
                }
                return Ok(());
            }
            _ => {
                let _ = send.reset(1u32.into());
                return Ok(());
            }
        }
        let Some(req) = recv_msg::<LogsRequest>(&mut recv).await? else {
            return Ok(());
        };
        match exec.send_logs(req.id, req.stderr, req.follow, &mut send).await {
            Ok(()) => {
                let _ = send.finish();
            }
            Err(e) => {
                // Never a clean end for output that could not all be sent.
                tracing::info!(task = req.id, "sending logs: {e}");
                let _ = send.reset(3u32.into());
            }
        }
        Ok::<(), FramedError>(())
    };
    if let Err(e) = served.await {
        tracing::debug!("host stream: {e}");
    }
}
