//! The mesh transport alone, without TCP at either end: bulk throughput, CPU per Gbit/s and a
//! 1-byte round trip over one QUIC hop (client → server, as `ssh -L` has one encrypted hop)
//! against two hops through a relay that decrypts and re-encrypts (client → host → runner, as
//! `river forward` has), and against one hop whose packets a relay forwards without decrypting
//! them (a TURN-style relay: what an end-to-end encrypted forward through the host would cost).
//! Everything uses river's own transport settings, certificates and relay
//! (`river_mesh::pipe`); each party runs on its own thread with its own single-threaded runtime,
//! so the three share the machine's cores as three processes would.
//!
//! This is the ceiling the forward benchmark works under: a forward can carry no more than two
//! hops of the mesh carry, less what its TCP ends cost.

use crate::forward::pct;
use bytes::Bytes;
use river_mesh::{client_config, client_endpoint, connect, server_config, server_endpoint, Identity, Trust};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the first byte of a stream asks the sink for.
const BULK: u8 = b'B';
const ECHO: u8 = b'E';

struct Certs {
    ca_der: Vec<u8>,
    server: river_pki::Issued,
    client: river_pki::Issued,
}

impl Certs {
    fn server_config(&self) -> anyhow::Result<river_mesh::ServerConfig> {
        let id = Identity::from_pem(&self.server.cert_pem, &self.server.key_pem)?;
        Ok(server_config(id, &self.ca_der)?)
    }

    fn client_config(&self) -> anyhow::Result<river_mesh::ClientConfig> {
        let id = Identity::from_pem(&self.client.cert_pem, &self.client.key_pem)?;
        Ok(client_config(Some(id), Trust::Ca(self.ca_der.clone()))?)
    }
}

pub fn run(secs: u64) -> anyhow::Result<()> {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?;
    let ca = river_pki::Ca::generate("bench", now)?;
    let certs = std::sync::Arc::new(Certs {
        ca_der: ca.cert_der().to_vec(),
        server: ca.issue_host(&[], now, 3600)?,
        client: ca.issue_user_with_key("bench", now, 3600)?,
    });

    let sink = spawn("sink", {
        let certs = certs.clone();
        move |ready| async move { sink(certs.server_config()?, ready).await }
    })?;
    let relay = spawn("relay", {
        let certs = certs.clone();
        move |ready| async move { relay(certs.server_config()?, certs.client_config()?, sink, ready).await }
    })?;

    let forwarder = spawn("forwarder", move |ready| async move { forwarder(sink, ready).await })?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let duration = Duration::from_secs(secs);
    println!("mesh transport alone, {secs} s per run, interleaved, best of 3 (client, relay and server threads)");
    println!("| path | 1 stream | 4 streams | CPU per Gbit/s (1 stream) | 1-byte round trip p50 | p99 | new stream + echo p50 |");
    println!("|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for (name, addr) in [
        ("one hop (client → server)", sink),
        ("two hops (client → relay → server)", relay),
        ("one hop, its packets forwarded undecrypted by a relay", forwarder),
    ] {
        rows.push((name, addr, [0.0f64; 2], f64::NAN));
    }
    for _ in 0..3 {
        for row in &mut rows {
            for (i, streams) in [1usize, 4].into_iter().enumerate() {
                let (gbit, cpu) = rt.block_on(bulk(&certs, row.1, streams, duration))?;
                if gbit > row.2[i] {
                    row.2[i] = gbit;
                    if streams == 1 {
                        row.3 = cpu / gbit;
                    }
                }
            }
        }
    }
    // Round trips vary from run to run with how the threads land on the cores: best of 3 too.
    let mut echoes = vec![(f64::INFINITY, f64::NAN, f64::NAN); rows.len()];
    for _ in 0..3 {
        for (row, best) in rows.iter().zip(echoes.iter_mut()) {
            let e = rt.block_on(echo(&certs, row.1, 1000))?;
            if e.0 < best.0 {
                *best = e;
            }
        }
    }
    for ((name, _, gbit, cpu), (r50, r99, n50)) in rows.into_iter().zip(echoes) {
        println!(
            "| {name} | {:.2} Gbit/s | {:.2} Gbit/s | {cpu:.2} core·s/Gbit | {r50:.0} µs | {r99:.0} µs | {n50:.0} µs |",
            gbit[0], gbit[1]
        );
    }
    Ok(())
}

/// Runs a party on a thread of its own (one single-threaded runtime); returns the address it
/// listens on, which the party reports through the sender it is given.
fn spawn<F, Fut>(name: &str, f: F) -> anyhow::Result<SocketAddr>
where
    F: FnOnce(Ready) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return tx.send(Err(anyhow::Error::from(e))).unwrap_or(()),
        };
        if let Err(e) = rt.block_on(f(tx.clone())) {
            let _ = tx.send(Err(e));
        }
    })?;
    rx.recv()?
}

type Ready = mpsc::Sender<anyhow::Result<SocketAddr>>;

/// The server end: answers streams as [`serve_stream`] says.
async fn sink(cfg: river_mesh::ServerConfig, ready: Ready) -> anyhow::Result<()> {
    let endpoint = server_endpoint("127.0.0.1:0".parse()?, cfg)?;
    ready.send(Ok(endpoint.local_addr()?))?;
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(serve_stream(send, recv));
            }
        });
    }
    Ok(())
}

/// Bulk: counts what arrives until the end, then answers the count. Echo: sends back what arrives.
async fn serve_stream(mut send: river_mesh::SendStream, mut recv: river_mesh::RecvStream) {
    let mut first = [0u8; 1];
    if recv.read_exact(&mut first).await.is_err() {
        return;
    }
    if first[0] == BULK {
        let mut n = 0u64;
        let mut chunks: [Bytes; 32] = std::array::from_fn(|_| Bytes::new());
        while let Ok(Some(k)) = recv.read_chunks(&mut chunks).await {
            n += chunks[..k].iter().map(|c| c.len() as u64).sum::<u64>();
        }
        let _ = send.write_all(&n.to_be_bytes()).await;
        let _ = send.finish();
        let _ = send.stopped().await;
    } else {
        let mut buf = [0u8; 64];
        while let Ok(Some(k)) = recv.read(&mut buf).await {
            if send.write_all(&buf[..k]).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    }
}

/// The middle: one connection to the server, as the host has to a runner; every stream that
/// arrives is relayed to a new stream on it by the host's own relay.
async fn relay(
    cfg: river_mesh::ServerConfig,
    up_cfg: river_mesh::ClientConfig,
    sink: SocketAddr,
    ready: Ready,
) -> anyhow::Result<()> {
    let up_endpoint = client_endpoint(sink)?;
    let upstream = connect(&up_endpoint, sink, up_cfg).await?;
    let endpoint = server_endpoint("127.0.0.1:0".parse()?, cfg)?;
    ready.send(Ok(endpoint.local_addr()?))?;
    while let Some(incoming) = endpoint.accept().await {
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((mut down_send, mut down_recv)) = conn.accept_bi().await {
                let Ok((mut up_send, mut up_recv)) = upstream.open_bi().await else {
                    return;
                };
                tokio::spawn(async move {
                    let _ = river_mesh::pipe(&mut down_recv, &mut up_send).await;
                });
                tokio::spawn(async move {
                    let _ = river_mesh::pipe(&mut up_recv, &mut down_send).await;
                });
            }
        });
    }
    Ok(())
}

/// A relay that does not take part in QUIC: it forwards the client's UDP datagrams to the server
/// and the server's back to the last client heard from, as a TURN server would, in batches (GRO
/// to receive, GSO to send, as quinn itself does). What one encrypted hop costs when a host in
/// the middle only moves packets.
async fn forwarder(server: SocketAddr, ready: Ready) -> anyhow::Result<()> {
    use std::sync::Arc;
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
    ready.send(Ok(front.local_addr()?))?;
    let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let down = tokio::spawn(shuttle(back.clone(), front.clone(), None, client.clone()));
    shuttle(front, back, Some(server), client).await?;
    down.abort();
    Ok(())
}

/// Moves datagrams from `from` to `to`: to `server` when given (remembering who sent them in
/// `client`), else back to `client`.
async fn shuttle(
    from: std::sync::Arc<tokio::net::UdpSocket>,
    to: std::sync::Arc<tokio::net::UdpSocket>,
    server: Option<SocketAddr>,
    client: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>>,
) -> anyhow::Result<()> {
    use std::io::IoSliceMut;
    let rx = quinn_udp::UdpSocketState::new((&*from).into())?;
    let tx = quinn_udp::UdpSocketState::new((&*to).into())?;
    let mut bufs = vec![vec![0u8; 65536]; 8];
    let mut meta = vec![quinn_udp::RecvMeta::default(); 8];
    loop {
        from.readable().await?;
        let n = {
            let mut slices: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            match from.try_io(tokio::io::Interest::READABLE, || {
                rx.recv((&*from).into(), &mut slices, &mut meta)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        };
        for (m, buf) in meta.iter().zip(&bufs).take(n) {
            let destination = match server {
                Some(s) => {
                    *client.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(m.addr);
                    s
                }
                None => match *client.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
                    Some(c) => c,
                    None => continue,
                },
            };
            let transmit = quinn_udp::Transmit {
                destination,
                ecn: None,
                contents: &buf[..m.len],
                segment_size: (m.len > m.stride).then_some(m.stride),
                src_ip: None,
            };
            loop {
                to.writable().await?;
                match to.try_io(tokio::io::Interest::WRITABLE, || tx.send((&*to).into(), &transmit)) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => break,
                }
            }
        }
    }
}

/// CPU time (user + system) of this whole process, in seconds.
fn process_cpu() -> f64 {
    crate::proc::cpu_secs(std::process::id()).unwrap_or(f64::NAN)
}

/// `streams` streams each send for `duration`; returns Gbit/s (all streams) and the CPU seconds
/// the process spent per second of the run (cores busy).
async fn bulk(certs: &Certs, addr: SocketAddr, streams: usize, duration: Duration) -> anyhow::Result<(f64, f64)> {
    let endpoint = client_endpoint(addr)?;
    let conn = connect(&endpoint, addr, certs.client_config()?).await?;
    let block = Bytes::from(vec![0x5au8; 64 * 1024]);
    let cpu0 = process_cpu();
    let start = Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let (conn, block) = (conn.clone(), block.clone());
        runs.spawn(async move {
            let (mut send, mut recv) = conn.open_bi().await?;
            send.write_all(&[BULK]).await?;
            let mut sent = 0u64;
            while start.elapsed() < duration {
                send.write_chunk(block.clone()).await?;
                sent += block.len() as u64;
            }
            send.finish()?;
            let mut n = [0u8; 8];
            recv.read_exact(&mut n).await?;
            let n = u64::from_be_bytes(n);
            anyhow::ensure!(n == sent, "the server counted {n} bytes of {sent}");
            anyhow::Ok(n)
        });
    }
    let mut total = 0u64;
    while let Some(r) = runs.join_next().await {
        total += r??;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (process_cpu() - cpu0) / secs;
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    #[allow(clippy::cast_precision_loss)]
    Ok((total as f64 * 8.0 / secs / 1e9, cpu))
}

/// 1-byte round trips over one stream (p50, p99), and new stream + first echo (p50), in µs.
async fn echo(certs: &Certs, addr: SocketAddr, n: usize) -> anyhow::Result<(f64, f64, f64)> {
    let endpoint = client_endpoint(addr)?;
    let conn = connect(&endpoint, addr, certs.client_config()?).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&[ECHO]).await?;
    let mut rtt = Vec::with_capacity(n);
    let mut b = [0u8; 1];
    for i in 0..n + 50 {
        let t = Instant::now();
        send.write_all(b"x").await?;
        recv.read_exact(&mut b).await?;
        if i >= 50 {
            rtt.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let mut fresh = Vec::with_capacity(n / 4);
    for _ in 0..n / 4 {
        let t = Instant::now();
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&[ECHO, b'x']).await?;
        recv.read_exact(&mut b).await?;
        fresh.push(t.elapsed().as_secs_f64() * 1e6);
        let _ = send.finish();
    }
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    Ok((pct(&mut rtt, 0.5), pct(&mut rtt, 0.99), pct(&mut fresh, 0.5)))
}
