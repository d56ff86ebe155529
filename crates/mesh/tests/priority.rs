//! Liveness traffic must not queue behind bulk data on the same connection: heartbeats ride their
//! own stream with a raised send priority. This pushes a large transfer and small "heartbeats" over
//! one real QUIC connection (our TLS and transport configs, loopback) and bounds how late the
//! heartbeats arrive. It also prints, for comparison, how long a byte queued behind the bulk data on
//! the bulk stream itself took: on loopback the flow-control windows drain in milliseconds, so that
//! is small here too; on a slow link it grows with the windows (8 MiB per stream, 32 MiB per
//! connection), which is why liveness never shares a stream with data.

mod support;

use river_mesh::connect;
use std::time::{Duration, Instant};

const BULK: usize = 256 << 20;

/// Returns the worst heartbeat round trip during the transfer, and how long a byte queued behind
/// the bulk data took to arrive.
async fn delays() -> (Duration, Duration) {
    let support::Endpoints {
        server,
        addr,
        client: endpoint,
        client_cfg: cfg,
    } = support::endpoints();
    // The host side: drains the bulk stream, answers each heartbeat byte at once.
    let srv = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (_bs, mut bulk) = conn.accept_bi().await.unwrap();
        let (mut hs, mut hb) = conn.accept_bi().await.unwrap();
        // The bulk stream's last byte is the control's "heartbeat": report when it arrives.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Instant>();
        tokio::spawn(async move {
            while bulk.read_chunk(1 << 20, true).await.unwrap().is_some() {}
            let _ = done_tx.send(Instant::now());
        });
        DONE.lock().unwrap().replace(done_rx);
        let mut b = [0u8; 1];
        while hb.read_exact(&mut b).await.is_ok() {
            hs.write_all(&b).await.unwrap();
        }
    });

    let conn = connect(&endpoint, addr, cfg).await.unwrap();
    let (mut bulk, _br) = conn.open_bi().await.unwrap();
    bulk.write_all(&[0]).await.unwrap();
    let (mut hs, mut hr) = conn.open_bi().await.unwrap();
    hs.set_priority(100).unwrap();
    hs.write_all(&[0]).await.unwrap();
    let mut b = [0u8; 1];
    hr.read_exact(&mut b).await.unwrap();

    let pusher = tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![7u8; 1 << 20]);
        for _ in 0..BULK >> 20 {
            bulk.write_chunk(chunk.clone()).await.unwrap();
        }
        // The control: one more byte, queued behind everything above.
        let queued = Instant::now();
        bulk.write_all(&[1]).await.unwrap();
        bulk.finish().unwrap();
        queued
    });
    let mut worst = Duration::ZERO;
    while !pusher.is_finished() {
        let t = Instant::now();
        hs.write_all(&[1]).await.unwrap();
        hr.read_exact(&mut b).await.unwrap();
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued = pusher.await.unwrap();
    let done = DONE.lock().unwrap().take().unwrap();
    let arrived = done.await.unwrap();
    conn.close(0u32.into(), b"");
    srv.abort();
    (worst, arrived.saturating_duration_since(queued))
}

static DONE: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<Instant>>> = std::sync::Mutex::new(None);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_not_delayed_by_bulk_data() {
    let (heartbeat, behind_bulk) = delays().await;
    eprintln!("during {} MiB of bulk: worst heartbeat round trip {heartbeat:?}; a byte queued behind the bulk data took {behind_bulk:?}", BULK >> 20);
    assert!(
        heartbeat < Duration::from_millis(500),
        "a heartbeat waited {heartbeat:?} behind bulk data"
    );
}
