//! Key and channel names. Every key of an account starts with `ar:{<routing tag>}:` so that all of them
//! (and the account's event channels) live in one Cluster slot and each script touches one slot.

use crate::challenge::{AccountId, ChallengeId, DeviceId, NoticeId, RoutingTag};
use crate::device::Ticket;

/// `ar:{<tag>}:`: the prefix of every key of one account.
pub fn prefix(tag: RoutingTag) -> String {
    format!("ar:{{{tag}}}:")
}

/// A device's hash.
pub fn device(id: &DeviceId) -> String {
    format!("{}dev:{id}", prefix(id.tag()))
}

/// An account's device ids, in enrollment order.
pub fn devices(account: &AccountId) -> String {
    format!("{}devs:{account}", prefix(account.tag()))
}

/// A challenge's hash.
pub fn challenge(id: &ChallengeId) -> String {
    format!("{}ch:{id}", prefix(id.tag()))
}

/// An account's pending challenges scored by deadline.
pub fn pending(account: &AccountId) -> String {
    format!("{}pend:{account}", prefix(account.tag()))
}

/// The challenge an idempotency key maps to. The account is length-prefixed so that no pair of
/// (account, key) can spell the same name as another.
pub fn idempotency(account: &AccountId, key: &str) -> String {
    format!(
        "{}idem:{}:{account}:{key}",
        prefix(account.tag()),
        account.as_str().len()
    )
}

/// An account's audit stream (the scripts build the same name from the prefix).
pub fn audit(account: &AccountId) -> String {
    format!("{}audit:{account}", prefix(account.tag()))
}

/// An account's trail of unauthenticated refusals (the scripts build the same name from the prefix).
pub fn refused(account: &AccountId) -> String {
    format!("{}refused:{account}", prefix(account.tag()))
}

/// The authentication-failure budget of a claimed device id.
pub fn auth_failures(device: &DeviceId) -> String {
    format!("{}authfail:{device}", prefix(device.tag()))
}

/// The authentication-failure budget of a peer address, in its own slot.
pub fn source_auth_failures(source: &str) -> String {
    format!("ar:authsrc:{{{source}}}")
}

/// An enrollment ticket, by digest, in the slot of the account it enrolls into.
pub fn enrollment(ticket: &Ticket) -> String {
    format!("{}enr:{}", prefix(ticket.tag()), ticket.digest())
}

/// The key prefix of the account a ticket enrolls into.
pub fn ticket_prefix(ticket: &Ticket) -> String {
    prefix(ticket.tag())
}

/// A notice's hash.
pub fn notice(id: &NoticeId) -> String {
    format!("{}note:{id}", prefix(id.tag()))
}

/// An account's recent notice ids scored by creation time.
pub fn notices(account: &AccountId) -> String {
    format!("{}notes:{account}", prefix(account.tag()))
}

/// A challenge's event channel.
pub fn channel(id: &ChallengeId) -> String {
    format!("{}ev:{id}", prefix(id.tag()))
}

/// Number of shards of the overdue index (one key per shard, spread over the Cluster).
pub const DUE_SHARDS: u32 = 16;

/// The overdue-index shard of a challenge.
pub fn due(id: &ChallengeId) -> String {
    due_shard(u32::from(id.as_str().as_bytes().get(2).copied().unwrap_or(0)) % DUE_SHARDS)
}

/// One overdue-index shard: challenge ids scored by deadline, for the sweep.
pub fn due_shard(shard: u32) -> String {
    format!("ar:due:{{{shard}}}")
}

/// The member of a challenge's overdue-index shard that says `owner` owes its pushes.
pub fn push_member(owner: &str, id: &ChallengeId) -> String {
    format!("p:{owner}:{id}")
}

/// A replica's heartbeat: present while it is alive.
pub fn alive(replica: &str) -> String {
    format!("ar:alive:{{{replica}}}")
}

/// A sign-in source's creation-rate bucket, in the source's own slot.
pub fn source_bucket(source: &str) -> String {
    format!("ar:src:{{{source}}}")
}

/// The global security-event stream.
pub const SECURITY: &str = "ar:security";

/// An account's remembered sign-in devices and places (`known`): field → "first:last".
pub fn known(account: &AccountId) -> String {
    format!("{}known:{account}", prefix(account.tag()))
}

/// An account's offline-code authenticators (see authenticator.lua for the fields).
pub fn authenticators(account: &AccountId) -> String {
    format!("{}otp:{account}", prefix(account.tag()))
}

/// An account's budget of wrong offline codes.
pub fn code_failures(account: &AccountId) -> String {
    format!("{}codefail:{account}", prefix(account.tag()))
}
