//! The HTTPS transport for update repositories (G045 PL-2-3; threats ST-D-13, ST-D-14).
//!
//! tough's [`Transport`] implemented over kawal's one HTTP client (reqwest, rustls on aws-lc-rs).
//! The transport only has to deliver bytes: every TUF check happens above it, so a hostile
//! server can at worst withhold an update. What this layer adds is that it cannot *stall* one:
//!
//! - **Pinned roots only.** The server certificate must chain to one of the vendor's CA
//!   certificates from the configuration; the system and built-in roots are never consulted.
//! - **HTTPS only.** `http://` URLs are refused, and so is any redirect that leaves the origin
//!   (scheme, host and port) or goes to plain HTTP.
//! - **Slow retrieval.** A connect time-out, a time-out for the response headers, a total
//!   time-out per file, and a minimum-progress rule: fewer than
//!   [`HttpsSettings::min_progress_bytes`] in any [`HttpsSettings::progress_window`] aborts.
//! - **Endless data.** Bodies are streamed, never buffered; tough stops each stream at the
//!   signed length or the metadata size cap, and this layer refuses a `Content-Length` above
//!   [`HttpsSettings::max_file_size`] before reading a byte (and stops there when no length is
//!   sent).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::time::{Instant, Sleep};
use tough::Bytes;
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

use crate::error::{Error, Result};

/// Settings of the HTTPS transport. [`HttpsSettings::new`] fills in the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsSettings {
    /// PEM files holding the vendor's CA certificates: the only roots the server may chain to.
    pub pinned_roots: Vec<PathBuf>,
    /// Longest wait for the TCP connection and TLS handshake (default 10 s).
    pub connect_timeout: Duration,
    /// Longest wait from sending a request to its response headers (default 30 s).
    pub header_timeout: Duration,
    /// Longest time one file may take from request to last byte (default 30 min: a large bundle
    /// over a slow link still fits, an attacker cannot hold the update open for longer).
    pub file_timeout: Duration,
    /// The window of the minimum-progress rule (default 30 s).
    pub progress_window: Duration,
    /// Bytes that must arrive in every window (default 4 KiB, so about 136 bytes/s).
    pub min_progress_bytes: u64,
    /// Largest file fetched at all, whatever its role (default 2 GiB).
    pub max_file_size: u64,
    /// Same-origin HTTPS redirects followed per file (default 3).
    pub max_redirects: usize,
}

impl HttpsSettings {
    /// Default settings with `pinned_roots` as the only trusted CA files.
    #[must_use]
    pub fn new(pinned_roots: Vec<PathBuf>) -> Self {
        Self {
            pinned_roots,
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            file_timeout: Duration::from_secs(30 * 60),
            progress_window: Duration::from_secs(30),
            min_progress_bytes: 4 * 1024,
            max_file_size: 2 * 1024 * 1024 * 1024,
            max_redirects: 3,
        }
    }
}

/// Why the transport refused or abandoned a download; carried inside tough's `TransportError`
/// and turned into an [`Error`] variant by `Error::from`.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("{url} is not an https:// URL")]
    InsecureUrl { url: String },
    #[error("TLS with the server failed: {reason}")]
    Tls { reason: String },
    #[error("redirect from {from} to {to} refused: {why}")]
    Redirect {
        from: String,
        to: String,
        why: &'static str,
    },
    #[error("HTTP status {status}")]
    Status { status: u16 },
    #[error("{length} bytes is above the cap of {max_size} bytes")]
    TooLarge { length: u64, max_size: u64 },
    #[error("no complete response within {limit:?}")]
    Timeout { limit: Duration },
    #[error("only {received} bytes in {window:?}, at least {min_bytes} required")]
    TooSlow {
        received: u64,
        window: Duration,
        min_bytes: u64,
    },
    #[error("network error: {reason}")]
    Network { reason: String },
}

impl Refusal {
    fn into_transport_error(self, url: &Url) -> TransportError {
        let kind = match &self {
            // tough walks root versions until one is missing, so a missing file must say so.
            Self::Status { status: 404 | 410 } => TransportErrorKind::FileNotFound,
            Self::InsecureUrl { .. } => TransportErrorKind::UnsupportedUrlScheme,
            _ => TransportErrorKind::Other,
        };
        TransportError::new_with_cause(kind, url.as_str(), self)
    }

    /// The kawal error for this refusal of `url`.
    pub(crate) fn into_error(self, url: String) -> Error {
        match self {
            Self::InsecureUrl { url } => Error::InsecureUrl { url },
            Self::Tls { reason } => Error::RejectedServerCertificate { url, reason },
            Self::Redirect { from, to, why } => Error::RejectedRedirect { from, to, why },
            Self::Status { status } => Error::HttpStatus { url, status },
            Self::TooLarge { max_size, .. } => Error::RejectedTooLarge {
                what: url,
                max_size,
            },
            Self::Timeout { limit } => Error::RejectedTimeout { url, limit },
            Self::TooSlow {
                received,
                window,
                min_bytes,
            } => Error::RejectedSlowRetrieval {
                url,
                received,
                window,
                min_bytes,
            },
            Self::Network { reason } => Error::Network { url, reason },
        }
    }
}

/// tough's [`Transport`] over HTTPS with the vendor's pinned roots; see the module documentation.
#[derive(Debug, Clone)]
pub struct HttpsTransport {
    client: reqwest::Client,
    settings: Arc<HttpsSettings>,
}

impl HttpsTransport {
    /// Builds the client. Fails when a pinned root file cannot be read, holds no certificate or
    /// holds a certificate rustls cannot use.
    pub fn new(settings: &HttpsSettings) -> Result<Self> {
        let tls = tls_config(&settings.pinned_roots)?;
        let max_redirects = settings.max_redirects;
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let to = attempt.url().clone();
            let previous = attempt.previous();
            // Report the URL that answered with this redirect; judge the origin by the first.
            let from = previous.last().map(Url::to_string).unwrap_or_default();
            let why = match previous.first() {
                None => Some("no original request"),
                Some(_) if to.scheme() != "https" => Some("the target is not https"),
                Some(first) if to.origin() != first.origin() => {
                    Some("the target is another origin")
                }
                Some(_) if previous.len() > max_redirects => Some("too many redirects"),
                Some(_) => None,
            };
            match why {
                Some(why) => attempt.error(Refusal::Redirect {
                    from,
                    to: to.to_string(),
                    why,
                }),
                None => attempt.follow(),
            }
        });
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .redirect(policy)
            .referer(false)
            // A proxy from the environment would be one more party on the path; kawal connects
            // to the configured repository directly.
            .no_proxy()
            .connect_timeout(settings.connect_timeout)
            .user_agent(concat!("kawal-update/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::TlsConfig {
                path: settings.pinned_roots.first().cloned().unwrap_or_default(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            client,
            settings: Arc::new(settings.clone()),
        })
    }

    async fn start(&self, url: &Url) -> std::result::Result<TransportStream, Refusal> {
        if url.scheme() != "https" {
            return Err(Refusal::InsecureUrl {
                url: url.to_string(),
            });
        }
        let s = &self.settings;
        let started = Instant::now();
        let deadline = started + s.file_timeout;
        let header_limit = s.header_timeout.min(s.file_timeout);
        let response =
            match tokio::time::timeout(header_limit, self.client.get(url.clone()).send()).await {
                Err(_) => {
                    return Err(Refusal::Timeout {
                        limit: header_limit,
                    });
                }
                Ok(Err(e)) => return Err(classify(&e)),
                Ok(Ok(r)) => r,
            };
        let status = response.status();
        if !status.is_success() {
            return Err(Refusal::Status {
                status: status.as_u16(),
            });
        }
        if let Some(length) = response.content_length()
            && length > s.max_file_size
        {
            return Err(Refusal::TooLarge {
                length,
                max_size: s.max_file_size,
            });
        }
        let now = Instant::now();
        let body = Body {
            state: Mutex::new(BodyState {
                url: url.clone(),
                pending: Some(next_chunk(response)),
                deadline: Box::pin(tokio::time::sleep_until(deadline)),
                window: Box::pin(tokio::time::sleep_until(now + s.progress_window)),
                window_bytes: 0,
                total: 0,
                settings: Arc::clone(&self.settings),
                done: false,
            }),
        };
        Ok(Box::pin(body))
    }
}

#[tough::async_trait]
impl Transport for HttpsTransport {
    async fn fetch(&self, url: Url) -> std::result::Result<TransportStream, TransportError> {
        self.start(&url).await.map_err(|refusal| {
            tracing::warn!(%url, %refusal, "update download refused");
            refusal.into_transport_error(&url)
        })
    }
}

/// A rustls client configuration that trusts exactly the certificates in `roots`.
fn tls_config(roots: &[PathBuf]) -> Result<rustls::ClientConfig> {
    let bad = |path: &PathBuf, reason: String| Error::TlsConfig {
        path: path.clone(),
        reason,
    };
    if roots.is_empty() {
        return Err(bad(
            &PathBuf::new(),
            "no pinned root certificate configured".to_owned(),
        ));
    }
    let mut store = rustls::RootCertStore::empty();
    for path in roots {
        let mut found = 0_usize;
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(path, e.to_string()))?;
        for cert in certs {
            let cert = cert.map_err(|e| bad(path, e.to_string()))?;
            store.add(cert).map_err(|e| bad(path, e.to_string()))?;
            found = found.saturating_add(1);
        }
        if found == 0 {
            return Err(bad(path, "no certificate in the file".to_owned()));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&roots[0], e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Finds the most telling cause of a reqwest error: a refused redirect, a TLS failure, or a
/// time-out; anything else is a network error.
fn classify(e: &reqwest::Error) -> Refusal {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(r) = err.downcast_ref::<Refusal>() {
            return r.clone();
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Refusal::Tls {
                reason: tls.to_string(),
            };
        }
        // `io::Error::source` skips the error it wraps, and TLS errors arrive wrapped in one
        // io::Error inside another: step into the wrapped error instead.
        cause = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    let mut reason = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(err) = cause {
        reason.push_str(": ");
        reason.push_str(&err.to_string());
        cause = err.source();
    }
    Refusal::Network { reason }
}

type ChunkFuture = Pin<
    Box<dyn Future<Output = (reqwest::Response, reqwest::Result<Option<Bytes>>)> + Send + 'static>,
>;

fn next_chunk(mut response: reqwest::Response) -> ChunkFuture {
    Box::pin(async move {
        let chunk = response.chunk().await;
        (response, chunk)
    })
}

/// A response body as a stream that enforces the time-out, progress and size rules.
struct Body {
    /// tough needs a `Sync` stream while the body future is only `Send`. `poll_next` has
    /// exclusive access, so `Mutex::get_mut` never locks; the mutex only provides `Sync`.
    state: Mutex<BodyState>,
}

struct BodyState {
    url: Url,
    pending: Option<ChunkFuture>,
    deadline: Pin<Box<Sleep>>,
    window: Pin<Box<Sleep>>,
    window_bytes: u64,
    total: u64,
    settings: Arc<HttpsSettings>,
    done: bool,
}

impl Stream for Body {
    type Item = std::result::Result<Bytes, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let state = match self.get_mut().state.get_mut() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        state.poll(cx).map(|item| {
            item.map(|r| {
                r.map_err(|refusal| {
                    tracing::warn!(url = %state.url, %refusal, "update download abandoned");
                    state.done = true;
                    state.pending = None;
                    refusal.into_transport_error(&state.url)
                })
            })
        })
    }
}

impl BodyState {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<std::result::Result<Bytes, Refusal>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let s = Arc::clone(&self.settings);
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Refusal::Timeout {
                limit: s.file_timeout,
            })));
        }
        let Some(pending) = self.pending.as_mut() else {
            return Poll::Ready(None);
        };
        let chunk = match pending.as_mut().poll(cx) {
            Poll::Pending => None,
            Poll::Ready((response, Ok(Some(bytes)))) => {
                self.pending = Some(next_chunk(response));
                let len = bytes.len() as u64;
                self.total = self.total.saturating_add(len);
                self.window_bytes = self.window_bytes.saturating_add(len);
                if self.total > s.max_file_size {
                    return Poll::Ready(Some(Err(Refusal::TooLarge {
                        length: self.total,
                        max_size: s.max_file_size,
                    })));
                }
                Some(bytes)
            }
            Poll::Ready((_, Ok(None))) => {
                self.done = true;
                self.pending = None;
                return Poll::Ready(None);
            }
            Poll::Ready((_, Err(e))) => return Poll::Ready(Some(Err(classify(&e)))),
        };
        // The minimum-progress rule, checked on every poll; polling the timer also arms it, so a
        // server that sends nothing at all still wakes this stream at the end of the window.
        if self.window.as_mut().poll(cx).is_ready() {
            if self.window_bytes < s.min_progress_bytes {
                return Poll::Ready(Some(Err(Refusal::TooSlow {
                    received: self.window_bytes,
                    window: s.progress_window,
                    min_bytes: s.min_progress_bytes,
                })));
            }
            self.window_bytes = 0;
            self.window
                .as_mut()
                .reset(Instant::now() + s.progress_window);
            let _armed = self.window.as_mut().poll(cx);
        }
        match chunk {
            Some(bytes) => Poll::Ready(Some(Ok(bytes))),
            None => Poll::Pending,
        }
    }
}
