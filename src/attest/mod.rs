//! Key attestation at enrollment: proof that the device key was made inside the phone's secure hardware
//! (Android Key Attestation) or by a genuine instance of the app (Apple App Attest), and the verdict the
//! device record keeps. Pure: the verification time and every root come in as arguments.
//!
//! # Why by hand, on these crates
//! Certificates are parsed with `x509-parser` (its `asn1-rs` reads the Android key description by its
//! published schema), chains are validated by the `rustls-webpki` already in the tree (it takes any
//! trust anchor, so tests use their own roots), and the App Attest object is read with `ciborium`.
//! The ready-made verifiers were evaluated (their published sources, 2026-12) and not taken:
//! `appattest-rs` 0.1.0 (one release, 2024, unmaintained) downloads Apple's root over the network on
//! every call, takes neither a root nor a time (no test root, no pinned real sample) and pulls in
//! OpenSSL and reqwest; its fork `appattest` 0.1.1 takes a root but always verifies at "now" and accepts
//! the development AAGUID only behind a build feature; `webauthn-rs-core` 0.6 has no App Attest and
//! checks Android keys only as WebAuthn's `android-key` statement (WebAuthn client data, StrongBox
//! refused, boot state and package not exposed). No maintained crate verifies Android Key Attestation
//! outside WebAuthn. What remains after parsing and chain validation is field comparison, which is the
//! policy and belongs here.

pub mod android;
mod apple;
mod chain;
mod der;
pub mod key_description;
mod roots;

pub use android::AndroidPolicy;
pub use apple::{AppleEnvironment, ApplePolicy, AuthData};
pub use roots::{Revocations, apple_root, google_roots, parse_pem_roots};

use crate::auth::PublicKey;

/// How strongly a device key is known to be held by the phone, in rising order of [`Assurance::rank`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assurance {
    /// Enrolled without attestation.
    #[default]
    None,
    /// Attested by Android Keystore in software only (no secure hardware).
    Software,
    /// Android key in the Trusted Execution Environment.
    AndroidTee,
    /// Genuine instance of the iOS app (App Attest, Secure Enclave).
    AppleAppAttest,
    /// Android key in StrongBox, a separate secure element.
    AndroidStrongBox,
}

impl Assurance {
    /// The order `min_assurance` compares by: none 0, software 1, TEE and App Attest 2, StrongBox 3.
    pub fn rank(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Software => 1,
            Self::AndroidTee | Self::AppleAppAttest => 2,
            Self::AndroidStrongBox => 3,
        }
    }

    /// True when this assurance satisfies a request for at least `min`.
    pub fn meets(self, min: Self) -> bool {
        self.rank() >= min.rank()
    }

    /// True for the hardware-backed verdicts.
    pub fn is_hardware(self) -> bool {
        self.rank() >= 2
    }

    /// Lower-case name, as stored and logged.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Software => "software",
            Self::AndroidTee => "android_tee",
            Self::AppleAppAttest => "apple_app_attest",
            Self::AndroidStrongBox => "android_strongbox",
        }
    }

    /// Parses [`Assurance::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::None,
            Self::Software,
            Self::AndroidTee,
            Self::AppleAppAttest,
            Self::AndroidStrongBox,
        ]
        .into_iter()
        .find(|a| a.name() == name)
    }
}

/// Android's verified-boot state from the key description's root of trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootState {
    /// Booted an image signed by the device maker, bootloader locked.
    Verified,
    /// Booted an image signed by a user-installed key.
    SelfSigned,
    /// Bootloader unlocked: anything may run.
    Unverified,
    /// Verification failed.
    Failed,
}

impl BootState {
    /// Lower-case name, as stored.
    pub fn name(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::SelfSigned => "self_signed",
            Self::Unverified => "unverified",
            Self::Failed => "failed",
        }
    }

    /// Parses [`BootState::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Verified,
            Self::SelfSigned,
            Self::Unverified,
            Self::Failed,
        ]
        .into_iter()
        .find(|b| b.name() == name)
    }
}

/// What the relay concluded about a device key at enrollment; kept on the device record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// The assurance level.
    pub assurance: Assurance,
    /// The attested app: Android package name, or Apple `TEAMID.bundle.id`; empty when unattested.
    pub app: String,
    /// Android's verified-boot state, when the key description carried one.
    pub boot: Option<BootState>,
}

impl Verdict {
    /// `assurance=… app=… boot=…`, the audit detail of an enrollment.
    pub fn summary(&self) -> String {
        let mut out = format!("assurance={}", self.assurance.name());
        if !self.app.is_empty() {
            out.push_str(" app=");
            out.push_str(&self.app);
        }
        if let Some(b) = self.boot {
            out.push_str(" boot=");
            out.push_str(b.name());
        }
        out
    }
}

/// The evidence a phone sent with its enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Android Key Attestation: DER certificates, leaf (the device key's) first.
    Android(Vec<Vec<u8>>),
    /// Apple App Attest: the CBOR attestation object and the key id it attests.
    Apple {
        /// The attestation object.
        object: Vec<u8>,
        /// The App Attest key id (SHA-256 of the credential's public key).
        key_id: Vec<u8>,
    },
}

/// What the evidence must be bound to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The enrollment ticket text (Android's attestation challenge is its SHA-256).
    pub ticket: &'a str,
    /// The key being enrolled.
    pub key: &'a PublicKey,
    /// The app the device says it runs (Android package, or iOS bundle id).
    pub app_id: &'a str,
    /// The enrollment payload with the attestation left out (App Attest's client data).
    pub client_data: &'a [u8],
}

/// Which enrollments the relay accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Requirement {
    /// Any; attested ones are verified and recorded.
    #[default]
    None,
    /// Only a hardware-backed verdict (Android TEE or StrongBox, Apple App Attest).
    Hardware,
}

impl Requirement {
    /// Checks a verdict against the requirement.
    ///
    /// # Errors
    /// [`Refusal::AttestationRequired`] or [`Refusal::HardwareRequired`].
    pub fn check(self, verdict: &Verdict) -> Result<(), Refusal> {
        match (self, verdict.assurance) {
            (Self::None, _) => Ok(()),
            (Self::Hardware, Assurance::None) => Err(Refusal::AttestationRequired),
            (Self::Hardware, a) if !a.is_hardware() => Err(Refusal::HardwareRequired),
            (Self::Hardware, _) => Ok(()),
        }
    }
}

/// The attestation policy and its roots.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Which enrollments are accepted.
    pub require: Requirement,
    /// Android Key Attestation.
    pub android: AndroidPolicy,
    /// Apple App Attest.
    pub apple: ApplePolicy,
}

impl Policy {
    /// Verifies the evidence (if any) at `now_secs` (Unix seconds) and applies the requirement.
    ///
    /// # Errors
    /// A [`Refusal`] naming why; nothing is to be stored.
    pub fn verify(
        &self,
        evidence: Option<&Evidence>,
        binding: &Binding<'_>,
        now_secs: u64,
    ) -> Result<Verdict, Refusal> {
        let hardware = self.require == Requirement::Hardware;
        let verdict = match evidence {
            None => Verdict::default(),
            Some(Evidence::Android(_)) if hardware && self.android.apps.is_empty() => {
                // Without an allow-list any app, a sideloaded one with the right package name
                // included, passes; requiring hardware means naming the apps.
                return Err(Refusal::AppNotAllowed(
                    "android_attestation_apps is empty; require_attestation = hardware needs it"
                        .into(),
                ));
            }
            Some(Evidence::Android(chain)) => {
                let verdict = self.android.verify(chain, binding, now_secs)?;
                match verdict.boot {
                    Some(BootState::Verified) => {}
                    _ if !hardware => {}
                    other => {
                        return Err(Refusal::BootNotVerified(
                            other.map_or("not reported", BootState::name),
                        ));
                    }
                }
                verdict
            }
            Some(Evidence::Apple { object, key_id }) => {
                self.apple.verify(object, key_id, binding, now_secs)?
            }
        };
        self.require.check(&verdict)?;
        Ok(verdict)
    }
}

/// Why an attestation was refused. [`Refusal::reason`] is the stable code clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Bytes that do not parse as the published structure; `field` is the path inside `attestation`.
    #[error("{field}: {why}")]
    Malformed {
        /// Path inside `payload.attestation`, e.g. `android.certificate_chain[0]`.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// The chain does not lead to a configured root (or a signature in it does not verify).
    #[error("attestation chain does not verify to a trusted root: {0}")]
    Untrusted(String),
    /// A certificate of the chain is expired or not yet valid.
    #[error("attestation certificate {0} is expired or not yet valid")]
    Expired(usize),
    /// A certificate of the chain is on the revocation list.
    #[error("attestation certificate {0} is revoked")]
    Revoked(usize),
    /// The attested key is not the key being enrolled.
    #[error("attested key is not the enrolled public_key")]
    KeyMismatch,
    /// The Android attestation challenge is not SHA-256 of the ticket.
    #[error("attestation challenge is not SHA-256 of the ticket")]
    ChallengeMismatch,
    /// The attested app is not the enrolling app or not on the allow-list.
    #[error("attested app is not allowed: {0}")]
    AppNotAllowed(String),
    /// App Attest nonce differs: the payload changed after attesting.
    #[error("app attest nonce does not match the payload")]
    NonceMismatch,
    /// The Android key was imported or derived, not generated inside Keystore (`origin` not GENERATED).
    #[error("attested key was not generated inside the phone (origin is not GENERATED)")]
    KeyNotGenerated,
    /// The Android key may not sign (`purpose` lacks SIGN).
    #[error("attested key is not a signing key (purpose lacks SIGN)")]
    KeyNotForSigning,
    /// Hardware is required and the Android phone's boot is not verified (unlocked or self-signed).
    #[error("this relay requires a verified boot; the phone's is {0}")]
    BootNotVerified(&'static str),
    /// App Attest RP id hash matches no configured app id.
    #[error("app attest rp id matches no configured app id")]
    RpIdMismatch,
    /// App Attest counter is not 0.
    #[error("app attest counter is not 0")]
    CounterNotZero,
    /// App Attest AAGUID is not the configured environment's.
    #[error("app attest aaguid is not the {0} environment's")]
    AaguidMismatch(&'static str),
    /// App Attest key id is not SHA-256 of the attested key.
    #[error("app attest key_id does not match the attested key")]
    KeyIdMismatch,
    /// App Attest is not configured on this relay (no app ids).
    #[error("app attest is not configured on this relay (apple_app_attest_app_ids)")]
    NotConfigured,
    /// The relay requires attestation and none was sent.
    #[error("this relay requires a hardware key attestation")]
    AttestationRequired,
    /// The relay requires hardware and the key is software-only.
    #[error("this relay requires a hardware-backed key; the attestation is software-only")]
    HardwareRequired,
}

impl Refusal {
    /// The stable reason code (ErrorInfo `reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "ATTESTATION_MALFORMED",
            Self::Untrusted(_) => "CHAIN_UNTRUSTED",
            Self::Expired(_) => "CERTIFICATE_EXPIRED",
            Self::Revoked(_) => "CERTIFICATE_REVOKED",
            Self::KeyMismatch => "KEY_MISMATCH",
            Self::ChallengeMismatch => "CHALLENGE_MISMATCH",
            Self::AppNotAllowed(_) => "APP_NOT_ALLOWED",
            Self::KeyNotGenerated => "KEY_NOT_GENERATED",
            Self::KeyNotForSigning => "KEY_NOT_FOR_SIGNING",
            Self::BootNotVerified(_) => "BOOT_NOT_VERIFIED",
            Self::NonceMismatch => "NONCE_MISMATCH",
            Self::RpIdMismatch => "RP_ID_MISMATCH",
            Self::CounterNotZero => "COUNTER_NOT_ZERO",
            Self::AaguidMismatch(_) => "AAGUID_MISMATCH",
            Self::KeyIdMismatch => "KEY_ID_MISMATCH",
            Self::NotConfigured => "APP_ATTEST_NOT_CONFIGURED",
            Self::AttestationRequired => "ATTESTATION_REQUIRED",
            Self::HardwareRequired => "HARDWARE_REQUIRED",
        }
    }

    pub(crate) fn malformed(field: impl Into<String>, why: impl std::fmt::Display) -> Self {
        Self::Malformed {
            field: field.into(),
            why: why.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_order_the_levels_and_names_round_trip() {
        assert!(Assurance::AndroidStrongBox.meets(Assurance::AndroidTee));
        assert!(Assurance::AppleAppAttest.meets(Assurance::AndroidTee));
        assert!(!Assurance::AndroidTee.meets(Assurance::AndroidStrongBox));
        assert!(!Assurance::Software.meets(Assurance::AndroidTee));
        for a in [
            Assurance::None,
            Assurance::Software,
            Assurance::AndroidTee,
            Assurance::AppleAppAttest,
            Assurance::AndroidStrongBox,
        ] {
            assert_eq!(Assurance::from_name(a.name()), Some(a));
        }
    }

    #[test]
    fn hardware_requirement_refuses_none_and_software() {
        let v = |assurance| Verdict {
            assurance,
            ..Verdict::default()
        };
        let r = Requirement::Hardware;
        assert_eq!(
            r.check(&v(Assurance::None)),
            Err(Refusal::AttestationRequired)
        );
        assert_eq!(
            r.check(&v(Assurance::Software)),
            Err(Refusal::HardwareRequired)
        );
        assert_eq!(r.check(&v(Assurance::AndroidTee)), Ok(()));
        assert_eq!(Requirement::None.check(&v(Assurance::Software)), Ok(()));
    }
}
