//! The Lua scripts, each prefixed with `prelude.lua`. `::redis::Script` calls them by SHA and loads them
//! again when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH).

use ::redis::Script;

const PRELUDE: &str = include_str!("prelude.lua");

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// Every state change as one script.
pub struct Scripts {
    /// Counter rule + a device's answer.
    pub respond: Script,
    /// Counter rule + optional token or key change.
    pub touch: Script,
    /// Idempotent challenge creation.
    pub create: Script,
    /// Expire or cancel.
    pub end: Script,
    /// Push outcome (and token pruning).
    pub delivery: Script,
    /// Ticket consumption and device registration.
    pub enroll: Script,
    /// Ticket storage.
    pub enrollment: Script,
    /// Dead push token removal.
    pub prune: Script,
    /// Device revocation.
    pub revoke: Script,
    /// Multi-key reads in one round trip.
    pub reads: Script,
    /// A sign-in source's creation-rate bucket.
    pub bucket: Script,
    /// Notice creation.
    pub notice: Script,
    /// A budget of authentication failures, and the record of one.
    pub failure: Script,
    /// Claiming a challenge's unfinished pushes.
    pub claim: Script,
    /// Remembering an approved sign-in's device and place.
    pub remember: Script,
    /// Forgetting remembered sign-ins.
    pub forget: Script,
    /// Saving an offline-code authenticator.
    pub authenticator: Script,
    /// One offline-code check.
    pub code: Script,
}

impl Scripts {
    /// Prepares every script (nothing is sent until first use).
    pub fn new() -> Self {
        Self {
            respond: script(include_str!("respond.lua")),
            touch: script(include_str!("touch.lua")),
            create: script(include_str!("create.lua")),
            end: script(include_str!("end.lua")),
            delivery: script(include_str!("delivery.lua")),
            enroll: script(include_str!("enroll.lua")),
            enrollment: script(include_str!("enrollment.lua")),
            prune: script(include_str!("prune.lua")),
            revoke: script(include_str!("revoke.lua")),
            reads: script(include_str!("reads.lua")),
            bucket: script(include_str!("bucket.lua")),
            notice: script(include_str!("notice.lua")),
            failure: script(include_str!("failure.lua")),
            claim: script(include_str!("claim.lua")),
            remember: script(include_str!("remember.lua")),
            forget: script(include_str!("forget.lua")),
            authenticator: script(include_str!("authenticator.lua")),
            code: script(include_str!("code.lua")),
        }
    }
}
