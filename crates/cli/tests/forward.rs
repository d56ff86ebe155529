//! `Forward` streams end to end, in process: a real host and runner, real containers, bytes
//! through a server bound to the container's loopback and an echo server.

#[path = "support/docker.rs"]
mod docker;
#[path = "support/harness.rs"]
mod harness;

use docker::*;
use harness::*;
use river_mesh::{recv_msg, send_msg, RecvStream, SendStream};
use river_proto::msg::{ForwardOpen, ForwardReply};
use river_proto::StreamKind;
use sha2::Digest as _;
use std::time::Duration;

/// A web server on the container's loopback only (port 8080) and an echo server (port 9000).
const SERVERS: &str = "mkdir -p /www && echo hello-from-loopback > /www/index.html \
    && for i in $(seq 0 49); do seq $i 9999 > /www/p$i; done \
    && httpd -p 127.0.0.1:8080 -h /www && exec nc -ll -p 9000 -e cat";

async fn forward(conn: &river_mesh::Connection, task: u64, port: u16) -> Result<(SendStream, RecvStream), String> {
    let (mut send, mut recv) = river_mesh::open(conn, StreamKind::Forward).await.unwrap();
    send_msg(&mut send, &ForwardOpen { task, port, udp: false })
        .await
        .unwrap();
    match recv_msg::<ForwardReply>(&mut recv).await.unwrap() {
        Some(ForwardReply::Ok) => Ok((send, recv)),
        Some(ForwardReply::Refused(why)) => Err(why),
        None => Err("no answer".into()),
    }
}

/// Sends `data` and reads what comes back until the far side finishes, both at once.
async fn echo(conn: &river_mesh::Connection, task: u64, data: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = forward(conn, task, 9000).await.expect("forward");
    let write = async {
        send.write_all(data).await.unwrap();
        send.finish().unwrap();
    };
    let read = async { recv.read_to_end(usize::MAX).await.unwrap() };
    tokio::join!(write, read).1
}

fn sha(b: &[u8]) -> Vec<u8> {
    sha2::Sha256::digest(b).to_vec()
}

async fn servers(conn: &river_mesh::Connection) -> u64 {
    let id = submit(conn, spec(SERVERS)).await[0];
    wait_state(conn, id, &["running"]).await;
    // Until the echo server listens.
    for _ in 0..100 {
        if forward(conn, id, 9000).await.is_ok() {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the servers in task {id} never listened");
}

#[tokio::test]
async fn forwards_reach_loopback_carry_bytes_intact_and_refuse_clearly() {
    if !docker_ready().await {
        return;
    }
    let d = tmp();
    let (host, runner, conn) = cluster(d.path(), "f1").await;
    let id = servers(&conn).await;

    // A server bound to the container's own 127.0.0.1 is reached.
    let (mut send, mut recv) = forward(&conn, id, 8080).await.expect("forward to httpd");
    send.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await.unwrap();
    send.finish().unwrap();
    let page = String::from_utf8(recv.read_to_end(1 << 20).await.unwrap()).unwrap();
    assert!(
        page.starts_with("HTTP/1.") && page.contains("hello-from-loopback"),
        "{page}"
    );

    // Several MB both ways at once, intact; finishing our side (half-close) lets the echo finish.
    let data: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let back = echo(&conn, id, &data).await;
    assert_eq!((back.len(), sha(&back)), (data.len(), sha(&data)));

    // 50 connections at once, each its own bytes (httpd serves each from a process of its own).
    // Their connects are spread over 100 ms: busybox httpd listens with a backlog of 9, and 50
    // SYNs at the same instant overflow it — a client inside the container sees resets then too.
    let all = futures_util::future::join_all((0..50u32).map(|i| {
        let conn = conn.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(u64::from(i) * 2)).await;
            let (mut send, mut recv) = forward(&conn, id, 8080).await.expect("forward");
            send.write_all(format!("GET /p{i} HTTP/1.0\r\n\r\n").as_bytes())
                .await
                .unwrap();
            send.finish().unwrap();
            let page = String::from_utf8(recv.read_to_end(1 << 20).await.unwrap()).unwrap();
            let body = page.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
            let want: String = (i..=9999).map(|n| format!("{n}\n")).collect();
            (body == want, i)
        }
    }))
    .await;
    let wrong: Vec<u32> = all.iter().filter(|x| !x.0).map(|x| x.1).collect();
    assert!(wrong.is_empty(), "connections with wrong bytes: {wrong:?}");

    // A slow reader: the writer is held back (flow control end to end), memory stays bounded.
    let (mut send, mut recv) = forward(&conn, id, 9000).await.unwrap();
    let chunk = vec![7u8; 1 << 20];
    let mut written = 0usize;
    let stalled = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            send.write_all(&chunk).await.unwrap();
            written += chunk.len();
        }
    })
    .await;
    assert!(stalled.is_err(), "the writer never stalled");
    assert!(written < 48 << 20, "{written} bytes written with no one reading");
    let got = recv.read_chunk(1 << 20, true).await.unwrap().unwrap();
    assert!(got.bytes.iter().all(|&b| b == 7));
    drop((send, recv));

    // Nothing listening, someone else's task, a task that is not running: refused with the reason.
    let why = forward(&conn, id, 9999).await.unwrap_err();
    assert!(
        why.contains("connection refused inside task") && why.contains("9999"),
        "{why}"
    );
    let other = user_conn(&host, &conn, "eve").await;
    let why = forward(&other, id, 9000).await.unwrap_err();
    assert!(why.contains("belongs to"), "{why}");
    signal(&conn, id, river_proto::msg::Signal::Kill).await;
    wait_state(&conn, id, &["killed"]).await;
    let why = forward(&conn, id, 9000).await.unwrap_err();
    assert!(why.contains("is killed"), "{why}");
    runner.shutdown().await;
    host.shutdown().await;
}
