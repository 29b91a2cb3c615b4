//! TLS for the two gRPC listeners. Written here rather than taken from tonic's `ServerTlsConfig`
//! because that one is fixed at start: certificates must be replaced without a restart (on SIGHUP, or
//! when the files change, as a Kubernetes Secret update does). Each accepted connection takes the
//! configuration current at that moment; a reload that fails keeps the previous one. The backend
//! listener also requires a client certificate from a configured CA and, optionally, one of a list of
//! DNS names.

use rustls::RootCertStore;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// Installs ring as the process's rustls provider (two providers make rustls panic); false when one
/// was installed already.
pub fn install_default_provider() -> bool {
    rustls::crypto::ring::default_provider()
        .install_default()
        .is_ok()
}

/// A client that has not finished its handshake by then is dropped, so it cannot hold a slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files one listener's TLS is built from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate chaining to this CA (PEM).
    pub client_ca: Option<PathBuf>,
    /// When not empty, the client certificate must be valid for one of these DNS names.
    pub allowed_names: Vec<String>,
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the material (e.g. the key does not match the certificate).
    #[error("tls configuration: {0}")]
    Config(String),
}

/// A listener's TLS configuration, replaced in place on reload.
pub struct ReloadingConfig {
    listener: &'static str,
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl ReloadingConfig {
    /// Builds the first configuration; at start a bad file is fatal.
    ///
    /// # Errors
    /// [`TlsError`] naming the file.
    pub fn load(listener: &'static str, files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let config = build(&files)?;
        let stamps = stamps(&files);
        Ok(Arc::new(Self {
            listener,
            files,
            current: RwLock::new(Arc::new(config)),
            stamps: Mutex::new(stamps),
        }))
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Rebuilds from the files; on failure the previous configuration stays and the error is logged.
    pub fn reload(&self) -> bool {
        *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) = stamps(&self.files);
        match build(&self.files) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
                metrics::counter!("relay_tls_reloads_total", "listener" => self.listener, "outcome" => "ok")
                    .increment(1);
                tracing::info!(listener = self.listener, "tls certificates reloaded");
                true
            }
            Err(e) => {
                metrics::counter!("relay_tls_reloads_total", "listener" => self.listener, "outcome" => "failed")
                    .increment(1);
                tracing::error!(listener = self.listener, error = %e, "tls reload failed; keeping the previous certificates");
                false
            }
        }
    }

    /// True when a file's modification time or size differs from the last load.
    fn changed(&self) -> bool {
        *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) != stamps(&self.files)
    }
}

fn stamps(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    })
    .collect()
}

fn file_error(path: &std::path::Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| file_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(NameAllowList {
                inner: verifier,
                names: files
                    .allowed_names
                    .iter()
                    .map(|n| {
                        ServerName::try_from(n.clone()).map_err(|e| {
                            TlsError::Config(format!("allowed client name {n:?}: {e}"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            }))
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The CA check, then the name check: a certificate the CA signed for another service is refused in
/// the handshake, so the client sees a TLS alert rather than a dropped connection.
#[derive(Debug)]
struct NameAllowList {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for NameAllowList {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.names.is_empty() {
            return Ok(verified);
        }
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if self
            .names
            .iter()
            .any(|name| cert.verify_is_valid_for_subject_name(name).is_ok())
        {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Reloads every configuration on SIGHUP, and each one whose files changed every `poll`.
pub async fn watch(
    configs: Vec<Arc<ReloadingConfig>>,
    poll: Duration,
    shutdown: CancellationToken,
) {
    if configs.is_empty() {
        return;
    }
    let mut hangup = hangup_signal();
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = next_hangup(&mut hangup) => {
                tracing::info!("SIGHUP: reloading tls certificates");
                for c in &configs {
                    c.reload();
                }
            }
            _ = tick.tick() => {
                for c in configs.iter().filter(|c| c.changed()) {
                    c.reload();
                }
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

async fn next_hangup(hangup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(signal) = hangup
        && signal.recv().await.is_some()
    {
        return;
    }
    let _ = hangup;
    std::future::pending::<()>().await;
}

/// Accepts TCP connections and yields them once their TLS handshake succeeds; handshakes run
/// concurrently so a slow client does not hold up the others.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ReloadingConfig>,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        tracing::warn!(listener = tls.listener, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // DESIGN.md §10: without TCP_NODELAY a small gRPC answer waits for the peer's delayed ACK.
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.current());
            let tx = tx.clone();
            let listener_name = tls.listener;
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("relay_tls_handshake_failures_total", "listener" => listener_name)
                            .increment(1);
                        tracing::debug!(listener = listener_name, error = %e, "tls handshake refused");
                    }
                    Err(_) => {
                        metrics::counter!("relay_tls_handshake_failures_total", "listener" => listener_name)
                            .increment(1);
                        tracing::debug!(listener = listener_name, "tls handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
