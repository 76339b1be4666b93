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
//! Why 503 (protocol.md §3.4): Nix treats 503 as transient and retries with backoff (up to
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

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::compression::Compression;
use crate::error::AppError;

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

/// The two limiters of a server: one for uncompressed NAR bodies, one for compressed ones.
#[derive(Debug)]
pub struct Admission {
    /// Uncompressed bodies: local bare NARs and ranges, proxied NARs, Guix `/file/`.
    pub streams: Limiter,
    /// NARs compressed on the fly.
    pub compressed: Limiter,
}

impl Admission {
    /// Caps of `streams` and `compressed` concurrent bodies, each with a queue of up to
    /// `queue_timeout`. A cap of 0 is taken as 1.
    pub fn new(streams: usize, compressed: usize, queue_timeout: Duration) -> Self {
        Self {
            streams: Limiter::new("uncompressed", streams, queue_timeout),
            compressed: Limiter::new("compressed", compressed, queue_timeout),
        }
    }

    /// The default caps for this machine, with a queue of [`QUEUE_TIMEOUT`].
    pub fn with_defaults() -> Self {
        let cores = cores();
        Self::new(default_max_streams(cores), default_max_compressed_streams(cores), QUEUE_TIMEOUT)
    }

    /// Waits for a permit to send a NAR body produced with `compression`: compressing on the
    /// fly counts against the compressed cap, anything else against the uncompressed one.
    pub async fn admit(&self, compression: Compression) -> Result<Permit, AppError> {
        match compression {
            Compression::None => self.streams.admit().await,
            _ => self.compressed.admit().await,
        }
    }
}

/// A cap on concurrent bodies, with a FIFO queue of bounded wait in front of it.
pub struct Limiter {
    semaphore: Arc<Semaphore>,
    cap: usize,
    queue_timeout: Duration,
    /// Names the limiter in log lines.
    kind: &'static str,
    /// When the limiter was made; `last_full_log` counts from here.
    epoch: Instant,
    /// Milliseconds after `epoch` of the last "at the cap" log line, plus one (0: never).
    last_full_log: AtomicU64,
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
            queue_timeout,
            kind,
            epoch: Instant::now(),
            last_full_log: AtomicU64::new(0),
        }
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Permits not taken right now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// A permit, at once or after waiting in line; [`AppError::Overloaded`] if none freed up
    /// within the queue timeout. Waiters are served in arrival order.
    pub async fn admit(&self) -> Result<Permit, AppError> {
        if let Ok(permit) = Arc::clone(&self.semaphore).try_acquire_owned() {
            return Ok(Permit { _permit: permit });
        }
        self.log_full();
        match tokio::time::timeout(self.queue_timeout, Arc::clone(&self.semaphore).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Permit { _permit: permit }),
            // Timed out (the semaphore is never closed, so there is no other error).
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(
                    kind = self.kind,
                    cap = self.cap,
                    waited_s = self.queue_timeout.as_secs(),
                    "no NAR stream slot freed up: answering 503"
                );
                Err(AppError::Overloaded { retry_after: RETRY_AFTER })
            }
        }
    }

    /// Tells the operator, at most every [`FULL_LOG_INTERVAL`], that requests are queueing.
    fn log_full(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let last = self.last_full_log.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= FULL_LOG_INTERVAL.as_millis() as u64;
        if due && self.last_full_log.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            tracing::info!(kind = self.kind, cap = self.cap, "NAR streams at their cap: requests are queueing");
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
    _permit: OwnedSemaphorePermit,
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
        let first = limiter.admit().await.unwrap();
        let _second = limiter.admit().await.unwrap();
        assert_eq!(limiter.available(), 0);
        let waiting = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move { limiter.admit().await.map(drop) }
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
        let _held = limiter.admit().await.unwrap();
        // With the clock paused, tokio advances it to the timeout as soon as all tasks idle.
        let err = limiter.admit().await.unwrap_err();
        assert!(matches!(err, AppError::Overloaded { retry_after } if retry_after == RETRY_AFTER));
        assert_eq!(limiter.available(), 0, "the timed-out waiter took nothing");
        drop(_held);
        assert_eq!(limiter.available(), 1);
        let _again = limiter.admit().await.unwrap();
    }

    #[tokio::test]
    async fn compressed_and_uncompressed_streams_have_separate_caps() {
        let admission = Admission::new(1, 1, Duration::from_secs(3600));
        let _plain = admission.admit(Compression::None).await.unwrap();
        let _zstd = admission.admit(Compression::Zstd).await.unwrap();
        assert_eq!((admission.streams.available(), admission.compressed.available()), (0, 0));
    }

    #[test]
    fn a_cap_of_zero_is_one() {
        assert_eq!(Limiter::new("test", 0, QUEUE_TIMEOUT).cap(), 1);
    }
}
