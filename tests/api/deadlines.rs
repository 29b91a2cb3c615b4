//! What a challenge costs at its deadline: nothing once it is decided (its watchers' timers skip it and
//! its overdue entry is gone soon after the decision), and an unwatched pending one is still expired by
//! the sweep within about a second. Script calls are counted with Redis's own `INFO commandstats`.

use crate::helpers::*;
use approval_relay::pb;
use approval_relay::pb::challenge_event::Kind;
use std::time::{Duration, Instant};

/// Script calls so far, summed over the nodes.
fn script_calls(nodes: &mut [redis::Connection]) -> u64 {
    nodes
        .iter_mut()
        .map(|c| {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query(c)
                .expect("INFO");
            info.lines()
                .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
                .filter_map(|l| {
                    l.split("calls=")
                        .nth(1)?
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum::<u64>()
        })
        .sum()
}

/// True when the sorted set `key` holds `id` on some node (on Cluster a key lives on one node; the others
/// answer MOVED, which is not a hit).
fn in_sorted_set(nodes: &mut [redis::Connection], key: &str, id: &str) -> bool {
    nodes.iter_mut().any(|c| {
        redis::cmd("ZSCORE")
            .arg(key)
            .arg(id)
            .query::<Option<f64>>(c)
            .ok()
            .flatten()
            .is_some()
    })
}

/// True while any overdue-index shard (README: `ar:due:{0}` … `ar:due:{15}`) holds `id`.
fn indexed(nodes: &mut [redis::Connection], id: &str) -> bool {
    (0..16).any(|shard| in_sorted_set(nodes, &format!("ar:due:{{{shard}}}"), id))
}

/// True while any overdue-index shard holds push work owed for `id` (a member `p:<replica>:<id>`).
fn push_work_indexed(nodes: &mut [redis::Connection], id: &str) -> bool {
    let suffix = format!(":{id}");
    (0..16).any(|shard| {
        nodes.iter_mut().any(|c| {
            redis::cmd("ZRANGE")
                .arg(format!("ar:due:{{{shard}}}"))
                .arg(0)
                .arg(-1)
                .query::<Vec<String>>(c)
                .unwrap_or_default()
                .iter()
                .any(|m| m.starts_with("p:") && m.ends_with(&suffix))
        })
    })
}

/// True while the account's pending index (README: `ar:{<tag>}:pend:<account>`) holds `id`.
fn pending_indexed(nodes: &mut [redis::Connection], account: &str, id: &str) -> bool {
    // The tag is the second dot-separated part of an issued id (README, ids).
    let tag = id.split('.').nth(1).expect("an issued id");
    in_sorted_set(nodes, &format!("ar:{{{tag}}}:pend:{account}"), id)
}

async fn an_ended_challenge_leaves_its_accounts_pending_index(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let mut nodes = redis_nodes(&app);
    let approved = app.create(&account, pb::NumberMatchMode::None).await;
    let cancelled = app.create(&account, pb::NumberMatchMode::None).await;
    if !nodes.is_empty() {
        for c in [&approved, &cancelled] {
            assert!(
                pending_indexed(&mut nodes, &account, &c.challenge_id),
                "a pending challenge is indexed"
            );
        }
    }
    app.approve(&mut phone, &approved).await.expect("approve");
    app.challenges
        .clone()
        .cancel_challenge(pb::CancelChallengeRequest {
            challenge_id: cancelled.challenge_id.clone(),
        })
        .await
        .expect("cancel");
    for c in [&approved, &cancelled] {
        // On every store the same answer: nothing pending; on Redis the index no longer holds them, so a
        // later create does not read them again.
        assert!(
            !pending_indexed(&mut nodes, &account, &c.challenge_id),
            "an ended challenge stays indexed"
        );
    }
    let pending = app.list_pending(&mut phone).await;
    assert!(
        pending.is_empty(),
        "ListPending still lists an ended challenge"
    );
    if !nodes.is_empty() {
        // An entry past retention whose challenge is gone (it never ended: its hash was lost) is pruned
        // by the account's next create.
        let tag = approved
            .challenge_id
            .split('.')
            .nth(1)
            .expect("an issued id");
        let key = format!("ar:{{{tag}}}:pend:{account}");
        let lost = format!("c.{tag}.lost");
        for c in nodes.iter_mut() {
            let _ = redis::cmd("ZADD")
                .arg(&key)
                .arg(1)
                .arg(&lost)
                .query::<i64>(c);
        }
        assert!(in_sorted_set(&mut nodes, &key, &lost));
        app.create(&account, pb::NumberMatchMode::None).await;
        assert!(
            !in_sorted_set(&mut nodes, &key, &lost),
            "a stale entry outlived the next create"
        );
    }
}

async fn a_decided_challenge_costs_no_store_call_at_its_deadline(app: TestApp) {
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create_short(&account, 2).await;
    let watch = app.watch(&challenge.challenge_id).await;
    app.approve(&mut phone, &challenge).await.expect("approve");
    assert!(matches!(
        decisive(&drain(watch).await).as_slice(),
        [Kind::Snapshot(_), Kind::Approved(_)]
    ));

    let mut nodes = redis_nodes(&app);
    if !nodes.is_empty() {
        // Out of the overdue index soon after the decision, its finished push work too (removals are
        // batched for 100 ms).
        let until = Instant::now() + Duration::from_secs(2);
        while indexed(&mut nodes, &challenge.challenge_id)
            || push_work_indexed(&mut nodes, &challenge.challenge_id)
        {
            assert!(
                Instant::now() < until,
                "still in the overdue index 2 s after the decision"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let before = script_calls(&mut nodes);
    // Past the deadline and two sweeps: the watcher's timer fires and is skipped, the sweep finds nothing.
    let deadline = u64::try_from(challenge.expires_at_unix_ms).expect("deadline");
    let now = u64::try_from(approval_relay::clock::now_ms()).expect("now");
    tokio::time::sleep(Duration::from_millis(deadline.saturating_sub(now) + 2_500)).await;
    assert_eq!(
        script_calls(&mut nodes),
        before,
        "a decided challenge ran a script at its deadline"
    );
    let ended = app.get(&challenge.challenge_id).await;
    assert_eq!(ended.state(), pb::ChallengeState::Approved);
    let terminal = app
        .audit_details(&account)
        .await
        .iter()
        .filter(|(k, _)| {
            matches!(
                k,
                pb::AuditKind::ChallengeApproved | pb::AuditKind::ChallengeExpired
            )
        })
        .count();
    assert_eq!(terminal, 1, "exactly one terminal audit record");
}

async fn an_unwatched_challenge_is_expired_by_the_sweep(app: TestApp) {
    let account = account();
    let _phone = app.enroll(&account).await;
    let challenge = app.create_short(&account, 1).await;
    let until = Instant::now() + Duration::from_secs(5);
    let ended = loop {
        let now = app.get(&challenge.challenge_id).await;
        if now.state() != pb::ChallengeState::Pending {
            break now;
        }
        assert!(Instant::now() < until, "not expired 5 s after a 1 s TTL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ended.state(), pb::ChallengeState::Expired);
    let late_by = ended.ended_at_unix_ms - ended.expires_at_unix_ms;
    // The sweep runs once a second on every replica.
    assert!(
        (0..2_000).contains(&late_by),
        "expired {late_by} ms after the deadline"
    );
    let expiries = app
        .audit_details(&account)
        .await
        .iter()
        .filter(|(k, _)| *k == pb::AuditKind::ChallengeExpired)
        .count();
    assert_eq!(expiries, 1);
}

on_every_store!(
    an_ended_challenge_leaves_its_accounts_pending_index,
    a_decided_challenge_costs_no_store_call_at_its_deadline,
    an_unwatched_challenge_is_expired_by_the_sweep
);
