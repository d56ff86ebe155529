//! Stream header and length-prefixed frames.
//!
//! Every QUIC stream in river starts with a fixed 4-byte header, `b"RV"`, the protocol version and
//! the stream kind, so a peer knows what the stream carries before reading anything else. After the
//! header come frames: a big-endian `u32` length followed by that many bytes of postcard-encoded
//! message. A frame longer than [`MAX_FRAME_LEN`] is refused before any allocation, so a hostile
//! peer cannot make us reserve memory by announcing a huge frame.

use serde::{de::DeserializeOwned, Serialize};

/// The protocol version spoken by this build. Peers with another version are refused with an error
/// that names both versions.
pub const PROTOCOL_VERSION: u8 = 7;

/// Largest frame accepted: large enough for any control message, small enough to bound memory.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

const MAGIC: [u8; 2] = *b"RV";

/// Length of the header that opens every stream.
pub const HEADER_LEN: usize = 4;

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StreamKind {
    /// A not-yet-trusted peer asks for a certificate with a join or invite token.
    Join = 1,
    /// A runner's session: hello, then host-initiated messages.
    Control = 2,
    /// A runner's heartbeats, on their own stream so bulk traffic never delays them.
    Heartbeat = 3,
    /// One request and one response from a CLI or a runner.
    Rpc = 4,
    /// Host → runner: a task's output.
    Logs = 5,
    /// Runner → host: part of an environment's archive, from an offset (see `msg::BlobRequest`).
    Blob = 6,
    /// Host → runner: save an image (or commit a task's container) and send the archive.
    Export = 7,
    /// User → host → runner: a terminal or command in a task's container (see `msg::TerminalOpen`).
    Terminal = 8,
    /// User → host → runner: one forwarded TCP connection into a task (see `msg::ForwardOpen`).
    Forward = 9,
    /// Host → runner: an SSH connection to a VPS, served by the runner itself (see
    /// `msg::SshServe`). Users reach it through a `Forward` stream to the VPS's port 22.
    Ssh = 10,
    /// User → host: one HTTP/1.1 connection to the host's API, as the connection's user (`river
    /// ui` serves the dashboard on the user's loopback through these).
    Http = 11,
}

impl StreamKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Join,
            2 => Self::Control,
            3 => Self::Heartbeat,
            4 => Self::Rpc,
            5 => Self::Logs,
            6 => Self::Blob,
            7 => Self::Export,
            8 => Self::Terminal,
            9 => Self::Forward,
            10 => Self::Ssh,
            11 => Self::Http,
            _ => return None,
        })
    }
}

/// The typed, versioned header at the start of every stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    pub version: u8,
    pub kind: StreamKind,
}

impl StreamHeader {
    pub fn new(kind: StreamKind) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            kind,
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        [MAGIC[0], MAGIC[1], self.version, self.kind as u8]
    }

    pub fn decode(bytes: [u8; HEADER_LEN]) -> Result<Self, FrameError> {
        if bytes[..2] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        if bytes[2] != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion {
                theirs: bytes[2],
                ours: PROTOCOL_VERSION,
            });
        }
        let kind = StreamKind::from_u8(bytes[3]).ok_or(FrameError::UnknownKind(bytes[3]))?;
        Ok(Self {
            version: bytes[2],
            kind,
        })
    }
}

/// Why a stream's bytes were refused. Each one closes that stream only.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("not a river stream (bad magic bytes); is this peer speaking river?")]
    BadMagic,
    #[error("peer speaks river protocol version {theirs}, this build speaks {ours}; upgrade the older side")]
    UnsupportedVersion { theirs: u8, ours: u8 },
    #[error("unknown stream kind {0}")]
    UnknownKind(u8),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Encodes `msg` as one frame: length prefix and postcard body.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; 4];
    let out = postcard::to_extend(msg, std::mem::take(&mut out)).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let body_len = out.len() - 4;
    if body_len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(body_len));
    }
    let mut out = out;
    let len = u32::try_from(body_len).map_err(|_| FrameError::TooLarge(body_len))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// How many bytes `msg` takes in a frame's body, counted without keeping them.
pub fn encoded_len<T: Serialize>(msg: &T) -> usize {
    postcard::serialize_with_flavor(msg, postcard::ser_flavors::Size::default()).unwrap_or(usize::MAX)
}

/// Decodes one frame body (without its length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Checks a frame's announced length before its body is read.
pub fn check_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// A sans-IO frame splitter: push whatever bytes arrived, pop whole frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// How many bytes wait here for the rest of their frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame body, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = check_len([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])?;
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Request, Response};

    #[test]
    fn header_round_trips() {
        for kind in [
            StreamKind::Join,
            StreamKind::Control,
            StreamKind::Heartbeat,
            StreamKind::Rpc,
            StreamKind::Logs,
            StreamKind::Blob,
            StreamKind::Export,
            StreamKind::Terminal,
            StreamKind::Forward,
            StreamKind::Ssh,
            StreamKind::Http,
        ] {
            let h = StreamHeader::new(kind);
            assert_eq!(StreamHeader::decode(h.encode()), Ok(h));
        }
    }

    #[test]
    fn header_refuses_garbage_and_other_versions() {
        assert_eq!(StreamHeader::decode(*b"GET "), Err(FrameError::BadMagic));
        assert_eq!(
            StreamHeader::decode([b'R', b'V', 9, 1]),
            Err(FrameError::UnsupportedVersion {
                theirs: 9,
                ours: PROTOCOL_VERSION
            })
        );
        assert_eq!(
            StreamHeader::decode([b'R', b'V', PROTOCOL_VERSION, 200]),
            Err(FrameError::UnknownKind(200))
        );
    }

    #[test]
    fn frames_split_across_arbitrary_chunks() {
        let a = encode(&Request::NodeList).unwrap();
        let b = encode(&Request::NodeShow { name: "gpu-01".into() }).unwrap();
        let stream: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        for chunk in 1..stream.len() {
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(decode::<Request>(&f).unwrap());
                }
            }
            assert_eq!(
                got,
                vec![Request::NodeList, Request::NodeShow { name: "gpu-01".into() }]
            );
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocation() {
        let mut d = FrameDecoder::default();
        d.push(&u32::MAX.to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(u32::MAX as usize)));
    }

    #[test]
    fn garbage_bodies_are_errors_not_panics() {
        // Every prefix of every short byte string must decode to a value or an error.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 48) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        }
    }

    fn samples() -> Vec<Vec<u8>> {
        use crate::msg::*;
        let info = NodeInfo {
            hostname: "gpu-01".into(),
            cores: 64,
            memory_bytes: 1 << 40,
            numa: vec![NumaNode {
                id: 0,
                cpus: vec![0, 1, 2],
                memory_bytes: 1 << 39,
            }],
            gpus: vec![Gpu {
                index: 0,
                name: "H100".into(),
                uuid: "GPU-1".into(),
                memory_bytes: 80 << 30,
                numa: Some(0),
            }],
            version: "0.1.0".into(),
            no_engine: false,
        };
        let usage = NodeUsage {
            cpu_percent: 12.5,
            memory_used_bytes: 7,
            gpus: vec![GpuUsage {
                index: 0,
                util_percent: 99,
                memory_used_bytes: 1,
                temperature_c: Some(60),
            }],
            no_engine: true,
        };
        let body = |v: Vec<u8>| v[4..].to_vec();
        vec![
            body(
                encode(&Request::UserInvite {
                    name: "ann".into(),
                    role: Role::Operator,
                    ttl_secs: 60,
                })
                .unwrap(),
            ),
            body(
                encode(&Request::Renew {
                    csr_pem: "-----BEGIN".into(),
                })
                .unwrap(),
            ),
            body(encode(&Hello { info: info.clone() }).unwrap()),
            body(
                encode(&Heartbeat {
                    seq: u64::MAX,
                    usage: usage.clone(),
                })
                .unwrap(),
            ),
            body(
                encode(&JoinRequest {
                    token: "rvt1.x".into(),
                    name: "n".into(),
                    csr_pem: "c".into(),
                })
                .unwrap(),
            ),
            body(
                encode(&Response::Nodes(vec![NodeView {
                    name: "n".into(),
                    state: NodeState::Online,
                    address: Some("1.2.3.4:5".into()),
                    info,
                    usage: Some(usage),
                    last_heartbeat_ms: Some(1),
                    joined_at_ms: 2,
                    cert_expires_at_ms: 3,
                }]))
                .unwrap(),
            ),
        ]
    }

    /// Mutated valid encodings reach deep into the decoder: every one must decode or fail cleanly,
    /// for every message type the peer might claim it is.
    #[test]
    fn mutated_messages_never_panic() {
        use crate::msg::*;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let samples = samples();
        for _ in 0..30_000 {
            let mut m = samples[(next() % samples.len() as u64) as usize].clone();
            match next() % 4 {
                0 => {
                    let i = (next() % m.len() as u64) as usize;
                    m[i] ^= 1 << (next() % 8);
                }
                1 => m.truncate((next() % m.len() as u64) as usize),
                2 => {
                    let i = (next() % m.len() as u64) as usize;
                    m[i] = (next() & 0xff) as u8;
                    let j = (i + 1) % m.len();
                    m[j] = 0xff;
                }
                _ => {
                    let other = &samples[(next() % samples.len() as u64) as usize];
                    let cut = (next() % m.len() as u64) as usize;
                    m.truncate(cut);
                    m.extend_from_slice(&other[cut.min(other.len())..]);
                }
            }
            let _ = decode::<Request>(&m);
            let _ = decode::<Response>(&m);
            let _ = decode::<Hello>(&m);
            let _ = decode::<Heartbeat>(&m);
            let _ = decode::<JoinRequest>(&m);
            let _ = decode::<JoinResponse>(&m);
            let mut d = FrameDecoder::default();
            d.push(&m);
            let _ = d.next_frame();
            if m.len() >= HEADER_LEN {
                let _ = StreamHeader::decode([m[0], m[1], m[2], m[3]]);
            }
        }
    }
}
