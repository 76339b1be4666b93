//! What a running server is doing, as numbers: NAR streams admitted, waiting, refused and
//! aborted, bakes queued and done. Tests read them instead of the log (an absence is a counter that stayed at
//! zero, not a line that did not appear in time); issue #12 will export them as Prometheus
//! metrics, so each field is named and typed as its metric will be (`_total` for counters
//! that only grow, a bare name for gauges).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::state::AppState;

/// A snapshot of a server's counters, over every store it serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Uncompressed NAR bodies (and logs, listings): `subserve_nar_streams_*{kind="uncompressed"}`.
    pub streams: LimiterStats,
    /// NARs compressed on the fly: `subserve_nar_streams_*{kind="compressed"}`.
    pub compressed_streams: LimiterStats,
    /// Baking, summed over the stores that bake: `subserve_bakes_*`.
    pub bakes: BakeStats,
}

impl Stats {
    /// The counters of the server serving `stores` (they share one admission, see
    /// `crate::admission`; each may have a baker).
    pub fn collect(stores: &[Arc<AppState>]) -> Self {
        let mut stats = Self::default();
        if let Some(first) = stores.first() {
            stats.streams = first.admission.streams.stats();
            stats.compressed_streams = first.admission.compressed.stats();
        }
        for baker in stores.iter().filter_map(|s| s.baker.as_ref()) {
            stats.bakes += baker.stats();
        }
        stats
    }
}

/// One admission limiter (see `crate::admission::Limiter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Gauge `subserve_nar_streams_in_use`: permits held now (bodies being produced).
    pub in_use: usize,
    /// Gauge `subserve_nar_streams_waiting`: requests waiting in the queue now, for the cap
    /// or for their client's share of it.
    pub waiting: usize,
    /// Counter `subserve_nar_streams_queued_total`: requests that had to wait.
    pub queued_total: u64,
    /// Counter `subserve_nar_streams_rejected_total`: requests answered 503 after waiting for
    /// the whole queue timeout.
    pub rejected_total: u64,
    /// Counter `subserve_nar_streams_aborted_total`: bodies the server cut short (a file that
    /// changed or vanished, an I/O error), which aborts the connection; clients that leave are
    /// not counted.
    pub aborted_total: u64,
    /// Counter `subserve_nar_streams_sendfile_bytes_total`: body bytes moved from files
    /// straight to the socket with `sendfile` (plain TCP), rather than copied.
    pub sendfile_bytes_total: u64,
}

/// The live counters behind [`LimiterStats`], updated by the limiter.
#[derive(Debug)]
pub(crate) struct LimiterCounters {
    /// Histogram `subserve_nar_streams_wait_seconds`: how long admitted requests waited for
    /// their slot (0 for most).
    pub(crate) wait_seconds: prometheus_client::metrics::histogram::Histogram,
    pub(crate) waiting: AtomicUsize,
    pub(crate) queued_total: AtomicU64,
    pub(crate) rejected_total: AtomicU64,
    pub(crate) aborted_total: AtomicU64,
    pub(crate) sendfile_bytes_total: AtomicU64,
}

impl Default for LimiterCounters {
    fn default() -> Self {
        Self {
            // 1 ms to about 65 s, past the longest queue timeout worth having.
            wait_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17),
            ),
            waiting: AtomicUsize::default(),
            queued_total: AtomicU64::default(),
            rejected_total: AtomicU64::default(),
            aborted_total: AtomicU64::default(),
            sendfile_bytes_total: AtomicU64::default(),
        }
    }
}

impl LimiterCounters {
    /// Counts a request that waits until the returned guard is dropped (admitted, refused, or
    /// its client gone: the guard is dropped with the request's future).
    pub(crate) fn wait(&self) -> Waiting<'_> {
        self.queued_total.fetch_add(1, Ordering::Relaxed);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self)
    }
}

/// One request counted in [`LimiterCounters::waiting`] while it lives.
pub(crate) struct Waiting<'a>(&'a LimiterCounters);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Baking (see `crate::bake::Baker`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BakeStats {
    /// Gauge `subserve_bakes_pending`: NARs queued or being baked now.
    pub pending: usize,
    /// Gauge `subserve_bakes_running`: bakes being written now (by the workers, or started
    /// by a client asking for the file).
    pub running: usize,
    /// Counter `subserve_bakes_queued_total`: NARs handed to the bake workers.
    pub queued_total: u64,
    /// Counter `subserve_bakes_skipped_total`: narinfo requests of local NARs below the size
    /// threshold, which are served on the fly and never baked.
    pub skipped_total: u64,
    /// Counter `subserve_bakes_unprofitable_total`: NARs found not worth baking (a sample
    /// shrinks by less than a tenth, or the file could not fit the cache), remembered and
    /// served as they are.
    pub unprofitable_total: u64,
    /// Counter `subserve_bakes_streamed_total`: bakes started by a client asking for the file,
    /// streamed to every client that asks while it is written.
    pub streamed_total: u64,
    /// Counter `subserve_bakes_completed_total`: baked files committed to the cache area.
    pub completed_total: u64,
    /// Counter `subserve_bakes_failed_total`: bakes abandoned (I/O trouble, files that no
    /// longer match the DB); the path stays served on the fly.
    pub failed_total: u64,
    /// Counter `subserve_bakes_read_bytes_total`: NAR bytes of the completed bakes.
    pub read_bytes_total: u64,
    /// Counter `subserve_bakes_written_bytes_total`: bytes of the baked files committed.
    pub written_bytes_total: u64,
    /// Counter `subserve_bakes_paused_seconds_total`: time background bakes spent paused
    /// because the machine was saturated (see `crate::cpu`), counted when a bake ends.
    pub paused_total: std::time::Duration,
}

impl std::ops::AddAssign for BakeStats {
    fn add_assign(&mut self, other: Self) {
        self.pending += other.pending;
        self.running += other.running;
        self.read_bytes_total += other.read_bytes_total;
        self.written_bytes_total += other.written_bytes_total;
        self.paused_total += other.paused_total;
        self.queued_total += other.queued_total;
        self.skipped_total += other.skipped_total;
        self.unprofitable_total += other.unprofitable_total;
        self.streamed_total += other.streamed_total;
        self.completed_total += other.completed_total;
        self.failed_total += other.failed_total;
    }
}

/// The live counters behind [`BakeStats`] (all but `pending`, which the baker knows).
#[derive(Debug, Default)]
pub(crate) struct BakeCounters {
    pub(crate) queued_total: AtomicU64,
    pub(crate) skipped_total: AtomicU64,
    pub(crate) unprofitable_total: AtomicU64,
    pub(crate) streamed_total: AtomicU64,
    pub(crate) completed_total: AtomicU64,
    pub(crate) failed_total: AtomicU64,
    pub(crate) read_bytes_total: AtomicU64,
    pub(crate) written_bytes_total: AtomicU64,
    pub(crate) paused_ms_total: AtomicU64,
}

impl BakeCounters {
    /// A snapshot of the counters; `pending` and `running` are for the baker to fill in, after this (see
    /// `completed_total`).
    pub(crate) fn snapshot(&self) -> BakeStats {
        BakeStats {
            pending: 0,
            running: 0,
            read_bytes_total: self.read_bytes_total.load(Ordering::Relaxed),
            paused_total: std::time::Duration::from_millis(self.paused_ms_total.load(Ordering::Relaxed)),
            written_bytes_total: self.written_bytes_total.load(Ordering::Relaxed),
            queued_total: self.queued_total.load(Ordering::Relaxed),
            skipped_total: self.skipped_total.load(Ordering::Relaxed),
            unprofitable_total: self.unprofitable_total.load(Ordering::Relaxed),
            streamed_total: self.streamed_total.load(Ordering::Relaxed),
            // Acquire: pairs with the workers' Release, so a bake seen done is seen no
            // longer pending.
            completed_total: self.completed_total.load(Ordering::Acquire),
            failed_total: self.failed_total.load(Ordering::Acquire),
        }
    }
}
