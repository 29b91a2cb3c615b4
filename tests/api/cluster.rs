//! Redis Cluster: the flow across replicas, and no subscription lost when a master restarts while
//! watchers wait on channels in many slots (DESIGN.md §9: redis-rs' own re-subscription loses them).

use crate::helpers::*;
use crate::redis_server::RedisCluster;
use approval_relay::pb;
use approval_relay::pb::challenge_event::Kind;
use std::time::Duration;

async fn replica(cluster: &RedisCluster) -> TestApp {
    let seeds = cluster.seeds();
    spawn_app_with(|c| c.redis_cluster_nodes = Some(seeds)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_works_across_replicas_on_a_cluster() {
    let cluster = RedisCluster::start();
    let (a, b) = (replica(&cluster).await, replica(&cluster).await);
    let account = account();
    let mut phone = b.enroll(&account).await;
    let challenge = a.create(&account, pb::NumberMatchMode::Choose).await;
    let watch = a.watch(&challenge.challenge_id).await;
    b.approve(&mut phone, &challenge)
        .await
        .expect("approve on B");
    assert!(matches!(
        decisive(&drain(watch).await).as_slice(),
        [Kind::Snapshot(_), Kind::Approved(_)]
    ));

    let expiring = b.create_short(&account, 1).await;
    assert!(matches!(
        decisive(&drain(a.watch(&expiring.challenge_id).await).await).last(),
        Some(Kind::Expired(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_subscription_is_lost_when_a_master_restarts_under_watchers_in_many_slots() {
    let mut cluster = RedisCluster::start();
    let (a, b) = (replica(&cluster).await, replica(&cluster).await);
    let mut open = Vec::new();
    for _ in 0..24 {
        let account = account();
        let phone = b.enroll(&account).await;
        let challenge = a.create(&account, pb::NumberMatchMode::Type).await;
        let mut watch = a.watch(&challenge.challenge_id).await;
        watch.message().await.expect("snapshot").expect("open");
        open.push((phone, challenge, watch));
    }

    cluster.nodes[0].restart();
    cluster.wait_ok();
    // Give the watching replica a moment to notice the dropped connection and re-subscribe.
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (phone, challenge, _) in &mut open {
        let mut tries = 0;
        while let Err(status) = b.approve(phone, challenge).await {
            tries += 1;
            assert!(
                tries < 30,
                "approval keeps failing after the restart: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for (_, challenge, mut watch) in open {
        let outcome = tokio::time::timeout(PATIENCE, async {
            loop {
                match watch.message().await {
                    Ok(Some(pb::ChallengeEvent {
                        kind: Some(Kind::Approved(_)),
                        ..
                    })) => return Ok(()),
                    Ok(Some(_)) => {}
                    Ok(None) => return Err("stream ended without APPROVED".to_owned()),
                    Err(status) => return Err(format!("{status:?}")),
                }
            }
        })
        .await;
        assert!(
            matches!(outcome, Ok(Ok(()))),
            "watcher of {} missed its approval: {outcome:?}",
            challenge.challenge_id
        );
    }
}
