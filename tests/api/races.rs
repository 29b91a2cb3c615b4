//! One decision: however many devices answer at once, a challenge ends in exactly one terminal state.

use crate::helpers::*;
use approval_relay::pb;
use approval_relay::pb::challenge_event::Kind;

async fn three_devices_answering_at_once_yield_exactly_one_terminal_state_every_time(app: TestApp) {
    let account = account();
    let mut phones = [
        app.enroll(&account).await,
        app.enroll(&account).await,
        app.enroll(&account).await,
    ];
    for round in 0..60 {
        let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
        let watch = app.watch(&challenge.challenge_id).await;
        let [a, b, c] = &mut phones;
        let id = challenge.challenge_id.as_str();
        let (ra, rb, rc) = tokio::join!(
            app.approve(a, &challenge),
            app.respond(b, id, pb::Decision::Deny, pb::DenyReason::NotMe, 0),
            app.respond(
                c,
                id,
                pb::Decision::ReportFraud,
                pb::DenyReason::Unspecified,
                0
            ),
        );
        let winners: Vec<_> = [ra, rb, rc].into_iter().filter_map(Result::ok).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one answer is accepted"
        );

        let final_state = app.get(id).await.state();
        assert_eq!(
            final_state, winners[0],
            "round {round}: the accepted answer is the final state"
        );
        let events = drain(watch).await;
        let terminals = events
            .iter()
            .filter(|k| {
                matches!(
                    k,
                    Kind::Approved(_)
                        | Kind::Denied(_)
                        | Kind::FraudReported(_)
                        | Kind::Expired(_)
                        | Kind::Cancelled(_)
                )
            })
            .count();
        assert_eq!(
            terminals, 1,
            "round {round}: one terminal event: {events:?}"
        );
    }
}

async fn cancel_racing_an_approval_still_ends_in_one_state(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    for round in 0..40 {
        let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
        let req = pb::CancelChallengeRequest {
            challenge_id: challenge.challenge_id.clone(),
        };
        let mut client = app.challenges.clone();
        let (approved, cancelled) = tokio::join!(
            app.approve(&mut phone, &challenge),
            client.cancel_challenge(req)
        );
        let cancelled = cancelled.expect("cancel answers").into_inner().cancelled;
        assert!(
            approved.is_ok() != cancelled,
            "round {round}: exactly one of approve and cancel wins"
        );
    }
}

on_every_store!(
    three_devices_answering_at_once_yield_exactly_one_terminal_state_every_time,
    cancel_racing_an_approval_still_ends_in_one_state,
);
