//! The domain of a challenge: ids, number matching and the state machine. Pure: no I/O, no tonic, no redis.

pub mod ids;
pub mod number;
pub mod pushes;
pub mod state;

pub use ids::{
    AccountId, ChallengeId, DeviceId, IdError, MAX_NAME_LEN, NoticeId, RoutingTag, check_name,
};
pub use number::{MAX_TYPE_ATTEMPTS, NumberMatch, NumberMode, NumberVerdict};
pub use pushes::{Claim, GIVE_UP_BEFORE_MS, LEASE_MS, MAX_CLAIMS, RELAY_LOST};
pub use state::{
    Challenge, Decision, DeliveryState, DenyReason, Event, EventKind, ExpireRefusal, LoginContext,
    RespondError, State, Via,
};
