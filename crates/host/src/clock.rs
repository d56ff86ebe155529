//! The wall clock, read in one place so pure code can take `now` as an argument. The host's
//! services read it through [`Clock`] in their `Ctx`, which tests move forward to reach an expiry
//! without waiting for it.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub fn now_s() -> i64 {
    now_ms() / 1000
}

/// Unix seconds (as the store keeps some times) as the milliseconds every message carries.
pub fn ms(seconds: i64) -> i64 {
    seconds.saturating_mul(1000)
}

/// The host's clock: the wall clock, plus however far a test has moved it on.
#[derive(Default)]
pub(crate) struct Clock {
    ahead_ms: std::sync::atomic::AtomicI64,
}

impl Clock {
    pub(crate) fn now_ms(&self) -> i64 {
        now_ms().saturating_add(self.ahead_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub(crate) fn now_s(&self) -> i64 {
        self.now_ms() / 1000
    }

    /// Moves this clock on by `by` (tests: an expiry reached without waiting for it).
    #[cfg(test)]
    pub(crate) fn advance(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.ahead_ms.fetch_add(by, std::sync::atomic::Ordering::Relaxed);
    }
}
