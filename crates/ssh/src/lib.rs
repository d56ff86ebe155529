//! SSH for river: the one crate that names russh. Two servers are built on it — the SSH server
//! a runner keeps for each VPS (over a mesh stream) and the host's SSH gateway (on the API port) —
//! and neither sees an SSH library type: a server is a [`Handler`] (who may log in, what a
//! session channel does, where a `direct-tcpip` channel goes) given to [`serve`] with a byte
//! stream and a [`Config`].
//!
//! What the crate decides for both, once: public-key logins only, a login refused after a short
//! pause; requests for a terminal or variables answered yes (the session acts on them), a
//! subsystem yes only when the server named it; a `direct-tcpip` channel accepted only once the
//! handler has the stream it goes to, then relayed byte for byte.

mod keys;
mod server;
mod session;

pub use keys::{HostKey, PublicKey, SignatureError};
pub use server::{serve, Config, Duplex, Error, Handler, Refusal, Relay};
pub use session::{Closed, Event, Incoming, Outgoing, SessionChannel};
