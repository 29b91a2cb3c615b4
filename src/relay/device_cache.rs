//! Devices as this replica last read them to verify a signed request, so that the device's next request
//! (a phone reads a challenge, then answers it) is verified with no read before its store step: one
//! round trip fewer per request. A stale entry cannot let a request through that a fresh read would
//! refuse: the store step checks the device's state (revoked, suspected clone) and that its key is still
//! the one the signature verified with (`Device::accept_counter`), and a signature that fails against a
//! cached key is checked again against a fresh read before it counts as a failure. The fields a cached
//! entry is otherwise used for (account, platform, fallback channel) never change after enrollment.
//! quick_cache bounds the entries (eviction by use); entries older than [`MAX_AGE`] are read again.

use crate::challenge::DeviceId;
use crate::device::Device;
use quick_cache::sync::Cache;
use std::time::{Duration, Instant};

/// An entry older than this is not used.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// The devices recently verified against, at most a configured number.
pub struct DeviceCache(Option<Cache<DeviceId, (Device, Instant)>>);

impl DeviceCache {
    /// A cache of at most `entries` devices; 0 keeps none (every request reads its device).
    pub fn new(entries: usize) -> Self {
        Self((entries > 0).then(|| Cache::new(entries)))
    }

    /// The device as last read, if read within [`MAX_AGE`].
    pub fn get(&self, id: &DeviceId) -> Option<Device> {
        self.0
            .as_ref()?
            .get(id)
            .filter(|(_, read_at)| read_at.elapsed() <= MAX_AGE)
            .map(|(device, _)| device)
    }

    /// Keeps `device`, just read from the store.
    pub fn put(&self, device: &Device) {
        if let Some(cache) = &self.0 {
            cache.insert(device.id.clone(), (device.clone(), Instant::now()));
        }
    }

    /// Drops `id`: the store refused it, or it changed.
    pub fn forget(&self, id: &DeviceId) {
        if let Some(cache) = &self.0 {
            cache.remove(id);
        }
    }
}
