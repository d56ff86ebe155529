//! A session channel as river sees it: what the client asks ([`Event`]s, in order) and what
//! the server sends back ([`Outgoing`]).

use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

/// What happens on a session channel, in the order the client sent it. A channel's end (the
/// client closed it or went away) is the end of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A pseudo-terminal of this size (0 when the client did not say).
    Pty { term: String, cols: u16, rows: u16 },
    /// A variable for what runs.
    Env { name: String, value: String },
    /// A login shell.
    Shell,
    /// A command, as the client sent it.
    Exec(Vec<u8>),
    /// A subsystem the server named (others were refused).
    Subsystem(String),
    /// Input.
    Data(Vec<u8>),
    /// The terminal's new size.
    Resize { cols: u16, rows: u16 },
    /// No more input.
    Eof,
}

/// A session channel the client opened.
pub struct SessionChannel(Channel<Msg>);

impl SessionChannel {
    pub(crate) fn new(channel: Channel<Msg>) -> Self {
        Self(channel)
    }

    /// Its events and its replies, to be used side by side.
    pub fn split(self) -> (Incoming, Outgoing) {
        let (read, write) = self.0.split();
        (Incoming(read), Outgoing(write))
    }
}

/// A session channel's events.
pub struct Incoming(ChannelReadHalf);

impl Incoming {
    /// The next event; `None` once the channel is closed.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            let event = match self.0.wait().await? {
                ChannelMsg::RequestPty {
                    term,
                    col_width,
                    row_height,
                    ..
                } => Event::Pty {
                    term,
                    cols: clamp(col_width),
                    rows: clamp(row_height),
                },
                ChannelMsg::SetEnv {
                    variable_name,
                    variable_value,
                    ..
                } => Event::Env {
                    name: variable_name,
                    value: variable_value,
                },
                ChannelMsg::RequestShell { .. } => Event::Shell,
                ChannelMsg::Exec { command, .. } => Event::Exec(command),
                ChannelMsg::RequestSubsystem { name, .. } => Event::Subsystem(name),
                ChannelMsg::Data { data } => Event::Data(data.to_vec()),
                ChannelMsg::WindowChange {
                    col_width, row_height, ..
                } => Event::Resize {
                    cols: clamp(col_width),
                    rows: clamp(row_height),
                },
                ChannelMsg::Eof => Event::Eof,
                ChannelMsg::Close => return None,
                _ => continue,
            };
            return Some(event);
        }
    }
}

/// A terminal dimension as programs take it.
fn clamp(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// The channel is gone: nothing more can be sent on it.
#[derive(Debug, thiserror::Error)]
#[error("the SSH channel is closed")]
pub struct Closed;

/// What the server sends on a session channel.
pub struct Outgoing(ChannelWriteHalf<Msg>);

impl Outgoing {
    /// Output.
    pub async fn data(&self, bytes: &[u8]) -> Result<(), Closed> {
        self.0.data(bytes).await.map_err(|_| Closed)
    }

    /// Error output.
    pub async fn stderr(&self, bytes: &[u8]) -> Result<(), Closed> {
        self.0.extended_data(1, bytes).await.map_err(|_| Closed)
    }

    /// What ran ended with `code`.
    pub async fn exit_status(&self, code: u32) -> Result<(), Closed> {
        self.0.exit_status(code).await.map_err(|_| Closed)
    }

    /// No more output, and the channel closed.
    pub async fn finish(&self) {
        let _ = self.0.eof().await;
        let _ = self.0.close().await;
    }
}
