//! Graceful shutdown: open watches are told to reconnect, and the relay exits within its grace period.

use crate::helpers::*;
use approval_relay::pb;
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn on_shutdown_open_watches_end_with_unavailable_and_the_relay_exits_in_time() {
    let mut app = spawn_app_with(|c| c.shutdown_grace_secs = 3).await;
    let account = account();
    let _phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    let mut watch = app.watch(&challenge.challenge_id).await;
    let first = watch.message().await.expect("snapshot").expect("open");
    assert!(matches!(
        first.kind,
        Some(pb::challenge_event::Kind::Snapshot(_))
    ));

    app.stop();
    let status = ending_status(&mut watch).await;
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("reconnect"));
    let stopped = app.stopped.take().expect("running");
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("exits within the grace period")
        .expect("join")
        .expect("clean exit");
}

#[tokio::test]
async fn the_admin_listener_reports_health_readiness_and_metrics() {
    let app = spawn_app().await;
    let account = account();
    let mut phone = app.enroll(&account).await;
    let challenge = app.create(&account, pb::NumberMatchMode::Type).await;
    app.approve(&mut phone, &challenge).await.expect("approve");

    let get = |path: &'static str| {
        let addr = app.admin_addr;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        }
    };
    assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
    assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
    let metrics = get("/metrics").await;
    assert!(
        metrics.contains("relay_challenges_created_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("relay_challenges_ended_total"),
        "{metrics}"
    );
}
