//! subserve's pull-through proxy: what the local store lacks is fetched once from the
//! upstream caches, verified, cached on disk and served to every client after.
//!
//! [`Proxy`] is the whole interface the server sees. It never returns upstream trouble as an
//! error: a narinfo that cannot be fetched or trusted is `None`, which the server answers with
//! 404, because a 5xx on a narinfo aborts the Nix client's whole build. This crate is the only
//! one in subserve that makes outbound connections.
//!
//! The cache directory is a standard Nix binary cache (`nix-cache-info`, `<hash>.narinfo`,
//! `nar/<file>`), complete entries only, plus `index.sqlite` and a `tmp/` for downloads.

mod breaker;
mod download;
mod error;
mod fetch;
mod index;
mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use formats::compression::nar_file_name;
use formats::{Compression, NarHash, NarInfo, StorePath, StorePathHash};
use signing::PublicKey;
use tokio::sync::{watch, OnceCell};

pub use download::ByteStream;
pub use error::Error;

use breaker::Breaker;
use download::{Download, Job, Progress};
use error::FetchError;
use index::Index;
use verify::Expected;

/// The public cache of NixOS, the default upstream.
pub const CACHE_NIXOS_ORG: &str = "https://cache.nixos.org";
/// The key cache.nixos.org signs with.
pub const CACHE_NIXOS_ORG_KEY: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

/// One upstream cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Base URL, without a trailing slash.
    pub url: String,
    /// Keys whose signatures make its narinfos trusted.
    pub keys: Vec<PublicKey>,
    /// Lower is asked first.
    pub priority: i32,
    /// Deadline for connecting and receiving response headers (and a whole narinfo).
    pub timeout: Duration,
}

/// Everything the proxy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The upstreams, in any order (sorted by priority on open).
    pub upstreams: Vec<UpstreamConfig>,
    /// The on-disk cache.
    pub cache_dir: PathBuf,
    /// Cached NAR bytes beyond which least-recently-used entries are evicted.
    pub max_size: u64,
    /// How long a path no upstream has stays a known miss.
    pub negative_ttl: Duration,
    /// The store dir narinfos must be under (`/nix/store`).
    pub store_dir: String,
    /// A NAR download with no new byte for this long is abandoned.
    pub stall_timeout: Duration,
    /// How long an upstream is skipped after repeated failures.
    pub breaker_cool_down: Duration,
}

/// Where the bytes of a proxied NAR come from.
pub enum NarSource {
    /// A verified file in the cache: serve it with `Content-Length` and `Range`.
    File {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A download in progress, streamed as it arrives; ends with an error unless verified.
    Stream(ByteStream),
}

/// Counters of what the proxy did, for logs and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// narinfos answered from the cache index.
    pub narinfo_hits: AtomicU64,
    /// narinfos answered "absent" from a negative entry.
    pub negative_hits: AtomicU64,
    /// narinfo requests sent upstream.
    pub narinfo_fetches: AtomicU64,
    /// Upstream failures (timeouts, resets, bad status, garbage).
    pub upstream_errors: AtomicU64,
    /// narinfos refused for lack of a trusted signature.
    pub untrusted: AtomicU64,
    /// NAR downloads started.
    pub nar_fetches: AtomicU64,
    /// NAR downloads that failed verification.
    pub nar_verify_failures: AtomicU64,
    /// Entries evicted to respect the size limit.
    pub evictions: AtomicU64,
}

struct Upstream {
    config: UpstreamConfig,
    breaker: Breaker,
}

struct Inner {
    config: ProxyConfig,
    client: reqwest::Client,
    upstreams: Vec<Upstream>,
    index: Index,
    narinfo_flights: Mutex<HashMap<String, Arc<OnceCell<Option<NarInfo>>>>>,
    downloads: Mutex<HashMap<String, Arc<Download>>>,
    stats: Stats,
}

/// The proxy: cheap to clone, shared by all requests.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.inner.upstreams.iter().map(|u| u.config.url.as_str()).collect();
        f.debug_struct("Proxy").field("upstreams", &urls).field("cache_dir", &self.inner.config.cache_dir).finish()
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Proxy {
    /// Opens (or creates) the cache directory and its index, and clears what a crash left:
    /// partial downloads, entries whose file is gone, files no entry names. Contacts no upstream.
    pub fn open(mut config: ProxyConfig) -> Result<Self, Error> {
        for up in &mut config.upstreams {
            up.url = up.url.trim_end_matches('/').to_owned();
            if !(up.url.starts_with("http://") || up.url.starts_with("https://")) {
                return Err(Error::Url { url: up.url.clone() });
            }
        }
        config.upstreams.sort_by_key(|u| u.priority);
        let dir = &config.cache_dir;
        for sub in ["", "nar", "tmp"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        let info = dir.join("nix-cache-info");
        std::fs::write(&info, format!("StoreDir: {}\nWantMassQuery: 1\nPriority: 50\n", config.store_dir))
            .map_err(|e| Error::io(&info, e))?;
        let index = Index::open(&dir.join("index.sqlite"))?;
        recover(dir, &index)?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("subserve/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(Error::Client)?;
        let upstreams = config
            .upstreams
            .iter()
            .map(|c| Upstream { config: c.clone(), breaker: Breaker::new(config.breaker_cool_down) })
            .collect();
        let inner = Inner {
            config,
            client,
            upstreams,
            index,
            narinfo_flights: Mutex::default(),
            downloads: Mutex::default(),
            stats: Stats::default(),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The proxy's counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The narinfo of `hash` from the cache or an upstream, verified, with its `URL` pointing
    /// into subserve's `nar/` and only upstream signatures; `None` when no upstream has it or
    /// can be reached or trusted. Concurrent calls for one hash share one upstream request.
    pub async fn narinfo(&self, hash: &StorePathHash) -> Option<NarInfo> {
        let key = hash.to_string();
        let inner = Arc::clone(&self.inner);
        let k = key.clone();
        let cached = blocking(move || inner.cached_narinfo(&k)).await;
        match cached {
            Cached::Hit(info) => return Some(*info),
            Cached::Negative => return None,
            Cached::Miss => {}
        }
        let cell = {
            let mut flights = self.inner.narinfo_flights.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(flights.entry(key.clone()).or_default())
        };
        let result = cell
            .get_or_init(|| async {
                // A flight that finished just before this one started has filled the index.
                let (inner, k) = (Arc::clone(&self.inner), key.clone());
                match blocking(move || inner.cached_narinfo(&k)).await {
                    Cached::Hit(info) => Some(*info),
                    Cached::Negative => None,
                    Cached::Miss => self.inner.fetch_narinfo(hash).await,
                }
            })
            .await
            .clone();
        let mut flights = self.inner.narinfo_flights.lock().unwrap_or_else(|e| e.into_inner());
        if flights.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            flights.remove(&key);
        }
        result
    }

    /// The NAR of `hash` as named by a URL from one of our narinfos: the cached file, or a
    /// stream of the (single) download in progress. `None` when the URL does not match what
    /// we know (another NarHash or compression) or the download cannot start.
    pub async fn nar(&self, hash: &StorePathHash, nar_hash: &NarHash, compression: Compression) -> Option<NarSource> {
        let key = hash.to_string();
        let inner = Arc::clone(&self.inner);
        let k = key.clone();
        let entry = blocking(move || inner.index.get(&k)).await;
        let entry = match entry {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "cache index");
                return None;
            }
        };
        let info = NarInfo::parse(&entry.narinfo).ok()?;
        let wanted: Compression = info.compression.parse().ok()?;
        if info.nar_hash != *nar_hash || wanted != compression {
            return None;
        }
        let final_path = self.inner.config.cache_dir.join("nar").join(&entry.nar_file);
        if entry.nar_cached {
            if let Ok(meta) = std::fs::metadata(&final_path) {
                let inner = Arc::clone(&self.inner);
                let _ = blocking(move || inner.index.touch(&key, unix_now())).await;
                return Some(NarSource::File { path: final_path, size: meta.len() });
            }
        }
        let download = self.inner.start_download(&key, &entry, &info, wanted)?;
        match download.subscribe().await {
            Ok(stream) => Some(NarSource::Stream(stream)),
            // The download ended between our look and our open: it either renamed its file into
            // place, or failed and removed it, in which case this client sees the failure too.
            Err(_) => match std::fs::metadata(&final_path) {
                Ok(m) => Some(NarSource::File { path: final_path, size: m.len() }),
                Err(_) => Some(NarSource::Stream(download::failed_stream())),
            },
        }
    }
}

enum Cached {
    Hit(Box<NarInfo>),
    Negative,
    Miss,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task panicked")
}

impl Inner {
    fn cached_narinfo(&self, hash: &str) -> Cached {
        let now = unix_now();
        match self.index.get(hash) {
            Ok(Some(entry)) => {
                if let Ok(info) = NarInfo::parse(&entry.narinfo) {
                    let _ = self.index.touch(hash, now);
                    self.stats.narinfo_hits.fetch_add(1, Ordering::Relaxed);
                    return Cached::Hit(Box::new(info));
                }
                Cached::Miss
            }
            Ok(None) => match self.index.is_negative(hash, now) {
                Ok(true) => {
                    self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
                    Cached::Negative
                }
                _ => Cached::Miss,
            },
            Err(e) => {
                tracing::error!(error = %e, "cache index");
                Cached::Miss
            }
        }
    }

    /// Asks the upstreams in priority order; the first trusted answer wins.
    async fn fetch_narinfo(self: &Arc<Self>, hash: &StorePathHash) -> Option<NarInfo> {
        let mut clean = true;
        for up in &self.upstreams {
            if !up.breaker.allow(Instant::now()) {
                clean = false;
                continue;
            }
            self.stats.narinfo_fetches.fetch_add(1, Ordering::Relaxed);
            let result = fetch::narinfo(&self.client, &up.config, hash).await.and_then(|found| match found {
                None => Ok(None),
                Some(info) => self.accept(up, hash, info).map(Some),
            });
            match result {
                Ok(None) => up.breaker.success(),
                Ok(Some((info, upstream_url))) => {
                    up.breaker.success();
                    return self.remember(hash, info, upstream_url).await;
                }
                Err(e) => {
                    clean = false;
                    self.failed(up, &format!("{hash}.narinfo"), &e);
                }
            }
        }
        if clean {
            let expires = unix_now() + self.config.negative_ttl.as_secs() as i64;
            let this = Arc::clone(self);
            let h = hash.to_string();
            let _ = blocking(move || this.index.put_negative(&h, expires)).await;
        }
        None
    }

    /// Checks an upstream narinfo and rewrites its URL into our namespace.
    fn accept(&self, up: &Upstream, hash: &StorePathHash, mut info: NarInfo) -> Result<(NarInfo, String), FetchError> {
        let path = StorePath::from_absolute(&self.config.store_dir, &info.store_path)
            .map_err(|e| FetchError::Garbage(e.to_string()))?;
        if path.hash() != hash {
            return Err(FetchError::Garbage(format!("asked for {hash}, got {}", info.store_path)));
        }
        for r in &info.references {
            StorePath::from_basename(r).map_err(|e| FetchError::Garbage(e.to_string()))?;
        }
        let fingerprint = info.fingerprint(&self.config.store_dir);
        if !signing::verify_any(&up.config.keys, &fingerprint, &info.sigs) && info.ca.is_none() {
            self.stats.untrusted.fetch_add(1, Ordering::Relaxed);
            return Err(FetchError::Untrusted);
        }
        let compression: Compression = info
            .compression
            .parse()
            .map_err(|e: formats::compression::UnknownCompression| FetchError::Garbage(e.to_string()))?;
        let upstream_url = fetch::resolve(&up.config.url, &info.url);
        info.url = format!("nar/{}", nar_file_name(hash, &info.nar_hash, compression));
        info.compression = compression.name().to_owned();
        Ok((info, upstream_url))
    }

    async fn remember(self: &Arc<Self>, hash: &StorePathHash, info: NarInfo, upstream_url: String) -> Option<NarInfo> {
        let this = Arc::clone(self);
        let h = hash.to_string();
        let text = info.render();
        let file = info.url.trim_start_matches("nar/").to_owned();
        let stored = blocking(move || this.index.put_narinfo(&h, &text, &file, &upstream_url, unix_now())).await;
        if let Err(e) = stored {
            tracing::error!(error = %e, "cache index");
        }
        Some(info)
    }

    fn failed(&self, up: &Upstream, what: &str, e: &FetchError) {
        if e.is_upstream_fault() {
            self.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            if up.breaker.failure(Instant::now()) {
                tracing::warn!(upstream = %up.config.url, "upstream failing repeatedly: skipping it for a while");
            }
        }
        tracing::warn!(upstream = %up.config.url, %what, error = %e, "upstream request failed");
    }

    /// Joins the download of `hash` in progress, or starts one.
    fn start_download(
        self: &Arc<Self>,
        key: &str,
        entry: &index::Entry,
        info: &NarInfo,
        compression: Compression,
    ) -> Option<Arc<Download>> {
        let mut downloads = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
        // A failed download is dropped from the map just after its clients are told; a request
        // arriving in between starts afresh rather than joining the failure.
        if let Some(d) = downloads.get(key).filter(|d| *d.progress.borrow() != Progress::Failed) {
            return Some(Arc::clone(d));
        }
        // The upstream the NAR comes from: its timeout applies, and its breaker hears of failures.
        let up = self.upstreams.iter().position(|u| entry.upstream_url.starts_with(&format!("{}/", u.config.url)));
        let timeout = up.map_or(Duration::from_secs(30), |i| self.upstreams[i].config.timeout);
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let temp = self.config.cache_dir.join("tmp").join(format!("{}.{}.{n}", entry.nar_file, std::process::id()));
        if let Err(e) = std::fs::File::create(&temp) {
            tracing::error!(path = %temp.display(), error = %e, "cannot create a download file");
            return None;
        }
        let (tx, rx) = watch::channel(Progress::Running(0));
        let download = Arc::new(Download { temp: temp.clone(), progress: rx });
        downloads.insert(key.to_owned(), Arc::clone(&download));
        drop(downloads);
        self.stats.nar_fetches.fetch_add(1, Ordering::Relaxed);
        let this = Arc::clone(self);
        let (commit_key, narinfo_text) = (key.to_owned(), entry.narinfo.clone());
        let failing = Arc::clone(self);
        let url = entry.upstream_url.clone();
        let job = Job {
            client: self.client.clone(),
            url: entry.upstream_url.clone(),
            expected: Expected {
                compression,
                nar_hash: info.nar_hash,
                nar_size: info.nar_size,
                file_hash: info.file_hash,
                file_size: info.file_size,
            },
            temp,
            final_path: self.config.cache_dir.join("nar").join(&entry.nar_file),
            timeout,
            stall_timeout: self.config.stall_timeout,
            on_commit: Box::new(move |size| this.committed(&commit_key, &narinfo_text, size)),
            on_failure: Box::new(move |e| {
                if matches!(e, FetchError::Verify(_)) {
                    failing.stats.nar_verify_failures.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(i) = up {
                    failing.failed(&failing.upstreams[i], &url, e);
                }
            }),
        };
        let this = Arc::clone(self);
        let key = key.to_owned();
        let temp = download.temp.clone();
        tokio::spawn(async move {
            let _ = download::run(job, tx).await;
            let mut downloads = this.downloads.lock().unwrap_or_else(|e| e.into_inner());
            // Remove this download only: a retry may already have replaced it.
            if downloads.get(&key).is_some_and(|d| d.temp == temp) {
                downloads.remove(&key);
            }
        });
        Some(download)
    }

    /// Records a committed NAR, writes its narinfo beside it, and evicts if over the limit.
    /// Runs on the download's blocking thread.
    fn committed(&self, key: &str, narinfo: &str, size: u64) {
        let path = self.config.cache_dir.join(format!("{key}.narinfo"));
        if let Err(e) = write_atomically(&path, narinfo.as_bytes()) {
            tracing::error!(path = %path.display(), error = %e, "cannot write narinfo");
        }
        if let Err(e) = self.index.set_nar_cached(key, size, unix_now()) {
            tracing::error!(error = %e, "cache index");
        }
        self.evict();
    }

    /// Removes least-recently-used entries, narinfo and NAR together, until the cached bytes
    /// fit the limit. Entries being downloaded are not in the index as cached, so never chosen.
    fn evict(&self) {
        let Ok(mut total) = self.index.cached_bytes() else { return };
        while total > self.config.max_size {
            let Ok(victims) = self.index.lru(32) else { return };
            if victims.is_empty() {
                return;
            }
            for (hash, file, size) in victims {
                if total <= self.config.max_size {
                    break;
                }
                // Index first: from then on no client is sent to the file.
                if self.index.remove(&hash).is_err() {
                    return;
                }
                let _ = std::fs::remove_file(self.config.cache_dir.join(format!("{hash}.narinfo")));
                let _ = std::fs::remove_file(self.config.cache_dir.join("nar").join(&file));
                total = total.saturating_sub(size);
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Brings the cache directory and the index back in line after a crash.
fn recover(dir: &Path, index: &Index) -> Result<(), Error> {
    let tmp = dir.join("tmp");
    for entry in std::fs::read_dir(&tmp).map_err(|e| Error::io(&tmp, e))?.flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    let mut known = std::collections::HashSet::new();
    for (hash, file) in index.cached_files()? {
        if dir.join("nar").join(&file).is_file() {
            known.insert(file);
        } else {
            index.remove(&hash)?;
            let _ = std::fs::remove_file(dir.join(format!("{hash}.narinfo")));
        }
    }
    let nar = dir.join("nar");
    for entry in std::fs::read_dir(&nar).map_err(|e| Error::io(&nar, e))?.flatten() {
        if !known.contains(entry.file_name().to_string_lossy().as_ref()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    index.prune_negative(unix_now())
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("narinfo.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
