//! The wall clock, read in one place so pure code can take `now` as an argument.

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
