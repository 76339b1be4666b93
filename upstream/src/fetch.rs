//! One request to one upstream: a narinfo GET with a size limit and a deadline, and the start
//! of a NAR GET. Every failure is a [`FetchError`]; a 404, 403 or 410 is a clean miss.
//! Failures are reported to the [`Upstream`]'s breaker by whoever asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use formats::StorePathHash;
use futures_util::StreamExt as _;

use crate::breaker::Breaker;
use crate::error::FetchError;
use crate::{Stats, UpstreamConfig};

/// One upstream as the proxy uses it: what it was configured with, its health, and what was
/// asked of it.
pub(crate) struct Upstream {
    pub(crate) config: UpstreamConfig,
    pub(crate) breaker: Breaker,
    /// Shared with the upstream of the same URL in a reconfigured proxy.
    pub(crate) counters: std::sync::Arc<UpstreamCounters>,
}

/// What one upstream was asked and answered, since the proxy was made.
#[derive(Default)]
pub(crate) struct UpstreamCounters {
    pub(crate) narinfo_fetches: AtomicU64,
    pub(crate) nar_fetches: AtomicU64,
    pub(crate) nar_bytes: AtomicU64,
    pub(crate) errors_by_cause: [AtomicU64; crate::FAILURE_CAUSES.len()],
}

impl Upstream {
    /// Records a failed request for `what` (a narinfo or NAR URL): counted and fed to the
    /// breaker when it is the upstream's fault, logged in any case.
    pub(crate) fn failed(&self, stats: &Stats, what: &str, e: &FetchError) {
        if e.is_upstream_fault() {
            stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            if let Some(i) = crate::FAILURE_CAUSES.iter().position(|c| *c == e.cause()) {
                stats.upstream_errors_by_cause[i].fetch_add(1, Ordering::Relaxed);
                self.counters.errors_by_cause[i].fetch_add(1, Ordering::Relaxed);
            }
            if self.breaker.failure(Instant::now()) {
                tracing::warn!(upstream = %self.config.url, "upstream failing repeatedly: skipping it for a while");
            }
        }
        tracing::warn!(upstream = %self.config.url, %what, cause = e.cause(), error = %e, "upstream request failed");
    }
}

/// Largest narinfo accepted; real ones are well under 10 KiB even with many references.
pub(crate) const MAX_NARINFO: usize = 256 * 1024;

/// GETs `<upstream>/<hash>.narinfo` and returns its text, unparsed (each flavour reads it
/// its own way), all within `timeout`; `Ok(None)` for a miss.
pub(crate) async fn narinfo(
    client: &reqwest::Client,
    up: &UpstreamConfig,
    hash: &StorePathHash,
    timeout: Duration,
) -> Result<Option<String>, FetchError> {
    let url = format!("{}/{hash}.narinfo", up.url);
    let deadline = tokio::time::Instant::now() + timeout;
    let response =
        tokio::time::timeout_at(deadline, client.get(&url).send()).await.map_err(|_| FetchError::Timeout)??;
    match response.status().as_u16() {
        200 => {}
        404 | 403 | 410 => return Ok(None),
        other => return Err(FetchError::Status(other)),
    }
    if response.content_length().is_some_and(|l| l > MAX_NARINFO as u64) {
        return Err(FetchError::Garbage("narinfo too large".into()));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = tokio::time::timeout_at(deadline, stream.next()).await.map_err(|_| FetchError::Timeout)? {
        let chunk = chunk?;
        if body.len() + chunk.len() > MAX_NARINFO {
            return Err(FetchError::Garbage("narinfo too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map(Some).map_err(|_| FetchError::Garbage("narinfo is not UTF-8".into()))
}

/// Starts a GET of a NAR file; the caller reads the body with a stall timeout.
pub(crate) async fn nar(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<reqwest::Response, FetchError> {
    let response = tokio::time::timeout(timeout, client.get(url).send()).await.map_err(|_| FetchError::Timeout)??;
    match response.status().as_u16() {
        200 => Ok(response),
        other => Err(FetchError::Status(other)),
    }
}

/// Resolves a narinfo's `URL` against the upstream's base URL, as Nix and Guix do: absolute URLs
/// are kept, anything else is appended after a `/`.
pub(crate) fn resolve(base: &str, url: &str) -> String {
    if url.starts_with("http://") || url.starts_with("https://") {
        url.to_owned()
    } else {
        format!("{base}/{}", url.trim_start_matches('/'))
    }
}
