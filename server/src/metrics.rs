//! Prometheus metrics at `GET /metrics`, in the Prometheus text format, from the
//! `prometheus-client` crate (the Prometheus project's own Rust client: typed families, no
//! global registry, no text formatting of ours).
//!
//! One [`Metrics`] serves the whole process: every store's requests are labelled by its
//! prefix (`/` for a single store at the root), and it outlives configuration reloads (the
//! router built on SIGHUP gets the same one). The request families are recorded where the
//! request log line is written (`routes::log_request`), once the body has ended, so a NAR's
//! duration runs to its last byte and its bytes are those sent.
//!
//! Names follow Prometheus' conventions: `subserve_` prefix, `_total` for counters (added by
//! the encoder), base units (`_seconds`, `_bytes`). `docs/metrics.md` lists them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What a request asked for, as its metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// `/<hash>.narinfo`.
    Narinfo,
    /// `/nar/…`.
    Nar,
    /// `/<hash>.ls`.
    Listing,
    /// `/log/…`.
    Log,
    /// `/file/…` (Guix).
    File,
    /// `/nix-cache-info`, `/signing-key.pub`, `/`, `/metrics`, and what matches nothing.
    Other,
}

impl RouteKind {
    /// The kind of a request for `path` (relative to its store's prefix).
    pub fn of(path: &str) -> Self {
        if path.starts_with("/nar/") {
            RouteKind::Nar
        } else if path.starts_with("/log/") {
            RouteKind::Log
        } else if path.starts_with("/file/") {
            RouteKind::File
        } else if path.ends_with(".narinfo") && !path[1..].contains('/') {
            RouteKind::Narinfo
        } else if path.ends_with(".ls") && !path[1..].contains('/') {
            RouteKind::Listing
        } else {
            RouteKind::Other
        }
    }

    fn label(self) -> &'static str {
        match self {
            RouteKind::Narinfo => "narinfo",
            RouteKind::Nar => "nar",
            RouteKind::Listing => "ls",
            RouteKind::Log => "log",
            RouteKind::File => "file",
            RouteKind::Other => "other",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    store: String,
    kind: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    store: String,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StoreLabels {
    store: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CutLabels {
    store: String,
    kind: &'static str,
    outcome: &'static str,
}

fn narinfo_histogram() -> Histogram {
    // 0.25 ms to about 2 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 14))
}

fn nar_histogram() -> Histogram {
    // 10 ms to about 10 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 17))
}

/// Totals since start that the status page shows, kept beside the families (which cannot be
/// summed without encoding them): they move in the same call, so the page and `/metrics` agree.
#[derive(Debug, Default)]
struct Totals {
    requests: AtomicU64,
    bytes: AtomicU64,
    narinfo_requests: AtomicU64,
    nar_requests: AtomicU64,
    nar_bytes: AtomicU64,
}

/// What the status page shows of the request families: sums over every store and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Requests answered (the sum of `subserve_http_requests_total`).
    pub requests: u64,
    /// Body bytes sent (the sum of `subserve_http_response_bytes_total`).
    pub bytes: u64,
    /// narinfo requests answered (`kind="narinfo"`).
    pub narinfo_requests: u64,
    /// NAR requests answered (`kind="nar"`).
    pub nar_requests: u64,
    /// NAR body bytes sent (`kind="nar"`).
    pub nar_bytes: u64,
}

/// The audit trail's counters, read at each scrape from the `AuditLog` (zero while the trail
/// is off).
#[derive(Debug)]
struct AuditCounters(Option<Arc<audit::AuditLog>>);

impl Collector for AuditCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (written, dropped) = self.0.as_ref().map_or((0, 0), |log| (log.written(), log.dropped()));
        for (name, help, value) in [
            ("audit_records_written", "Audit records written to the audit database", written),
            (
                "audit_records_dropped",
                "Audit records dropped because the audit writer fell behind (or failed)",
                dropped,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        Ok(())
    }
}

/// The served stores' own counters and gauges, read at each scrape from the stores the last
/// router was built for: admission (shared by the stores), and per store its baking, its cache
/// area and its proxy. Reading the cache area's use is a SQLite query: render the metrics on
/// a blocking thread.
#[derive(Debug, Default, Clone)]
struct StoreCounters(Arc<std::sync::Mutex<Vec<Arc<crate::state::AppState>>>>);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CapLabels {
    cap: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabels {
    store: String,
    cause: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    store: String,
    upstream: String,
}

/// One family of a collector: its descriptor, then one value per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    values: impl IntoIterator<Item = (L, M)>,
) -> Result<(), std::fmt::Error> {
    let mut values = values.into_iter().peekable();
    let Some((_, first)) = values.peek() else { return Ok(()) };
    let mut metric = encoder.encode_descriptor(name, help, unit, first.metric_type())?;
    for (labels, value) in values {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for StoreCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stores = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let stats = crate::Stats::collect(&stores);
        let caps = [("plain", stats.streams), ("compressed", stats.compressed_streams)];
        let cap = |name| CapLabels { cap: name };
        let e = &mut encoder;
        if let Some(first) = stores.first() {
            let admission = &first.admission;
            family(
                e,
                "nar_streams_wait",
                "How long admitted requests waited for a stream slot, by cap",
                Some(&Unit::Seconds),
                [
                    (cap("plain"), admission.streams.wait_seconds()),
                    (cap("compressed"), admission.compressed.wait_seconds()),
                ],
            )?;
        }
        family(
            e,
            "nar_streams_in_use",
            "NAR bodies being produced now, by cap",
            None,
            caps.map(|(n, s)| (cap(n), ConstGauge::new(s.in_use as i64))),
        )?;
        family(
            e,
            "nar_streams_waiting",
            "Requests waiting for a stream slot now, by cap",
            None,
            caps.map(|(n, s)| (cap(n), ConstGauge::new(s.waiting as i64))),
        )?;
        family(
            e,
            "nar_streams_queued",
            "Requests that waited for a stream slot, by cap",
            None,
            caps.map(|(n, s)| (cap(n), ConstCounter::new(s.queued_total))),
        )?;
        family(
            e,
            "nar_streams_rejected",
            "Requests answered 503 after the whole queue timeout, by cap",
            None,
            caps.map(|(n, s)| (cap(n), ConstCounter::new(s.rejected_total))),
        )?;
        family(
            e,
            "nar_streams_aborted",
            "Bodies the server cut short (a file changed, an I/O error), by cap",
            None,
            caps.map(|(n, s)| (cap(n), ConstCounter::new(s.aborted_total))),
        )?;
        family(
            e,
            "nar_streams_sendfile_bytes",
            "Body bytes moved from files straight to the socket (sendfile on plain TCP), by cap",
            None,
            caps.map(|(n, s)| (cap(n), ConstCounter::new(s.sendfile_bytes_total))),
        )?;

        let label = |s: &crate::state::AppState| StoreLabels {
            store: if s.settings.prefix.is_empty() { "/".to_owned() } else { s.settings.prefix.clone() },
        };
        let caches: Vec<_> = stores.iter().map(|s| (label(s), s.narinfo_cache.hits_and_misses())).collect();
        family(
            e,
            "narinfo_cache_hits",
            "Local narinfo lookups answered from the narinfo cache",
            None,
            caches.iter().map(|(l, (hits, _))| (l.clone(), ConstCounter::new(*hits))),
        )?;
        family(
            e,
            "narinfo_cache_misses",
            "Local narinfo lookups the narinfo cache could not answer (read from the DB)",
            None,
            caches.iter().map(|(l, (_, misses))| (l.clone(), ConstCounter::new(*misses))),
        )?;
        family(
            e,
            "store_db_lookup",
            "Store DB lookups of a path by its hash (narinfo and NAR requests the narinfo cache could not answer)",
            Some(&Unit::Seconds),
            stores.iter().map(|s| (label(s), s.db_lookups.clone())),
        )?;
        let bakers: Vec<_> = stores.iter().filter_map(|s| Some((label(s), s.baker.as_ref()?.stats()))).collect();
        family(
            e,
            "bakes_pending",
            "NARs queued or being baked now",
            None,
            bakers.iter().map(|(l, b)| (l.clone(), ConstGauge::new(b.pending as i64))),
        )?;
        family(
            e,
            "bakes_running",
            "Bakes being written now (by the workers, or started by a client asking for the file)",
            None,
            bakers.iter().map(|(l, b)| (l.clone(), ConstGauge::new(b.running as i64))),
        )?;
        for (name, help, pick) in [
            (
                "bakes_queued",
                "NARs handed to the bake workers",
                (|b: &crate::stats::BakeStats| b.queued_total) as fn(&_) -> u64,
            ),
            ("bakes_skipped", "narinfo requests of local NARs below the bake threshold", |b| b.skipped_total),
            (
                "bakes_unprofitable",
                "NARs not worth baking (a sample shrank by less than a tenth, or too big for the cache)",
                |b| b.unprofitable_total,
            ),
            ("bakes_streamed", "Bakes started by a client asking for the file, streamed as written", |b| {
                b.streamed_total
            }),
            ("bakes_completed", "Baked files committed to the cache area", |b| b.completed_total),
            ("bakes_failed", "Bakes abandoned (I/O trouble, files that no longer match the DB)", |b| b.failed_total),
            ("bakes_read_bytes", "NAR bytes of the completed bakes", |b| b.read_bytes_total),
            ("bakes_written_bytes", "Bytes of the baked files committed", |b| b.written_bytes_total),
        ] {
            family(e, name, help, None, bakers.iter().map(|(l, b)| (l.clone(), ConstCounter::new(pick(b)))))?;
        }
        family(
            e,
            "bakes_paused",
            "Time background bakes spent paused because the machine's CPUs were saturated",
            Some(&Unit::Seconds),
            bakers.iter().map(|(l, b)| (l.clone(), ConstCounter::new(b.paused_total.as_secs_f64()))),
        )?;

        let areas: Vec<_> = stores
            .iter()
            .filter_map(|s| Some((label(s), s.cache.as_ref()?)))
            .filter_map(|(l, area)| Some((l, area.usage().ok()?, area.evictions())))
            .collect();
        family(
            e,
            "cache",
            "Bytes of NAR files in the cache area, proxied and baked",
            Some(&Unit::Bytes),
            areas.iter().map(|(l, u, _)| (l.clone(), ConstGauge::new(u.bytes as i64))),
        )?;
        family(
            e,
            "cache_limit",
            "The cache area's size limit",
            Some(&Unit::Bytes),
            areas.iter().map(|(l, u, _)| (l.clone(), ConstGauge::new(u.max_size as i64))),
        )?;
        family(
            e,
            "cache_files",
            "NAR files in the cache area, proxied and baked",
            None,
            areas.iter().map(|(l, u, _)| (l.clone(), ConstGauge::new(u.files as i64))),
        )?;
        family(
            e,
            "cache_evictions",
            "Files evicted from the cache area to keep it under its limit",
            None,
            areas.iter().map(|(l, _, n)| (l.clone(), ConstCounter::new(*n))),
        )?;
        family(
            e,
            "cache_recovery_cleanups",
            "Files and entries crash recovery removed when the cache area was opened",
            None,
            stores.iter().filter_map(|s| Some((label(s), ConstCounter::new(s.cache.as_ref()?.recovered())))),
        )?;
        family(
            e,
            "proxy_negative_entries",
            "Upstream misses remembered and not yet expired (the negative cache)",
            None,
            areas.iter().map(|(l, u, _)| (l.clone(), ConstGauge::new(u.misses as i64))),
        )?;

        let proxies: Vec<_> = stores.iter().filter_map(|s| Some((label(s), s.proxy.as_ref()?))).collect();
        let proxy_counter = |pick: fn(&upstream::Stats) -> &AtomicU64| {
            proxies.iter().map(move |(l, p)| (l.clone(), ConstCounter::new(pick(p.stats()).load(Ordering::Relaxed))))
        };
        for (name, help, pick) in [
            (
                "proxy_narinfo_hits",
                "Proxied narinfos answered from the cache index",
                (|s: &upstream::Stats| &s.narinfo_hits) as fn(&_) -> &AtomicU64,
            ),
            ("proxy_negative_hits", "Proxied narinfos answered absent from a remembered miss", |s| &s.negative_hits),
            ("proxy_narinfo_fetches", "narinfo requests sent upstream, retries included", |s| &s.narinfo_fetches),
            ("proxy_narinfo_retries", "narinfo requests sent upstream again after trouble", |s| &s.narinfo_retries),
            ("proxy_over_cap", "narinfo lookups answered absent for now because a fetch cap stayed full", |s| {
                &s.over_cap
            }),
            ("proxy_untrusted", "Upstream narinfos refused for lack of a trusted signature", |s| &s.untrusted),
            ("proxy_nar_fetches", "NAR downloads started", |s| &s.nar_fetches),
            ("proxy_nar_verify_failures", "NAR downloads that failed verification", |s| &s.nar_verify_failures),
        ] {
            family(e, name, help, None, proxy_counter(pick))?;
        }
        family(
            e,
            "proxy_upstream_errors",
            "Upstream failures by cause: refused, dns, tls, connection, timeout, status, garbage, verify",
            None,
            proxies.iter().flat_map(|(l, p)| {
                upstream::FAILURE_CAUSES.iter().zip(&p.stats().upstream_errors_by_cause).map(|(cause, n)| {
                    (CauseLabels { store: l.store.clone(), cause }, ConstCounter::new(n.load(Ordering::Relaxed)))
                })
            }),
        )?;
        family(
            e,
            "upstream_up",
            "1 while an upstream's breaker is closed, 0 while it is open (the upstream is failing)",
            None,
            proxies.iter().flat_map(|(l, p)| {
                p.upstream_health().into_iter().map(|(url, open)| {
                    (
                        UpstreamLabels { store: l.store.clone(), upstream: url },
                        ConstGauge::new(i64::from(open.is_none())),
                    )
                })
            }),
        )?;
        let upstreams: Vec<_> = proxies
            .iter()
            .flat_map(|(l, p)| p.upstream_stats().into_iter().map(move |u| (l.store.clone(), u)))
            .collect();
        let labels = |store: &String, u: &upstream::UpstreamStats| UpstreamLabels {
            store: store.clone(),
            upstream: u.url.clone(),
        };
        for (name, help, pick) in [
            (
                "upstream_narinfo_fetches",
                "narinfo requests sent to one upstream, retries included",
                (|u: &upstream::UpstreamStats| u.narinfo_fetches) as fn(&_) -> u64,
            ),
            ("upstream_nar_fetches", "NAR downloads started from one upstream", |u| u.nar_fetches),
        ] {
            family(e, name, help, None, upstreams.iter().map(|(s, u)| (labels(s, u), ConstCounter::new(pick(u)))))?;
        }
        family(
            e,
            "upstream_nar_received",
            "NAR bytes received from one upstream",
            Some(&Unit::Bytes),
            upstreams.iter().map(|(s, u)| (labels(s, u), ConstCounter::new(u.nar_bytes))),
        )?;
        family(
            e,
            "upstream_errors",
            "Failures of one upstream by cause (refused, dns, tls, connection, timeout, status, garbage, verify)",
            None,
            upstreams.iter().flat_map(|(s, u)| {
                u.errors_by_cause.iter().map(move |(cause, n)| {
                    (UpstreamCauseLabels { store: s.clone(), upstream: u.url.clone(), cause }, ConstCounter::new(*n))
                })
            }),
        )?;
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamCauseLabels {
    store: String,
    upstream: String,
    cause: &'static str,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    /// The stores the last router was built for (see [`Metrics::serve`]).
    stores: StoreCounters,
    totals: Totals,
    requests: Family<RequestLabels, Counter>,
    response_bytes: Family<KindLabels, Counter>,
    nar_responses: Family<SourceLabels, Counter>,
    nar_bytes: Family<SourceLabels, Counter>,
    unfinished: Family<CutLabels, Counter>,
    narinfo_seconds: Family<StoreLabels, Histogram, fn() -> Histogram>,
    nar_seconds: Family<StoreLabels, Histogram, fn() -> Histogram>,
    open_connections: Gauge<i64, std::sync::atomic::AtomicI64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Where a NAR response's body comes from (`subserve_nar_response_bytes_total`'s `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySource {
    /// Made from the local store as it is sent (bare, or compressed on the fly).
    OnTheFly,
    /// A baked file, or a bake being written.
    Baked,
    /// A proxied NAR from the cache area.
    ProxyCache,
    /// A proxied NAR streamed while it downloads.
    ProxyDownload,
}

impl BodySource {
    fn label(self) -> &'static str {
        match self {
            Self::OnTheFly => "on_the_fly",
            Self::Baked => "baked",
            Self::ProxyCache => "proxy_cache",
            Self::ProxyDownload => "proxy_download",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabels {
    store: String,
    source: &'static str,
}

/// How a response's body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent whole.
    Complete,
    /// The client went away, or the connection was cut, before the end.
    Cut,
    /// The server aborted it (a file changed under the store, a failed upstream download).
    Aborted,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The families, registered, with the build info and the start time set; no audit trail.
    pub fn new() -> Self {
        Self::with_audit(None)
    }

    /// [`Metrics::new`], with the counters of `audit` (the process's audit trail, if on).
    pub fn with_audit(audit: Option<Arc<audit::AuditLog>>) -> Self {
        let mut registry = Registry::with_prefix("subserve");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "Requests answered, by store, route kind and status", requests.clone());
        let response_bytes = Family::<KindLabels, Counter>::default();
        registry.register_with_unit(
            "http_response",
            "Response body bytes sent, by store and route kind",
            Unit::Bytes,
            response_bytes.clone(),
        );
        let nar_responses = Family::<SourceLabels, Counter>::default();
        registry.register(
            "nar_responses",
            "NAR responses, by store and where their bodies came from (proxy_cache: a proxy hit; proxy_download: a miss)",
            nar_responses.clone(),
        );
        let nar_bytes = Family::<SourceLabels, Counter>::default();
        registry.register_with_unit(
            "nar_response",
            "NAR body bytes sent, by store and where they came from",
            Unit::Bytes,
            nar_bytes.clone(),
        );
        let unfinished = Family::<CutLabels, Counter>::default();
        registry.register(
            "http_responses_unfinished",
            "Response bodies that did not end whole: cut (the client went away) or aborted (by the server)",
            unfinished.clone(),
        );
        let narinfo_seconds =
            Family::<StoreLabels, Histogram, fn() -> Histogram>::new_with_constructor(narinfo_histogram);
        registry.register_with_unit(
            "narinfo_request_duration",
            "Time from a narinfo request's arrival to its last byte",
            Unit::Seconds,
            narinfo_seconds.clone(),
        );
        let nar_seconds = Family::<StoreLabels, Histogram, fn() -> Histogram>::new_with_constructor(nar_histogram);
        registry.register_with_unit(
            "nar_request_duration",
            "Time from a NAR request's arrival to its last byte",
            Unit::Seconds,
            nar_seconds.clone(),
        );
        registry.register(
            "build",
            "subserve's version",
            Info::new(vec![("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]),
        );
        let started: Gauge<f64, AtomicU64> = Gauge::default();
        started.set(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()));
        registry.register_with_unit("start_time", "When the process started, in Unix time", Unit::Seconds, started);
        let open_connections = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "http_connections_open",
            "Client connections open, idle or busy (as of this scrape)",
            open_connections.clone(),
        );
        registry.register_collector(Box::new(AuditCounters(audit)));
        let stores = StoreCounters::default();
        registry.register_collector(Box::new(stores.clone()));
        Metrics {
            registry,
            stores,
            totals: Totals::default(),
            requests,
            response_bytes,
            nar_responses,
            nar_bytes,
            unfinished,
            narinfo_seconds,
            nar_seconds,
            open_connections,
        }
    }

    /// The stores whose counters the next scrapes read: those of the router just built.
    pub fn serve(&self, stores: &[Arc<crate::state::AppState>]) {
        *self.stores.0.lock().unwrap_or_else(|e| e.into_inner()) = stores.to_vec();
    }

    /// Records one request of `store` (its prefix, `/` at the root) once its body has ended.
    #[allow(clippy::too_many_arguments)] // one call site, each a distinct fact of the request
    pub fn request(
        &self,
        store: &str,
        kind: RouteKind,
        status: u16,
        bytes: u64,
        took: Duration,
        outcome: Outcome,
        source: Option<BodySource>,
    ) {
        self.totals.requests.fetch_add(1, Ordering::Relaxed);
        self.totals.bytes.fetch_add(bytes, Ordering::Relaxed);
        match kind {
            RouteKind::Narinfo => {
                self.totals.narinfo_requests.fetch_add(1, Ordering::Relaxed);
            }
            RouteKind::Nar => {
                self.totals.nar_requests.fetch_add(1, Ordering::Relaxed);
                self.totals.nar_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            _ => {}
        }
        let store = if store.is_empty() { "/" } else { store }.to_owned();
        let kind_label = kind.label();
        self.requests.get_or_create(&RequestLabels { store: store.clone(), kind: kind_label, status }).inc();
        self.response_bytes.get_or_create(&KindLabels { store: store.clone(), kind: kind_label }).inc_by(bytes);
        if let Some(source) = source {
            let labels = SourceLabels { store: store.clone(), source: source.label() };
            self.nar_responses.get_or_create(&labels).inc();
            self.nar_bytes.get_or_create(&labels).inc_by(bytes);
        }
        let outcome = match outcome {
            Outcome::Complete => None,
            Outcome::Cut => Some("cut"),
            Outcome::Aborted => Some("aborted"),
        };
        if let Some(outcome) = outcome {
            self.unfinished.get_or_create(&CutLabels { store: store.clone(), kind: kind_label, outcome }).inc();
        }
        let histogram = match kind {
            RouteKind::Narinfo => &self.narinfo_seconds,
            RouteKind::Nar => &self.nar_seconds,
            _ => return,
        };
        histogram.get_or_create(&StoreLabels { store }).observe(took.as_secs_f64());
    }

    /// The request totals since start, as the status page shows them.
    pub fn traffic(&self) -> Traffic {
        let t = &self.totals;
        Traffic {
            requests: t.requests.load(Ordering::Relaxed),
            bytes: t.bytes.load(Ordering::Relaxed),
            narinfo_requests: t.narinfo_requests.load(Ordering::Relaxed),
            nar_requests: t.nar_requests.load(Ordering::Relaxed),
            nar_bytes: t.nar_bytes.load(Ordering::Relaxed),
        }
    }

    /// Sets the gauge of open connections (read from the connection layer at each scrape).
    pub fn set_open_connections(&self, n: usize) {
        self.open_connections.set(n as i64);
    }

    /// The Prometheus text of every family.
    pub fn render(&self) -> String {
        let mut text = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_told_apart_by_path() {
        let hash = "7rjj86a15146cq1d3qy068lml7n8ykzm";
        assert_eq!(RouteKind::of(&format!("/{hash}.narinfo")), RouteKind::Narinfo);
        assert_eq!(RouteKind::of(&format!("/{hash}.ls")), RouteKind::Listing);
        assert_eq!(RouteKind::of("/nar/x.nar.zst"), RouteKind::Nar);
        assert_eq!(RouteKind::of("/log/x.drv"), RouteKind::Log);
        assert_eq!(RouteKind::of("/file/hello/sha256/x"), RouteKind::File);
        for other in ["/", "/nix-cache-info", "/metrics", "/a/b.narinfo", "/x.narinfox"] {
            assert_eq!(RouteKind::of(other), RouteKind::Other, "{other}");
        }
    }

    #[test]
    fn a_request_moves_its_families() {
        let metrics = Metrics::new();
        metrics.request("", RouteKind::Narinfo, 200, 512, Duration::from_millis(2), Outcome::Complete, None);
        let baked = Some(BodySource::Baked);
        metrics.request("/nix", RouteKind::Nar, 200, 1 << 20, Duration::from_secs(3), Outcome::Cut, baked);
        let text = metrics.render();
        for line in [
            "subserve_http_requests_total{store=\"/\",kind=\"narinfo\",status=\"200\"} 1",
            "subserve_http_requests_total{store=\"/nix\",kind=\"nar\",status=\"200\"} 1",
            "subserve_http_response_bytes_total{store=\"/nix\",kind=\"nar\"} 1048576",
            "subserve_nar_response_bytes_total{store=\"/nix\",source=\"baked\"} 1048576",
            "subserve_nar_responses_total{store=\"/nix\",source=\"baked\"} 1",
            "subserve_http_responses_unfinished_total{store=\"/nix\",kind=\"nar\",outcome=\"cut\"} 1",
            "subserve_narinfo_request_duration_seconds_count{store=\"/\"} 1",
            "subserve_nar_request_duration_seconds_bucket{store=\"/nix\",le=\"2.56\"} 0",
            "subserve_nar_request_duration_seconds_bucket{store=\"/nix\",le=\"5.12\"} 1",
            "subserve_build_info{version=\"",
            "# TYPE subserve_start_time_seconds gauge",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(!text.contains("kind=\"narinfo\",outcome"), "a complete body is not unfinished");
    }
}
