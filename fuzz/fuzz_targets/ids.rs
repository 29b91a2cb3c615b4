//! Every id a client sends as text: accounts, challenges, devices, notices, enrollment tickets, routing
//! tags.
#![no_main]

use approval_relay::challenge::{AccountId, ChallengeId, DeviceId, NoticeId, RoutingTag};
use approval_relay::device::Ticket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(account) = AccountId::parse(text) {
        // The routing tag of a generated id must be the account's own.
        assert_eq!(ChallengeId::generate(&account).tag(), account.tag());
    }
    if let Ok(id) = ChallengeId::parse(text) {
        assert_eq!(ChallengeId::parse(id.as_str()).map(|again| again.tag()), Ok(id.tag()));
    }
    if let Ok(id) = DeviceId::parse(text) {
        assert_eq!(DeviceId::parse(id.as_str()).map(|again| again.tag()), Ok(id.tag()));
    }
    if let Ok(id) = NoticeId::parse(text) {
        assert_eq!(NoticeId::parse(id.as_str()).map(|again| again.tag()), Ok(id.tag()));
    }
    let _ = Ticket::parse(text);
    let _ = RoutingTag::from_hex(text);
});
