//! The Redis server's clock as this replica last read it, carried forward on the process's monotonic
//! clock: a check with seconds of tolerance (a signed timestamp's window) then needs no TIME of its own.
//! Every TIME the store sends records its answer; the sweep reads TIME every second, so a reading is
//! never much older than that while the replica runs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Readings older than this are not used: the caller reads the clock instead.
pub const RECENT: Duration = Duration::from_secs(3);

/// The last reading of the server's clock and when it was taken.
#[derive(Default)]
pub struct LastTime(Mutex<Option<(i64, Instant)>>);

impl LastTime {
    /// Records a reading just received.
    pub fn record(&self, server_ms: i64) {
        let now = Instant::now();
        if let Ok(mut last) = self.0.lock() {
            // Every estimate is a lower bound of the server's clock (a reply is older than its arrival),
            // so a reply that was slow to arrive does not replace a later recent reading.
            if last
                .and_then(|reading| carried(reading, now))
                .is_none_or(|estimate| estimate <= server_ms)
            {
                *last = Some((server_ms, now));
            }
        }
    }

    /// The server's clock now, from a reading younger than [`RECENT`].
    pub fn recent(&self) -> Option<i64> {
        let reading = (*self.0.lock().ok()?)?;
        carried(reading, Instant::now())
    }
}

/// `reading` carried forward to `now`, if it is younger than [`RECENT`] then.
fn carried((ms, at): (i64, Instant), now: Instant) -> Option<i64> {
    let age = now.saturating_duration_since(at);
    (age <= RECENT).then(|| ms.saturating_add(i64::try_from(age.as_millis()).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_is_carried_forward_while_recent() {
        let last = LastTime::default();
        assert_eq!(last.recent(), None);
        last.record(1_000_000);
        let now = last.recent().expect("recent");
        assert!((1_000_000..1_000_100).contains(&now), "{now}");
        // A reply that took long to arrive does not set the clock back; a later one moves it on.
        last.record(999_000);
        assert!(last.recent().expect("recent") >= 1_000_000);
        last.record(1_005_000);
        assert!(last.recent().expect("recent") >= 1_005_000);
    }
}
