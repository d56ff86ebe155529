//! A `Forward` stream from the host: one TCP connection to a port inside a task. For a container
//! the socket is made inside the container's network namespace — so a server bound to the
//! container's loopback (Jupyter's default) is reached — by a thread that stays in that namespace
//! while connections keep coming (see [`netns`]); the runner's own threads never change
//! namespace. A `--no-container` task shares the node's network, so its port is on the node's
//! loopback.

use river_mesh::udp::{Drops, Uplink};
use river_mesh::{send_msg, Connection, MsgReader, RecvStream, SendStream};
use river_proto::msg::{parse_udp_datagram, ForwardOpen, ForwardReply, UdpFrame};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// This runner's forwarded UDP flows: the id of each flow's stream, and its end in the task.
#[derive(Default)]
pub(crate) struct UdpFlows {
    map: Mutex<HashMap<u64, Arc<TaskEnd>>>,
}

/// A flow's socket inside the task, and the packets it could not deliver there.
struct TaskEnd {
    sock: tokio::net::UdpSocket,
    drops: Drops,
    port: u16,
    task: u64,
}

impl TaskEnd {
    /// Delivers one packet to the task's port, counting it when it cannot be.
    async fn deliver(&self, packet: &[u8]) {
        if let Err(e) = self.sock.send(packet).await {
            self.refused(&e);
        }
    }

    fn refused(&self, e: &std::io::Error) {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            self.drops.add(&format!(
                "nothing listens on UDP port {} in task {}",
                self.port, self.task
            ));
        } else {
            self.drops
                .add(&format!("UDP port {} in task {}: {e}", self.port, self.task));
        }
    }
}

/// Datagrams from the host to the flows' sockets, until the connection closes.
pub(crate) async fn udp_in(conn: Connection, flows: Arc<UdpFlows>) {
    while let Ok(d) = conn.read_datagram().await {
        let Some((flow, packet)) = parse_udp_datagram(&d) else {
            continue;
        };
        let end = flows.map.lock().ok().and_then(|m| m.get(&flow).cloned());
        if let Some(end) = end {
            end.deliver(packet).await;
        }
    }
}

/// Runs `make` inside the network namespace of process `pid` (the node's own, here, when `None`):
/// sockets keep the namespace they were made in. `make` must not block.
async fn in_netns<T: Send + 'static>(
    pid: Option<i64>,
    make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    match pid {
        None => make(),
        Some(pid) => netns::run(pid, make).await,
    }
}

pub(crate) mod netns {
    //! One thread per network namespace in use, parked in it, making sockets on request. Making a
    //! thread per connection (spawn, open the namespace, `setns`) was a large part of a new
    //! forwarded connection's time on the runner. A thread ends after [`IDLE`] without work, and
    //! is replaced when its process's namespace is no longer the one it is in (the task ended
    //! and the pid was reused).

    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    /// How long a namespace's thread waits for more work before it ends.
    const IDLE: Duration = Duration::from_secs(60);

    type Job = Box<dyn FnOnce() + Send>;

    /// A namespace's thread: where to send it work, which namespace (inode) it is in, and which
    /// thread it is (to tell it from a successor).
    struct Parked {
        jobs: mpsc::Sender<Job>,
        ns: u64,
        id: u64,
        /// A TCP (IPv4) socket made ahead in the namespace: a new forwarded connection takes it
        /// without waiting for the thread, which makes the next one meanwhile.
        spare: Option<tokio::net::TcpSocket>,
    }

    fn threads() -> &'static Mutex<HashMap<i64, Parked>> {
        static THREADS: OnceLock<Mutex<HashMap<i64, Parked>>> = OnceLock::new();
        THREADS.get_or_init(Mutex::default)
    }

    fn lock() -> std::sync::MutexGuard<'static, HashMap<i64, Parked>> {
        // The map stays consistent whatever panicked while holding it: every change is one call.
        threads().lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The inode of `pid`'s network namespace: what identifies the namespace.
    fn ns_of(pid: i64) -> std::io::Result<u64> {
        Ok(std::fs::metadata(format!("/proc/{pid}/ns/net"))?.ino())
    }

    /// Whether `pid`'s thread has a socket made ahead.
    #[cfg(test)]
    pub(crate) fn has_spare(pid: i64) -> bool {
        lock().get(&pid).is_some_and(|p| p.spare.is_some())
    }

    /// How many namespace threads are parked now.
    #[cfg(test)]
    pub(crate) fn parked() -> usize {
        lock().len()
    }

    /// Runs `make` on the thread parked in `pid`'s network namespace, starting one if needed.
    pub(super) async fn run<T: Send + 'static>(
        pid: i64,
        make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        run_in(pid, ns_of(pid)?, make).await
    }

    /// [`run`] for a caller that has just read `pid`'s namespace (`ns`).
    async fn run_in<T: Send + 'static>(
        pid: i64,
        ns: u64,
        make: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(make());
        });
        {
            let mut map = lock();
            // Sent under the lock: a thread leaving takes itself out of the map under it too,
            // then runs what is left in its queue, so no job is lost in between.
            let unsent = match map.get(&pid).filter(|p| p.ns == ns) {
                Some(p) => p.jobs.send(job).err().map(|mpsc::SendError(back)| back),
                None => Some(job),
            };
            if let Some(job) = unsent {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let id = NEXT.fetch_add(1, Ordering::Relaxed);
                let jobs = spawn(pid, ns, id)?;
                // If the thread cannot enter the namespace it drops the job: the caller hears so.
                let _ = jobs.send(job);
                map.insert(
                    pid,
                    Parked {
                        jobs,
                        ns,
                        id,
                        spare: None,
                    },
                );
            }
        }
        rx.await
            .map_err(|_| std::io::Error::other(format!("could not enter the network namespace of process {pid}")))?
    }

    /// An IPv4 TCP socket in `pid`'s namespace: the spare one made ahead when there is one, and
    /// a spare made for the next caller either way.
    pub(super) async fn tcp_v4(pid: i64) -> std::io::Result<tokio::net::TcpSocket> {
        let ns = ns_of(pid)?;
        let spare = lock().get_mut(&pid).filter(|p| p.ns == ns).and_then(|p| p.spare.take());
        let socket = match spare {
            Some(s) => s,
            None => run_in(pid, ns, tokio::net::TcpSocket::new_v4).await?,
        };
        refill(pid, ns);
        Ok(socket)
    }

    /// Asks `pid`'s thread (in namespace `ns`) to make a spare socket, unless it has one.
    fn refill(pid: i64, ns: u64) {
        let map = lock();
        let Some(p) = map.get(&pid).filter(|p| p.ns == ns && p.spare.is_none()) else {
            return;
        };
        let id = p.id;
        let _ = p.jobs.send(Box::new(move || {
            let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                return;
            };
            if let Some(p) = lock().get_mut(&pid).filter(|p| p.id == id) {
                p.spare = Some(socket);
            }
        }));
    }

    /// A thread in `pid`'s namespace (checked to be `ns`), running jobs until idle.
    fn spawn(pid: i64, ns: u64, id: u64) -> std::io::Result<mpsc::Sender<Job>> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("river-netns-{pid}"))
            .spawn(move || {
                let entered = super::enter_netns(pid).is_ok() && ns_of(pid).ok() == Some(ns);
                if entered {
                    while let Ok(job) = rx.recv_timeout(IDLE) {
                        job();
                    }
                }
                {
                    let mut map = lock();
                    if map.get(&pid).is_some_and(|p| p.id == id) {
                        map.remove(&pid);
                    }
                }
                // Jobs sent before this thread left the map: run them (or, outside the
                // namespace, drop them so their callers hear it).
                while let Ok(job) = rx.try_recv() {
                    if entered {
                        job();
                    }
                }
            })?;
        Ok(tx)
    }
}

/// A UDP socket connected to `port` on the loopback of `pid`'s network namespace.
async fn udp_in_netns(pid: Option<i64>, port: u16) -> std::io::Result<tokio::net::UdpSocket> {
    let s = in_netns(pid, move || {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        s.connect((Ipv4Addr::LOCALHOST, port))?;
        s.set_nonblocking(true)?;
        river_mesh::enlarge_udp_buffers(&s);
        Ok(s)
    })
    .await?;
    tokio::net::UdpSocket::from_std(s)
}

/// Serves one forwarded UDP flow until its stream ends: the task's answers go back as datagrams
/// (on the stream when too large for one), packets too large for a datagram arrive on the stream,
/// and what could not be delivered is reported on it.
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
        Ok(s) => s,
        Err(why) => {
            let _ = send_msg(&mut send, &ForwardReply::Refused(why)).await;
            let _ = send.finish();
            return;
        }
    };
    let flow = u64::from(recv.id());
    let end = Arc::new(TaskEnd {
        sock,
        drops: Drops::default(),
        port: req.port,
        task: req.task,
    });
    if let Ok(mut m) = flows.map.lock() {
        m.insert(flow, end.clone());
    }
    if send_msg(&mut send, &ForwardReply::Ok).await.is_ok() {
        let (frames_tx, frames_rx) = river_mesh::udp::frames();
        let out = Uplink::new(conn).flow(flow, frames_tx);
        // What the host sends on the stream, until it ends the flow.
        let from_host = async {
            let mut reader = MsgReader::new(&mut recv);
            while let Ok(Some(frame)) = reader.next::<UdpFrame>().await {
                if let UdpFrame::Packet(p) = frame {
                    end.deliver(&p).await;
                }
            }
        };
        let to_host = async {
            let mut buf = vec![0u8; 65_536];
            let mut report = tokio::time::interval(river_mesh::udp::REPORT_EVERY);
            loop {
                tokio::select! {
                    r = end.sock.recv(&mut buf) => match r {
                        Ok(n) => {
                            if let Err(why) = out.push(&buf[..n]) {
                                tracing::debug!(flow, "dropped a UDP packet for the host: {why}");
                            }
                        }
                        // An earlier packet found no one listening (ICMP port unreachable).
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => end.refused(&e),
                        Err(_) => return,
                    },
                    _ = report.tick() => end.drops.report_to(&out),
                }
            }
        };
        tokio::select! {
            () = from_host => {}
            () = to_host => {}
            () = river_mesh::udp::write_frames(&mut send, frames_rx) => {}
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
    // Only the socket is made in the namespace; connecting waits on this runtime, so a port that
    // never answers holds up nobody else's connection.
    let socket = match pid {
        Some(pid) if addr.is_ipv4() => netns::tcp_v4(pid).await?,
        _ => {
            in_netns(pid, move || {
                if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                }
            })
            .await?
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
        Ok(connected) => connected,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Moves this thread into the network namespace of `pid`.
#[allow(unsafe_code)]
fn enter_netns(pid: i64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    // SAFETY: setns(2) with a namespace file we hold open; it changes only this thread, which
    // exists to stay in that namespace (see `netns`).
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use tokio::io::AsyncReadExt as _;

    /// A process in a network namespace of its own, with its loopback up; killed on drop.
    struct Isolated(std::process::Child);

    impl Drop for Isolated {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn isolated() -> Option<Isolated> {
        if !crate::process::running_as_root() {
            eprintln!("skipped: entering network namespaces needs root");
            return None;
        }
        let child = std::process::Command::new("unshare")
            .args(["--net", "sh", "-c", "ip link set lo up && echo up && exec sleep 60"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("unshare runs");
        let mut child = Isolated(child);
        let mut up = [0u8; 3];
        child
            .0
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut up)
            .expect("the namespace came up");
        Some(child)
    }

    #[tokio::test]
    async fn connects_inside_another_network_namespace_from_one_parked_thread() {
        let Some(child) = isolated() else { return };
        let pid = i64::from(child.0.id());
        let listener = netns::run(pid, || std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();

        // From the node's own namespace that loopback port is not the task's.
        let _ = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port));
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "the node's loopback reached the task's listener"
        );

        // Through the namespace it is, both ways.
        let mut inside = connect_in(Some(pid), port).await.unwrap();
        listener.set_nonblocking(false).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        accepted.write_all(b"hello from inside").unwrap();
        let mut got = [0u8; 17];
        inside.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello from inside");

        // The next connection takes the socket made ahead meanwhile, made in the namespace too.
        for _ in 0..100 {
            if netns::has_spare(pid) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(netns::has_spare(pid), "no socket was made ahead");
        let mut again = connect_in(Some(pid), port).await.unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut accepted = None;
        for _ in 0..100 {
            if let Ok((a, _)) = listener.accept() {
                accepted = Some(a);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let mut accepted = accepted.expect("the second connection reached the task's listener");
        accepted.set_nonblocking(false).unwrap();
        accepted.write_all(b"spare").unwrap();
        let mut got = [0u8; 5];
        again.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"spare");

        // Nothing listening there: refused, as the user is told.
        let closed = netns::run(pid, || std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap();
        let free = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = connect_in(Some(pid), free).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

        // The same thread serves every connection into the namespace.
        let a = netns::run(pid, || Ok(std::thread::current().id())).await.unwrap();
        let b = netns::run(pid, || Ok(std::thread::current().id())).await.unwrap();
        assert_eq!(a, b);
        assert!(netns::parked() >= 1);

        // Once the process is gone its namespace cannot be entered.
        drop(child);
        let gone = connect_in(Some(pid), port).await.unwrap_err();
        assert_eq!(gone.kind(), std::io::ErrorKind::NotFound, "{gone}");
    }
}
