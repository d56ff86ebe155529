//! The first frames (and replies) of the streams other than `Rpc` and `Control`: archives,
//! exports, terminals, forwards (and their UDP datagrams), SSH and logs.

use super::Secret;
use serde::{Deserialize, Serialize};

/// Runner → host on a `Blob` stream: the archive with this digest, from `offset` (a retry resumes
/// where the last attempt stopped). The host answers with a [`BlobReply`], then the bytes, raw,
/// and finishes the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    pub digest: String,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobReply {
    /// `size` is the whole archive's; the bytes from the offset follow.
    Ok {
        size: u64,
    },
    Missing {
        message: String,
    },
}

/// Host → runner on an `Export` stream: make `tag` from `source`, then answer with an
/// [`ExportReply`] and, when it is `Ok`, the `docker save` archive of `tag`, raw, to the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRequest {
    pub source: ExportSource,
    pub tag: String,
    /// Untag the image on the node once sent (a snapshot lives on the host, not on nodes).
    #[serde(default)]
    pub drop_after: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportSource {
    /// An image the node has, or pulls.
    Image(String),
    /// The container of a task running on the node, committed as it is now.
    Task(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportReply {
    /// Made; the archive follows. `size`: the image's size as the engine reports it, about what
    /// the archive will be (0: unknown), for a progress bar.
    Ok {
        image_id: String,
        #[serde(default)]
        size: u64,
    },
    Failed {
        message: String,
    },
}

/// First frame of a `Terminal` stream, from the user to the host and, once the host has checked
/// the user may reach the task, from the host to the task's runner. Then [`TermIn`] frames go
/// toward the container and [`TermOut`] frames come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalOpen {
    pub task: u64,
    /// Empty: the container's shell (bash if it has one, else sh).
    pub command: Vec<String>,
    /// A pseudo-terminal (interactive use); without one, stdout and stderr stay apart.
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TermIn {
    Input(Vec<u8>),
    Resize {
        rows: u16,
        cols: u16,
    },
    /// The user's input ended (closes the command's stdin).
    Eof,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TermOut {
    /// The command is running; input may follow.
    Started,
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command ended; the last frame.
    Exit {
        code: i64,
    },
    /// Refused or failed, with the reason; the last frame.
    Error(String),
}

/// First frame of a `Forward` stream, user → host → runner: connect to `port` inside the task's
/// network namespace (its loopback). The runner answers with a [`ForwardReply`]; after `Ok` the
/// stream carries the connection's bytes both ways, raw, and a finished side is a half-close —
/// or, for a UDP flow, [`UdpFrame`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardOpen {
    pub task: u64,
    pub port: u16,
    /// A UDP flow: the stream opens and closes it; packets travel as QUIC datagrams tagged with
    /// the stream's id (see [`udp_datagram`]), or on the stream as [`UdpFrame::Packet`] when a
    /// datagram cannot hold them.
    #[serde(default)]
    pub udp: bool,
}

/// A UDP packet of a forwarded flow as a QUIC datagram: the id of the flow's `Forward` stream on
/// that connection (8 bytes, big-endian), then the packet.
pub fn udp_datagram(flow: u64, packet: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + packet.len());
    d.extend_from_slice(&flow.to_be_bytes());
    d.extend_from_slice(packet);
    d
}

/// What a UDP flow's stream carries, each way, after [`ForwardReply::Ok`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UdpFrame {
    /// A packet larger than a QUIC datagram on this connection's path can hold (about 1,400
    /// bytes): it goes reliably, on the stream, so it is neither cut nor lost.
    Packet(Vec<u8>),
    /// Packets of this flow that a side could not pass on since its last report, and why (in
    /// words for the user); relayed to the user, who is told.
    Dropped { count: u64, why: String },
}

/// The flow id and packet of a datagram made by [`udp_datagram`]; `None` if it is too short.
pub fn parse_udp_datagram(d: &[u8]) -> Option<(u64, &[u8])> {
    let (id, packet) = d.split_at_checked(8)?;
    Some((u64::from_be_bytes(id.try_into().ok()?), packet))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardReply {
    Ok,
    /// Why not, in words for the user (refused by the host, or by the port inside the task).
    Refused(String),
}

/// First frame of an `Ssh` stream, host → runner: serve SSH for VPS `task` on this stream. The
/// runner answers with a [`ForwardReply`], then speaks SSH (as the server) on the stream's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshServe {
    pub task: u64,
    /// The public keys that may log in, as the host has them now.
    pub keys: Vec<String>,
    /// The VPS's host key, an Ed25519 seed (hex), the same wherever the VPS runs.
    pub host_key: Secret,
}

/// Host → runner on a `Logs` stream: one request, then the runner sends the bytes and finishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub id: u64,
    pub stderr: bool,
    /// Keep sending new output until the task ends.
    pub follow: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_datagrams_round_trip_and_short_ones_are_refused() {
        let d = udp_datagram(0x0102_0304_0506_0708, b"ping");
        assert_eq!(parse_udp_datagram(&d), Some((0x0102_0304_0506_0708, &b"ping"[..])));
        assert_eq!(parse_udp_datagram(&udp_datagram(7, b"")), Some((7, &b""[..])));
        assert_eq!(parse_udp_datagram(&[1, 2, 3]), None);
    }
}
