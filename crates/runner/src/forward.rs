//! A `Forward` stream from the host: one TCP connection to a port inside a task. For a container
//! the socket is made inside the container's network namespace — so a server bound to the
//! container's loopback (Jupyter's default) is reached — on a short-lived thread that enters the
//! namespace and dies with it; the runner's own threads never change namespace. A
//! `--no-container` task shares the node's network, so its port is on the node's loopback.

use river_mesh::{send_msg, Connection, RecvStream, SendStream};
use river_proto::msg::{parse_udp_datagram, udp_datagram, ForwardOpen, ForwardReply};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// This runner's forwarded UDP flows: the id of each flow's stream, and its socket in the task.
#[derive(Default)]
pub(crate) struct UdpFlows {
    map: Mutex<HashMap<u64, Arc<tokio::net::UdpSocket>>>,
}

/// Datagrams from the host to the flows' sockets, until the connection closes.
pub(crate) async fn udp_in(conn: Connection, flows: Arc<UdpFlows>) {
    while let Ok(d) = conn.read_datagram().await {
        let Some((flow, packet)) = parse_udp_datagram(&d) else {
            continue;
        };
        let sock = flows.map.lock().ok().and_then(|m| m.get(&flow).cloned());
        if let Some(sock) = sock {
            // Nothing listening yet, a full buffer: dropped, as UDP would.
            let _ = sock.send(packet).await;
        }
    }
}

/// Runs `make` on a short-lived thread inside the network namespace of process `pid` (the
/// node's own when `None`): sockets keep the namespace they were made in.
async fn in_netns<T: Send + 'static>(
    pid: Option<i64>,
    make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("river-netns".into()).spawn(move || {
        let made = pid.map_or(Ok(()), enter_netns).and_then(|()| make());
        let _ = tx.send(made);
    })?;
    rx.await
        .map_err(|_| std::io::Error::other("the connecting thread died"))?
}

/// A UDP socket connected to `port` on the loopback of `pid`'s network namespace.
async fn udp_in_netns(pid: Option<i64>, port: u16) -> std::io::Result<tokio::net::UdpSocket> {
    let s = in_netns(pid, move || {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        s.connect((Ipv4Addr::LOCALHOST, port))?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .await?;
    tokio::net::UdpSocket::from_std(s)
}

/// Serves one forwarded UDP flow until its stream ends.
pub(crate) async fn serve_udp(
    pid: Result<Option<i64>, String>,
    req: ForwardOpen,
    conn: Connection,
    flows: Arc<UdpFlows>,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let sock = match pid {
        Ok(pid) => udp_in_netns(pid, req.port)
            .await
            .map_err(|e| format!("could not open UDP port {} inside task {}: {e}", req.port, req.task)),
        Err(why) => Err(why),
    };
    let sock = match sock {
        Ok(s) => Arc::new(s),
        Err(why) => {
            let _ = send_msg(&mut send, &ForwardReply::Refused(why)).await;
            let _ = send.finish();
            return;
        }
    };
    let flow = u64::from(recv.id());
    if let Ok(mut m) = flows.map.lock() {
        m.insert(flow, sock.clone());
    }
    if send_msg(&mut send, &ForwardReply::Ok).await.is_ok() {
        let out = async {
            let mut buf = vec![0u8; 65_536];
            loop {
                match sock.recv(&mut buf).await {
                    Ok(n) => {
                        if let Err(e) = conn.send_datagram(udp_datagram(flow, &buf[..n]).into()) {
                            tracing::debug!(flow, "dropped a UDP packet for the host: {e}");
                        }
                    }
                    // Port unreachable (nothing listens yet) comes back as an error: keep going.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(_) => return,
                }
            }
        };
        let mut sink = [0u8; 64];
        tokio::select! {
            () = out => {}
            _ = recv.read(&mut sink) => {}
        }
    }
    if let Ok(mut m) = flows.map.lock() {
        m.remove(&flow);
    }
    let _ = send.finish();
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `port` on the loopback of the network namespace of process `pid` (the node's own
/// when `None`).
pub(crate) async fn connect_in(pid: Option<i64>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    connect_to_in(pid, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
}

/// Connects to `addr` from inside the network namespace of process `pid` (the node's own when
/// `None`).
pub(crate) async fn connect_to_in(pid: Option<i64>, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = in_netns(pid, move || {
        let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .await?;
    tokio::net::TcpStream::from_std(s)
}

/// Moves this thread into the network namespace of `pid`.
#[allow(unsafe_code)]
fn enter_netns(pid: i64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    // SAFETY: setns(2) with a namespace file we hold open; it changes only this thread, which
    // exists for this one connection.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Serves one forwarded connection: connect, answer, then splice.
pub(crate) async fn serve(pid: Result<Option<i64>, String>, req: ForwardOpen, mut send: SendStream, recv: RecvStream) {
    let (task, port) = (req.task, req.port);
    let connected = match pid {
        Ok(pid) => connect_in(pid, port).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                format!("connection refused inside task {task} on port {port}: nothing listens there")
            }
            std::io::ErrorKind::TimedOut => format!("connecting to port {port} inside task {task} timed out"),
            _ => format!("could not connect to port {port} inside task {task}: {e}"),
        }),
        Err(why) => Err(why),
    };
    let tcp = match connected {
        Ok(t) => t,
        Err(why) => {
            let _ = send_msg(&mut send, &ForwardReply::Refused(why)).await;
            let _ = send.finish();
            return;
        }
    };
    if send_msg(&mut send, &ForwardReply::Ok).await.is_err() {
        return;
    }
    if let Err(e) = river_mesh::splice(tcp, send, recv).await {
        tracing::debug!(task, port, "forwarded connection ended: {e}");
    }
}
