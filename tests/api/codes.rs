//! Offline codes (RFC 6238): provisioned at enrollment or as a standalone authenticator, checked once
//! each by VerifyCode within a budget of wrong codes, sealed at rest, and the factor a single-device owner
//! is pointed to.

use crate::helpers::*;
use crate::signins::{context, evaluate};
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::pb;
use approval_relay::totp;
use tonic::Code;

/// A sealing key file shared by these tests (the Redis store offers codes only with one).
pub fn key_file() -> std::path::PathBuf {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("approval-relay-totp-{}.key", std::process::id()));
        std::fs::write(
            &path,
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
        )
        .expect("write key");
        path
    })
    .clone()
}

async fn app_with_codes(store: &str) -> TestApp {
    spawn_app_on(store, |c| c.totp_key_file = Some(key_file())).await
}

/// Enrolls a phone that asks for an offline code: the phone and its secret.
pub async fn enroll_with_code(app: &TestApp, account: &str) -> (Phone, Vec<u8>) {
    let ticket = app.ticket(account).await;
    let mut phone = Phone::new(PhoneKey::p256());
    let req = phone.enroll_request_with(
        &ticket,
        pb::Platform::Fcm,
        &format!("token-{}", rand_suffix()),
        "com.example.authenticator",
        "Phone with a code",
        true,
    );
    let answer = app
        .device
        .clone()
        .enroll(req)
        .await
        .expect("enroll")
        .into_inner();
    phone.device_id = answer.device_id;
    let secret = data_encoding::BASE32_NOPAD
        .decode(answer.offline_code_secret.as_bytes())
        .expect("base32 secret");
    assert_eq!(secret.len(), 20);
    (phone, secret)
}

fn code_at(secret: &[u8], offset_steps: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    totp::code(
        secret,
        totp::Algorithm::Sha1,
        totp::step(now) + offset_steps,
        totp::DIGITS,
    )
}

pub async fn verify(
    app: &TestApp,
    account: &str,
    code: &str,
    ctx: pb::LoginContext,
) -> Result<pb::VerifyCodeResponse, tonic::Status> {
    app.challenges
        .clone()
        .verify_code(pb::VerifyCodeRequest {
            account_id: account.into(),
            code: code.into(),
            login_context: Some(ctx),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A code that is not `code` (for wrong guesses).
fn other_than(code: &str) -> String {
    let n: u32 = code.parse().expect("digits");
    format!("{:06}", (n + 1) % 1_000_000)
}

async fn a_device_code_is_accepted_once_and_makes_the_sign_in_known(store: &str) {
    let app = app_with_codes(store).await;
    let account = account();
    let (phone, secret) = enroll_with_code(&app, &account).await;
    let devices = app.devices(&account).await;
    assert!(
        devices[0].has_offline_code,
        "ListDevices says it holds a code, never the secret"
    );

    let ctx = context("kiosk-1", "203.0.113.7", "Lyon");
    let code = code_at(&secret, 0);
    let accepted = verify(&app, &account, &code, ctx.clone())
        .await
        .expect("verify");
    assert_eq!(accepted.result(), pb::CodeResult::Accepted);
    assert_eq!(accepted.device_id, phone.device_id);
    let again = verify(&app, &account, &code, ctx.clone())
        .await
        .expect("verify again");
    assert_eq!(
        again.result(),
        pb::CodeResult::Replayed,
        "each code works once"
    );
    // Older than the last accepted step: refused even though it is within the drift window.
    let before = verify(&app, &account, &code_at(&secret, -1), ctx.clone())
        .await
        .expect("older");
    assert_ne!(before.result(), pb::CodeResult::Accepted);
    let stale = verify(&app, &account, &code_at(&secret, -2), ctx.clone())
        .await
        .expect("stale");
    assert_ne!(
        stale.result(),
        pb::CodeResult::Accepted,
        "two steps ago is outside the window"
    );

    let known = evaluate(&app, &account, ctx).await;
    assert_eq!(
        known.recommendation(),
        pb::SignInRecommendation::Allow,
        "an accepted code is like an approval"
    );
    let audit = app.audit_details(&account).await;
    let kinds: Vec<_> = audit.iter().map(|(k, _)| *k).collect();
    assert!(
        kinds.contains(&pb::AuditKind::AuthenticatorCreated),
        "{audit:?}"
    );
    assert!(kinds.contains(&pb::AuditKind::CodeVerified), "{audit:?}");
    assert!(
        audit.contains(&(pb::AuditKind::CodeRefused, "replayed".to_owned())),
        "{audit:?}"
    );

    assert_code(
        verify(&app, &account, "12345", pb::LoginContext::default()).await,
        Code::InvalidArgument,
        "code:",
    );
    assert_code(
        verify(&app, &account, "12345a", pb::LoginContext::default()).await,
        Code::InvalidArgument,
        "code:",
    );

    // Revoking the device deletes its code: the account has none left.
    app.registry
        .clone()
        .revoke_device(pb::RevokeDeviceRequest {
            account_id: account.clone(),
            device_id: phone.device_id.clone(),
        })
        .await
        .expect("revoke");
    assert_code(
        verify(
            &app,
            &account,
            &code_at(&secret, 1),
            pb::LoginContext::default(),
        )
        .await,
        Code::FailedPrecondition,
        "no usable offline code",
    );

    if let Some(redis) = &app.redis {
        // Nothing of the secret is stored in the clear.
        let account2 = crate::helpers::account();
        let (_, secret2) = enroll_with_code(&app, &account2).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*otp:{account2}"))
            .query(&mut redis.connection())
            .expect("KEYS");
        assert_eq!(keys.len(), 1, "{keys:?}");
        let hash: Vec<Vec<u8>> = redis::cmd("HGETALL")
            .arg(&keys[0])
            .query(&mut redis.connection())
            .expect("HGETALL");
        let dump: Vec<u8> = hash.concat();
        let b32 = totp::base32(&secret2);
        assert!(!contains(&dump, &secret2), "raw secret in Redis");
        assert!(!contains(&dump, b32.as_bytes()), "base32 secret in Redis");
        assert!(
            hash.iter().any(|v| v.windows(3).any(|w| w == b"v1.")),
            "a sealed value is there"
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn wrong_codes_past_the_budget_are_refused_with_retry_after_and_a_security_event(
    store: &str,
) {
    let app = spawn_app_on(store, |c| {
        c.totp_key_file = Some(key_file());
        c.code_failures_per_minute = 1;
        c.code_failures_burst = 3;
    })
    .await;
    let account = account();
    let (_, secret) = enroll_with_code(&app, &account).await;
    let right = code_at(&secret, 0);
    let mut wrong = other_than(&right);
    while (-1..=1).any(|d| code_at(&secret, d) == wrong) {
        wrong = other_than(&wrong);
    }
    for _ in 0..3 {
        let r = verify(&app, &account, &wrong, pb::LoginContext::default())
            .await
            .expect("within budget");
        assert_eq!(r.result(), pb::CodeResult::Wrong);
    }
    let refused = verify(&app, &account, &right, pb::LoginContext::default()).await;
    let status = refused.expect_err("past the budget even the right code is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let retry: u64 = status
        .metadata()
        .get("retry-after")
        .expect("retry-after")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let event = security_event(&app, &account, pb::SecurityEventKind::LimitTripped).await;
    assert_eq!(event.detail, "code_failures");
    let audit = app.audit_details(&account).await;
    assert_eq!(
        audit
            .iter()
            .filter(|(k, _)| *k == pb::AuditKind::CodeRefused)
            .count(),
        3,
        "{audit:?}"
    );
}

async fn a_standalone_authenticator_is_activated_by_its_first_code(store: &str) {
    let app = app_with_codes(store).await;
    let account = account();
    let made = app
        .registry
        .clone()
        .create_authenticator(pb::CreateAuthenticatorRequest {
            account_id: account.clone(),
            label: "ana@example.com".into(),
        })
        .await
        .expect("create authenticator")
        .into_inner();
    assert!(made.authenticator_id.starts_with("au_"), "{made:?}");
    assert!(
        made.otpauth_uri
            .starts_with("otpauth://totp/approval-relay:ana%40example.com?secret="),
        "{}",
        made.otpauth_uri
    );
    assert!(made.otpauth_uri.contains(&made.secret_base32));
    let secret = data_encoding::BASE32_NOPAD
        .decode(made.secret_base32.as_bytes())
        .expect("base32");
    // No device at all: EvaluateSignIn points to the code.
    let e = evaluate(&app, &account, context("x", "", "")).await;
    assert_eq!(e.recommendation(), pb::SignInRecommendation::Code);
    let r = verify(
        &app,
        &account,
        &code_at(&secret, 0),
        pb::LoginContext::default(),
    )
    .await
    .expect("verify");
    assert_eq!(r.result(), pb::CodeResult::Accepted);
    assert_eq!(r.authenticator_id, made.authenticator_id);
    assert!(r.device_id.is_empty());
    let audit = app.audit_details(&account).await;
    assert!(
        audit.contains(&(
            pb::AuditKind::CodeVerified,
            format!("{} activated", made.authenticator_id)
        )),
        "{audit:?}"
    );
    let delete = |id: &str| {
        let mut registry = app.registry.clone();
        let req = pb::DeleteAuthenticatorRequest {
            account_id: account.clone(),
            authenticator_id: id.to_owned(),
        };
        async move { registry.delete_authenticator(req).await }
    };
    assert_code(
        delete("au_x:p").await,
        Code::InvalidArgument,
        "authenticator_id:",
    );
    delete(&made.authenticator_id).await.expect("delete");
    assert_code(
        delete(&made.authenticator_id).await,
        Code::NotFound,
        "authenticator",
    );
    assert_code(
        verify(
            &app,
            &account,
            &code_at(&secret, 1),
            pb::LoginContext::default(),
        )
        .await,
        Code::FailedPrecondition,
        "no usable offline code",
    );
    let audit = app.audit_details(&account).await;
    assert!(
        audit.contains(&(
            pb::AuditKind::AuthenticatorDeleted,
            made.authenticator_id.clone()
        )),
        "{audit:?}"
    );
    for _ in 0..4 {
        app.registry
            .clone()
            .create_authenticator(pb::CreateAuthenticatorRequest {
                account_id: account.clone(),
                label: String::new(),
            })
            .await
            .expect("up to four");
    }
    assert_code(
        app.registry
            .clone()
            .create_authenticator(pb::CreateAuthenticatorRequest {
                account_id: account.clone(),
                label: String::new(),
            })
            .await,
        Code::FailedPrecondition,
        "maximum number of standalone authenticators",
    );
}

/// A single-device owner signing in on that device: CreateChallenge keeps FAILED_PRECONDITION, and its
/// details say an offline code is there.
async fn a_single_device_owner_is_pointed_to_the_offline_code(store: &str) {
    let app = app_with_codes(store).await;
    let account = account();
    let (phone, _) = enroll_with_code(&app, &account).await;
    let ctx = pb::LoginContext {
        signing_in_device_id: phone.device_id.clone(),
        ..context("phone-browser", "203.0.113.7", "Lyon")
    };
    let status = app
        .create_with(pb::CreateChallengeRequest {
            account_id: account.clone(),
            login_context: Some(ctx.clone()),
            ..Default::default()
        })
        .await
        .expect_err("no other device");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("an offline code is available"),
        "{status:?}"
    );
    let details = tonic_types::StatusExt::get_error_details(&status);
    let info = details.error_info().expect("ErrorInfo detail");
    assert_eq!(info.reason, "OFFLINE_CODE_AVAILABLE");
    assert_eq!(info.domain, "approval-relay");
    assert_eq!(
        info.metadata.get("factor").map(String::as_str),
        Some("offline_code")
    );
    let e = evaluate(&app, &account, ctx).await;
    assert_eq!(e.recommendation(), pb::SignInRecommendation::Code);
    assert_eq!(e.pushable_devices, 0);
    assert!(e.offline_code_available);

    // Without any code the reason says so.
    let bare = crate::helpers::account();
    let status = app
        .create_with(pb::CreateChallengeRequest {
            account_id: bare,
            ..Default::default()
        })
        .await
        .expect_err("no device");
    let details = tonic_types::StatusExt::get_error_details(&status);
    assert_eq!(details.error_info().expect("ErrorInfo").reason, "NO_FACTOR");
}

/// Redis without a sealing key offers no codes, and says so before the ticket is spent.
async fn without_a_sealing_key_redis_refuses_offline_codes_and_keeps_the_ticket(store: &str) {
    let app = spawn_app_on(store, |_| {}).await;
    let account = account();
    let ticket = app.ticket(&account).await;
    let phone = Phone::new(PhoneKey::p256());
    let req = phone.enroll_request_with(
        &ticket,
        pb::Platform::Fcm,
        "t-1",
        "com.example.authenticator",
        "p",
        true,
    );
    let result = app.device.clone().enroll(req).await;
    if store == "memory" {
        assert!(
            result.is_ok(),
            "the in-memory store seals with a key made at start"
        );
        return;
    }
    assert_code(result, Code::FailedPrecondition, "totp_key_file");
    let req = phone.enroll_request(
        &ticket,
        pb::Platform::Fcm,
        "t-1",
        "com.example.authenticator",
        "p",
    );
    app.device
        .clone()
        .enroll(req)
        .await
        .expect("the ticket still works without a code");
    assert_code(
        app.registry
            .clone()
            .create_authenticator(pb::CreateAuthenticatorRequest {
                account_id: account,
                label: String::new(),
            })
            .await,
        Code::FailedPrecondition,
        "totp_key_file",
    );
}

/// Slow guessing within the budget's refill is still reported: every 10 refusals in a row.
async fn a_streak_of_wrong_codes_raises_a_security_event(store: &str) {
    let app = spawn_app_on(store, |c| {
        c.totp_key_file = Some(key_file());
        c.code_failures_burst = 50;
    })
    .await;
    let account = account();
    let (_, secret) = enroll_with_code(&app, &account).await;
    let mut wrong = other_than(&code_at(&secret, 0));
    while (-1..=1).any(|d| code_at(&secret, d) == wrong) {
        wrong = other_than(&wrong);
    }
    for _ in 0..approval_relay::factor::STREAK_ALERT {
        let r = verify(&app, &account, &wrong, pb::LoginContext::default())
            .await
            .expect("within budget");
        assert_eq!(r.result(), pb::CodeResult::Wrong);
    }
    let event = security_event(&app, &account, pb::SecurityEventKind::LimitTripped).await;
    assert_eq!(event.detail, "code_failures_consecutive");
}

per_store!(
    a_streak_of_wrong_codes_raises_a_security_event,
    a_device_code_is_accepted_once_and_makes_the_sign_in_known,
    wrong_codes_past_the_budget_are_refused_with_retry_after_and_a_security_event,
    a_standalone_authenticator_is_activated_by_its_first_code,
    a_single_device_owner_is_pointed_to_the_offline_code,
    without_a_sealing_key_redis_refuses_offline_codes_and_keeps_the_ticket
);
