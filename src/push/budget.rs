//! A retry budget per provider (as Finagle's and Envoy's): over a sliding ten-second window, retries may
//! be at most a fifth of first attempts, plus ten a second whatever the traffic. During an outage every
//! push would otherwise keep its own backoff and the sum of them would multiply the load on a provider
//! that is already failing (one measured outage: ~3,000 requests a second for ~450 pushes a second of
//! real work); past the budget a push fails fast with `retries_exhausted: budget`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Seconds the window covers.
const WINDOW_SECS: usize = 10;
/// Retries allowed per first attempt.
const RATIO: f64 = 0.2;
/// Retries allowed per second of the window whatever the traffic (so that a quiet provider's few pushes
/// still retry).
const MIN_PER_SEC: u64 = 10;

/// Counts of one second.
#[derive(Debug, Clone, Copy, Default)]
struct Second {
    at: u64,
    firsts: u64,
    retries: u64,
}

/// One provider's window and whether it is spent (for logging on a change only).
#[derive(Debug, Default)]
pub struct Window {
    seconds: [Second; WINDOW_SECS],
    spent: bool,
}

/// What a retry request changed, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Retry.
    Allowed,
    /// Retry (and the budget has room again after being spent).
    Recovered,
    /// Do not retry; the budget just ran out.
    Tripped,
    /// Do not retry; still spent.
    Spent,
}

impl Window {
    fn slot(&mut self, now_s: u64) -> &mut Second {
        let slot = &mut self.seconds[usize::try_from(now_s).unwrap_or(0) % WINDOW_SECS];
        if slot.at != now_s {
            *slot = Second {
                at: now_s,
                ..Second::default()
            };
        }
        slot
    }

    fn totals(&self, now_s: u64) -> (u64, u64) {
        self.seconds
            .iter()
            .filter(|s| now_s.saturating_sub(s.at) < WINDOW_SECS as u64)
            .fold((0, 0), |(f, r), s| (f + s.firsts, r + s.retries))
    }

    /// A first attempt at second `now_s`.
    pub fn first(&mut self, now_s: u64) {
        self.slot(now_s).firsts += 1;
    }

    /// Whether a retry at second `now_s` fits the budget (counted when it does).
    pub fn retry(&mut self, now_s: u64) -> Verdict {
        let (firsts, retries) = self.totals(now_s);
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let allowed = (firsts as f64 * RATIO) as u64 + MIN_PER_SEC * WINDOW_SECS as u64;
        if retries < allowed {
            self.slot(now_s).retries += 1;
            if std::mem::replace(&mut self.spent, false) {
                return Verdict::Recovered;
            }
            Verdict::Allowed
        } else if std::mem::replace(&mut self.spent, true) {
            Verdict::Spent
        } else {
            Verdict::Tripped
        }
    }
}

/// The budgets of every provider.
pub struct Budgets {
    start: Instant,
    windows: Mutex<HashMap<&'static str, Window>>,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            windows: Mutex::new(HashMap::new()),
        }
    }
}

impl Budgets {
    fn with<T>(&self, provider: &'static str, f: impl FnOnce(&mut Window, u64) -> T) -> T {
        let now_s = self.start.elapsed().as_secs();
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(windows.entry(provider).or_default(), now_s)
    }

    /// A first attempt to `provider`.
    pub fn first(&self, provider: &'static str) {
        self.with(provider, |w, now| w.first(now));
    }

    /// Whether a retry to `provider` fits its budget; logs and counts when it trips or recovers.
    pub fn retry(&self, provider: &'static str) -> bool {
        match self.with(provider, |w, now| w.retry(now)) {
            Verdict::Allowed => true,
            Verdict::Recovered => {
                tracing::info!(provider, "push retry budget has room again");
                true
            }
            Verdict::Tripped => {
                metrics::counter!("relay_push_retry_budget_exhausted_total", "provider" => provider)
                    .increment(1);
                tracing::warn!(
                    provider,
                    "push retry budget spent (retries above a fifth of first attempts): failing pushes fast"
                );
                false
            }
            Verdict::Spent => {
                metrics::counter!("relay_push_retry_budget_exhausted_total", "provider" => provider)
                    .increment(1);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_a_fifth_of_first_attempts_plus_a_floor() {
        // 1,000 × 0.2 + 100 of floor.
        let mut w = Window::default();
        for _ in 0..1_000 {
            w.first(0);
        }
        let verdicts: Vec<Verdict> = (0..1_000).map(|_| w.retry(0)).collect();
        let retried = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Allowed | Verdict::Recovered))
            .count();
        assert_eq!(retried, 300);
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Tripped).count(),
            1,
            "it trips once, not on every refusal"
        );
    }

    #[test]
    fn the_window_slides() {
        let mut w = Window::default();
        while matches!(w.retry(0), Verdict::Allowed) {}
        assert_eq!(w.retry(5), Verdict::Spent);
        assert_eq!(
            w.retry(10),
            Verdict::Recovered,
            "ten seconds later it is empty again"
        );
    }
}
