//! Every metric the relay exports: its name (with its unit), its HELP text, and the label values that
//! dashboards and alerts select, registered at zero at start so that a query never finds "no data" (nor
//! an `absent()` alert fires) merely because nothing happened yet. `promtool check metrics` runs on a
//! real scrape in the tests.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// Label values of `relay_pushes_total{provider}` (and the other per-provider series).
pub const PROVIDERS: &[&str] = &["apns", "fcm", "xiaomi", "hms", "sink"];
/// Label values of `relay_pushes_total{outcome}`: the classified provider answers.
pub const PUSH_OUTCOMES: &[&str] = &[
    "delivered",
    "token_dead",
    "retry",
    "auth_failed",
    "rejected",
];
/// Label values of `relay_challenges_ended_total{outcome}`.
pub const ENDINGS: &[&str] = &[
    "approved",
    "denied",
    "fraud_reported",
    "expired",
    "cancelled",
];
/// Label values of `relay_limit_refusals_total{limit}`.
pub const LIMITS: &[&str] = &[
    "too_many_pending",
    "cooling_down",
    "muted_after_fraud_report",
    "account_rate",
    "source_rate",
    "device_auth_failures",
    "source_auth_failures",
    "code_failures",
];
/// Label values of `relay_device_requests_refused_total{reason}` that alerts use.
pub const REFUSALS: &[&str] = &[
    "unknown_device",
    "bad_signature",
    "malformed_signature",
    "device_mismatch",
    "stale_timestamp",
    "revoked",
    "suspected_clone",
    "counter_replayed",
    "token_flip",
    "not_targeted",
];
/// Label values of `relay_notices_total{kind}`.
pub const NOTICE_KINDS: &[&str] = &["sign_in", "new_device", "fraud_reported", "clone_suspected"];
/// The gRPC listeners.
pub const LISTENERS: &[&str] = &["backend", "device"];

/// Describes every series and registers the selected ones at zero.
pub fn register() {
    describe_gauge!(
        "relay_build_info",
        "Always 1; the labels say which version and commit is running."
    );
    metrics::gauge!("relay_build_info", "version" => super::VERSION, "commit" => super::COMMIT)
        .set(1.0);

    describe_counter!("relay_challenges_created_total", "Challenges created.");
    zero("relay_challenges_created_total", &[]);
    describe_counter!(
        "relay_challenges_ended_total",
        "Challenges that left PENDING, by how they ended."
    );
    for outcome in ENDINGS {
        zero("relay_challenges_ended_total", &[("outcome", outcome)]);
    }
    describe_histogram!(
        "relay_decision_seconds",
        metrics::Unit::Seconds,
        "Time from creation to the end of a challenge, by how it ended."
    );
    describe_counter!(
        "relay_challenges_superseded_total",
        "Pending challenges cancelled to make room for a new one (supersede_pending)."
    );
    zero("relay_challenges_superseded_total", &[]);

    describe_counter!(
        "relay_pushes_total",
        "Provider requests, by provider and classified answer (a retried push counts once per request)."
    );
    describe_histogram!(
        "relay_push_seconds",
        metrics::Unit::Seconds,
        "Time of one provider request, by provider and classified answer."
    );
    describe_counter!(
        "relay_push_retries_total",
        "Provider requests retried after a throttle, 5xx or connection error."
    );
    describe_counter!(
        "relay_push_tokens_pruned_total",
        "Push tokens removed because the provider said they are dead."
    );
    describe_counter!(
        "relay_push_fallbacks_total",
        "Pushes sent through a device's fallback channel after its own channel failed, by the fallback's provider."
    );
    describe_counter!(
        "relay_push_oauth_tokens_total",
        "OAuth access tokens fetched from a provider's token endpoint (HMS; FCM's are gcp_auth's)."
    );
    zero("relay_push_oauth_tokens_total", &[("provider", "hms")]);
    for provider in PROVIDERS {
        zero("relay_push_fallbacks_total", &[("provider", provider)]);
        for outcome in PUSH_OUTCOMES {
            zero(
                "relay_pushes_total",
                &[("provider", provider), ("outcome", outcome)],
            );
        }
        zero("relay_push_retries_total", &[("provider", provider)]);
        zero("relay_push_tokens_pruned_total", &[("provider", provider)]);
    }

    describe_gauge!(
        "relay_open_watch_streams",
        "WatchChallenge streams open now."
    );
    metrics::gauge!("relay_open_watch_streams").increment(0.0);
    describe_gauge!(
        "relay_watchers",
        "Watchers registered in this replica's hub (watch streams and StreamChallenges challenges)."
    );
    metrics::gauge!("relay_watchers").increment(0.0);
    describe_counter!(
        "relay_watchers_dropped_total",
        "Watchers dropped because they did not keep up."
    );
    zero("relay_watchers_dropped_total", &[("reason", "full")]);
    describe_counter!(
        "relay_expiry_timers_skipped_total",
        "Deadline timers that fired with no watcher of their challenge left here, so did nothing."
    );
    zero("relay_expiry_timers_skipped_total", &[]);
    describe_counter!(
        "relay_overdue_removed_total",
        "Ended challenges taken out of Redis's overdue index (batched removals)."
    );
    zero("relay_overdue_removed_total", &[]);
    describe_counter!(
        "relay_device_cache_total",
        "Signed device requests verified against the device as this replica last read it (hit), or only \
         after reading it (miss: not held, older than 60 s, the clock not read lately, the cache off, or \
         the check failed on the held copy)."
    );
    for outcome in ["hit", "miss"] {
        zero("relay_device_cache_total", &[("outcome", outcome)]);
    }

    describe_counter!(
        "relay_responses_refused_total",
        "Device answers (Respond) refused, for any reason."
    );
    zero("relay_responses_refused_total", &[]);
    describe_counter!(
        "relay_device_requests_refused_total",
        "Device requests refused, by reason (failed authentication, clones, not targeted)."
    );
    for reason in REFUSALS {
        zero("relay_device_requests_refused_total", &[("reason", reason)]);
    }
    describe_counter!(
        "relay_limit_refusals_total",
        "Requests refused RESOURCE_EXHAUSTED by a limit, by limit."
    );
    for limit in LIMITS {
        zero("relay_limit_refusals_total", &[("limit", limit)]);
    }
    describe_counter!(
        "relay_codes_total",
        "Offline codes checked by VerifyCode, by outcome (accepted, wrong, replayed, limited)."
    );
    for outcome in ["accepted", "wrong", "replayed", "limited"] {
        zero("relay_codes_total", &[("outcome", outcome)]);
    }
    describe_counter!(
        "relay_authenticators_created_total",
        "Standalone offline-code authenticators made by CreateAuthenticator."
    );
    zero("relay_authenticators_created_total", &[]);
    describe_counter!(
        "relay_notices_total",
        "Notices sent to an account's devices, by kind."
    );
    for kind in NOTICE_KINDS {
        zero("relay_notices_total", &[("kind", kind)]);
    }

    describe_counter!(
        "relay_push_retry_budget_exhausted_total",
        "Pushes failed fast because their provider's retry budget was spent."
    );
    describe_counter!(
        "relay_push_takeovers_total",
        "Challenges whose unfinished pushes this replica claimed from a replica that was gone or whose create's answer was lost."
    );
    zero("relay_push_takeovers_total", &[]);
    for provider in PROVIDERS {
        zero(
            "relay_push_retry_budget_exhausted_total",
            &[("provider", provider)],
        );
    }
    describe_counter!(
        "relay_store_helper_failures_total",
        "Calls to Redis keys outside an account's slot (overdue index, rate buckets, sweep) that failed and were skipped."
    );
    for helper in ["overdue_index", "source_bucket", "sweep", "failure_budget"] {
        zero("relay_store_helper_failures_total", &[("helper", helper)]);
    }
    describe_counter!("relay_redis_errors_total", "Redis calls that failed.");
    zero("relay_redis_errors_total", &[]);
    describe_counter!(
        "relay_redis_disconnections_total",
        "Times the Redis subscriber connection was lost (then re-subscribed and re-read)."
    );
    zero("relay_redis_disconnections_total", &[]);
    describe_histogram!(
        "relay_redis_seconds",
        metrics::Unit::Seconds,
        "Time of one Redis round trip, by kind (command, pipeline) and outcome."
    );

    describe_counter!(
        "relay_tls_handshake_failures_total",
        "TLS handshakes refused or timed out, by listener."
    );
    describe_counter!(
        "relay_tls_reloads_total",
        "Certificate reloads, by listener and outcome (ok, failed)."
    );
    for listener in LISTENERS {
        zero(
            "relay_tls_handshake_failures_total",
            &[("listener", listener)],
        );
        for outcome in ["ok", "failed"] {
            zero(
                "relay_tls_reloads_total",
                &[("listener", listener), ("outcome", outcome)],
            );
        }
    }
    process().describe();
}

fn zero(name: &'static str, labels: &[(&'static str, &'static str)]) {
    let labels: Vec<metrics::Label> = labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, *v))
        .collect();
    metrics::counter!(name, labels).increment(0);
}

fn process() -> &'static metrics_process::Collector {
    static COLLECTOR: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Samples the process's CPU, memory, file descriptors and threads (`process_*`), before a scrape.
pub fn sample_process() {
    process().collect();
}
