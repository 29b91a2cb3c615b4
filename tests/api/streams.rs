//! StreamChallenges: many challenges on one stream, each event tagged with the backend's request id.

use crate::helpers::*;
use approval_relay::pb;
use approval_relay::pb::challenge_event::Kind;
use approval_relay::pb::stream_challenges_response::Response as R;
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A StreamChallenges stream to the app: its request side (room for `requests`) and its answers.
async fn open_stream(
    app: &TestApp,
    requests: usize,
) -> (
    mpsc::Sender<pb::StreamChallengesRequest>,
    tonic::Streaming<pb::StreamChallengesResponse>,
) {
    let (tx, rx) = mpsc::channel(requests);
    let responses = app
        .challenges
        .clone()
        .stream_challenges(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    (tx, responses)
}

fn create(request_id: &str, account: &str) -> pb::StreamChallengesRequest {
    pb::StreamChallengesRequest {
        request_id: request_id.into(),
        request: Some(pb::stream_challenges_request::Request::Create(
            pb::CreateChallengeRequest {
                account_id: account.into(),
                ..Default::default()
            },
        )),
    }
}

async fn challenges_on_one_stream_each_get_their_own_events_under_their_request_ids(app: TestApp) {
    let accounts = [account(), account(), account()];
    let mut phones = Vec::new();
    for a in &accounts {
        phones.push(app.enroll(a).await);
    }
    let (tx, mut responses) = open_stream(&app, 16).await;
    for (i, a) in accounts.iter().enumerate() {
        tx.send(create(&format!("req-{i}"), a)).await.expect("send");
    }
    tx.send(pb::StreamChallengesRequest {
        request_id: "bad".into(),
        request: None,
    })
    .await
    .expect("send");

    let mut created: HashMap<String, pb::Challenge> = HashMap::new();
    let mut error_seen = false;
    while created.len() < 3 || !error_seen {
        let r = tokio::time::timeout(PATIENCE, responses.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open");
        match r.response.expect("response") {
            R::Created(c) => {
                created.insert(r.request_id, c.challenge.expect("challenge"));
            }
            R::Error(e) => {
                assert_eq!(r.request_id, "bad");
                assert_eq!(e.code, tonic::Code::InvalidArgument as i32);
                assert!(e.message.contains("request"), "{}", e.message);
                error_seen = true;
            }
            R::Event(_) | R::Cancelled(_) => {}
        }
    }

    // Meanwhile one of them is also watched with WatchChallenge.
    let watched = app.watch(&created["req-1"].challenge_id).await;

    let (p0, rest) = phones.split_at_mut(1);
    let (p1, p2) = rest.split_at_mut(1);
    app.approve(&mut p0[0], &created["req-0"])
        .await
        .expect("approve");
    app.respond(
        &mut p1[0],
        &created["req-1"].challenge_id,
        pb::Decision::Deny,
        pb::DenyReason::CancelledByUser,
        0,
    )
    .await
    .expect("deny");
    let cancel = pb::StreamChallengesRequest {
        request_id: "req-2-cancel".into(),
        request: Some(pb::stream_challenges_request::Request::Cancel(
            pb::CancelChallengeRequest {
                challenge_id: created["req-2"].challenge_id.clone(),
            },
        )),
    };
    tx.send(cancel).await.expect("send cancel");
    let _ = p2;

    let mut terminal: HashMap<String, Kind> = HashMap::new();
    let mut cancel_answered = false;
    while terminal.len() < 3 || !cancel_answered {
        let r = tokio::time::timeout(PATIENCE, responses.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open");
        match r.response.expect("response") {
            R::Event(e) => {
                let kind = e.kind.expect("kind");
                let expected_id = &created[&r.request_id].challenge_id;
                assert_eq!(
                    &e.challenge_id, expected_id,
                    "event tagged with its own request id"
                );
                if !matches!(kind, Kind::Delivered(_) | Kind::DeliveryFailed(_)) {
                    assert!(
                        terminal.insert(r.request_id.clone(), kind).is_none(),
                        "one terminal event per challenge"
                    );
                }
            }
            R::Cancelled(c) => {
                assert_eq!(r.request_id, "req-2-cancel");
                assert!(c.cancelled);
                cancel_answered = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(matches!(terminal["req-0"], Kind::Approved(_)));
    assert!(matches!(terminal["req-1"], Kind::Denied(_)));
    assert!(matches!(terminal["req-2"], Kind::Cancelled(_)));
    assert!(matches!(
        decisive(&drain(watched).await).as_slice(),
        [Kind::Snapshot(_), Kind::Denied(_)]
    ));
}

async fn a_stream_reports_delivery_of_the_push_it_created(app: TestApp) {
    let account = account();
    let phone = app.enroll(&account).await;
    let (tx, mut responses) = open_stream(&app, 4).await;
    tx.send(create("only", &account)).await.expect("send");
    let mut delivered = false;
    while !delivered {
        let r = tokio::time::timeout(PATIENCE, responses.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open");
        if let Some(R::Event(pb::ChallengeEvent {
            kind: Some(Kind::Delivered(d)),
            ..
        })) = r.response
        {
            assert_eq!(d.device_id, phone.device_id);
            delivered = true;
        }
    }
}

async fn watchers_are_removed_when_their_clients_go_away(app: TestApp) {
    let account = account();
    let _phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let mut watches = Vec::new();
    for _ in 0..50 {
        let mut w = app.watch(&challenge.challenge_id).await;
        w.message().await.expect("snapshot").expect("open");
        watches.push(w);
    }
    assert_eq!(app.hub.len(), 50);
    drop(watches);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !app.hub.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} watchers left after their clients went away",
            app.hub.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The challenge id of the `created` answer to `request_id`, skipping the stream's other messages.
async fn created_id(
    responses: &mut tonic::Streaming<pb::StreamChallengesResponse>,
    request_id: &str,
) -> String {
    loop {
        let r = tokio::time::timeout(PATIENCE, responses.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open");
        if let Some(R::Created(c)) = r.response
            && r.request_id == request_id
        {
            return c.challenge.expect("challenge").challenge_id;
        }
    }
}

/// Channels (plain and sharded) the Redis nodes have subscribers for, of one account's routing tag.
fn subscribed_channels(nodes: &mut [redis::Connection], tag: &str) -> Vec<String> {
    let mut channels = Vec::new();
    for c in nodes.iter_mut() {
        for sub in ["CHANNELS", "SHARDCHANNELS"] {
            let names: Vec<String> = redis::cmd("PUBSUB").arg(sub).query(c).expect("PUBSUB");
            channels.extend(names.into_iter().filter(|n| n.contains(tag)));
        }
    }
    channels
}

async fn a_create_answered_with_an_earlier_challenge_leaves_no_subscription_behind(app: TestApp) {
    let account = account();
    let _phone = app.enroll(&account).await;
    let mut nodes = redis_nodes(&app);
    let (tx, mut responses) = open_stream(&app, 4).await;
    // The retry subscribes to the id it drew before the store answers with the first challenge; that
    // id's channel must be given up, not kept for the replica's lifetime.
    let mut ids = Vec::new();
    for request_id in ["first", "retry"] {
        let mut request = create(request_id, &account);
        if let Some(pb::stream_challenges_request::Request::Create(c)) = request.request.as_mut() {
            c.idempotency_key = "sign-in-1".into();
        }
        tx.send(request).await.expect("send");
        ids.push(created_id(&mut responses, request_id).await);
    }
    assert_eq!(
        ids[0], ids[1],
        "the retry is answered with the first challenge"
    );
    let tag = ids[0].split('.').nth(1).expect("an issued id").to_owned();
    // While the stream stays open: one watcher, of the first challenge, and on Redis only that
    // challenge's channel.
    let expected = vec![format!("ar:{{{tag}}}:ev:{}", ids[0])];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let left = subscribed_channels(&mut nodes, &tag);
        let watched: Vec<String> = app.hub.watched().iter().map(|id| id.to_string()).collect();
        if (nodes.is_empty() || left == expected) && watched == ids[..1] && app.hub.len() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "watched {watched:?} ({} watchers), subscribed to {left:?}",
            app.hub.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop((tx, responses));
}

on_every_store!(
    challenges_on_one_stream_each_get_their_own_events_under_their_request_ids,
    a_stream_reports_delivery_of_the_push_it_created,
    watchers_are_removed_when_their_clients_go_away,
    a_create_answered_with_an_earlier_challenge_leaves_no_subscription_behind,
);
