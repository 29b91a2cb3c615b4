//! The phones: N accounts × D devices, enrolled through the relay like real apps (ticket from the
//! backend API on replica A, Enroll on replica B's device API). Even devices are iPhones (APNs), odd
//! ones Android (FCM).

use crate::Options;
use approval_relay::device_sim::{Phone, PhoneKey};
use approval_relay::pb;
use approval_relay::pb::device_registry_client::DeviceRegistryClient;
use approval_relay::pb::device_service_client::DeviceServiceClient;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;
use tonic::transport::Channel;

/// Connections to a replica's API, used round-robin.
pub async fn channels(addr: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            Channel::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|e| anyhow::anyhow!("cannot reach {addr}: {e}"))?,
        );
    }
    Ok(out)
}

/// One enrolled phone; the lock keeps its requests in counter order.
pub type SharedPhone = Arc<Mutex<Phone>>;

/// Every phone, by account and by push token.
pub struct Fleet {
    /// Account ids, index = account number.
    pub accounts: Vec<String>,
    /// Phones by push token (what a delivery at the mock names).
    pub by_token: HashMap<String, SharedPhone>,
}

impl Fleet {
    /// Enrolls the whole fleet, 64 at a time.
    pub async fn enroll(options: &Options) -> anyhow::Result<Self> {
        let backend = channels(&options.backend, 2).await?;
        let device = channels(&options.device, 2).await?;
        let run = std::process::id();
        let accounts: Vec<String> = (0..options.accounts)
            .map(|i| format!("load-{run}-{i}@example.com"))
            .collect();
        let jobs = accounts.iter().enumerate().flat_map(|(a, account)| {
            (0..options.devices_per_account).map(move |d| (a, d, account.clone()))
        });
        let progress = indicatif::ProgressBar::new(
            u64::try_from(options.accounts * options.devices_per_account).unwrap_or(0),
        )
        .with_message("enrolling phones");
        let phones: Vec<(String, Phone)> = futures::stream::iter(jobs)
            .map(|(a, d, account)| {
                let registry = DeviceRegistryClient::new(backend[a % backend.len()].clone());
                let api = DeviceServiceClient::new(device[a % device.len()].clone());
                let progress = progress.clone();
                async move {
                    let token = if d % 2 == 0 {
                        format!("{:032x}{:032x}", run, a * 16 + d)
                    } else {
                        format!("fcm-{run}-{a}-{d}")
                    };
                    let platform = if d % 2 == 0 {
                        pb::Platform::Apns
                    } else {
                        pb::Platform::Fcm
                    };
                    let phone = enroll_one(registry, api, &account, &token, platform).await?;
                    progress.inc(1);
                    anyhow::Ok((token, phone))
                }
            })
            .buffer_unordered(64)
            .try_collect()
            .await?;
        progress.finish_and_clear();
        eprintln!(
            "enrolled {} phones on {} accounts",
            phones.len(),
            accounts.len()
        );
        Ok(Self {
            accounts,
            by_token: phones
                .into_iter()
                .map(|(t, p)| (t, Arc::new(Mutex::new(p))))
                .collect(),
        })
    }
}

async fn enroll_one(
    mut registry: DeviceRegistryClient<Channel>,
    mut api: DeviceServiceClient<Channel>,
    account: &str,
    token: &str,
    platform: pb::Platform,
) -> anyhow::Result<Phone> {
    let ticket = registry
        .create_enrollment(pb::CreateEnrollmentRequest {
            account_id: account.to_owned(),
            ttl_seconds: 0,
        })
        .await?
        .into_inner()
        .ticket;
    // Ed25519: what a phone app with a software key would use, and the cheaper check of the two.
    let mut phone = Phone::new(PhoneKey::ed25519());
    let request = phone.enroll_request(
        &ticket,
        platform,
        token,
        "com.example.authenticator",
        "load phone",
    );
    phone.device_id = api.enroll(request).await?.into_inner().device_id;
    Ok(phone)
}
