//! The URL space of the cache: one module per endpoint, wired together by [`router`].

mod cache_info;
mod extract;
mod file;
mod guix_nar;
mod listing;
mod log;
mod nar;
mod narinfo;
mod signing_key;
mod status;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use formats::StorePathHash;
use store_reader::PathInfo;

pub use listing::ListingCache;

use crate::admission::{Admission, Permit};
use crate::audit_trail::Target;
use crate::compression::Compression;
use crate::conn::ClientAddr;
use crate::direct::Direct;
use crate::error::{AppError, Failure};
use crate::metrics::{BodySource, Outcome, RouteKind};
use crate::process::Process;
use crate::state::AppState;
use formats::Dialect;

/// Builds the router over the served stores: a single unprefixed store at the root, or each
/// store under its prefix (`/nix/…`, `/guix/…`); `/` is the status page (or, for clients that
/// do not accept HTML, a text index). GET routes answer HEAD too, with the same headers.
/// Metrics start from zero and nothing is audited: [`router_with`] takes the process's.
pub fn router(stores: &[Arc<AppState>]) -> Router {
    router_with(stores, &Arc::new(Process::without_audit("http://127.0.0.1")))
}

/// [`router`] for `process`: recording into its metrics (served at `/metrics`) and audit trail,
/// with its rules for client addresses.
pub fn router_with(stores: &[Arc<AppState>], process: &Arc<Process>) -> Router {
    let pages = |stores: Vec<Arc<AppState>>| Arc::new(status::Pages { stores, process: Arc::clone(process) });
    let app = match stores {
        [only] if only.settings.prefix.is_empty() => store_router(Arc::clone(only), pages(vec![Arc::clone(only)])),
        _ => stores
            .iter()
            .fold(Router::new(), |app, state| {
                let page = pages(vec![Arc::clone(state)]);
                let prefix = &state.settings.prefix;
                app.nest(prefix, store_router(Arc::clone(state), Arc::clone(&page)))
                    .route(&format!("{prefix}/"), get(status::get).with_state(page))
            })
            .route("/", get(status::get).with_state(pages(stores.to_vec())))
            .fallback(|| async { AppError::NotFound }),
    };
    let requests = Arc::new(Requests {
        process: Arc::clone(process),
        prefixes: stores.iter().map(|s| s.settings.prefix.clone()).filter(|p| !p.is_empty()).collect(),
    });
    process.metrics.serve(stores);
    app.route("/index.txt", get(status::get_text).with_state(pages(stores.to_vec())))
        .route("/metrics", get(metrics_text).with_state(Arc::clone(process)))
        .route("/health", get(health).with_state(stores.to_vec()))
        .layer(middleware::from_fn_with_state(requests, log_request))
}

/// The request's [`ClientAddr`] becomes the client a trusted proxy names (see
/// [`crate::access::Access::client`]), for everything after; returns that client.
fn resolve_client(process: &Process, request: &mut Request) -> Option<IpAddr> {
    let ClientAddr(peer) = request.extensions().get::<ClientAddr>().copied()?;
    let client = process.access.client(peer.ip(), request.headers());
    if client != peer.ip() {
        request.extensions_mut().insert(ClientAddr(std::net::SocketAddr::new(client, 0)));
    }
    Some(client)
}

/// `GET /metrics`: the Prometheus text, for `--admin-allow` clients only (a node's requests
/// reveal what it runs).
async fn metrics_text(State(process): State<Arc<Process>>, request: Request) -> Result<Response, AppError> {
    let client = request.extensions().get::<ClientAddr>().map(ClientAddr::ip);
    if !client.is_some_and(|ip| process.access.is_admin(ip)) {
        return Err(AppError::Forbidden);
    }
    if let Some(open) = request.extensions().get::<crate::conn::OpenConnections>() {
        process.metrics.set_open_connections(open.count());
    }
    // The cache areas' use is read from their SQLite indexes: off the async runtime.
    let text = tokio::task::spawn_blocking(move || process.metrics.render()).await.map_err(AppError::Task)?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// How long `/health` waits for a store's DB before calling it unhealthy.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /health`: 200 when every store's DB answers, else 503, with one line saying which
/// (for load balancers and watchdogs). The probes use the short-work pool, never a stream slot,
/// so a server busy sending NARs still answers at once.
async fn health(State(stores): State<Vec<Arc<AppState>>>) -> Result<Response, AppError> {
    let mut trouble = Vec::new();
    for state in &stores {
        let probe = Arc::clone(state);
        let probe = state.admission.blocking(move || probe.store.check());
        let store = state.store.store_dir();
        match tokio::time::timeout(HEALTH_TIMEOUT, probe).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(%store, error = %e, "health: the store DB does not answer");
                trouble.push(format!("{store}: the database does not answer"));
            }
            Ok(Err(e)) => trouble.push(format!("{store}: the check failed: {e}")),
            Err(_) => {
                trouble.push(format!("{store}: the database did not answer within {} s", HEALTH_TIMEOUT.as_secs()))
            }
        }
    }
    if !trouble.is_empty() {
        return Err(AppError::Unhealthy(trouble.join("; ")));
    }
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")];
    Ok((headers, format!("ok: {} store(s) answer\n", stores.len())).into_response())
}

/// What the request middleware needs: where to record, and how to tell the stores apart.
struct Requests {
    /// Its metrics and audit trail.
    process: Arc<Process>,
    /// The stores' prefixes (none for a single store at the root).
    prefixes: Vec<String>,
}

impl Requests {
    /// The prefix of the store `path` is under (empty for the root store or none), and the
    /// path relative to it.
    fn split<'a>(&self, path: &'a str) -> (&str, &'a str) {
        for prefix in &self.prefixes {
            if let Some(rest) = path.strip_prefix(prefix.as_str()).filter(|rest| rest.starts_with('/')) {
                return (prefix, rest);
            }
        }
        ("", path)
    }
}

/// The routes of one store, relative to its prefix; `/` is its status page.
fn store_router(state: Arc<AppState>, page: Arc<status::Pages>) -> Router {
    let common = Router::new()
        .route("/", get(status::get).with_state(page))
        .route("/nix-cache-info", get(cache_info::get))
        .route("/{file}", get(top_level))
        .route("/log/{drv}", get(log::get));
    let dialect_routes = match state.settings.dialect {
        Dialect::Nix => common.route("/nar/{file}", get(nar::get)),
        Dialect::Guix => common
            .route("/nar/{file}", get(guix_nar::get_bare))
            .route("/nar/{compression}/{file}", get(guix_nar::get))
            .route("/file/{name}/sha256/{hash}", get(file::get))
            .route("/signing-key.pub", get(signing_key::get)),
    };
    dialect_routes.fallback(|| async { AppError::NotFound }).with_state(state)
}

/// `/<hash>.narinfo` and `/<hash>.ls` share one path segment, so they share one route.
async fn top_level(
    state: State<Arc<AppState>>,
    file: extract::TopLevelFile,
    slots: Slots,
    method: Method,
) -> Result<Response, AppError> {
    match file {
        extract::TopLevelFile::Narinfo(hash) => narinfo::get(state, hash, slots.client).await,
        extract::TopLevelFile::Listing(hash) => listing::get(state, &hash, &slots, &method).await,
    }
}

/// What a handler that streams a body needs to take a stream slot: the shared limiters and
/// the client's address (its share of the slots is counted by it).
pub(crate) struct Slots {
    admission: Arc<Admission>,
    /// The client's address: its share of the stream slots, and of the proxy's upstream
    /// lookups, is counted by it.
    pub(crate) client: Option<IpAddr>,
    /// The socket, on a plain TCP connection: bodies may send file ranges to it directly.
    pub(crate) direct: Option<Direct>,
}

impl Slots {
    /// A permit to send one body produced with `compression` (see [`Admission::admit`]).
    pub(crate) async fn admit(&self, compression: Compression) -> Result<Permit, AppError> {
        self.admission.admit(compression, self.client).await
    }
}

impl FromRequestParts<Arc<AppState>> for Slots {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let client = parts.extensions.get::<ClientAddr>().map(ClientAddr::ip);
        let direct = parts.extensions.get::<Direct>().cloned();
        Ok(Slots { admission: Arc::clone(&state.admission), client, direct })
    }
}

/// Looks a path up by its hash part, off the async runtime.
///
/// A path that the DB lists but whose files are missing is treated as absent: promising it
/// in a narinfo would only make the NAR download fail. So is a path the store's publishing
/// policy (`--publish`) does not serve.
async fn lookup(state: &Arc<AppState>, hash: &StorePathHash) -> Result<PathInfo, AppError> {
    let hash = hash.clone();
    let admission = Arc::clone(&state.admission);
    let state = Arc::clone(state);
    admission
        .blocking(move || {
            let start = Instant::now();
            let found = state.store.query_by_hash(&hash);
            state.db_lookups.observe(start.elapsed().as_secs_f64());
            let Some(info) = found? else {
                return Err(AppError::NotFound);
            };
            // Outside the publishing policy: exactly as absent.
            if !state.settings.publish.allows(&info, state.store.store_dir()) {
                return Err(AppError::NotFound);
            }
            let real = state.store.real_path(&info.path);
            if std::fs::symlink_metadata(&real).is_err() {
                tracing::warn!(path = %real.display(), "valid in the store DB but missing on disk");
                return Err(AppError::NotFound);
            }
            Ok(info)
        })
        .await?
}

/// One log line per request, once its body has ended (or was cut): client, method, path,
/// status, body bytes sent and the time to the last byte; with the cause when it failed
/// ([`Failure`], set by [`AppError`]'s response). An error line for a failure, info otherwise.
/// The same moment records the request's metrics and, for a GET of a narinfo or a NAR, its
/// audit record (see `crate::audit_trail`).
///
/// It is the router's one layer: it first resolves the client ([`resolve_client`]) and
/// refuses one `--allow` does not name.
async fn log_request(State(requests): State<Arc<Requests>>, mut request: Request, next: Next) -> Response {
    let client = resolve_client(&requests.process, &mut request);
    let (store, relative) = requests.split(request.uri().path());
    let kind = RouteKind::of(relative);
    let audited = requests.process.audit.is_some() && request.method() == Method::GET;
    let line = RequestLine {
        process: Arc::clone(&requests.process),
        store: store.to_owned(),
        kind,
        client,
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        start: Instant::now(),
        at: SystemTime::now(),
        target: audited.then(|| Target::of(kind, relative)).flatten(),
        status: 0,
        failure: None,
        source: None,
        bytes: 0,
    };
    // A client `--allow` does not name gets 403 on every route but `/health` (which tells
    // nothing of the stores), logged and counted like any answer. Nix takes 403 as "not here".
    let access = &requests.process.access;
    let refused = access.allow.is_some()
        && request.uri().path() != "/health"
        && !line.client.is_some_and(|ip| access.may_read(ip));
    let response = if refused { AppError::Forbidden.into_response() } else { next.run(request).await };
    let (mut parts, body) = response.into_parts();
    let line = RequestLine {
        status: parts.status.as_u16(),
        failure: parts.extensions.remove::<Failure>(),
        source: parts.extensions.get::<BodySource>().copied(),
        ..line
    };
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let expected = declared.or(body.size_hint().exact());
    Response::from_parts(parts, Body::new(LoggedBody { inner: body, expected, line: Some(line) }))
}

/// What a request's log line (and its metrics and audit record) say, filled in as its body
/// goes out.
struct RequestLine {
    process: Arc<Process>,
    /// The store's prefix (empty at the root).
    store: String,
    kind: RouteKind,
    client: Option<IpAddr>,
    method: Method,
    path: String,
    start: Instant,
    /// When the request arrived, for its audit record.
    at: SystemTime,
    /// What its audit record is about; `None` when it is not audited.
    target: Option<Target>,
    status: u16,
    failure: Option<Failure>,
    /// Where a NAR body comes from.
    source: Option<BodySource>,
    bytes: u64,
}

impl RequestLine {
    /// Counts a chunk of the body about to go out; the first one of a narinfo names its path.
    fn sent(&mut self, data: &bytes::Bytes) {
        if self.bytes == 0 && self.status == 200 {
            if let Some(target) = &mut self.target {
                target.learn_from_narinfo(data);
            }
        }
        self.bytes += data.len() as u64;
    }

    /// Logs the line, records the request's metrics and queues its audit record; `outcome`
    /// says how the body ended.
    fn log(self, outcome: Outcome, error: Option<&dyn std::fmt::Display>) {
        let took = self.start.elapsed();
        self.process.metrics.request(&self.store, self.kind, self.status, self.bytes, took, outcome, self.source);
        if let (Some(trail), Some(target), Some(client)) = (&self.process.audit, &self.target, self.client) {
            trail.record(audit::Record {
                at: self.at,
                client,
                store: self.store.clone(),
                kind: target.kind,
                hash: target.hash.clone(),
                name: target.name.clone(),
                status: self.status,
                bytes: self.bytes,
                duration: took,
            });
        }
        // The line's text is made only if it is written (SUBSERVE_LOG may turn it off).
        let wanted = match self.failure {
            Some(_) => tracing::enabled!(tracing::Level::ERROR),
            None => tracing::enabled!(tracing::Level::INFO),
        };
        if !wanted {
            return;
        }
        let outcome = match (outcome, error) {
            (Outcome::Complete, _) => "complete".to_owned(),
            (Outcome::Cut, _) => "cut".to_owned(),
            (Outcome::Aborted, Some(error)) => format!("aborted: {error}"),
            (Outcome::Aborted, None) => "aborted".to_owned(),
        };
        let ms = format_args!("{:.3}", took.as_secs_f64() * 1e3);
        let client = self.client.map(|ip| ip.to_canonical().to_string()).unwrap_or_else(|| "-".into());
        let path = self.path.escape_debug().to_string();
        match self.failure {
            Some(Failure(error)) => tracing::error!(
                %client, method = %self.method, %path, status = self.status, bytes = self.bytes, %ms, %outcome, %error,
                "request"
            ),
            None => tracing::info!(
                %client, method = %self.method, %path, status = self.status, bytes = self.bytes, %ms, %outcome,
                "request"
            ),
        }
    }
}

/// A response body that counts what it sends and logs the request when it ends or is dropped.
struct LoggedBody {
    inner: Body,
    /// The body's length when it is known (`Content-Length`): hyper stops polling a sized body
    /// once it has sent that much.
    expected: Option<u64>,
    line: Option<RequestLine>,
}

impl axum::body::HttpBody for LoggedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(line)) = (frame.data_ref(), self.line.as_mut()) {
                    line.sent(data);
                }
            }
            std::task::Poll::Ready(Some(Err(error))) => {
                if let Some(line) = self.line.take() {
                    line.log(Outcome::Aborted, Some(error));
                }
            }
            std::task::Poll::Ready(None) => {
                if let Some(line) = self.line.take() {
                    line.log(Outcome::Complete, None);
                }
            }
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    /// A body dropped before its end: the client went away (or a HEAD, or an empty body that
    /// hyper never polled).
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            let complete =
                self.inner.is_end_stream() || line.method == Method::HEAD || self.expected == Some(line.bytes);
            line.log(if complete { Outcome::Complete } else { Outcome::Cut }, None);
        }
    }
}
