//! Typed frames on QUIC streams, using the codec in `river_proto::frame`.

use quinn::{RecvStream, SendStream};
use river_proto::frame::{self, FrameError, StreamHeader, StreamKind, HEADER_LEN};
use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum FramedError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream closed: {0}")]
    Read(quinn::ReadExactError),
    #[error("stream write failed: {0}")]
    Write(quinn::WriteError),
    /// The whole connection ended; [`crate::ended`] tells whether retrying can help.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream ended before a message arrived")]
    Ended,
}

// A stream that fails because its connection ended reports the connection's reason, so callers
// see "removed from the cluster" rather than "stream closed".
impl From<quinn::ReadExactError> for FramedError {
    fn from(e: quinn::ReadExactError) -> Self {
        match e {
            quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => Self::Connection(c),
            other => Self::Read(other),
        }
    }
}

impl From<quinn::WriteError> for FramedError {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::ConnectionLost(c) => Self::Connection(c),
            other => Self::Write(other),
        }
    }
}

/// Opens a bidirectional stream and writes its header.
pub async fn open(conn: &quinn::Connection, kind: StreamKind) -> Result<(SendStream, RecvStream), FramedError> {
    let (mut send, recv) = conn.open_bi().await?;
    send.write_all(&StreamHeader::new(kind).encode()).await?;
    Ok((send, recv))
}

/// Reads and checks the header at the start of an accepted stream.
pub async fn read_header(recv: &mut RecvStream) -> Result<StreamHeader, FramedError> {
    let mut buf = [0u8; HEADER_LEN];
    recv.read_exact(&mut buf).await?;
    Ok(StreamHeader::decode(buf)?)
}

pub async fn send_msg<T: Serialize>(send: &mut SendStream, msg: &T) -> Result<(), FramedError> {
    send.write_all(&frame::encode(msg)?).await?;
    Ok(())
}

/// The next message, or `None` when the peer finished the stream cleanly between messages.
pub async fn recv_msg<T: DeserializeOwned>(recv: &mut RecvStream) -> Result<Option<T>, FramedError> {
    let mut prefix = [0u8; 4];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = frame::check_len(prefix)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await?;
    Ok(Some(frame::decode(&body)?))
}

/// Copies `from` into `to` chunk by chunk until `from` finishes, then finishes `to`. QUIC flow
/// control carries backpressure through: `to` filling up stops reads from `from`. Returns the
/// bytes copied.
pub async fn pipe(from: &mut RecvStream, to: &mut SendStream) -> Result<u64, FramedError> {
    let mut n = 0u64;
    loop {
        match from.read_chunk(256 * 1024, true).await {
            Ok(Some(chunk)) => {
                n += chunk.bytes.len() as u64;
                to.write_chunk(chunk.bytes).await?;
            }
            Ok(None) => break,
            Err(quinn::ReadError::ConnectionLost(c)) => return Err(FramedError::Connection(c)),
            Err(_) => {
                // The sender reset its stream: pass the reset on rather than a clean end.
                let _ = to.reset(0u32.into());
                return Err(FramedError::Ended);
            }
        }
    }
    let _ = to.finish();
    Ok(n)
}
