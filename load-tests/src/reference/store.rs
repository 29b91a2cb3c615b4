//! The reference's Redis: one script per create, one HGET per phone's view, one script per answer, one
//! pub/sub channel for decisions.
//! Single node only (the answer script builds a key), which is all the reference is run on.

use redis::aio::MultiplexedConnection;

/// The channel every replica subscribes to; the message is `challenge_id|device_id`.
pub const DECIDED: &str = "ref:decided";

/// KEYS: devices, challenge. ARGV: account, ttl ms. Stores the pending challenge, returns the devices.
const CREATE: &str = r"
redis.call('HSET', KEYS[2], 'a', ARGV[1], 's', 'p')
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return redis.call('HGETALL', KEYS[1])
";

/// KEYS: challenge. ARGV: device, decision. Decides a pending challenge and publishes it; returns the
/// account's devices, or nothing when the challenge is unknown or already decided.
const RESPOND: &str = r"
local c = redis.call('HMGET', KEYS[1], 'a', 's')
if not c[1] or c[2] ~= 'p' then return {} end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'd', ARGV[1])
redis.call('PUBLISH', 'ref:decided', string.sub(KEYS[1], 8) .. '|' .. ARGV[1])
return redis.call('HGETALL', 'ref:dev:' .. c[1])
";

/// One device as stored: `platform|app_id|token`.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its id.
    pub id: String,
    /// `a` (APNs) or `f` (FCM).
    pub platform: char,
    /// APNs topic or Android package.
    pub app_id: String,
    /// The provider's token.
    pub token: String,
}

/// The shared connection and the loaded scripts.
#[derive(Clone)]
pub struct Store {
    conn: MultiplexedConnection,
    create: redis::Script,
    respond: redis::Script,
}

impl Store {
    /// One multiplexed connection, as the relay uses.
    pub async fn connect(client: &redis::Client) -> redis::RedisResult<Self> {
        Ok(Self {
            conn: client.get_multiplexed_async_connection().await?,
            create: redis::Script::new(CREATE),
            respond: redis::Script::new(RESPOND),
        })
    }

    /// Adds a device to an account.
    pub async fn enroll(&self, account: &str, device: &Device) -> redis::RedisResult<()> {
        let value = format!("{}|{}|{}", device.platform, device.app_id, device.token);
        redis::cmd("HSET")
            .arg(format!("ref:dev:{account}"))
            .arg(&device.id)
            .arg(value)
            .query_async(&mut self.conn.clone())
            .await
    }

    /// Stores a pending challenge; returns the account's devices.
    pub async fn create(
        &self,
        account: &str,
        challenge: &str,
        ttl_ms: u64,
    ) -> redis::RedisResult<Vec<Device>> {
        let pairs: Vec<String> = self
            .create
            .key(format!("ref:dev:{account}"))
            .key(format!("ref:ch:{challenge}"))
            .arg(account)
            .arg(ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(devices(pairs))
    }

    /// Decides a pending challenge; the account's devices, or `None` when it was not pending.
    pub async fn respond(
        &self,
        challenge: &str,
        device: &str,
        decision: i32,
    ) -> redis::RedisResult<Option<Vec<Device>>> {
        let pairs: Vec<String> = self
            .respond
            .key(format!("ref:ch:{challenge}"))
            .arg(device)
            .arg(decision)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok((!pairs.is_empty()).then(|| devices(pairs)))
    }

    /// A challenge's state (`p` pending, else the decision), or `None` when it is gone.
    pub async fn state(&self, challenge: &str) -> redis::RedisResult<Option<String>> {
        redis::cmd("HGET")
            .arg(format!("ref:ch:{challenge}"))
            .arg("s")
            .query_async(&mut self.conn.clone())
            .await
    }
}

fn devices(pairs: Vec<String>) -> Vec<Device> {
    pairs
        .chunks_exact(2)
        .filter_map(|pair| {
            let mut parts = pair[1].splitn(3, '|');
            Some(Device {
                id: pair[0].clone(),
                platform: parts.next()?.chars().next()?,
                app_id: parts.next()?.to_owned(),
                token: parts.next()?.to_owned(),
            })
        })
        .collect()
}
