//! Users' open connections, by name — mesh connections (forwards, terminals, SSH through the mesh
//! ride these) and SSH gateway sessions — so that a user whose certificates are revoked, or who is
//! removed, disabled or given another role, loses at once what they have open, not only their next
//! connection.

use river_mesh::{close, Connection};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// How one open connection is closed.
#[derive(Clone)]
pub(crate) enum Closer {
    Mesh(Connection),
    /// An SSH gateway session, which ends when this is notified.
    Ssh(Arc<Notify>),
    /// A request of dashboard session `session` at the host's own address (an event stream or
    /// a terminal may stay open), which ends when this turns true.
    Web {
        session: String,
        end: Arc<tokio::sync::watch::Sender<bool>>,
    },
}

type Open = Arc<Mutex<HashMap<String, HashMap<u64, Closer>>>>;

/// Connections one user may hold open at once (mesh connections and gateway sessions together):
/// each `river` command, forward or terminal is one. Past it, another is refused with the
/// reason, so one user's script gone wrong cannot take the host's memory from everyone.
pub(crate) const PER_USER: usize = 256;

#[derive(Default)]
pub(crate) struct UserSessions {
    next: AtomicU64,
    open: Open,
}

/// Held while a user's connection is served; forgets it when dropped.
pub(crate) struct Held {
    name: String,
    id: u64,
    open: Open,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(conns) = open.get_mut(&self.name) {
            conns.remove(&self.id);
            if conns.is_empty() {
                open.remove(&self.name);
            }
        }
    }
}

impl UserSessions {
    /// Holds a connection of `name`'s while it is served; `None` when they have [`PER_USER`]
    /// open already.
    pub(crate) fn hold(&self, name: &str, closer: Closer) -> Option<Held> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let theirs = open.entry(name.to_owned()).or_default();
        if theirs.len() >= PER_USER {
            return None;
        }
        theirs.insert(id, closer);
        Some(Held {
            name: name.to_owned(),
            id,
            open: self.open.clone(),
        })
    }

    /// Closes every connection `name` has open; how many there were.
    pub(crate) fn cut_off(&self, name: &str, why: &str) -> usize {
        let conns = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .unwrap_or_default();
        for c in conns.values() {
            match c {
                Closer::Mesh(conn) => conn.close(close::REVOKED, why.as_bytes()),
                // A permit is kept if the session is not waiting yet.
                Closer::Ssh(cut) => cut.notify_one(),
                Closer::Web { end, .. } => {
                    end.send_replace(true);
                }
            }
        }
        conns.len()
    }

    /// Ends what `name`'s dashboard sessions `ids` have open (they were revoked).
    pub(crate) fn end_web(&self, name: &str, ids: &[String]) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let Some(theirs) = open.get_mut(name) else { return };
        theirs.retain(|_, c| match c {
            Closer::Web { session, end } if ids.contains(session) => {
                end.send_replace(true);
                false
            }
            _ => true,
        });
    }
}
