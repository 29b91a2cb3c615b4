//! `approval-relay device listen`: the phone "receives" its pushes from mock-push's push stream (a
//! poll-only phone polls ListPending instead), fetches each challenge over the signed device API, and
//! shows it or answers it after a think time.

use super::{KeyFile, Phone, describe, save, status};
use crate::pb;
use crate::pb::device_request::Body;
use crate::pb::device_service_client::DeviceServiceClient;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::Channel;

/// What `listen` was asked to do.
pub struct Listen<'a> {
    pub(super) mock: &'a str,
    pub(super) ca_file: Option<&'a Path>,
    pub(super) auto: Option<&'a str>,
    pub(super) think_ms: u64,
    pub(super) once: bool,
    pub(super) poll: Duration,
}

/// The challenge id and action a push carries: in FCM's `data` object, in HMS's `data` string or Mi
/// Push's `payload` string (both JSON), or at the top of an APNs payload.
fn challenge_of(push: &serde_json::Value) -> Option<(String, String)> {
    let payload = &push["payload"];
    let embedded = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
    };
    let fields = match (&payload["data"], &payload["payload"]) {
        (data @ serde_json::Value::Object(_), _) => data.clone(),
        (data @ serde_json::Value::String(_), _) => embedded(data)?,
        (_, form @ serde_json::Value::String(_)) => embedded(form)?,
        _ => payload.clone(),
    };
    let id = fields["challenge_id"].as_str()?.to_owned();
    let action = fields["action"].as_str().unwrap_or("challenge").to_owned();
    Some((id, action))
}

/// A poll-only phone: asks ListPending every `listen.poll` and handles each challenge once.
async fn poll(
    listen: &Listen<'_>,
    keys: &PathBuf,
    file: &KeyFile,
    phone: &mut Phone,
    client: &mut DeviceServiceClient<Channel>,
) -> Result<(), String> {
    println!(
        "polling for challenges every {} ms …",
        listen.poll.as_millis()
    );
    let mut seen = std::collections::HashSet::new();
    loop {
        let request = phone.signed(Body::ListPending(pb::ListPendingBody {}));
        let pending = client.list_pending(request).await;
        save(keys, &file.with_counter(phone))?;
        for challenge in pending.map_err(status)?.into_inner().challenges {
            if !seen.insert(challenge.challenge_id.clone()) {
                continue;
            }
            let result = handle(listen, phone, client, &challenge.challenge_id).await;
            save(keys, &file.with_counter(phone))?;
            if let Err(e) = result {
                eprintln!("{}: {e}", challenge.challenge_id);
            }
            if listen.once {
                return Ok(());
            }
        }
        tokio::time::sleep(listen.poll).await;
    }
}

pub(super) async fn run(
    listen: Listen<'_>,
    keys: &PathBuf,
    file: KeyFile,
    mut phone: Phone,
    mut client: DeviceServiceClient<Channel>,
) -> Result<(), String> {
    if file.poll_only {
        return poll(&listen, keys, &file, &mut phone, &mut client).await;
    }
    if file.push_token.is_empty() {
        return Err("the key file has no push token; enroll again with this version".into());
    }
    let ca = match listen.ca_file {
        Some(p) => Some(
            std::fs::read_to_string(p).map_err(|e| format!("--ca-file {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let http = crate::push::http::http2_client(ca.as_deref()).map_err(|e| e.to_string())?;
    // With a fallback channel, every push is read and this phone's two tokens picked out.
    let tokens = [file.push_token.as_str(), file.fallback_push_token.as_str()];
    let url = if file.fallback_push_token.is_empty() {
        format!(
            "{}/mock/pushes?token={}",
            listen.mock.trim_end_matches('/'),
            file.push_token
        )
    } else {
        format!("{}/mock/pushes", listen.mock.trim_end_matches('/'))
    };
    let request = hyper::Request::get(&url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = http
        .request(request)
        .await
        .map_err(|e| format!("cannot reach mock-push at {url}: {e}"))?;
    println!("listening for pushes to {} …", file.push_token);
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let Ok(push) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            if !push["token"].as_str().is_some_and(|t| tokens.contains(&t)) {
                continue;
            }
            let Some((id, action)) = challenge_of(&push) else {
                continue;
            };
            if action == "withdraw" {
                println!("{id}: withdrawn (answered elsewhere or ended)");
                continue;
            }
            let result = handle(&listen, &mut phone, &mut client, &id).await;
            save(keys, &file.with_counter(&phone))?;
            if let Err(e) = result {
                eprintln!("{id}: {e}");
            }
            if listen.once {
                return Ok(());
            }
        }
    }
    Err("mock-push closed the stream".into())
}

async fn handle(
    listen: &Listen<'_>,
    phone: &mut Phone,
    client: &mut DeviceServiceClient<Channel>,
    id: &str,
) -> Result<(), String> {
    let request = phone.signed(Body::GetChallenge(pb::GetChallengeBody {
        challenge_id: id.to_owned(),
    }));
    let challenge = client
        .get_challenge(request)
        .await
        .map_err(status)?
        .into_inner();
    println!("push received: {}", describe(&challenge));
    let Some(auto) = listen.auto else {
        return Ok(());
    };
    tokio::time::sleep(Duration::from_millis(listen.think_ms)).await;
    let (decision, reason) = match auto {
        "approve" if challenge.number_match_mode() != pb::NumberMatchMode::None => {
            return Err("asks for the number on the sign-in screen: answer with `device respond … --number N`".into());
        }
        "approve" => (pb::Decision::Approve, pb::DenyReason::Unspecified),
        "deny" => (pb::Decision::Deny, pb::DenyReason::NotMe),
        "fraud" => (pb::Decision::ReportFraud, pb::DenyReason::Unspecified),
        other => {
            return Err(format!(
                "--auto must be approve, deny or fraud, not {other:?}"
            ));
        }
    };
    let body = pb::RespondBody {
        challenge_id: id.to_owned(),
        decision: decision.into(),
        deny_reason: reason.into(),
        number: 0,
    };
    let state = client
        .respond(phone.signed(Body::Respond(body)))
        .await
        .map_err(status)?
        .into_inner()
        .state();
    println!("{id}: {}", state.as_str_name());
    Ok(())
}
