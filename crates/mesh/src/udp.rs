//! Forwarded UDP over the mesh, the parts every side shares (the CLI, the host's relay, the
//! runner). A flow's packets go as QUIC datagrams tagged with the id of the flow's stream when
//! they fit the path, and as [`UdpFrame::Packet`] on that stream when they do not, so a large
//! datagram is neither cut nor lost.
//!
//! A burst is queued, not dropped: the side reading a socket hands packets to an [`Uplink`]
//! without waiting, and one task per connection sends them as fast as QUIC's congestion control
//! lets it (`send_datagram_wait`). quinn's own datagram buffer drops the oldest datagram when it
//! is full, which lost three quarters of a 2,000-datagram burst. What still cannot go (the queue
//! is full, the connection ended, nothing listens in the task) is counted in [`Drops`] and
//! reported to the user.

use bytes::Bytes;
use quinn::{Connection, SendStream};
use river_proto::msg::{udp_datagram, UdpFrame};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Datagrams queued per connection: at most a path's datagram size each (≈ 1.4 KB), so about
/// 6 MB at most — a burst of several thousand packets.
const QUEUE: usize = 4096;

/// Stream frames queued per flow: a large packet each (up to 64 KiB), so 4 MiB at most.
const FRAMES: usize = 64;

/// The datagram side of one connection, shared by its flows.
#[derive(Clone)]
pub struct Uplink {
    conn: Connection,
    datagrams: mpsc::Sender<Bytes>,
}

impl Uplink {
    /// Starts the task that sends `conn`'s queued datagrams; it ends with the connection.
    pub fn new(conn: Connection) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let sender = conn.clone();
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                match sender.send_datagram_wait(d).await {
                    Ok(()) => {}
                    Err(quinn::SendDatagramError::ConnectionLost(_)) => return,
                    // The path shrank after the packet was queued: rare, and UDP may lose it.
                    Err(e) => tracing::debug!("dropped a forwarded UDP packet: {e}"),
                }
            }
        });
        Self { conn, datagrams: tx }
    }

    /// The sending side of flow `id` on this connection, whose stream frames go to `frames`.
    pub fn flow(&self, id: u64, frames: mpsc::Sender<UdpFrame>) -> FlowOut {
        FlowOut {
            up: self.clone(),
            id,
            frames,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }
}

/// A channel for a flow's stream frames, to be written by [`write_frames`].
pub fn frames() -> (mpsc::Sender<UdpFrame>, mpsc::Receiver<UdpFrame>) {
    mpsc::channel(FRAMES)
}

/// Writes `frames` on a flow's stream until the channel closes or the stream fails.
pub async fn write_frames(send: &mut SendStream, mut frames: mpsc::Receiver<UdpFrame>) {
    while let Some(f) = frames.recv().await {
        if crate::send_msg(send, &f).await.is_err() {
            return;
        }
    }
}

/// One flow's way toward the far end of one connection.
#[derive(Clone)]
pub struct FlowOut {
    up: Uplink,
    id: u64,
    frames: mpsc::Sender<UdpFrame>,
}

impl FlowOut {
    /// Queues `packet` without waiting: as a datagram when one holds it, else on the flow's
    /// stream. Says why when it cannot go.
    pub fn push(&self, packet: &[u8]) -> Result<(), &'static str> {
        let d = udp_datagram(self.id, packet);
        let fits = self.up.conn.max_datagram_size().is_some_and(|max| d.len() <= max);
        let queued = if fits {
            self.up.datagrams.try_send(d.into()).map_err(|e| full_or_closed(&e))
        } else {
            self.frames
                .try_send(UdpFrame::Packet(packet.to_vec()))
                .map_err(|e| full_or_closed(&e))
        };
        queued.map_err(|full| {
            if full {
                "the queue toward the far side was full (packets came faster than the mesh carries them)"
            } else {
                "the connection through the mesh ended"
            }
        })
    }

    /// Queues a report of dropped packets on the flow's stream (dropped itself when the stream's
    /// queue is full: the count carries over to the next report).
    pub fn report(&self, count: u64, why: String) -> bool {
        self.frames.try_send(UdpFrame::Dropped { count, why }).is_ok()
    }
}

fn full_or_closed<T>(e: &mpsc::error::TrySendError<T>) -> bool {
    matches!(e, mpsc::error::TrySendError::Full(_))
}

/// Packets a side could not pass on, counted until reported; the reason is the latest one.
#[derive(Default, Clone)]
pub struct Drops(Arc<Mutex<(u64, String)>>);

impl Drops {
    pub fn add(&self, why: &str) {
        if let Ok(mut d) = self.0.lock() {
            d.0 += 1;
            if d.1 != why {
                why.clone_into(&mut d.1);
            }
        }
    }

    /// The count and reason since the last call, if any were dropped.
    pub fn take(&self) -> Option<(u64, String)> {
        let mut d = self.0.lock().ok()?;
        (d.0 > 0).then(|| (std::mem::take(&mut d.0), std::mem::take(&mut d.1)))
    }

    /// Hands the count to `flow` as a report; keeps it when the report could not be queued.
    pub fn report_to(&self, flow: &FlowOut) {
        if let Some((count, why)) = self.take() {
            if !flow.report(count, why.clone()) {
                if let Ok(mut d) = self.0.lock() {
                    d.0 += count;
                    d.1 = why;
                }
            }
        }
    }
}

/// How often each side reports what it dropped.
pub const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_count_until_taken_and_keep_the_latest_reason() {
        let d = Drops::default();
        assert_eq!(d.take(), None);
        d.add("a");
        d.add("b");
        assert_eq!(d.take(), Some((2, "b".to_owned())));
        assert_eq!(d.take(), None);
    }
}
