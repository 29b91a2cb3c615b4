//! One connection type for a single Redis node (a `ConnectionManager` that reconnects) and a Redis
//! Cluster (redis-rs' cluster connection, one multiplexed connection per node), so the store's code and
//! scripts are the same for both. Only publishing and subscribing differ: PUBLISH / SUBSCRIBE on a node,
//! SPUBLISH / SSUBSCRIBE (grouped per slot) on Cluster.

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where Redis is.
#[derive(Debug, Clone)]
pub enum Nodes {
    /// One node (`redis://` or `rediss://` URL).
    Single(String),
    /// Cluster seed nodes.
    Cluster(Vec<String>),
}

/// Where Redis is and how to trust it over TLS (`rediss://`).
#[derive(Debug, Clone)]
pub struct Target {
    /// The node or the Cluster's seeds.
    pub nodes: Nodes,
    /// CA certificates (PEM) to trust instead of the system's bundle.
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate chain (PEM) to present.
    pub client_cert_file: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    pub client_key_file: Option<std::path::PathBuf>,
}

impl Target {
    /// The node addresses as `host:port`, for messages (never the password).
    pub fn addresses(&self) -> String {
        let urls: Vec<&str> = match &self.nodes {
            Nodes::Single(url) => vec![url.as_str()],
            Nodes::Cluster(seeds) => seeds.iter().map(String::as_str).collect(),
        };
        urls.iter()
            .map(|u| {
                let rest = u.split_once("://").map_or(*u, |(_, r)| r);
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                host.split('/').next().unwrap_or(host).to_owned()
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The certificates for a `rediss://` connection, when any file is configured.
    fn certificates(&self) -> RedisResult<Option<::redis::TlsCertificates>> {
        if self.ca_file.is_none() && self.client_cert_file.is_none() {
            return Ok(None);
        }
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| {
                ::redis::RedisError::from((
                    ::redis::ErrorKind::InvalidClientConfig,
                    "cannot read a redis TLS file",
                    format!("{}: {e}", p.display()),
                ))
            })
        };
        let client_tls = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => Some(::redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            _ => None,
        };
        let root_cert = self.ca_file.as_deref().map(read).transpose()?;
        Ok(Some(::redis::TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

/// A command or subscriber connection to a node or a Cluster.
#[derive(Clone)]
pub enum Conn {
    /// A single node.
    Single(ConnectionManager),
    /// A Cluster.
    Cluster(ClusterConnection),
}

/// Parses a URL and turns on TCP_NODELAY (DESIGN.md §10: redis-rs leaves it off).
fn info(url: &str, resp3: bool) -> RedisResult<::redis::ConnectionInfo> {
    let info = url.into_connection_info()?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    let mut settings = info.redis_settings().clone();
    if resp3 {
        settings = settings.set_protocol(::redis::ProtocolVersion::RESP3);
    }
    Ok(info.set_tcp_settings(tcp).set_redis_settings(settings))
}

impl Conn {
    /// Connects; with `pushes`, as a RESP3 subscriber whose messages and disconnections go there.
    ///
    /// # Errors
    /// The Redis error when no connection can be made.
    pub async fn connect(
        target: &Target,
        pushes: Option<mpsc::UnboundedSender<::redis::PushInfo>>,
    ) -> RedisResult<Self> {
        let certificates = target.certificates()?;
        match &target.nodes {
            Nodes::Single(url) => {
                let info = info(url, pushes.is_some())?;
                let client = match certificates {
                    Some(certs) => ::redis::Client::build_with_tls(info, certs)?,
                    None => ::redis::Client::open(info)?,
                };
                let mut config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(2);
                if let Some(tx) = pushes {
                    config = config.set_push_sender(tx);
                }
                Ok(Self::Single(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
            Nodes::Cluster(seeds) => {
                let nodes = seeds
                    .iter()
                    .map(|s| info(s, pushes.is_some()))
                    .collect::<RedisResult<Vec<_>>>()?;
                let mut builder = ClusterClientBuilder::new(nodes)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(3);
                if let Some(certs) = certificates {
                    builder = builder.certs(certs);
                }
                if let Some(tx) = pushes {
                    builder = builder
                        .use_protocol(::redis::ProtocolVersion::RESP3)
                        .push_sender(tx);
                }
                Ok(Self::Cluster(
                    builder.build()?.get_async_connection().await?,
                ))
            }
        }
    }

    /// The publish command the scripts use.
    pub fn publish_command(&self) -> &'static str {
        match self {
            Self::Single(_) => "PUBLISH",
            Self::Cluster(_) => "SPUBLISH",
        }
    }

    /// Subscribes to exact channel names: one SUBSCRIBE on a node; one SSUBSCRIBE per slot on Cluster,
    /// because a shard command may not span slots.
    ///
    /// # Errors
    /// The first failure; the other groups are still attempted, and subscribing again is harmless.
    pub async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Single(c) => c.subscribe(channels).await,
            Self::Cluster(c) => {
                let mut first_error = None;
                for group in by_slot(channels).values() {
                    if let Err(e) = c.ssubscribe(group).await {
                        first_error.get_or_insert(e);
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
        }
    }

    /// Unsubscribes from exact channel names.
    ///
    /// # Errors
    /// The first failure.
    pub async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Self::Single(c) => c.unsubscribe(channels).await,
            Self::Cluster(c) => {
                for group in by_slot(channels).values() {
                    c.sunsubscribe(group).await?;
                }
                Ok(())
            }
        }
    }
}

/// Groups channels by hash tag: one tag is one slot (two tags may share a slot; they then simply get
/// separate commands).
fn by_slot(channels: &[String]) -> BTreeMap<&str, Vec<&String>> {
    let mut groups: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for channel in channels {
        let tag = channel
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map_or(channel.as_str(), |(tag, _)| tag);
        groups.entry(tag).or_default().push(channel);
    }
    groups
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let call = match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        };
        timed("command", call)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let call = match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        };
        timed("pipeline", call)
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Records every round trip's latency and outcome (`relay_redis_seconds{kind,outcome}`).
fn timed<'a, T: Send + 'a>(kind: &'static str, call: RedisFuture<'a, T>) -> RedisFuture<'a, T> {
    use tracing::Instrument;
    let span = crate::telemetry::trace::span!(format!("redis {kind}"), db.system = "redis");
    Box::pin(
        async move {
            let start = std::time::Instant::now();
            let result = call.await;
            let outcome = if result.is_ok() { "ok" } else { "error" };
            metrics::histogram!("relay_redis_seconds", "kind" => kind, "outcome" => outcome)
                .record(start.elapsed().as_secs_f64());
            result
        }
        .instrument(span),
    )
}
