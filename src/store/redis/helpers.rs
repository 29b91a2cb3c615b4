//! Keys a step needs that live outside the account's slot (the overdue index and push-work shards, a
//! sign-in address's rate bucket) are helpers: on Cluster a master holding one of them can be down while
//! the account's own master is fine, and a sign-in must not fail for that. A helper that cannot be
//! reached is skipped, counted (`relay_store_helper_failures_total{helper}`), and logged once when it
//! starts failing and once when it works again, not on every call.

use crate::store::StoreError;
use std::sync::atomic::{AtomicBool, Ordering};

/// One helper's health, logged on changes only.
pub struct Helper {
    name: &'static str,
    failing: AtomicBool,
}

impl Helper {
    /// A helper named as in metrics and logs.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            failing: AtomicBool::new(false),
        }
    }

    /// The value of a helper call, or `None` when it failed (counted, and logged on a change).
    pub fn observe<T>(&self, result: Result<T, StoreError>) -> Option<T> {
        match result {
            Ok(value) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(helper = self.name, "redis helper reachable again");
                }
                Some(value)
            }
            Err(error) => {
                metrics::counter!("relay_store_helper_failures_total", "helper" => self.name)
                    .increment(1);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        helper = self.name,
                        %error,
                        "redis helper unreachable; going on without it until it is back"
                    );
                }
                None
            }
        }
    }
}

/// Every helper of the Redis store.
pub struct Helpers {
    /// The overdue index and push-work shards, written at creation.
    pub overdue_index: Helper,
    /// A sign-in address's creation-rate bucket.
    pub source_bucket: Helper,
    /// The shards the periodic sweep reads.
    pub sweep: Helper,
    /// A peer address's authentication-failure budget.
    pub failure_budget: Helper,
}

impl Default for Helpers {
    fn default() -> Self {
        Self {
            overdue_index: Helper::new("overdue_index"),
            source_bucket: Helper::new("source_bucket"),
            sweep: Helper::new("sweep"),
            failure_budget: Helper::new("failure_budget"),
        }
    }
}
