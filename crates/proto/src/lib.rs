//! River's wire protocol and the pure policy around it: stream headers, framing, message types,
//! join tokens, names and node liveness.
//!
//! Architecture invariant: this crate does no I/O. It has no sockets, no async runtime and never
//! reads the clock; time comes in as an argument (`now`, in unix milliseconds or seconds) so every
//! decision here is unit-tested without a network.

pub mod frame;
pub mod liveness;
pub mod msg;
pub mod name;
pub mod token;

pub use frame::{FrameDecoder, FrameError, StreamHeader, StreamKind, MAX_FRAME_LEN, PROTOCOL_VERSION};
