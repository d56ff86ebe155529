//! Repeated failed joins: an address whose joins (and logins) fail [`MAX_FAILURES`] times within
//! [`WINDOW`] is refused without a look at its tokens until the window has passed, and failures
//! are logged in aggregate, at most once every [`LOG_EVERY`], so guessing tokens (hopeless
//! against 24 random bytes anyway) costs the host nothing and floods no log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed joins an address may make within [`WINDOW`].
pub(crate) const MAX_FAILURES: u32 = 5;
/// How long failures count, and how long an address that made too many waits.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Addresses remembered at most; past it, those whose window has passed are forgotten.
const REMEMBERED: usize = 10_000;

#[derive(Default)]
struct State {
    /// Per address: when its first counted failure was, and how many since.
    failures: HashMap<IpAddr, (Instant, u32)>,
    /// Since the last log line: failures, and joins refused for too many of them, by address.
    unlogged: HashMap<IpAddr, (u64, u64)>,
    logged: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct JoinFailures(Mutex<State>);

impl JoinFailures {
    /// How long `ip` must wait before it may try to join again; `None`: it may now.
    pub(crate) fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (since, n) = *s.failures.get(&ip)?;
        let left = WINDOW
            .checked_sub(now.saturating_duration_since(since))
            .filter(|d| !d.is_zero())?;
        if n < MAX_FAILURES {
            return None;
        }
        s.unlogged.entry(ip).or_default().1 += 1;
        Self::log(&mut s, now);
        Some(left)
    }

    /// Counts a failed join from `ip`.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if s.failures.len() >= REMEMBERED {
            s.failures
                .retain(|_, (since, _)| now.saturating_duration_since(*since) < WINDOW);
        }
        let e = s.failures.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
        s.unlogged.entry(ip).or_default().0 += 1;
        Self::log(&mut s, now);
    }

    /// A successful join wipes its address's failures.
    pub(crate) fn succeeded(&self, ip: IpAddr) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).failures.remove(&ip);
    }

    fn log(s: &mut State, now: Instant) {
        if s.logged.is_some_and(|at| now.saturating_duration_since(at) < LOG_EVERY) {
            return;
        }
        let mut all: Vec<(IpAddr, (u64, u64))> = s.unlogged.drain().collect();
        if all.is_empty() {
            return;
        }
        all.sort_by_key(|(_, (f, r))| std::cmp::Reverse(f + r));
        let failed: u64 = all.iter().map(|(_, (f, _))| f).sum();
        let refused: u64 = all.iter().map(|(_, (_, r))| r).sum();
        let top: Vec<String> = all
            .iter()
            .take(5)
            .map(|(ip, (f, r))| format!("{ip} ({f} failed, {r} refused)"))
            .collect();
        tracing::warn!(
            "joins: {failed} failed and {refused} refused for too many failures ({MAX_FAILURES} per {}s) from {} address(es): {}",
            WINDOW.as_secs(),
            all.len(),
            top.join(", ")
        );
        s.logged = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_that_keeps_failing_waits_out_the_window_and_others_do_not() {
        let f = JoinFailures::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for i in 0..MAX_FAILURES {
            assert_eq!(f.blocked(a, t0), None, "after {i} failures");
            f.failed(a, t0 + Duration::from_secs(u64::from(i)));
        }
        let left = f.blocked(a, t0 + Duration::from_secs(10)).expect("blocked");
        assert_eq!(left, WINDOW - Duration::from_secs(10));
        assert_eq!(f.blocked(b, t0 + Duration::from_secs(10)), None, "another address");
        assert_eq!(f.blocked(a, t0 + WINDOW), None, "the window has passed");
        // Failures spread out never add up to a block.
        for i in 0..20u64 {
            f.failed(b, t0 + WINDOW * u32::try_from(i).unwrap());
        }
        assert_eq!(f.blocked(b, t0 + WINDOW * 20), None);
        // Success wipes the count.
        for _ in 0..MAX_FAILURES - 1 {
            f.failed(a, t0 + WINDOW * 2);
        }
        f.succeeded(a);
        f.failed(a, t0 + WINDOW * 2);
        assert_eq!(f.blocked(a, t0 + WINDOW * 2), None);
    }
}
