//! Key attestation at enrollment: Android Key Attestation chains and App Attest objects built in the
//! real structures under test roots (rcgen, the published ASN.1 and CBOR layouts), verified by the
//! relay's verifier directly and through Enroll on every store; the verdict in ListDevices, the audit
//! record and the security event; `require_attestation` and CreateChallenge's `min_assurance`.

use crate::helpers::*;
use approval_relay::attest::{
    AndroidPolicy, AppleEnvironment, ApplePolicy, Assurance, Binding, BootState, Refusal,
    Requirement, Revocations, Verdict, android::AllowedApp,
};
use approval_relay::auth::PublicKey;
use approval_relay::device_sim::attest::{self, AndroidSpec, AppleSpec, TestRoot};
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::pb;
use prost::Message;
use tonic::Code;

const PACKAGE: &str = "com.example.approve";
const APPLE_APP: &str = "TEAMID1234.com.example.approve";
const TICKET: &str = "t.0a1b.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn root() -> TestRoot {
    TestRoot::generate("test attestation root").expect("root")
}

fn der_roots(root: &TestRoot) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    approval_relay::attest::parse_pem_roots(root.pem()).expect("root parses")
}

/// A phone key and its parsed public key, as the relay holds it.
fn phone_key() -> (PhoneKey, PublicKey) {
    let key = PhoneKey::p256();
    let public = PublicKey::parse(
        approval_relay::auth::KeyAlgorithm::EcdsaP256,
        &key.public_key(),
    )
    .expect("key");
    (key, public)
}

/// What an Android attestation of `key` for [`TICKET`] and [`PACKAGE`] must be bound to.
fn android_binding(key: &PublicKey) -> Binding<'_> {
    Binding {
        ticket: TICKET,
        key,
        app_id: PACKAGE,
        client_data: &[],
    }
}

fn android_verify(
    policy: &AndroidPolicy,
    spec: &AndroidSpec,
    root: &TestRoot,
    key: &PhoneKey,
    enrolled: &PublicKey,
) -> Result<Verdict, Refusal> {
    let chain = spec.chain(root, &key.spki_der()).expect("chain");
    policy.verify(&chain, &android_binding(enrolled), now_secs())
}

fn android_policy(root: &TestRoot) -> AndroidPolicy {
    AndroidPolicy {
        roots: der_roots(root),
        apps: vec![AllowedApp::parse(PACKAGE).expect("app")],
        revoked: Revocations::default(),
    }
}

#[test]
fn android_tee_and_strongbox_chains_are_accepted_with_their_level_app_and_boot_state() {
    let root = root();
    let (key, public) = phone_key();
    let policy = android_policy(&root);
    let tee = AndroidSpec::new(TICKET, PACKAGE);
    assert_eq!(
        android_verify(&policy, &tee, &root, &key, &public),
        Ok(Verdict {
            assurance: Assurance::AndroidTee,
            app: PACKAGE.into(),
            boot: Some(BootState::Verified),
        })
    );
    let strongbox = AndroidSpec {
        attestation_level: 2,
        keymint_level: 2,
        boot_state: 2,
        ..AndroidSpec::new(TICKET, PACKAGE)
    };
    let verdict = android_verify(&policy, &strongbox, &root, &key, &public).expect("accepted");
    assert_eq!(verdict.assurance, Assurance::AndroidStrongBox);
    assert_eq!(verdict.boot, Some(BootState::Unverified));
    // The lower of the two levels counts: a StrongBox key attested by the TEE is a TEE verdict.
    let mixed = AndroidSpec {
        keymint_level: 2,
        ..AndroidSpec::new(TICKET, PACKAGE)
    };
    assert_eq!(
        android_verify(&policy, &mixed, &root, &key, &public).map(|v| v.assurance),
        Ok(Assurance::AndroidTee)
    );
}

#[test]
fn a_software_attestation_is_recorded_as_software_and_refused_when_hardware_is_required() {
    let root = root();
    let (key, public) = phone_key();
    let software = AndroidSpec {
        attestation_level: 0,
        keymint_level: 0,
        ..AndroidSpec::new(TICKET, PACKAGE)
    };
    let verdict =
        android_verify(&android_policy(&root), &software, &root, &key, &public).expect("verifies");
    assert_eq!(verdict.assurance, Assurance::Software);
    assert_eq!(
        Requirement::Hardware.check(&verdict),
        Err(Refusal::HardwareRequired)
    );
}

#[test]
fn android_refusals_name_their_reason() {
    let root = root();
    let (key, public) = phone_key();
    let policy = android_policy(&root);
    let good = AndroidSpec::new(TICKET, PACKAGE);
    let reason = |policy: &AndroidPolicy, spec: &AndroidSpec, enrolled: &PublicKey| {
        android_verify(policy, spec, &root, &key, enrolled)
            .expect_err("refused")
            .reason()
    };
    let wrong_challenge = AndroidSpec::new("t.0a1b.another-ticket", PACKAGE);
    assert_eq!(
        reason(&policy, &wrong_challenge, &public),
        "CHALLENGE_MISMATCH"
    );
    let (_, other_key) = phone_key();
    assert_eq!(reason(&policy, &good, &other_key), "KEY_MISMATCH");
    let foreign = android_policy(&TestRoot::generate("another root").expect("root"));
    assert_eq!(reason(&foreign, &good, &public), "CHAIN_UNTRUSTED");
    let expired = AndroidSpec {
        intermediate_not_after: time::OffsetDateTime::now_utc() - time::Duration::hours(1),
        ..AndroidSpec::new(TICKET, PACKAGE)
    };
    assert_eq!(
        android_verify(&policy, &expired, &root, &key, &public),
        Err(Refusal::Expired(1))
    );
    let other_app = AndroidSpec::new(TICKET, "com.evil.clone");
    assert_eq!(reason(&policy, &other_app, &public), "APP_NOT_ALLOWED");
    // The package is the enrolling app but not on the allow-list.
    let narrow = AndroidPolicy {
        apps: vec![AllowedApp::parse("com.example.other").expect("app")],
        ..android_policy(&root)
    };
    assert_eq!(reason(&narrow, &good, &public), "APP_NOT_ALLOWED");
    // An allow-list entry with a signing-certificate digest the attestation does not carry.
    let signer = AndroidPolicy {
        apps: vec![AllowedApp::parse(&format!("{PACKAGE}:{}", "ab".repeat(32))).expect("app")],
        ..android_policy(&root)
    };
    assert_eq!(reason(&signer, &good, &public), "APP_NOT_ALLOWED");
    let signed_ok = AndroidPolicy {
        apps: vec![AllowedApp::parse(&format!("{PACKAGE}:{}", "5a".repeat(32))).expect("app")],
        ..android_policy(&root)
    };
    assert!(android_verify(&signed_ok, &good, &root, &key, &public).is_ok());
    let revoked = AndroidPolicy {
        revoked: Revocations::parse_status_json(
            r#"{"entries": {"0000c0ffee": {"status": "REVOKED", "reason": "KEY_COMPROMISE"}}}"#,
        )
        .expect("list"),
        ..android_policy(&root)
    };
    let listed = AndroidSpec {
        leaf_serial: 0xc0ffee,
        ..AndroidSpec::new(TICKET, PACKAGE)
    };
    assert_eq!(
        android_verify(&revoked, &listed, &root, &key, &public),
        Err(Refusal::Revoked(0))
    );
}

#[test]
fn imported_keys_non_signing_keys_and_a_software_attestation_of_a_tee_key_are_not_hardware() {
    let root = root();
    let (key, public) = phone_key();
    let policy = android_policy(&root);
    let imported = AndroidSpec {
        origin: 2,
        ..AndroidSpec::new(TICKET, PACKAGE)
    };
    assert_eq!(
        android_verify(&policy, &imported, &root, &key, &public),
        Err(Refusal::KeyNotGenerated)
    );
    let verify_only = AndroidSpec {
        purposes: vec![3],
        ..AndroidSpec::new(TICKET, PACKAGE)
    };
    assert_eq!(
        android_verify(&policy, &verify_only, &root, &key, &public),
        Err(Refusal::KeyNotForSigning)
    );
    // A TEE attestation of a software key, and a software attestation of a TEE key: both SOFTWARE.
    for (attestation_level, keymint_level) in [(1, 0), (0, 1)] {
        let spec = AndroidSpec {
            attestation_level,
            keymint_level,
            ..AndroidSpec::new(TICKET, PACKAGE)
        };
        assert_eq!(
            android_verify(&policy, &spec, &root, &key, &public).map(|v| v.assurance),
            Ok(Assurance::Software)
        );
    }
}

#[test]
fn an_ed25519_keystore_key_and_a_chain_ending_in_an_expired_issue_of_the_root_are_accepted() {
    let root = root();
    let policy = android_policy(&root);
    let key = PhoneKey::ed25519();
    let public = PublicKey::parse(
        approval_relay::auth::KeyAlgorithm::Ed25519,
        &key.public_key(),
    )
    .expect("key");
    let spec = AndroidSpec::new(TICKET, PACKAGE);
    assert_eq!(
        android_verify(&policy, &spec, &root, &key, &public).map(|v| v.assurance),
        Ok(Assurance::AndroidTee)
    );
    // Phones append the root, sometimes an older, expired issue with the same key (Google's 2016 RSA
    // root): it is the anchor, trusted by its key.
    let mut chain = spec.chain(&root, &key.spki_der()).expect("chain");
    chain.push(
        root.expired_issue("test attestation root")
            .expect("old root"),
    );
    let binding = android_binding(&public);
    assert!(policy.verify(&chain, &binding, now_secs()).is_ok());
    // Not yet valid: before the leaf's notBefore.
    assert_eq!(
        policy.verify(&chain, &binding, now_secs() - 10 * 86_400),
        Err(Refusal::Expired(0))
    );
}

#[test]
fn a_revoked_intermediate_refuses_the_chain() {
    use x509_parser::prelude::FromDer;
    let root = root();
    let (key, public) = phone_key();
    let spec = AndroidSpec::new(TICKET, PACKAGE);
    let chain = spec.chain(&root, &key.spki_der()).expect("chain");
    let (_, intermediate) =
        x509_parser::certificate::X509Certificate::from_der(&chain[1]).expect("intermediate");
    let serial = data_encoding::HEXLOWER.encode(intermediate.raw_serial());
    let policy = AndroidPolicy {
        revoked: Revocations::of([serial.as_str()]),
        ..android_policy(&root)
    };
    let binding = android_binding(&public);
    assert_eq!(
        policy.verify(&chain, &binding, now_secs()),
        Err(Refusal::Revoked(1))
    );
}

#[test]
fn requiring_hardware_needs_a_verified_boot_and_an_android_allow_list() {
    use approval_relay::attest::{Evidence, Policy};
    let root = root();
    let (key, public) = phone_key();
    let binding = android_binding(&public);
    let policy = Policy {
        require: Requirement::Hardware,
        android: android_policy(&root),
        apple: ApplePolicy::default(),
    };
    let evidence =
        |spec: &AndroidSpec| Evidence::Android(spec.chain(&root, &key.spki_der()).expect("chain"));
    let unlocked = AndroidSpec {
        boot_state: 2,
        ..AndroidSpec::new(TICKET, PACKAGE)
    };
    assert_eq!(
        policy.verify(Some(&evidence(&unlocked)), &binding, now_secs()),
        Err(Refusal::BootNotVerified("unverified"))
    );
    let good = evidence(&AndroidSpec::new(TICKET, PACKAGE));
    assert!(policy.verify(Some(&good), &binding, now_secs()).is_ok());
    // Only Apple app ids configured: Android evidence is refused rather than trusted for any package.
    let apple_only = Policy {
        android: AndroidPolicy {
            apps: Vec::new(),
            ..android_policy(&root)
        },
        ..policy.clone()
    };
    assert_eq!(
        apple_only
            .verify(Some(&good), &binding, now_secs())
            .map_err(|r| r.reason()),
        Err("APP_NOT_ALLOWED")
    );
    // Without the requirement, an unlocked phone is recorded, not refused.
    let relaxed = Policy {
        require: Requirement::None,
        ..policy
    };
    assert_eq!(
        relaxed
            .verify(Some(&evidence(&unlocked)), &binding, now_secs())
            .map(|v| v.boot),
        Ok(Some(BootState::Unverified))
    );
}

#[test]
fn a_repeated_root_of_trust_is_malformed() {
    use approval_relay::attest::key_description;
    let root_of_trust = |state: i64| {
        move |w: yasna::DERWriter<'_>| {
            w.write_tagged(yasna::Tag::context(704), |w| {
                w.write_sequence(|w| {
                    w.next().write_bytes(&[0; 32]);
                    w.next().write_bool(true);
                    w.next().write_enum(state);
                });
            });
        }
    };
    let description = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u32(300);
            w.next().write_enum(1);
            w.next().write_u32(300);
            w.next().write_enum(1);
            w.next().write_bytes(&[1; 32]);
            w.next().write_bytes(&[]);
            w.next().write_sequence(|_| {});
            w.next().write_sequence(|w| {
                root_of_trust(2)(w.next());
                root_of_trust(0)(w.next());
            });
        });
    });
    let error = key_description::parse(&description).expect_err("refused");
    assert!(error.contains("[704] appears twice"), "{error}");
}

#[test]
fn malformed_android_evidence_is_named_by_its_path() {
    let (_, public) = phone_key();
    let binding = android_binding(&public);
    let policy = AndroidPolicy::default();
    let refusal = policy
        .verify(&[b"not a certificate".to_vec()], &binding, now_secs())
        .expect_err("refused");
    assert!(
        matches!(&refusal, Refusal::Malformed { field, .. } if field == "android.certificate_chain[0]"),
        "{refusal:?}"
    );
    assert!(matches!(
        policy.verify(&[], &binding, now_secs()),
        Err(Refusal::Malformed { .. })
    ));
    // A certificate without the key description extension.
    let plain = rcgen::CertificateParams::new(vec!["x".to_owned()])
        .expect("params")
        .self_signed(&rcgen::KeyPair::generate().expect("key"))
        .expect("cert");
    let refusal = policy
        .verify(&[plain.der().to_vec()], &binding, now_secs())
        .expect_err("refused");
    assert!(
        refusal.to_string().contains("no key description"),
        "{refusal}"
    );
}

fn apple_policy(root: &TestRoot) -> ApplePolicy {
    ApplePolicy {
        roots: der_roots(root),
        app_ids: vec![APPLE_APP.into()],
        environment: AppleEnvironment::Production,
    }
}

fn apple_verify(
    policy: &ApplePolicy,
    spec: &AppleSpec,
    root: &TestRoot,
    client_data: &[u8],
    tamper_key_id: bool,
) -> Result<Verdict, Refusal> {
    let (object, mut key_id) = spec.object(root).expect("object");
    if tamper_key_id {
        key_id[0] ^= 1;
    }
    let (_, public) = phone_key();
    let binding = Binding {
        ticket: TICKET,
        key: &public,
        app_id: "com.example.approve",
        client_data,
    };
    policy.verify(&object, &key_id, &binding, now_secs())
}

#[test]
fn app_attest_objects_are_accepted_and_refused_for_each_reason() {
    let root = root();
    let policy = apple_policy(&root);
    let data = b"the enrollment payload without its attestation".to_vec();
    let good = AppleSpec::new(APPLE_APP, data.clone());
    assert_eq!(
        apple_verify(&policy, &good, &root, &data, false),
        Ok(Verdict {
            assurance: Assurance::AppleAppAttest,
            app: APPLE_APP.into(),
            boot: None,
        })
    );
    let reason = |policy: &ApplePolicy, spec: &AppleSpec, data: &[u8], tamper: bool| {
        apple_verify(policy, spec, &root, data, tamper)
            .expect_err("refused")
            .reason()
    };
    assert_eq!(
        reason(
            &policy,
            &good,
            b"the payload, changed after attesting",
            false
        ),
        "NONCE_MISMATCH"
    );
    let other_app = AppleSpec::new("OTHERTEAM1.com.example.approve", data.clone());
    assert_eq!(reason(&policy, &other_app, &data, false), "RP_ID_MISMATCH");
    let counted = AppleSpec {
        counter: 1,
        ..good.clone()
    };
    assert_eq!(reason(&policy, &counted, &data, false), "COUNTER_NOT_ZERO");
    let development = AppleSpec {
        aaguid: *b"appattestdevelop",
        ..good.clone()
    };
    assert_eq!(
        reason(&policy, &development, &data, false),
        "AAGUID_MISMATCH"
    );
    let dev_policy = ApplePolicy {
        environment: AppleEnvironment::Development,
        ..apple_policy(&root)
    };
    assert!(apple_verify(&dev_policy, &development, &root, &data, false).is_ok());
    assert_eq!(reason(&policy, &good, &data, true), "KEY_ID_MISMATCH");
    let foreign = apple_policy(&TestRoot::generate("another root").expect("root"));
    assert_eq!(reason(&foreign, &good, &data, false), "CHAIN_UNTRUSTED");
    let unconfigured = ApplePolicy {
        app_ids: Vec::new(),
        ..apple_policy(&root)
    };
    assert_eq!(
        reason(&unconfigured, &good, &data, false),
        "APP_ATTEST_NOT_CONFIGURED"
    );
    // The bundle id part must be the enrolling app.
    let elsewhere = AppleSpec::new("TEAMID1234.com.example.other", data.clone());
    let both = ApplePolicy {
        app_ids: vec![APPLE_APP.into(), "TEAMID1234.com.example.other".into()],
        ..apple_policy(&root)
    };
    assert_eq!(reason(&both, &elsewhere, &data, false), "APP_NOT_ALLOWED");
}

#[test]
fn malformed_app_attest_objects_are_named_by_their_path() {
    let root = root();
    let policy = apple_policy(&root);
    let (_, public) = phone_key();
    let binding = Binding {
        ticket: TICKET,
        key: &public,
        app_id: "com.example.approve",
        client_data: b"x",
    };
    let field = |object: &[u8]| match policy.verify(object, &[0; 32], &binding, now_secs()) {
        Err(Refusal::Malformed { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field(b"\xff\xff"), "apple.attestation_object");
    let mut wrong_fmt = Vec::new();
    ciborium::into_writer(
        &ciborium::Value::Map(vec![(
            ciborium::Value::Text("fmt".into()),
            ciborium::Value::Text("packed".into()),
        )]),
        &mut wrong_fmt,
    )
    .expect("cbor");
    assert_eq!(field(&wrong_fmt), "apple.attestation_object.fmt");
    assert!(matches!(
        policy.verify(b"", &[0; 31], &binding, now_secs()),
        Err(Refusal::Malformed { field, .. }) if field == "apple.key_id"
    ));
}

// ---- through Enroll, on every store -------------------------------------------------------------

/// A root directory shared by one test: the relay trusts `root.pem` for both platforms.
struct Roots {
    dir: std::path::PathBuf,
    root: TestRoot,
}

fn roots() -> Roots {
    let dir = std::env::temp_dir().join(format!("approval-relay-attest-{}", rand_suffix()));
    let root = TestRoot::in_dir(&dir).expect("root");
    Roots { dir, root }
}

async fn attesting_app(store: &str, roots: &Roots, require: &str) -> TestApp {
    let pem = roots.dir.join("root.pem");
    let require = require.to_owned();
    spawn_app_on(store, move |c| {
        c.android_attestation_roots_file = Some(pem.clone());
        c.apple_app_attest_roots_file = Some(pem);
        c.android_attestation_apps = Some(PACKAGE.into());
        c.apple_app_attest_app_ids = Some(APPLE_APP.into());
        c.require_attestation = require;
    })
    .await
}

fn payload(phone: &Phone, ticket: &str, platform: pb::Platform) -> pb::EnrollPayload {
    phone.enroll_payload(
        ticket,
        platform,
        &format!("token-{}", rand_suffix()),
        PACKAGE,
        "Attested",
    )
}

async fn enroll(
    app: &TestApp,
    req: pb::EnrollRequest,
) -> Result<pb::EnrollResponse, tonic::Status> {
    app.device
        .clone()
        .enroll(req)
        .await
        .map(tonic::Response::into_inner)
}

fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

async fn an_android_attested_device_carries_its_verdict_everywhere(store: &str) {
    let roots = roots();
    let app = attesting_app(store, &roots, "none").await;
    let account = account();
    let ticket = app.ticket(&account).await;
    let mut phone = Phone::new(PhoneKey::p256());
    let spec = AndroidSpec::new(&ticket, PACKAGE);
    let req = attest::android_enrollment(
        &phone,
        &payload(&phone, &ticket, pb::Platform::Fcm),
        &roots.root,
        &spec,
    )
    .expect("request");
    let answer = enroll(&app, req).await.expect("enrolled");
    assert_eq!(answer.assurance(), pb::Assurance::AndroidTee);
    phone.device_id = answer.device_id;
    let devices = app.devices(&account).await;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].assurance(), pb::Assurance::AndroidTee);
    assert_eq!(devices[0].attested_app_id, PACKAGE);
    assert_eq!(
        devices[0].verified_boot_state(),
        pb::VerifiedBootState::Verified
    );
    let summary = format!("assurance=android_tee app={PACKAGE} boot=verified");
    assert!(
        app.audit_details(&account)
            .await
            .contains(&(pb::AuditKind::DeviceEnrolled, summary.clone())),
        "audit record"
    );
    let event = security_event(&app, &account, pb::SecurityEventKind::DeviceEnrolled).await;
    assert_eq!(event.detail, summary);
    assert_eq!(event.device_id, phone.device_id);
}

async fn an_app_attested_iphone_is_enrolled_over_its_payload_bytes(store: &str) {
    let roots = roots();
    let app = attesting_app(store, &roots, "hardware").await;
    let account = account();
    let ticket = app.ticket(&account).await;
    let phone = Phone::new(PhoneKey::p256());
    let mut body = payload(&phone, &ticket, pb::Platform::Apns);
    body.offline_code = false;
    let req = attest::apple_enrollment(&phone, &body, &roots.root, APPLE_APP).expect("request");
    let answer = enroll(&app, req).await.expect("enrolled");
    assert_eq!(answer.assurance(), pb::Assurance::AppleAppAttest);
    let devices = app.devices(&account).await;
    assert_eq!(devices[0].attested_app_id, APPLE_APP);
    assert_eq!(
        devices[0].verified_boot_state(),
        pb::VerifiedBootState::Unspecified
    );
    // An object made over the payload, then a payload changed after attesting: refused, nothing stored,
    // and the ticket still works.
    let ticket = app.ticket(&account).await;
    let phone = Phone::new(PhoneKey::p256());
    let body = payload(&phone, &ticket, pb::Platform::Apns);
    let (object, key_id) = AppleSpec::new(APPLE_APP, body.encode_to_vec())
        .object(&roots.root)
        .expect("object");
    let mut changed = body.clone();
    changed.display_name = "Renamed after attesting".into();
    let req = phone.sign_enrollment(attest::with_attestation(
        &changed,
        attest::apple(object, key_id),
    ));
    let refused = enroll(&app, req).await.expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(reason(&refused), "NONCE_MISMATCH");
    assert_eq!(app.devices(&account).await.len(), 1, "nothing stored");
    let req = attest::apple_enrollment(&phone, &body, &roots.root, APPLE_APP).expect("request");
    enroll(&app, req).await.expect("the ticket was not used");
}

async fn refused_attestations_store_nothing_and_leave_the_ticket_usable(store: &str) {
    let roots = roots();
    let app = attesting_app(store, &roots, "hardware").await;
    let account = account();
    let ticket = app.ticket(&account).await;
    let phone = Phone::new(PhoneKey::p256());
    let body = payload(&phone, &ticket, pb::Platform::Fcm);
    // Under require_attestation = hardware: none at all, then a software-only key.
    let refused = enroll(&app, phone.sign_enrollment(body.encode_to_vec()))
        .await
        .expect_err("refused");
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::PermissionDenied, "ATTESTATION_REQUIRED")
    );
    let software = AndroidSpec {
        attestation_level: 0,
        keymint_level: 0,
        ..AndroidSpec::new(&ticket, PACKAGE)
    };
    let req = attest::android_enrollment(&phone, &body, &roots.root, &software).expect("request");
    let refused = enroll(&app, req).await.expect_err("refused");
    assert_eq!(reason(&refused), "HARDWARE_REQUIRED");
    // A chain under a root the relay does not trust.
    let stranger = TestRoot::generate("stranger").expect("root");
    let req = attest::android_enrollment(
        &phone,
        &body,
        &stranger,
        &AndroidSpec::new(&ticket, PACKAGE),
    )
    .expect("request");
    let refused = enroll(&app, req).await.expect_err("refused");
    assert_eq!(reason(&refused), "CHAIN_UNTRUSTED");
    // Bytes that are no certificate: INVALID_ARGUMENT with the field path.
    let junk = attest::with_attestation(&body, attest::android(vec![b"junk".to_vec()]));
    let refused = enroll(&app, phone.sign_enrollment(junk))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .starts_with("payload.attestation.android.certificate_chain[0]:"),
        "{}",
        refused.message()
    );
    let empty = attest::with_attestation(&body, pb::Attestation { kind: None });
    let refused = enroll(&app, phone.sign_enrollment(empty))
        .await
        .expect_err("refused");
    assert!(
        refused.message().starts_with("payload.attestation.kind"),
        "{}",
        refused.message()
    );
    assert!(app.devices(&account).await.is_empty(), "nothing stored");
    assert!(
        !app.audit_details(&account)
            .await
            .iter()
            .any(|(k, _)| *k == pb::AuditKind::DeviceEnrolled),
        "no enrollment recorded"
    );
    let req = attest::android_enrollment(
        &phone,
        &body,
        &roots.root,
        &AndroidSpec::new(&ticket, PACKAGE),
    )
    .expect("request");
    enroll(&app, req).await.expect("the ticket is still good");
}

async fn min_assurance_pushes_only_the_devices_that_meet_it(store: &str) {
    let roots = roots();
    let app = attesting_app(store, &roots, "none").await;
    let account = account();
    let plain = app.enroll(&account).await;
    let ticket = app.ticket(&account).await;
    let mut attested = Phone::new(PhoneKey::p256());
    let req = attest::android_enrollment(
        &attested,
        &payload(&attested, &ticket, pb::Platform::Fcm),
        &roots.root,
        &AndroidSpec::new(&ticket, PACKAGE),
    )
    .expect("request");
    attested.device_id = enroll(&app, req).await.expect("enrolled").device_id;
    let create = |min: pb::Assurance| pb::CreateChallengeRequest {
        account_id: account.clone(),
        number_match_mode: pb::NumberMatchMode::None.into(),
        min_assurance: min.into(),
        ..Default::default()
    };
    let all = app
        .create_with(create(pb::Assurance::Unspecified))
        .await
        .expect("created");
    assert_eq!(
        all.challenge.expect("challenge").targeted_device_ids.len(),
        2
    );
    for min in [
        pb::Assurance::Software,
        pb::Assurance::AndroidTee,
        pb::Assurance::AppleAppAttest,
    ] {
        let hardware = app.create_with(create(min)).await.expect("created");
        assert_eq!(
            hardware.challenge.expect("challenge").targeted_device_ids,
            vec![attested.device_id.clone()],
            "{min:?}"
        );
    }
    let refused = app
        .create_with(create(pb::Assurance::AndroidStrongbox))
        .await
        .expect_err("none meets it");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "NO_DEVICE_MEETS_ASSURANCE");
    let unknown = pb::CreateChallengeRequest {
        min_assurance: 99,
        ..create(pb::Assurance::Unspecified)
    };
    assert_code(
        app.create_with(unknown).await,
        Code::InvalidArgument,
        "min_assurance",
    );
    drop(plain);
}

async fn a_rotated_key_is_not_attested(store: &str) {
    let roots = roots();
    let app = attesting_app(store, &roots, "none").await;
    let account = account();
    let ticket = app.ticket(&account).await;
    let mut phone = Phone::new(PhoneKey::p256());
    let req = attest::android_enrollment(
        &phone,
        &payload(&phone, &ticket, pb::Platform::Fcm),
        &roots.root,
        &AndroidSpec::new(&ticket, PACKAGE),
    )
    .expect("request");
    phone.device_id = enroll(&app, req).await.expect("enrolled").device_id;
    // Malware holding the hardware key could sign a rotation to a key it made in software: the old
    // key's attestation says nothing about the new one.
    app.rotate_key(&mut phone, PhoneKey::p256()).await;
    let devices = app.devices(&account).await;
    assert_eq!(devices[0].assurance(), pb::Assurance::None);
    assert_eq!(devices[0].attested_app_id, "");
    assert_eq!(
        devices[0].verified_boot_state(),
        pb::VerifiedBootState::Unspecified
    );
    assert!(
        app.audit_details(&account)
            .await
            .contains(&(pb::AuditKind::KeyRotated, "assurance=none".into())),
        "the rotation says the device lost its verdict"
    );
    let refused = app
        .create_with(pb::CreateChallengeRequest {
            account_id: account.clone(),
            min_assurance: pb::Assurance::AndroidTee.into(),
            ..Default::default()
        })
        .await
        .expect_err("no attested device left");
    assert_eq!(reason(&refused), "NO_DEVICE_MEETS_ASSURANCE");
}

per_store!(
    a_rotated_key_is_not_attested,
    an_android_attested_device_carries_its_verdict_everywhere,
    an_app_attested_iphone_is_enrolled_over_its_payload_bytes,
    refused_attestations_store_nothing_and_leave_the_ticket_usable,
    min_assurance_pushes_only_the_devices_that_meet_it
);

#[tokio::test]
async fn require_hardware_without_an_allow_list_does_not_start() {
    let mut config = approval_relay::config::Config::ephemeral();
    config.require_attestation = "hardware".into();
    let error = config.validate().and_then(|()| config.check_files());
    let message = format!("{:?}", error.expect_err("refused"));
    assert!(message.contains("android_attestation_apps"), "{message}");
    config.require_attestation = "sometimes".into();
    assert!(config.check_files().is_err());
}

// ---- real published samples against the real roots ---------------------------------------------

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/attestation")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pem_chain(name: &str) -> Vec<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(&fixture(name))
        .map(|c| c.expect("pem").to_vec())
        .collect()
}

/// A real chain: Google's roots accept it at its pinned time; its key description reads as Google's
/// own decoding says; every check before the challenge passes and the challenge (a UUID, not a ticket
/// hash) is what refuses it.
fn real_android_chain(name: &str, at: u64, challenge: &str) {
    use x509_parser::prelude::FromDer;
    let chain = pem_chain(name);
    let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(&chain[0]).expect("leaf");
    let ext = leaf
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == approval_relay::attest::key_description::OID)
        .expect("key description");
    let description = approval_relay::attest::key_description::parse(ext.value).expect("parses");
    use approval_relay::attest::key_description::SecurityLevel;
    assert_eq!(
        description.attestation_security_level,
        SecurityLevel::TrustedEnvironment
    );
    assert_eq!(
        description.keymint_security_level,
        SecurityLevel::TrustedEnvironment
    );
    assert_eq!(description.challenge, challenge.as_bytes());
    assert_eq!(description.boot, Some(BootState::Verified));
    assert_eq!(description.device_locked, Some(true));
    let application = description.application.expect("application id");
    assert_eq!(
        application.packages,
        vec!["com.google.android.attestation".to_owned()]
    );
    let key = PublicKey::parse(
        approval_relay::auth::KeyAlgorithm::EcdsaP256,
        leaf.public_key().raw,
    )
    .expect("leaf key");
    let binding = Binding {
        ticket: TICKET,
        key: &key,
        app_id: "com.google.android.attestation",
        client_data: &[],
    };
    let policy = AndroidPolicy::default();
    assert_eq!(
        policy.verify(&chain, &binding, at),
        Err(Refusal::ChallengeMismatch)
    );
    // Outside the chain's validity, and under a root that is not Google's, the same chain fails earlier.
    assert!(matches!(
        policy.verify(&chain, &binding, now_secs()),
        Err(Refusal::Expired(_))
    ));
    let test_root = AndroidPolicy {
        roots: der_roots(&root()),
        ..AndroidPolicy::default()
    };
    assert_eq!(
        test_root
            .verify(&chain, &binding, at)
            .map_err(|r| r.reason()),
        Err("CHAIN_UNTRUSTED")
    );
}

#[test]
fn a_real_pixel_chain_verifies_to_googles_key_attestation_ca1() {
    real_android_chain(
        "android-chain.pem",
        1_772_323_200,
        "6417f92c-daef-4cc1-8828-5bb39338ffd5",
    );
}

#[test]
fn a_real_pixel_chain_verifies_to_googles_rsa_hardware_root() {
    real_android_chain(
        "android-chain-rsa-root.pem",
        1_759_276_800,
        "d688d763-6118-4ca6-94b2-e6cd9ed7e4e4",
    );
}

#[test]
fn a_real_app_attest_object_verifies_to_apples_root() {
    use base64::Engine;
    let key_id = base64::engine::general_purpose::STANDARD
        .decode("YmbJO4x5nEHUvncp9zdWuVZjNBEMgJn3cdSToAXQe3M=")
        .expect("key id");
    let (_, public) = phone_key();
    let binding = Binding {
        ticket: TICKET,
        key: &public,
        app_id: "de.vincent-haupert.apple-appattest-poc",
        client_data: b"wurzelpfropf",
    };
    let policy = ApplePolicy {
        app_ids: vec!["6MURL8TA57.de.vincent-haupert.apple-appattest-poc".into()],
        environment: AppleEnvironment::Development,
        ..ApplePolicy::default()
    };
    let object = fixture("appattest-object.cbor");
    assert_eq!(
        policy.verify(&object, &key_id, &binding, 1_611_403_200),
        Ok(Verdict {
            assurance: Assurance::AppleAppAttest,
            app: "6MURL8TA57.de.vincent-haupert.apple-appattest-poc".into(),
            boot: None,
        })
    );
    let changed = Binding {
        client_data: b"wurzelpfropf, changed",
        ..binding
    };
    assert_eq!(
        policy.verify(&object, &key_id, &changed, 1_611_403_200),
        Err(Refusal::NonceMismatch)
    );
    let production = ApplePolicy {
        environment: AppleEnvironment::Production,
        ..policy.clone()
    };
    assert_eq!(
        production.verify(&object, &key_id, &binding, 1_611_403_200),
        Err(Refusal::AaguidMismatch("production"))
    );
}
