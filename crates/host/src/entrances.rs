//! Caps on the host's doors: connections per source address and in all — on the TCP port (the
//! HTTPS API and the SSH gateway share it), where each connection is a file descriptor, and for
//! QUIC peers without a certificate (who may only join), each of which holds buffers — so that
//! someone holding connections open without a word cannot shut everyone else out. Refusals are
//! logged in aggregate, at most once every [`LOG_EVERY`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections one address may hold on the TCP port.
pub(crate) const TCP_PER_ADDRESS: u32 = 32;
/// Connections one address may hold on the dashboard's own address: a browser keeps up to six
/// per site and an event stream per tab, and a lab behind one NAT is many browsers.
pub(crate) const WEB_PER_ADDRESS: u32 = 256;
/// QUIC connections without a certificate one address may hold (a joining node needs one).
pub(crate) const ANONYMOUS_PER_ADDRESS: u32 = 4;
/// How often refusals are summed up in the log.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counts {
    open: HashMap<IpAddr, u32>,
    total: u32,
    /// Refused since the last log line, by address.
    refused: HashMap<IpAddr, u64>,
    logged: Option<Instant>,
}

pub(crate) struct Entrances {
    /// What the door is, for the log.
    door: &'static str,
    counts: Arc<Mutex<Counts>>,
    per_address: u32,
    max_total: u32,
}

/// One admitted connection; its place is given back when dropped.
pub(crate) struct Admitted {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.open.remove(&self.ip);
            }
        }
    }
}

/// The process's limit on open files (soft), from `/proc/self/limits`.
fn open_files_limit() -> Option<u32> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

impl Entrances {
    /// The TCP port's caps, sized to this process: at most a quarter of its file descriptors
    /// (and 4,096), leaving the rest for the database, the mesh and the connections it has.
    pub(crate) fn tcp() -> Self {
        let max_total = open_files_limit().map_or(1024, |n| (n / 4).clamp(16, 4096));
        Self {
            door: "HTTPS/SSH",
            counts: Arc::default(),
            per_address: TCP_PER_ADDRESS,
            max_total,
        }
    }

    /// The dashboard's own address (`[web]`): the TCP port's total, more per address.
    pub(crate) fn web() -> Self {
        Self {
            door: "dashboard",
            per_address: WEB_PER_ADDRESS,
            ..Self::tcp()
        }
    }

    /// Caps on QUIC peers without a certificate.
    pub(crate) fn anonymous() -> Self {
        Self {
            door: "QUIC without a certificate",
            counts: Arc::default(),
            per_address: ANONYMOUS_PER_ADDRESS,
            max_total: 256,
        }
    }

    /// A place for a connection from `ip`, if its address and the door have room.
    pub(crate) fn admit(&self, ip: IpAddr) -> Option<Admitted> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mine = c.open.get(&ip).copied().unwrap_or(0);
        if mine >= self.per_address || c.total >= self.max_total {
            *c.refused.entry(ip).or_default() += 1;
            if c.logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                let mut worst: Vec<(IpAddr, u64)> = c.refused.drain().collect();
                worst.sort_by_key(|w| std::cmp::Reverse(w.1));
                let sum: u64 = worst.iter().map(|w| w.1).sum();
                let top: Vec<String> = worst.iter().take(5).map(|(ip, n)| format!("{ip} ({n})")).collect();
                tracing::warn!(
                    "{}: refused {sum} connection(s) from {} address(es) over the caps ({} per address, {} in all): {}",
                    self.door,
                    worst.len(),
                    self.per_address,
                    self.max_total,
                    top.join(", ")
                );
                c.logged = Some(Instant::now());
            }
            return None;
        }
        c.open.insert(ip, mine + 1);
        c.total += 1;
        Some(Admitted {
            ip,
            counts: self.counts.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_its_share_and_places_come_back() {
        let e = Entrances {
            door: "test",
            counts: Arc::default(),
            per_address: TCP_PER_ADDRESS,
            max_total: 40,
        };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<Admitted> = (0..TCP_PER_ADDRESS).map(|_| e.admit(a).unwrap()).collect();
        assert!(e.admit(a).is_none(), "over the per-address cap");
        let others: Vec<Admitted> = (0..8).map(|_| e.admit(b).unwrap()).collect();
        assert!(e.admit(b).is_none(), "over the total cap");
        drop(held);
        assert!(e.admit(a).is_some(), "places come back when connections end");
        drop(others);
    }
}
