//! subserve's pull-through proxy: what the local store lacks is fetched once from the
//! upstream caches, verified, cached on disk and served to every client after.
//!
//! [`Proxy`] is the whole interface of proxying. It never returns upstream trouble as an
//! error: a narinfo no upstream has or that cannot be trusted is [`Lookup::Absent`], one that
//! upstream trouble kept from us (past the retry budget) is [`Lookup::Unavailable`], and the
//! server answers both with 404, because a 5xx on a narinfo aborts the Nix client's whole
//! build. Trouble is retried within the request first (see `lookup.rs`), since Nix remembers a
//! 404 for an hour. This crate is the only one in subserve that makes outbound connections.
//!
//! A proxy has one [`Dialect`]. A Nix proxy fronts Nix caches: [`Proxy::narinfo`] gives a
//! [`NarInfo`] trusted by the upstream's `Sig:` (or a `CA` field), whose `URL` names
//! [`Proxy::nar`]. A Guix proxy fronts Guix build farms: [`Proxy::guix_narinfo`] gives a
//! [`GuixProxied`], the upstream's signed text byte for byte (trusted by its `Signature:`)
//! for the server to re-sign, with one URL group in guix publish's layout that
//! [`Proxy::guix_nar`] serves. The methods of the other flavour answer absent.
//!
//! What the proxy fetches is kept in a [`CacheArea`], the crate's other export, which the
//! server opens on its own to bake local NARs into and shares with the proxy: a plain binary
//! cache (`nix-cache-info`, `<hash>.narinfo`, the NARs under `nar/` where the narinfos' URLs
//! say), complete entries only, of one dialect. [`Growing`] files, read while they are
//! written, are its third export: the proxy's downloads and the server's bakes are both
//! streamed to clients as they land.
//!
//! Inside: `flight` (narinfo single flight over the index), `lookup` (the upstreams, with
//! retries), `nix` and `guix` (each dialect's trust and URL rewriting), `download` (NAR single
//! flight, verified and committed by the download itself), `growing`, `cache` (the cache
//! area).

mod breaker;
mod cache;
mod caps;
mod config;
mod download;
mod error;
mod fetch;
mod flight;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod growing;
mod guix;
mod lookup;
mod nix;
mod verify;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use formats::{Compression, Dialect, NarHash, NarInfo, StorePathHash};

pub use cache::{Baked, CacheArea, CacheConfig, Usage};
pub use config::{
    ProxyConfig, Trust, UpstreamConfig, CACHE_NIXOS_ORG, CACHE_NIXOS_ORG_KEY, GUIX_BORDEAUX, GUIX_BORDEAUX_KEY,
    GUIX_CI, GUIX_CI_KEY,
};
pub use error::{Error, FAILURE_CAUSES};
pub use growing::{ByteStream, Grower, Growing, NarStream};
pub use guix::GuixProxied;
pub use lookup::Lookup;

use breaker::Breaker;
use caps::Caps;
use download::Downloads;
use fetch::Upstream;
use flight::{Flights, Proxied};
use verify::Expected;

/// Where the bytes of a proxied NAR come from.
pub enum NarSource {
    /// A verified file in the cache: serve it with `Content-Length` and `Range`.
    File {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A download in progress, streamed as it arrives (a range of it, once its size is known);
    /// ends with an error unless verified.
    Stream(NarStream),
}

/// Counters of what the proxy did, for logs and tests (evictions are the cache area's:
/// [`CacheArea::evictions`]).
#[derive(Debug, Default)]
pub struct Stats {
    /// narinfos answered from the cache index.
    pub narinfo_hits: AtomicU64,
    /// narinfos answered "absent" from a negative entry.
    pub negative_hits: AtomicU64,
    /// narinfo requests sent upstream, retries included.
    pub narinfo_fetches: AtomicU64,
    /// narinfo requests sent upstream again, within one lookup, after trouble.
    pub narinfo_retries: AtomicU64,
    /// narinfo lookups answered "absent for now" because a cap stayed full for the whole
    /// retry budget (no upstream was asked).
    pub over_cap: AtomicU64,
    /// Upstream failures (timeouts, resets, bad status, garbage).
    pub upstream_errors: AtomicU64,
    /// The same failures by cause, in the order of [`FAILURE_CAUSES`].
    pub upstream_errors_by_cause: [AtomicU64; FAILURE_CAUSES.len()],
    /// narinfos refused for lack of a trusted signature.
    pub untrusted: AtomicU64,
    /// NAR downloads started.
    pub nar_fetches: AtomicU64,
    /// NAR downloads that failed verification.
    pub nar_verify_failures: AtomicU64,
}

/// What one upstream was asked and answered (see [`Proxy::upstream_stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamStats {
    /// The upstream's URL, as configured.
    pub url: String,
    /// narinfo requests sent to it, retries included.
    pub narinfo_fetches: u64,
    /// NAR downloads started from it.
    pub nar_fetches: u64,
    /// NAR bytes received from it.
    pub nar_bytes: u64,
    /// Its failures by cause, in the order of [`FAILURE_CAUSES`].
    pub errors_by_cause: [(&'static str, u64); FAILURE_CAUSES.len()],
}

struct Inner {
    config: ProxyConfig,
    client: reqwest::Client,
    upstreams: Vec<Arc<Upstream>>,
    cache: CacheArea,
    flights: Flights,
    caps: Caps,
    downloads: Arc<Downloads>,
    stats: Arc<Stats>,
}

/// The proxy: cheap to clone, shared by all requests.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.inner.upstreams.iter().map(|u| u.config.url.as_str()).collect();
        f.debug_struct("Proxy")
            .field("flavour", &self.inner.config.dialect)
            .field("upstreams", &urls)
            .field("cache_dir", &self.inner.config.cache_dir)
            .finish()
    }
}

impl Proxy {
    /// Opens the cache area `config` names (see [`CacheArea::open`]) and a proxy on it.
    /// Contacts no upstream.
    pub fn open(config: ProxyConfig) -> Result<Self, Error> {
        let cache = CacheArea::open(config.cache())?;
        Self::with_cache(config, cache)
    }

    /// A proxy that keeps what it fetches in `cache`, an area opened for the same store dir
    /// and flavour (and shared, say, with a baker). Contacts no upstream.
    pub fn with_cache(config: ProxyConfig, cache: CacheArea) -> Result<Self, Error> {
        Self::build(config, cache, Arc::default(), &[])
    }

    /// A proxy for a reloaded `config` over this one's cache area, counting on from this
    /// one's counters (an upstream kept by URL keeps its own). Downloads in flight finish on
    /// this proxy. Contacts no upstream.
    pub fn reconfigured(&self, config: ProxyConfig) -> Result<Self, Error> {
        Self::build(config, self.inner.cache.clone(), Arc::clone(&self.inner.stats), &self.inner.upstreams)
    }

    fn build(
        mut config: ProxyConfig,
        cache: CacheArea,
        stats: Arc<Stats>,
        previous: &[Arc<Upstream>],
    ) -> Result<Self, Error> {
        let area = cache.config();
        if (area.dialect, area.store_dir.as_str()) != (config.dialect, config.store_dir.as_str()) {
            return Err(Error::AreaMismatch {
                dir: area.dir.clone(),
                area: format!("{:?} paths of {}", area.dialect, area.store_dir),
                proxy: format!("{:?} paths of {}", config.dialect, config.store_dir),
            });
        }
        for up in &mut config.upstreams {
            if up.trust.dialect() != config.dialect {
                return Err(Error::TrustMismatch {
                    url: up.url.clone(),
                    proxy: config.dialect,
                    keys: up.trust.dialect(),
                });
            }
            up.url = up.url.trim_end_matches('/').to_owned();
            if !(up.url.starts_with("http://") || up.url.starts_with("https://")) {
                return Err(Error::Url { url: up.url.clone() });
            }
        }
        config.upstreams.sort_by_key(|u| u.priority);
        let client = reqwest::Client::builder()
            .user_agent(concat!("subserve/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(Error::Client)?;
        let upstreams = config
            .upstreams
            .iter()
            .map(|c| {
                let breaker = Breaker::new(config.breaker_cool_down, config.outage_patience);
                let counters = previous
                    .iter()
                    .find(|p| p.config.url == c.url)
                    .map_or_else(Arc::default, |p| Arc::clone(&p.counters));
                Arc::new(Upstream { config: c.clone(), breaker, counters })
            })
            .collect();
        let downloads = Downloads::new(cache.clone(), client.clone(), config.stall_timeout, Arc::clone(&stats));
        let inner = Inner {
            caps: Caps::new(config.max_narinfo_fetches, config.max_narinfo_fetches_per_client),
            config,
            client,
            upstreams,
            cache,
            flights: Flights::default(),
            downloads: Arc::new(downloads),
            stats,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The proxy's counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Each upstream, in the order they are asked, with how it is doing: its breaker opened
    /// this long ago (`None`: answering).
    pub fn upstream_health(&self) -> Vec<(String, Option<Duration>)> {
        let now = std::time::Instant::now();
        self.inner
            .upstreams
            .iter()
            .map(|u| (u.config.url.clone(), u.breaker.open_since().map(|since| now.saturating_duration_since(since))))
            .collect()
    }

    /// Each upstream, in the order they are asked, with what was asked of it since this
    /// proxy was made.
    pub fn upstream_stats(&self) -> Vec<UpstreamStats> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.inner
            .upstreams
            .iter()
            .map(|u| {
                let c = &u.counters;
                UpstreamStats {
                    url: u.config.url.clone(),
                    narinfo_fetches: load(&c.narinfo_fetches),
                    nar_fetches: load(&c.nar_fetches),
                    nar_bytes: load(&c.nar_bytes),
                    errors_by_cause: std::array::from_fn(|i| (FAILURE_CAUSES[i], load(&c.errors_by_cause[i]))),
                }
            })
            .collect()
    }

    /// The cache area the proxy keeps its entries in.
    pub fn cache(&self) -> &CacheArea {
        &self.inner.cache
    }

    /// The flavour this proxy was opened with.
    pub fn dialect(&self) -> Dialect {
        self.inner.config.dialect
    }
    /// The narinfo of `hash` from the cache or an upstream, verified, with its `URL` pointing
    /// into subserve's `nar/` and only upstream signatures. [`Lookup::Absent`] when no
    /// upstream has it or it cannot be trusted, or when this is not a Nix proxy;
    /// [`Lookup::Unavailable`] when upstream trouble outlasted the retry budget or `client`
    /// (the requester's address, for the per-client cap) stayed over a cap. Concurrent calls
    /// for one hash share one upstream request.
    pub async fn narinfo(&self, hash: &StorePathHash, client: Option<IpAddr>) -> Lookup<NarInfo> {
        if self.dialect() != Dialect::Nix {
            return Lookup::Absent;
        }
        self.lookup(hash, client).await.and_then(|proxied| match proxied {
            Proxied::Nix(info) => Some(*info),
            Proxied::Guix(_) => None,
        })
    }

    /// The Guix narinfo of `hash` from the cache or an upstream: the upstream's signed text
    /// byte for byte, verified under that upstream's Guix keys, with the one URL group
    /// subserve offers (see [`GuixProxied`]). [`Lookup::Absent`] when no upstream has it or
    /// it cannot be trusted, or offers it in no compression subserve can verify (lzip only,
    /// say), or when this is not a Guix proxy; [`Lookup::Unavailable`] as for
    /// [`Proxy::narinfo`]. Concurrent calls for one hash share one upstream request.
    pub async fn guix_narinfo(&self, hash: &StorePathHash, client: Option<IpAddr>) -> Lookup<GuixProxied> {
        if self.dialect() != Dialect::Guix {
            return Lookup::Absent;
        }
        self.lookup(hash, client).await.and_then(|proxied| match proxied {
            Proxied::Guix(proxied) => Some(*proxied),
            Proxied::Nix(_) => None,
        })
    }

    /// The NAR of `hash` as named by a URL from one of our narinfos: the cached file, or a
    /// stream of the (single) download in progress. `None` when the URL does not match what
    /// we know (another NarHash or compression) or the download cannot start, or when this
    /// is not a Nix proxy. `client` is the requester's address, should the narinfo have to
    /// be fetched again.
    pub async fn nar(
        &self,
        hash: &StorePathHash,
        nar_hash: &NarHash,
        compression: Compression,
        client: Option<IpAddr>,
    ) -> Option<NarSource> {
        if self.dialect() != Dialect::Nix {
            return None;
        }
        self.nar_of(hash, client, |e| e.nar_hash == *nar_hash && e.compression == compression).await
    }

    /// The NAR of `hash` as named by the URL group of one of our Guix narinfos
    /// (`nar/<compression>/<basename>`, `nar/<basename>` for `none`), like [`Proxy::nar`]:
    /// the cached file or a stream of the single download in progress. `None` when the
    /// compression is not the one offered, the path is unknown (ask [`Proxy::guix_narinfo`]
    /// first), the download cannot start, or this is not a Guix proxy. The caller checks the
    /// basename's name part against [`GuixProxied::store_path`].
    pub async fn guix_nar(
        &self,
        hash: &StorePathHash,
        compression: Compression,
        client: Option<IpAddr>,
    ) -> Option<NarSource> {
        if self.dialect() != Dialect::Guix {
            return None;
        }
        self.nar_of(hash, client, |e| e.compression == compression).await
    }

    /// The NAR of the indexed entry for `hash`, if what the URL names `matches` it.
    async fn nar_of(
        &self,
        hash: &StorePathHash,
        client: Option<IpAddr>,
        matches: impl FnOnce(&Expected) -> bool,
    ) -> Option<NarSource> {
        let key = hash.clone();
        let mut entry = self.entry(&key).await;
        if matches!(entry, Some(Ok(None))) && matches!(self.lookup(hash, client).await, Lookup::Found(_)) {
            // A URL from a narinfo whose entry was pruned (or never made here): the narinfo
            // is fetched and verified again, and the NAR with it.
            entry = self.entry(&key).await;
        }
        let entry = match entry? {
            Ok(e) => e?,
            Err(e) => {
                tracing::error!(error = %e, "cache index");
                return None;
            }
        };
        let config = &self.inner.config;
        let expected = Proxied::read(&entry, config.dialect, &config.store_dir)?.expected()?;
        if !matches(&expected) {
            return None;
        }
        let final_path = self.inner.cache.nar_path(&entry.nar_file);
        if entry.nar_cached {
            if let Ok(meta) = std::fs::metadata(&final_path) {
                let cache = self.inner.cache.clone();
                let _ = blocking(move || cache.touch(&key)).await;
                return Some(NarSource::File { path: final_path, size: meta.len() });
            }
        }
        let prefix = |u: &&Arc<Upstream>| entry.upstream_url.starts_with(&format!("{}/", u.config.url));
        let upstream = self.inner.upstreams.iter().find(prefix).cloned();
        let download = self.inner.downloads.join_or_start(&key, entry, expected, upstream)?;
        match download.subscribe(expected.file_size).await {
            Ok(stream) => Some(NarSource::Stream(stream)),
            // The download ended between our look and our open: it either renamed its file into
            // place, or failed and removed it, in which case this client sees the failure too.
            Err(_) => match std::fs::metadata(&final_path) {
                Ok(m) => Some(NarSource::File { path: final_path, size: m.len() }),
                Err(_) => Some(NarSource::Stream(NarStream::failed(expected.file_size))),
            },
        }
    }

    /// The index entry of `key`, read on a blocking thread; `None` if that thread failed.
    async fn entry(&self, key: &StorePathHash) -> Option<Result<Option<cache::Entry>, Error>> {
        let (cache, key) = (self.inner.cache.clone(), key.clone());
        blocking(move || cache.entry(&key)).await
    }
}

/// Runs blocking work (the index, the file system) on tokio's blocking pool. A panic there
/// is logged and answered `None`, which every caller turns into a miss or "unavailable":
/// a request is never answered by a panic.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "a blocking task of the proxy failed");
            None
        }
    }
}
