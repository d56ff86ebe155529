//! A TCP connection spliced onto a QUIC stream: both directions at once, half-closes passed on
//! (a TCP read EOF finishes the stream; the stream's end shuts down the socket's write side), and
//! backpressure end to end (nothing is read faster than the other side takes it).

use quinn::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Bytes moved at a time: large enough to fill a fast path, small enough to bound memory per
/// connection.
const BUF: usize = 128 * 1024;

/// Socket → stream until the socket's EOF (then the stream is finished). An error resets the
/// stream.
pub async fn copy_up(mut rd: impl AsyncRead + Unpin, send: &mut SendStream) -> std::io::Result<u64> {
    let mut buf = vec![0u8; BUF];
    let mut n = 0u64;
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => {
                let _ = send.finish();
                return Ok(n);
            }
            Ok(k) => {
                send.write_all(&buf[..k]).await.map_err(std::io::Error::other)?;
                n += k as u64;
            }
            Err(e) => {
                let _ = send.reset(0u32.into());
                return Err(e);
            }
        }
    }
}

/// Stream → socket until the stream ends (then the socket's write side is shut down).
pub async fn copy_down(recv: &mut RecvStream, mut wr: impl AsyncWrite + Unpin) -> std::io::Result<u64> {
    // Everything that has arrived, up to BUF, per write: QUIC delivers a frame's worth at a time,
    // and a system call per frame was the forward's bottleneck.
    let mut buf = vec![0u8; BUF];
    let mut n = 0u64;
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(k)) => {
                wr.write_all(&buf[..k]).await?;
                n += k as u64;
            }
            Ok(None) => {
                let _ = wr.shutdown().await;
                return Ok(n);
            }
            Err(e) => {
                let _ = recv.stop(0u32.into());
                return Err(std::io::Error::other(e));
            }
        }
    }
}

/// Copies until both directions have ended. Returns (bytes to the stream, bytes to the socket).
pub async fn splice(tcp: TcpStream, mut send: SendStream, mut recv: RecvStream) -> std::io::Result<(u64, u64)> {
    let _ = tcp.set_nodelay(true);
    let (rd, wr) = tcp.into_split();
    // A clean end of one direction waits for the other (half-close); an error ends both.
    tokio::try_join!(copy_up(rd, &mut send), copy_down(&mut recv, wr))
}
