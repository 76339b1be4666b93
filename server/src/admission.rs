//! Admission control: caps on the NAR bodies produced at once, so that a crowd of downloads
//! costs bounded memory, threads and CPU, and never starves narinfo requests.
//!
//! Every NAR body (a local NAR, on the fly compressed or not, a proxied NAR, a Guix `/file/`)
//! takes a [`Permit`] from one of two [`Limiter`]s before its response headers are sent, and
//! holds it until the body is gone: finished, failed, or dropped because the client left.
//! A request over the cap waits in a FIFO queue for up to [`QUEUE_TIMEOUT`], then gets
//! `503 Service Unavailable` with `Retry-After`. Narinfo, listing and log requests never take a
//! permit, and HEAD requests neither: they produce no body.
//!
//! Why 503 (docs/protocol.md §3.4): Nix treats 503 as transient and retries with backoff (up to
//! `download-attempts`, 5 by default; Nix 2.35+ waits longer for 503 and honours
//! `Retry-After`), whereas a 404 would make it give up on this cache for the path. Guix falls
//! back to the narinfo's other URLs or servers on any non-200. Queueing first makes the 503
//! rare: it only answers a backlog that does not drain within [`QUEUE_TIMEOUT`].
//!
//! Why two caps: an uncompressed stream costs a blocking thread and a few buffers (about
//! 0.8 MiB, see `stream.rs`) and little CPU; an on-the-fly compressed one costs a core at full
//! speed and a compression context (about 3 MiB for zstd at level 3, 17 MiB for xz -2). The
//! caps are disjoint: a compressed stream takes one permit, from the compressed limiter.
//!
//! Measured on 2 cores (caps 32 and 4), 256 clients at once: peak RSS 51–54 MiB downloading
//! the 256 MiB NAR uncompressed, 37–39 MiB downloading a 32 MiB NAR as zstd, against 447 MiB
//! and 1.3 GiB without the caps.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::compression::Compression;
use crate::error::AppError;
use crate::stats::{LimiterCounters, LimiterStats, Waiting};

/// How long a NAR request waits for a permit before it is answered 503.
///
/// Nix gives up on a transfer only after `stalled-download-timeout` (300 s) without progress,
/// so a minute of waiting for the response headers is well within what clients tolerate, and
/// a request that waits keeps its place in the FIFO line, where a retry after a 503 goes to
/// the back. 30 s was too short in the benchmark: 256 clients fetching the 256 MiB NAR
/// through 32 slots take about 35 s, and the last few got a 503.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(60);

/// `Retry-After` of the 503 answered when the queue timed out.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Bounds of the default cap on uncompressed NAR streams.
///
/// 16 per core: an uncompressed stream is mostly waiting on the disk or the client, so many
/// fit on a core, and slow clients holding permits should not queue everyone else. At most
/// 256: at about 0.8 MiB each that is about 200 MiB, and together with the compressed cap it
/// stays far below tokio's 512 blocking threads, which narinfo lookups share (a narinfo must
/// never wait for a thread held by a NAR stream). At least 32, for small machines.
pub const MAX_STREAMS_RANGE: (usize, usize) = (32, 256);

/// Bounds of the default cap on on-the-fly compressed NAR streams.
///
/// 2 per core: compression is CPU-bound, so more streams than cores only share the cores,
/// but a stream also waits on its client, and twice the cores keeps the cores busy while
/// some clients are slow. At most 64 (64 zstd contexts are about 200 MiB), at least 2.
pub const MAX_COMPRESSED_STREAMS_RANGE: (usize, usize) = (2, 64);

/// The default cap on concurrent uncompressed NAR bodies (local, proxied and `/file/`) for a
/// machine with `cores` cores: 16 per core within [`MAX_STREAMS_RANGE`].
pub fn default_max_streams(cores: usize) -> usize {
    cores.saturating_mul(16).clamp(MAX_STREAMS_RANGE.0, MAX_STREAMS_RANGE.1)
}

/// The default cap on concurrent on-the-fly compressed NAR bodies for a machine with `cores`
/// cores: 2 per core within [`MAX_COMPRESSED_STREAMS_RANGE`].
pub fn default_max_compressed_streams(cores: usize) -> usize {
    cores.saturating_mul(2).clamp(MAX_COMPRESSED_STREAMS_RANGE.0, MAX_COMPRESSED_STREAMS_RANGE.1)
}

/// The cores this process may run on (1 if that cannot be known).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Blocking-pool threads that short blocking work (store DB lookups, opening a log, checking
/// for a baked file) may use at once.
///
/// Together with the stream caps (at most 256 + 64) this stays below tokio's 512 blocking
/// threads, so a flood of requests queues here instead of spawning a thread each, and stream
/// producers and lookups never wait for each other's threads.
pub const LOOKUP_THREADS: usize = 64;

/// Threads kept for the proxy's own blocking work (download writers, its index).
pub const PROXY_THREADS: usize = 128;

/// The size of the runtime's blocking pool for these stream caps: every producer and every
/// lookup slot has a thread, and the proxy has [`PROXY_THREADS`], so the pool never makes a
/// permit holder wait; and however many clients come, the process never has more threads
/// than this (tokio's own default is 512, which churning lookups can reach).
pub fn blocking_threads(max_streams: usize, max_compressed_streams: usize) -> usize {
    LOOKUP_THREADS + max_streams + max_compressed_streams + PROXY_THREADS
}

/// The limiters of a server: one for uncompressed bodies, one for compressed ones, and one
/// for short blocking work.
#[derive(Debug)]
pub struct Admission {
    /// Uncompressed bodies: local bare NARs and ranges, proxied NARs, Guix `/file/`, logs,
    /// listings.
    pub streams: Limiter,
    /// NARs compressed on the fly.
    pub compressed: Limiter,
    /// Slots for short blocking work, see [`Admission::blocking`].
    lookups: Arc<Semaphore>,
}

impl Admission {
    /// Caps of `streams` and `compressed` concurrent bodies, each with a queue of up to
    /// `queue_timeout`, and no per-client share beyond the caps. A cap of 0 is taken as 1.
    pub fn new(streams: usize, compressed: usize, queue_timeout: Duration) -> Self {
        Self::with_shares((streams, streams), (compressed, compressed), queue_timeout)
    }

    /// Like [`Admission::new`], each cap given with the share of it one client address may
    /// hold: `(cap, per_client)`.
    pub fn with_shares(streams: (usize, usize), compressed: (usize, usize), queue_timeout: Duration) -> Self {
        Self {
            streams: Limiter::new("uncompressed", streams.0, queue_timeout).per_client(streams.1),
            compressed: Limiter::new("compressed", compressed.0, queue_timeout).per_client(compressed.1),
            lookups: Arc::new(Semaphore::new(LOOKUP_THREADS)),
        }
    }

    /// Runs the short blocking work `f` on the blocking pool, waiting first for one of
    /// [`LOOKUP_THREADS`] slots.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, tokio::task::JoinError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot = Arc::clone(&self.lookups).acquire_owned().await.expect("the semaphore is never closed");
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            f()
        })
        .await
    }

    /// The default caps for this machine, with a queue of [`QUEUE_TIMEOUT`].
    pub fn with_defaults() -> Self {
        let cores = cores();
        let (streams, compressed) = (default_max_streams(cores), default_max_compressed_streams(cores));
        Self::with_shares(
            (streams, default_per_client(streams, 4, 4)),
            (compressed, default_per_client(compressed, 2, 1)),
            QUEUE_TIMEOUT,
        )
    }

    /// Waits for a permit to send a body produced with `compression` to `client`:
    /// compressing on the fly counts against the compressed cap, anything else against the
    /// uncompressed one; the client's share of the cap is waited for first.
    pub async fn admit(&self, compression: Compression, client: Option<IpAddr>) -> Result<Permit, AppError> {
        match compression {
            Compression::None => self.streams.admit(client).await,
            _ => self.compressed.admit(client).await,
        }
    }
}

/// The share of a cap one client address may hold: `1/divisor` of it, at least `min` (and
/// never more than the cap).
///
/// One node rarely needs more: Nix fetches a closure's NARs a few at a time, and a node that
/// stops reading then holds at most its share, never every slot. Many nodes behind one NAT
/// address share one share; raise it for such a site.
pub fn default_per_client(cap: usize, divisor: usize, min: usize) -> usize {
    (cap / divisor.max(1)).max(min).min(cap.max(1))
}

/// A cap on concurrent bodies, with a FIFO queue of bounded wait in front of it, and a cap
/// per client address within it.
pub struct Limiter {
    semaphore: Arc<Semaphore>,
    cap: usize,
    /// How many permits one client address may hold.
    per_client: usize,
    /// The permits of each client address that holds or waits for one.
    clients: Arc<Mutex<HashMap<IpAddr, Arc<Semaphore>>>>,
    queue_timeout: Duration,
    /// Names the limiter in log lines.
    kind: &'static str,
    /// When the limiter was made; `last_full_log` counts from here.
    epoch: Instant,
    /// Milliseconds after `epoch` of the last "at the cap" log line, plus one (0: never).
    last_full_log: AtomicU64,
    /// Requests waiting and refused, bodies aborted, for [`Limiter::stats`].
    counters: Arc<LimiterCounters>,
}

/// Minimum time between two "at the cap" log lines of one limiter.
const FULL_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Limiter {
    /// A limiter of `cap` (at least 1) concurrent permits, with a queue of up to `queue_timeout`.
    pub fn new(kind: &'static str, cap: usize, queue_timeout: Duration) -> Self {
        let cap = cap.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(cap)),
            cap,
            per_client: cap,
            clients: Arc::new(Mutex::new(HashMap::new())),
            queue_timeout,
            kind,
            epoch: Instant::now(),
            last_full_log: AtomicU64::new(0),
            counters: Arc::default(),
        }
    }

    /// Lets one client address hold at most `n` (at least 1) of the permits.
    pub fn per_client(mut self, n: usize) -> Self {
        self.per_client = n.clamp(1, self.cap);
        self
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The cap of one client address.
    pub fn cap_per_client(&self) -> usize {
        self.per_client
    }

    /// Permits not taken right now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Permits in use, requests waiting, and how many had to wait or were refused so far.
    pub fn stats(&self) -> LimiterStats {
        LimiterStats {
            in_use: self.cap.saturating_sub(self.available()),
            waiting: self.counters.waiting.load(Ordering::Relaxed),
            queued_total: self.counters.queued_total.load(Ordering::Relaxed),
            rejected_total: self.counters.rejected_total.load(Ordering::Relaxed),
            aborted_total: self.counters.aborted_total.load(Ordering::Relaxed),
            sendfile_bytes_total: self.counters.sendfile_bytes_total.load(Ordering::Relaxed),
        }
    }

    /// The histogram of how long admitted requests waited (see `LimiterCounters::wait_seconds`).
    pub(crate) fn wait_seconds(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.counters.wait_seconds.clone()
    }

    /// A permit for `client` (none: counted against the cap only), at once or after waiting
    /// in line; [`AppError::Overloaded`] if none freed up within the queue timeout. Waiters
    /// are served in arrival order, first in their client's line, then in the common one.
    pub async fn admit(&self, client: Option<IpAddr>) -> Result<Permit, AppError> {
        let start = tokio::time::Instant::now();
        let deadline = start + self.queue_timeout;
        // Counted once as waiting, whether for the client's share, the cap, or both.
        let mut waiting = None;
        let client = match client {
            Some(ip) if self.per_client < self.cap => Some(self.client_permit(ip, deadline, &mut waiting).await?),
            _ => None,
        };
        if let Ok(permit) = Arc::clone(&self.semaphore).try_acquire_owned() {
            self.counters.wait_seconds.observe(start.elapsed().as_secs_f64());
            return Ok(Permit { _permit: permit, _client: client, counters: Arc::clone(&self.counters) });
        }
        self.log_full("NAR streams at their cap: requests are queueing");
        waiting.get_or_insert_with(|| self.counters.wait());
        match tokio::time::timeout_at(deadline, Arc::clone(&self.semaphore).acquire_owned()).await {
            Ok(Ok(permit)) => {
                self.counters.wait_seconds.observe(start.elapsed().as_secs_f64());
                Ok(Permit { _permit: permit, _client: client, counters: Arc::clone(&self.counters) })
            }
            // Timed out (the semaphore is never closed, so there is no other error).
            Ok(Err(_)) | Err(_) => Err(self.overloaded("no NAR stream slot freed up: answering 503")),
        }
    }

    /// One of `ip`'s share of permits, waited for until `deadline`.
    async fn client_permit<'a>(
        &'a self,
        ip: IpAddr,
        deadline: tokio::time::Instant,
        waiting: &mut Option<Waiting<'a>>,
    ) -> Result<ClientPermit, AppError> {
        let semaphore = {
            let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(clients.entry(ip).or_insert_with(|| Arc::new(Semaphore::new(self.per_client))))
        };
        let permit = match Arc::clone(&semaphore).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                self.log_full("a client holds its share of NAR streams: its requests are queueing");
                waiting.get_or_insert_with(|| self.counters.wait());
                tokio::time::timeout_at(deadline, Arc::clone(&semaphore).acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        };
        // Dropped on failure, this forgets the client if nobody else holds or waits for a slot.
        let held = ClientPermit { ip, semaphore, permit, clients: Arc::clone(&self.clients) };
        if held.permit.is_none() {
            return Err(self.overloaded("this client holds its share of NAR stream slots: answering 503"));
        }
        Ok(held)
    }

    fn overloaded(&self, message: &'static str) -> AppError {
        self.counters.rejected_total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            kind = self.kind,
            cap = self.cap,
            per_client = self.per_client,
            waited_s = self.queue_timeout.as_secs(),
            "{message}"
        );
        AppError::Overloaded { retry_after: RETRY_AFTER }
    }

    /// Tells the operator, at most every [`FULL_LOG_INTERVAL`], that requests are queueing.
    fn log_full(&self, message: &'static str) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let last = self.last_full_log.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= FULL_LOG_INTERVAL.as_millis() as u64;
        if due && self.last_full_log.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::info!(kind = self.kind, cap = self.cap, per_client = self.per_client, "{message}");
        }
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("kind", &self.kind)
            .field("cap", &self.cap)
            .field("available", &self.available())
            .field("queue_timeout", &self.queue_timeout)
            .finish()
    }
}

/// The right to produce one NAR body; the slot frees up when this is dropped.
#[derive(Debug)]
pub struct Permit {
    // Dropped in this order: the common slot, then the client's.
    _permit: OwnedSemaphorePermit,
    _client: Option<ClientPermit>,
    /// Where an aborted body is counted.
    counters: Arc<LimiterCounters>,
}

impl Permit {
    /// Counts the body this permit admitted as aborted by the server (see
    /// `LimiterStats::aborted_total`).
    pub(crate) fn count_abort(&self) {
        self.counters.aborted_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` body bytes sent with `sendfile` (see `LimiterStats::sendfile_bytes_total`).
    pub(crate) fn count_sendfile(&self, n: u64) {
        self.counters.sendfile_bytes_total.fetch_add(n, Ordering::Relaxed);
    }
}

/// One of a client's share of permits. When the last of a client's permits (held or waited
/// for) goes, the client is forgotten, so the map stays as small as the set of active clients.
struct ClientPermit {
    ip: IpAddr,
    semaphore: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    clients: Arc<Mutex<HashMap<IpAddr, Arc<Semaphore>>>>,
}

impl fmt::Debug for ClientPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientPermit").field("ip", &self.ip).field("held", &self.permit.is_some()).finish()
    }
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        self.permit = None;
        // The map's reference and ours: nobody else holds or waits for this client's permits.
        if Arc::strong_count(&self.semaphore) == 2 {
            clients.remove(&self.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_scale_with_cores_within_bounds() {
        assert_eq!(default_max_streams(1), 32);
        assert_eq!(default_max_streams(2), 32);
        assert_eq!(default_max_streams(8), 128);
        assert_eq!(default_max_streams(64), 256);
        assert_eq!(default_max_compressed_streams(1), 2);
        assert_eq!(default_max_compressed_streams(2), 4);
        assert_eq!(default_max_compressed_streams(64), 64);
        // Both caps together leave most of tokio's 512 blocking threads to narinfo lookups.
        assert!(MAX_STREAMS_RANGE.1 + MAX_COMPRESSED_STREAMS_RANGE.1 <= 512 - 128);
    }

    #[tokio::test]
    async fn a_request_over_the_cap_waits_and_is_admitted_when_a_permit_frees() {
        let limiter = Arc::new(Limiter::new("test", 2, Duration::from_secs(3600)));
        let first = limiter.admit(None).await.unwrap();
        let _second = limiter.admit(None).await.unwrap();
        assert_eq!(limiter.available(), 0);
        let waiting = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move { limiter.admit(None).await.map(drop) }
        });
        // The waiter is queued until a permit frees: yielding lets it run as far as it can.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished());
        drop(first);
        waiting.await.unwrap().unwrap();
        assert_eq!(limiter.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_times_out_cleanly_with_overloaded() {
        let limiter = Limiter::new("test", 1, Duration::from_secs(30));
        let _held = limiter.admit(None).await.unwrap();
        // With the clock paused, tokio advances it to the timeout as soon as all tasks idle.
        let err = limiter.admit(None).await.unwrap_err();
        assert!(matches!(err, AppError::Overloaded { retry_after } if retry_after == RETRY_AFTER));
        assert_eq!(limiter.available(), 0, "the timed-out waiter took nothing");
        drop(_held);
        assert_eq!(limiter.available(), 1);
        let _again = limiter.admit(None).await.unwrap();
    }

    /// Every admitted request's wait is observed: 0 for one admitted at once, the time it
    /// queued for one that waited.
    #[tokio::test(start_paused = true)]
    async fn the_wait_of_every_admitted_request_is_observed() {
        let limiter = Arc::new(Limiter::new("test", 1, Duration::from_secs(30)));
        let held = limiter.admit(None).await.unwrap();
        let waiter = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move { limiter.admit(None).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_secs(7)).await;
        drop(held);
        waiter.await.unwrap().unwrap();
        let _third = limiter.admit(None).await.unwrap(); // a slot is free: waits 0
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("wait", "", limiter.wait_seconds());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let series = |name: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!(series("wait_count "), 3.0);
        assert!((7.0..7.1).contains(&series("wait_sum ")), "{text}");
        assert_eq!(series("wait_bucket{le=\"0.001\"}"), 2.0, "{text}");
    }

    #[tokio::test]
    async fn compressed_and_uncompressed_streams_have_separate_caps() {
        let admission = Admission::new(1, 1, Duration::from_secs(3600));
        let _plain = admission.admit(Compression::None, None).await.unwrap();
        let _zstd = admission.admit(Compression::Zstd, None).await.unwrap();
        assert_eq!((admission.streams.available(), admission.compressed.available()), (0, 0));
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[tokio::test]
    async fn one_client_cannot_take_more_than_its_share() {
        let limiter = Arc::new(Limiter::new("test", 8, Duration::from_secs(3600)).per_client(2));
        let stalled: Vec<Permit> = vec![limiter.admit(ip(1)).await.unwrap(), limiter.admit(ip(1)).await.unwrap()];
        // The same client's third request waits for one of its own to finish…
        let third = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move { limiter.admit(ip(1)).await.map(drop) }
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!third.is_finished());
        // …while other clients are admitted at once, up to the common cap.
        let others: Vec<Permit> =
            futures_util::future::try_join_all((2..=7).map(|n| limiter.admit(ip(n)))).await.unwrap();
        assert_eq!(limiter.available(), 0);
        drop(others);
        assert!(!third.is_finished(), "admitted past its share");
        drop(stalled);
        third.await.unwrap().unwrap();
        // Nobody holds or waits: every client has been forgotten.
        assert!(limiter.clients.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_over_its_share_gets_503_after_the_queue_timeout() {
        let limiter = Limiter::new("test", 4, Duration::from_secs(30)).per_client(1);
        let _held = limiter.admit(ip(1)).await.unwrap();
        assert!(matches!(limiter.admit(ip(1)).await, Err(AppError::Overloaded { .. })));
        assert_eq!(limiter.available(), 3, "the refused request took nothing");
        let _other = limiter.admit(ip(2)).await.unwrap();
        // Requests without an address count against the cap only.
        let _anonymous = limiter.admit(None).await.unwrap();
    }

    #[test]
    fn per_client_defaults() {
        assert_eq!(default_per_client(32, 4, 4), 8);
        assert_eq!(default_per_client(8, 4, 4), 4);
        assert_eq!(default_per_client(4, 2, 1), 2);
        assert_eq!(default_per_client(2, 2, 1), 1);
        assert_eq!(default_per_client(1, 4, 4), 1, "never more than the cap");
    }

    #[test]
    fn a_cap_of_zero_is_one() {
        assert_eq!(Limiter::new("test", 0, QUEUE_TIMEOUT).cap(), 1);
    }
}
