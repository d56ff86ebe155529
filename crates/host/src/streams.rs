//! Reading the start of a stream, with a deadline, for every transport.

use river_mesh::{recv_msg, FramedError, RecvStream};
use std::time::Duration;

/// How long a peer has to send a stream's header or first message.
pub(crate) const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// The first message of a stream, which must come within [`FIRST_FRAME_TIMEOUT`].
pub(crate) async fn first_msg<T: serde::de::DeserializeOwned>(recv: &mut RecvStream) -> Result<T, FramedError> {
    match tokio::time::timeout(FIRST_FRAME_TIMEOUT, recv_msg(recv)).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) | Err(_) => Err(FramedError::Ended),
        Ok(Err(e)) => Err(e),
    }
}
