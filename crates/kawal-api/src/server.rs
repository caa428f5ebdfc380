//! The HTTPS accept loop: TLS on every connection, a cap on live connections, time-outs on the
//! handshake, on request headers and on idle keep-alive connections, size limits on headers and
//! bodies, and a graceful shutdown.
//!
//! Nothing a client sends can end the loop: errors on one connection are logged at debug level
//! and end that connection only.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use http::{Request, Response, StatusCode};
use http_body_util::Limited;
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::tls::TlsHandle;

/// hyper refuses (by panicking) a read buffer smaller than this.
const HYPER_MIN_BUF_SIZE: usize = 8192;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Resource limits for the HTTPS server. Every field bounds what one client can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Live connections at most; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake, from accept.
    pub handshake_timeout: Duration,
    /// Time allowed for a request's line and headers to arrive, from the moment the server
    /// waits for them.
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this long. hyper's header-read timer
    /// starts as soon as a connection goes idle, so the effective idle limit is the smaller
    /// of this and `header_read_timeout`.
    pub keep_alive_idle: Duration,
    /// Request line plus headers, in bytes; more gets 431 and the connection is closed.
    /// Values below 8 KiB are raised to 8 KiB (hyper's minimum buffer).
    pub max_header_bytes: usize,
    /// Request body, in bytes; more gets 413.
    pub max_body_bytes: usize,
    /// Time allowed for reading the body and producing the response head (a trickled body
    /// would otherwise hold a connection for ever); over it the client gets 408.
    pub request_timeout: Duration,
    /// On shutdown, how long live connections get to finish before they are cut.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            keep_alive_idle: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Facts about the connection a request came in on; inserted into every request's extensions.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's leaf certificate (DER), only if it presented one and rustls verified it
    /// against the configured client-auth roots.
    pub client_cert_der: Option<Arc<Vec<u8>>>,
}

/// Counters kept by [`serve_with_stats`], for health and compliance reporting.
#[derive(Debug, Default)]
pub struct ServerStats {
    accepted: AtomicU64,
    refused_over_cap: AtomicU64,
    handshake_failed: AtomicU64,
    handshake_timed_out: AtomicU64,
}

impl ServerStats {
    /// TCP connections accepted and admitted under the connection cap.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// TCP connections closed unserved because the connection cap was reached.
    pub fn refused_over_cap(&self) -> u64 {
        self.refused_over_cap.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed (protocol or cipher refused, bad client certificate, not TLS).
    pub fn handshake_failed(&self) -> u64 {
        self.handshake_failed.load(Ordering::Relaxed)
    }

    /// TLS handshakes that did not finish within [`Limits::handshake_timeout`].
    pub fn handshake_timed_out(&self) -> u64 {
        self.handshake_timed_out.load(Ordering::Relaxed)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves; see [`serve_with_stats`].
///
/// `tls` is a fixed configuration (`Arc<ServerConfig>`) or a [`TlsHandle`] whose configuration
/// can be replaced while the server runs (a renewed device certificate).
///
/// # Errors
/// None at present: per-connection and `accept` errors are logged and survived. The `Result`
/// leaves room for fatal listener errors.
pub async fn serve(
    listener: TcpListener,
    tls: impl Into<TlsHandle>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with_stats(listener, tls, app, limits, Arc::default(), shutdown).await
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves, counting into `stats`.
///
/// Each connection is handshaken with the configuration `tls` holds at its accept, so a
/// configuration replaced through a [`TlsHandle`] applies to new connections at once and
/// live ones keep theirs. Each request carries a [`ConnInfo`] extension. When `shutdown` resolves the listener is
/// closed, live connections finish their current request (idle ones close at once), and
/// whatever is still open after [`Limits::shutdown_grace`] is cut.
///
/// # Errors
/// None at present; see [`serve`].
pub async fn serve_with_stats(
    listener: TcpListener,
    tls: impl Into<TlsHandle>,
    app: Router,
    limits: Limits,
    stats: Arc<ServerStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let tls: TlsHandle = tls.into();
    // The extractors (Bytes, Json, Form) refuse bodies over the limit with 413.
    let app = app.layer(DefaultBodyLimit::max(limits.max_body_bytes));
    let http = Arc::new(http_builder(&limits));
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let (stop_tx, stop_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap finished connections so the set does not grow without bound.
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    warn!(error = %e, "connection task failed");
                }
            }
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        log_accept_error(&e);
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    // Closing at once costs nothing; queueing would let a flood hold memory.
                    ServerStats::bump(&stats.refused_over_cap);
                    debug!(%peer, "connection refused: connection cap reached");
                    drop(tcp);
                    continue;
                };
                ServerStats::bump(&stats.accepted);
                connections.spawn(connection(Conn {
                    tcp,
                    peer,
                    acceptor: TlsAcceptor::from(tls.current()),
                    http: Arc::clone(&http),
                    app: app.clone(),
                    limits,
                    stats: Arc::clone(&stats),
                    stop: stop_rx.clone(),
                    _permit: permit,
                }));
            }
        }
    }

    drop(listener);
    stop_tx.send_replace(());
    let live = connections.len();
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        info!(
            remaining = connections.len(),
            "shutdown grace period over; closing connections"
        );
    }
    connections.shutdown().await;
    info!(connections_at_shutdown = live, "HTTPS server stopped");
    Ok(())
}

/// The HTTP/1.1 settings shared by all connections.
fn http_builder(limits: &Limits) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(true)
        // hyper arms this timer whenever it waits for a request head, including the idle wait
        // between keep-alive requests, so it is also the idle limit.
        .header_read_timeout(limits.header_read_timeout.min(limits.keep_alive_idle))
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(HYPER_MIN_BUF_SIZE));
    http
}

fn log_accept_error(e: &io::Error) {
    match e.kind() {
        // The client gave up before we got to it: its problem, not ours.
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset => {
            debug!(error = %e, "accept failed");
        }
        // Typically out of file descriptors: the operator needs to know.
        _ => warn!(error = %e, "accept failed"),
    }
}

/// Everything one connection task owns.
struct Conn {
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    http: Arc<http1::Builder>,
    app: Router,
    limits: Limits,
    stats: Arc<ServerStats>,
    stop: watch::Receiver<()>,
    /// Held for the life of the connection: the slot under the connection cap.
    _permit: OwnedSemaphorePermit,
}

/// Runs one connection: handshake, then HTTP/1.1 until the client leaves, a limit is hit or
/// the server shuts down.
async fn connection(conn: Conn) {
    let Conn {
        tcp,
        peer,
        acceptor,
        http,
        app,
        limits,
        stats,
        mut stop,
        _permit,
    } = conn;
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(%peer, error = %e, "could not set TCP_NODELAY");
    }

    let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                ServerStats::bump(&stats.handshake_failed);
                debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                ServerStats::bump(&stats.handshake_timed_out);
                debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = stop.changed() => return,
    };

    // rustls only records the peer's certificates once its verifier has accepted them.
    let client_cert_der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| Arc::new(leaf.as_ref().to_vec()));
    let info = ConnInfo {
        peer,
        client_cert_der,
    };
    let service =
        hyper::service::service_fn(move |req| handle(app.clone(), info.clone(), limits, req));

    let served = http.serve_connection(TokioIo::new(tls), service);
    let mut served = std::pin::pin!(served);
    let mut stopping = false;
    loop {
        tokio::select! {
            done = served.as_mut() => {
                if let Err(e) = done {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            // Finish the request in flight, then close; an idle connection closes at once.
            _ = stop.changed(), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Applies the per-request limits and the [`ConnInfo`] extension, then runs the router.
async fn handle(
    app: Router,
    info: ConnInfo,
    limits: Limits,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let max_body = limits.max_body_bytes;
    // A declared length over the limit is refused before a byte of the body is read.
    if req.body().size_hint().lower() > u64::try_from(max_body).unwrap_or(u64::MAX) {
        debug!(peer = %info.peer, "request body over the limit (declared length)");
        return Ok(closing_response(StatusCode::PAYLOAD_TOO_LARGE));
    }
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(info);
    // A chunked body has no declared length: cap it as it streams, so no handler can be made
    // to buffer more than the limit, whichever way it reads the body.
    let req = Request::from_parts(parts, Body::new(Limited::new(body, max_body)));
    match tokio::time::timeout(limits.request_timeout, app.oneshot(req)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(never)) => match never {},
        Err(_) => Ok(closing_response(StatusCode::REQUEST_TIMEOUT)),
    }
}

/// A response with `status` that also ends the connection: after a refused body the stream is
/// in an unknown state. The same generic JSON error as the router's answers; it never reaches
/// the router, so it also carries the headers that keep it from being sniffed or cached.
fn closing_response(status: StatusCode) -> Response<Body> {
    let body = match status {
        StatusCode::PAYLOAD_TOO_LARGE => r#"{"error":"request too large"}"#,
        StatusCode::REQUEST_TIMEOUT => r#"{"error":"request timed out"}"#,
        _ => r#"{"error":"bad request"}"#,
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
