//! Users' open mesh connections, by name, so that a user whose certificates are revoked loses at
//! once what they have open (forwards, terminals, SSH sessions ride these connections), not only
//! their next connection.

use river_mesh::{close, Connection};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub(crate) struct UserSessions {
    next: AtomicU64,
    open: Arc<Mutex<HashMap<String, HashMap<u64, Connection>>>>,
}

/// Held while a user's connection is served; forgets it when dropped.
pub(crate) struct Held {
    name: String,
    id: u64,
    open: Arc<Mutex<HashMap<String, HashMap<u64, Connection>>>>,
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
    pub(crate) fn hold(&self, name: &str, conn: &Connection) -> Held {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .insert(id, conn.clone());
        Held {
            name: name.to_owned(),
            id,
            open: self.open.clone(),
        }
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
            c.close(close::REVOKED, why.as_bytes());
        }
        conns.len()
    }
}
