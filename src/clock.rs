//! This replica's wall clock, for what needs no agreement between replicas: estimates (an index score),
//! timers, log fields. Deadlines and decisions are judged by the store's clock (`Store::now_ms`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds by this machine's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
