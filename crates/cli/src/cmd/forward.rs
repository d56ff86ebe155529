//! `river forward`: a local listener whose every connection becomes its own `Forward` stream to a
//! port inside a task. The listener outlives the host: when the mesh connection drops, the next
//! local connection dials the host again.

use crate::client::Client;
use anyhow::{bail, Context as _};
use river_mesh::udp::{Drops, FlowOut, Uplink};
use river_mesh::{recv_msg, send_msg};
use river_proto::msg::{ForwardOpen, ForwardReply, UdpFrame};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Mutex;

/// The connection to the host, made again when it has dropped.
pub struct Mesh {
    dir: PathBuf,
    client: Mutex<Option<Arc<Client>>>,
}

impl Mesh {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            client: Mutex::new(None),
        }
    }

    pub async fn client(&self) -> anyhow::Result<Arc<Client>> {
        let mut c = self.client.lock().await;
        if let Some(existing) = c.as_ref().filter(|c| !c.is_closed()) {
            return Ok(existing.clone());
        }
        let fresh = Arc::new(Client::connect(&self.dir).await?);
        *c = Some(fresh.clone());
        Ok(fresh)
    }

    async fn forget(&self, stale: &Arc<Client>) {
        let mut c = self.client.lock().await;
        if c.as_ref().is_some_and(|x| Arc::ptr_eq(x, stale)) {
            *c = None;
        }
    }

    /// A stream of `kind`, retried once on a fresh connection when the current one is dead.
    pub async fn stream(
        &self,
        kind: river_proto::StreamKind,
    ) -> anyhow::Result<(river_mesh::SendStream, river_mesh::RecvStream)> {
        let client = self.client().await?;
        match client.open(kind).await {
            Ok(s) => Ok(s),
            Err(e) => {
                tracing::debug!("reconnecting to the host: {e}");
                self.forget(&client).await;
                self.client().await?.open(kind).await
            }
        }
    }

    /// A `Forward` stream with its request sent, not yet answered: the caller may send at once
    /// (the answer comes first on the way back), saving a round trip on every new connection.
    async fn open_eager(&self, req: &ForwardOpen) -> anyhow::Result<(river_mesh::SendStream, river_mesh::RecvStream)> {
        for attempt in 0..2 {
            let client = self.client().await?;
            let opened = async {
                let (mut send, recv) = client.open(river_proto::StreamKind::Forward).await?;
                send_msg(&mut send, req).await?;
                anyhow::Ok((send, recv))
            }
            .await;
            match opened {
                Ok(streams) => return Ok(streams),
                Err(e) if attempt == 0 => {
                    tracing::debug!("reconnecting to the host: {e}");
                    self.forget(&client).await;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// A `Forward` stream the host has accepted, retrying once on a fresh connection when the
    /// current one turns out to be dead.
    pub async fn open(&self, req: &ForwardOpen) -> anyhow::Result<(river_mesh::SendStream, river_mesh::RecvStream)> {
        for attempt in 0..2 {
            let client = self.client().await?;
            let opened = async {
                let (mut send, mut recv) = client.open(river_proto::StreamKind::Forward).await?;
                send_msg(&mut send, req).await?;
                let reply = recv_msg::<ForwardReply>(&mut recv).await?;
                anyhow::Ok((send, recv, reply))
            }
            .await;
            match opened {
                Ok((send, recv, Some(ForwardReply::Ok))) => return Ok((send, recv)),
                Ok((_, _, Some(ForwardReply::Refused(why)))) => bail!("{why}"),
                Ok((_, _, None)) => bail!("the host closed the stream without answering"),
                Err(e) if attempt == 0 => {
                    tracing::debug!("reconnecting to the host: {e}");
                    self.forget(&client).await;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }
}

pub async fn run(dir: &Path, task: u64, port: u16, local: Option<u16>, bind: IpAddr, udp: bool) -> anyhow::Result<()> {
    let mesh = Arc::new(Mesh::new(dir));
    // Fail now, with the reason, rather than at the first connection.
    let client = mesh.client().await?;
    crate::cmd::connect::wait_running(&client, task).await?;
    // A forward may live for weeks: it renews the user certificate as it comes due, so its next
    // connection (after a host restart) is not refused as expired.
    tokio::spawn(keep_renewed(mesh.clone()));
    let addr = SocketAddr::new(bind, local.unwrap_or(port));
    if udp {
        return run_udp(&mesh, task, port, addr).await;
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} here (in use? choose another local port with -l)"))?;
    let bound = listener.local_addr()?;
    eprintln!("forwarding {bound} → port {port} of task {task}; Ctrl-C stops");
    // Machine-readable on stdout: the local address, so scripts can use `-l 0`.
    println!("{bound}");
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => r?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let mesh = mesh.clone();
        tokio::spawn(async move {
            let req = ForwardOpen { task, port, udp: false };
            if let Err(e) = connection(&mesh, &req, tcp).await {
                eprintln!("connection from {peer}: {e:#}");
            }
        });
    }
}

/// Renews the user certificate whenever it comes due, for as long as the process lives.
pub(crate) async fn keep_renewed(mesh: Arc<Mesh>) {
    loop {
        let next = match mesh.client().await {
            Ok(c) => c.renew_if_due(&mesh.dir).await,
            Err(e) => Err(e),
        };
        let wait = match next {
            Ok(due) => (due - crate::client::now_s()).clamp(1, 60),
            Err(e) => {
                tracing::warn!("renewing the user certificate: {e:#}");
                10
            }
        };
        tokio::time::sleep(std::time::Duration::from_secs(u64::try_from(wait).unwrap_or(60))).await;
    }
}

/// One local connection: its bytes start toward the task with the request; the task's side
/// starts with the answer.
async fn connection(mesh: &Mesh, req: &ForwardOpen, tcp: tokio::net::TcpStream) -> anyhow::Result<()> {
    let (mut send, mut recv) = mesh.open_eager(req).await?;
    let _ = tcp.set_nodelay(true);
    let (mut rd, mut wr) = tcp.into_split();
    let spliced = splice(&mut send, &mut recv, &mut rd, &mut wr).await;
    if let Err(e) = &spliced {
        if !e.is::<Refused>() {
            // The mesh broke mid-connection: the local program sees a reset, not an end.
            river_mesh::reset_tcp(rd, wr);
        }
    }
    spliced
}

/// The task's side refused the connection (nothing was relayed; the socket closes normally).
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

async fn splice(
    send: &mut river_mesh::SendStream,
    recv: &mut river_mesh::RecvStream,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
) -> anyhow::Result<()> {
    let up = river_mesh::copy_up(rd, &mut *send);
    tokio::pin!(up);
    // The local bytes go while the answer is on its way. The far side stops reading when it
    // refuses, which can end the upward copy first: the answer still says why.
    let (answer, up_ended) = {
        let answer = recv_msg::<ForwardReply>(&mut *recv);
        tokio::pin!(answer);
        tokio::select! {
            a = &mut answer => (a, None),
            u = &mut up => (answer.await, Some(u)),
        }
    };
    match answer? {
        Some(ForwardReply::Ok) => {}
        Some(ForwardReply::Refused(why)) => return Err(Refused(why).into()),
        None => return Err(Refused("the host closed the stream without answering".into()).into()),
    }
    let down = river_mesh::copy_down(recv, wr);
    match up_ended {
        Some(up) => {
            up?;
            down.await?;
        }
        None => {
            tokio::try_join!(up, down)?;
        }
    }
    Ok(())
}

/// A UDP flow: the local client it answers, its way toward the task, what it dropped here, and
/// the task that holds its stream (ended when the flow is forgotten).
struct Flow {
    id: u64,
    out: FlowOut,
    drops: Drops,
    last: std::time::Instant,
    stream: tokio::task::JoinHandle<()>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stream.abort();
    }
}

/// How long a UDP flow lives without packets from its client.
const UDP_IDLE: std::time::Duration = std::time::Duration::from_secs(120);

/// `--udp`: one local socket; each client address gets a flow of its own (a `Forward` stream that
/// the host authorizes), and packets go as QUIC datagrams tagged with that stream's id — or on
/// the stream, when too large for a datagram. A burst is queued rather than dropped; what is
/// dropped anyway, here or on the way, is counted and said on standard error.
async fn run_udp(mesh: &Mesh, task: u64, port: u16, addr: SocketAddr) -> anyhow::Result<()> {
    use river_proto::msg::parse_udp_datagram;
    use std::collections::HashMap;
    let sock = tokio::net::UdpSocket::bind(addr)
        .await
        .with_context(|| format!("cannot listen on udp {addr} here (in use? choose another local port with -l)"))?;
    river_mesh::enlarge_udp_buffers(&sock);
    let sock = Arc::new(sock);
    let bound = sock.local_addr()?;
    eprintln!("forwarding udp {bound} → port {port} of task {task}; Ctrl-C stops");
    println!("{bound}");
    let mut client: Option<Arc<Client>> = Some(mesh.client().await?);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut peers: HashMap<u64, SocketAddr> = HashMap::new();
    // Packets that found no connection to the host.
    let unrouted = Drops::default();
    let mut buf = vec![0u8; 65_536];
    let mut tick = tokio::time::interval(river_mesh::udp::REPORT_EVERY);
    loop {
        let incoming = async {
            match &client {
                Some(c) => c.connection().read_datagram().await.ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let (n, peer) = match r {
                    Ok(x) => x,
                    // An earlier answer found its client gone (ICMP port unreachable).
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e.into()),
                };
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    flows.clear();
                    peers.clear();
                    client = match mesh.client().await {
                        Ok(c) => Some(c),
                        Err(e) => {
                            unrouted.add(&format!("here, no connection to the host ({e:#})"));
                            None
                        }
                    };
                }
                let Some(c) = client.clone() else { continue };
                // The far side ended this client's flow (the runner restarted, say): a new one.
                if flows.get(&peer).is_some_and(|f| f.stream.is_finished()) {
                    flows.remove(&peer);
                }
                let f = match flows.entry(peer) {
                    std::collections::hash_map::Entry::Occupied(f) => f.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => match open_flow(&c, task, port, &sock, peer).await {
                        Ok(flow) => {
                            peers.insert(flow.id, peer);
                            v.insert(flow)
                        }
                        Err(e) => {
                            eprintln!("udp from {peer}: {e:#}");
                            continue;
                        }
                    },
                };
                f.last = std::time::Instant::now();
                if let Err(why) = f.out.push(&buf[..n]) {
                    f.drops.add(&format!("here, {why}"));
                }
            }
            d = incoming => match d {
                Some(d) => {
                    if let Some((id, packet)) = parse_udp_datagram(&d) {
                        if let Some(peer) = peers.get(&id) {
                            let _ = sock.send_to(packet, peer).await;
                        }
                    }
                }
                // The host went away: flows start again on the next connection.
                None => {
                    client = None;
                }
            },
            _ = tick.tick() => {
                for (peer, f) in &flows {
                    if let Some((count, why)) = f.drops.take() {
                        say_dropped(*peer, count, &why);
                    }
                }
                if let Some((count, why)) = unrouted.take() {
                    eprintln!("udp: {count} {} not delivered: {why}", datagrams(count));
                }
                flows.retain(|_, f| f.last.elapsed() < UDP_IDLE);
                peers.retain(|id, _| flows.values().any(|f| f.id == *id));
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn datagrams(count: u64) -> &'static str {
    if count == 1 {
        "datagram"
    } else {
        "datagrams"
    }
}

fn say_dropped(peer: SocketAddr, count: u64, why: &str) {
    eprintln!("udp {peer}: {count} {} not delivered: {why}", datagrams(count));
}

/// Opens a flow for the client at `peer`: its stream is held by a task of its own, which passes
/// packets arriving on it back to `peer` and says what the far side reported dropped.
async fn open_flow(
    client: &Client,
    task: u64,
    port: u16,
    sock: &Arc<tokio::net::UdpSocket>,
    peer: SocketAddr,
) -> anyhow::Result<Flow> {
    let (mut send, mut recv) = client.open(river_proto::StreamKind::Forward).await?;
    send_msg(&mut send, &ForwardOpen { task, port, udp: true }).await?;
    match recv_msg::<ForwardReply>(&mut recv).await? {
        Some(ForwardReply::Ok) => {}
        Some(ForwardReply::Refused(why)) => bail!("{why}"),
        None => bail!("the host closed the stream without answering"),
    }
    let id = u64::from(send.id());
    let (frames_tx, frames_rx) = river_mesh::udp::frames();
    let out = Uplink::new(client.connection().clone()).flow(id, frames_tx);
    let sock = sock.clone();
    let stream = tokio::spawn(async move {
        let from_far = async {
            let mut reader = river_mesh::MsgReader::new(&mut recv);
            while let Ok(Some(frame)) = reader.next::<UdpFrame>().await {
                match frame {
                    UdpFrame::Packet(p) => {
                        let _ = sock.send_to(&p, peer).await;
                    }
                    UdpFrame::Dropped { count, why } => say_dropped(peer, count, &why),
                }
            }
        };
        tokio::select! {
            () = from_far => {}
            () = river_mesh::udp::write_frames(&mut send, frames_rx) => {}
        }
    });
    Ok(Flow {
        id,
        out,
        drops: Drops::default(),
        last: std::time::Instant::now(),
        stream,
    })
}
