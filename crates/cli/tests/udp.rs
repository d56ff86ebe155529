//! `river forward --udp` as a user runs it: a burst arrives whole, a datagram larger than the
//! mesh's path carries arrives intact, and what cannot be delivered is counted and said. Real
//! `river host` and runner processes; the task's server is a real process on the node.

#[path = "support/binary.rs"]
mod binary;

use binary::*;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// A UDP server on the node's loopback at `port`: counts the datagrams it is sent, answers
/// `count?` with that count, and echoes anything starting with `echo`.
fn server(port: u16) -> String {
    format!(
        "import socket\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,4<<20)\n\
         s.bind(('127.0.0.1',{port}))\n\
         n=0\n\
         while True:\n\
         \x20 d,a=s.recvfrom(65535)\n\
         \x20 if d==b'count?': s.sendto(b'%d'%n,a)\n\
         \x20 elif d.startswith(b'echo'): s.sendto(d,a)\n\
         \x20 else: n+=1\n"
    )
}

/// Sends `msg` through the forward at `local` until an answer comes back (UDP may lose the
/// question or the answer), for up to `limit`.
fn ask(sock: &UdpSocket, local: &str, msg: &[u8], limit: Duration) -> Option<Vec<u8>> {
    let start = Instant::now();
    let mut buf = vec![0u8; 65_536];
    while start.elapsed() < limit {
        sock.send_to(msg, local).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

#[test]
fn a_udp_burst_and_large_datagrams_arrive_whole() {
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, cfg) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &cfg, &listen, "udp-node");
    let port = free_port();
    let id = running_task(&cfg, &["--no-container", "--", "python3", "-c", &server(port)]);
    let (mut fwd, local, said) = spawn_forward(&cfg, &[&id, &port.to_string(), "--udp"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    // The flow is open once the server answers.
    assert_eq!(
        ask(&client, &local, b"echo-ready", Duration::from_secs(30)).as_deref(),
        Some(&b"echo-ready"[..])
    );

    // A burst as fast as this process can send it: 2,000 datagrams of 1,200 bytes (2.4 MB). The
    // old forward delivered about a quarter of such a burst and said nothing.
    let packet = vec![7u8; 1200];
    for _ in 0..2000 {
        client.send_to(&packet, &local).unwrap();
    }
    let mut count = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let answer = ask(&client, &local, b"count?", Duration::from_secs(10)).expect("the server answers");
        count = String::from_utf8_lossy(&answer).parse::<u64>().unwrap();
        if count >= 2000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let stderr: Vec<String> = said.try_iter().collect();
    assert_eq!(
        count, 2000,
        "datagrams of the burst that reached the task; the forward said {stderr:?}"
    );

    // Datagrams larger than a QUIC datagram on this path (about 1,400 bytes) arrive intact, both
    // ways, up to the largest UDP payload.
    for size in [1_500usize, 9_000, 65_507] {
        let mut big = b"echo".to_vec();
        big.extend((0..size - 4).map(|i| (i % 251) as u8));
        let back = ask(&client, &local, &big, Duration::from_secs(30));
        assert_eq!(
            back.as_ref().map(Vec::len),
            Some(size),
            "a {size}-byte datagram and its echo"
        );
        assert!(back.unwrap() == big, "the {size}-byte echo came back changed");
    }
    let _ = fwd.kill();
    let _ = fwd.wait();
}

#[test]
fn datagrams_nothing_receives_are_counted_and_said() {
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, cfg) = host_process(d.path(), &listen);
    let _runner = runner_process(d.path(), &cfg, &listen, "udp-quiet");
    let id = running_task(&cfg, &["--no-container", "--", "sleep", "600"]);
    // Nothing listens on this port inside the task.
    let port = free_port();
    let (mut fwd, local, said) = spawn_forward(&cfg, &[&id, &port.to_string(), "--udp"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut heard = Vec::new();
    let start = Instant::now();
    let found = loop {
        client.send_to(b"anyone?", &local).unwrap();
        if let Ok(line) = said.recv_timeout(Duration::from_millis(200)) {
            heard.push(line.clone());
            if line.contains("not delivered") {
                break Some(line);
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            break None;
        }
    };
    let line = found.unwrap_or_else(|| panic!("the forward never said datagrams were lost; it said {heard:?}"));
    assert!(
        line.contains(&format!("port {port}")) && line.contains("nothing listens"),
        "{line}"
    );
    let _ = fwd.kill();
    let _ = fwd.wait();
}
