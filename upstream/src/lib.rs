//! subserve's pull-through proxy: what the local store lacks is fetched once from the
//! upstream caches, verified, cached on disk and served to every client after.
//!
//! [`Proxy`] is the whole interface the server sees. It never returns upstream trouble as an
//! error: a narinfo no upstream has or that cannot be trusted is [`Lookup::Absent`], one that
//! upstream trouble kept from us (past the retry budget) is [`Lookup::Unavailable`], and the
//! server answers both with 404, because a 5xx on a narinfo aborts the Nix client's whole
//! build. Trouble is retried within the request first (see `lookup.rs`), since Nix remembers a
//! 404 for an hour. This crate is the only one in subserve that makes outbound connections.
//!
//! A proxy has one [`Flavour`]. A Nix proxy fronts Nix caches: [`Proxy::narinfo`] gives a
//! [`NarInfo`] trusted by the upstream's `Sig:` (or a `CA` field), whose `URL` names
//! [`Proxy::nar`]. A Guix proxy fronts Guix build farms: [`Proxy::guix_narinfo`] gives a
//! [`GuixProxied`], the upstream's signed text byte for byte (trusted by its `Signature:`)
//! for the server to re-sign, with one URL group in guix publish's layout that
//! [`Proxy::guix_nar`] serves. The methods of the other flavour answer absent.
//!
//! The cache directory is a plain binary cache (`nix-cache-info`, `<hash>.narinfo`, the NARs
//! under `nar/` where the narinfos' URLs say), complete entries only, plus `index.sqlite` and
//! a `tmp/` for downloads. It holds one flavour: opened with the other, its entries go.

mod breaker;
mod caps;
mod config;
mod download;
mod error;
mod fetch;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod guix;
mod index;
mod lookup;
mod owner;
mod verify;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use formats::{Compression, NarHash, NarInfo, StorePathHash};
use tokio::sync::{watch, OnceCell};

pub use config::{
    Flavour, ProxyConfig, UpstreamConfig, CACHE_NIXOS_ORG, CACHE_NIXOS_ORG_KEY, GUIX_BORDEAUX, GUIX_BORDEAUX_KEY,
    GUIX_CI, GUIX_CI_KEY,
};
pub use download::{ByteStream, NarStream};
pub use error::Error;
pub use guix::GuixProxied;
pub use lookup::Lookup;

use breaker::Breaker;
use caps::Caps;
use download::{Download, Job, Progress};
use error::FetchError;
use index::{Index, Victim};
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

/// A NAR baked into the cache area: compressed once, served as a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baked {
    /// The file (`baked/<NarHash nix32>.nar<ext>`).
    pub path: PathBuf,
    /// Its size, for `FileSize`.
    pub file_size: u64,
    /// Its sha256, for `FileHash`.
    pub file_hash: NarHash,
}

/// Counters of what the proxy did, for logs and tests.
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

/// A narinfo the proxy holds, in the proxy's flavour.
#[derive(Clone)]
enum Proxied {
    Nix(Box<NarInfo>),
    Guix(Box<GuixProxied>),
}

impl Proxied {
    /// What the download of its NAR must produce.
    fn expected(&self) -> Option<Expected> {
        match self {
            Proxied::Nix(info) => Some(Expected {
                compression: info.compression.parse().ok()?,
                nar_hash: info.nar_hash,
                nar_size: info.nar_size,
                file_hash: info.file_hash,
                file_size: info.file_size,
            }),
            Proxied::Guix(proxied) => proxied.expected(),
        }
    }
}

/// An upstream narinfo that passed every check, and how the index records it.
struct Accepted {
    proxied: Proxied,
    /// The text stored in the index and, once the NAR is cached, in `<hash>.narinfo`.
    text: String,
    /// The NAR's file name under `nar/`.
    nar_file: String,
    /// Where the NAR is downloaded from.
    upstream_url: String,
}

struct Inner {
    config: ProxyConfig,
    client: reqwest::Client,
    upstreams: Vec<Upstream>,
    index: Index,
    narinfo_flights: Mutex<HashMap<String, Arc<OnceCell<Lookup<Proxied>>>>>,
    caps: Caps,
    downloads: Mutex<HashMap<String, Arc<Download>>>,
    stats: Stats,
    /// When narinfo-only entries were last pruned (unix seconds).
    last_prune: std::sync::atomic::AtomicI64,
    /// The lock that makes this process the cache directory's only user.
    _owner: owner::Owner,
}

/// A narinfo whose NAR was never fetched is forgotten after this long unused: as long as Nix
/// keeps a positive narinfo (`narinfo-cache-positive-ttl`, 30 days). A NAR request for a
/// forgotten entry asks the upstream for the narinfo again.
const UNCACHED_TTL: i64 = 30 * 86400;
/// How often narinfo-only entries are pruned.
const PRUNE_EVERY: i64 = 3600;

/// The proxy: cheap to clone, shared by all requests.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.inner.upstreams.iter().map(|u| u.config.url.as_str()).collect();
        f.debug_struct("Proxy")
            .field("flavour", &self.inner.config.flavour)
            .field("upstreams", &urls)
            .field("cache_dir", &self.inner.config.cache_dir)
            .finish()
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Where a baked NAR lives, relative to the cache dir: content-addressed by NarHash and
/// compression, so one file serves every store path (and store) with that NAR.
fn baked_file(nar_hash: &str, compression: Compression) -> PathBuf {
    Path::new("baked").join(format!("{nar_hash}.nar{}", compression.extension()))
}

impl Proxy {
    /// Opens (or creates) the cache directory and its index, and clears what a crash left:
    /// partial downloads, entries whose file is gone, files no entry names, and entries of the
    /// other flavour. Contacts no upstream.
    pub fn open(mut config: ProxyConfig) -> Result<Self, Error> {
        for up in &mut config.upstreams {
            up.url = up.url.trim_end_matches('/').to_owned();
            if !(up.url.starts_with("http://") || up.url.starts_with("https://")) {
                return Err(Error::Url { url: up.url.clone() });
            }
        }
        config.upstreams.sort_by_key(|u| u.priority);
        let dir = &config.cache_dir;
        let mut subdirs = vec![String::new(), "nar".into(), "tmp".into(), "baked".into()];
        if config.flavour == Flavour::Guix {
            subdirs.extend(guix::nar_subdirectories().map(|c| format!("nar/{c}")));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let owner = owner::Owner::lock(dir)?;
        owner::check_store_dir(dir, &config.store_dir)?;
        for sub in subdirs {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        let info = dir.join("nix-cache-info");
        std::fs::write(&info, format!("StoreDir: {}\nWantMassQuery: 1\nPriority: 50\n", config.store_dir))
            .map_err(|e| Error::io(&info, e))?;
        let index = Index::open(&dir.join("index.sqlite"), config.flavour)?;
        recover(dir, &index)?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("subserve/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(Error::Client)?;
        let upstreams = config
            .upstreams
            .iter()
            .map(|c| Upstream {
                config: c.clone(),
                breaker: Breaker::new(config.breaker_cool_down, config.outage_patience),
            })
            .collect();
        let caps = Caps::new(config.max_narinfo_fetches, config.max_narinfo_fetches_per_client);
        let inner = Inner {
            config,
            client,
            upstreams,
            index,
            narinfo_flights: Mutex::default(),
            caps,
            downloads: Mutex::default(),
            stats: Stats::default(),
            last_prune: std::sync::atomic::AtomicI64::new(0),
            _owner: owner,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The proxy's counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The flavour this proxy was opened with.
    pub fn flavour(&self) -> Flavour {
        self.inner.config.flavour
    }

    /// The narinfo of `hash` from the cache or an upstream, verified, with its `URL` pointing
    /// into subserve's `nar/` and only upstream signatures. [`Lookup::Absent`] when no
    /// upstream has it or it cannot be trusted, or when this is not a Nix proxy;
    /// [`Lookup::Unavailable`] when upstream trouble outlasted the retry budget or `client`
    /// (the requester's address, for the per-client cap) stayed over a cap. Concurrent calls
    /// for one hash share one upstream request.
    pub async fn narinfo(&self, hash: &StorePathHash, client: Option<IpAddr>) -> Lookup<NarInfo> {
        if self.flavour() != Flavour::Nix {
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
        if self.flavour() != Flavour::Guix {
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
        if self.flavour() != Flavour::Nix {
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
        if self.flavour() != Flavour::Guix {
            return None;
        }
        self.nar_of(hash, client, |e| e.compression == compression).await
    }

    /// The baked file of a NAR in `compression`, if one is ready; marks it used. Blocking
    /// (one indexed SQLite read and write): call it from a blocking thread.
    pub fn baked(&self, nar_hash: &NarHash, compression: Compression) -> Option<Baked> {
        let key = nar_hash.to_nix32();
        let found = self.inner.index.get_baked(&key, compression.name(), unix_now_ms());
        let (file_size, file_hash) = match found {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "cache index");
                return None;
            }
        };
        let file_hash = NarHash::parse(&file_hash).ok()?;
        Some(Baked { path: self.inner.config.cache_dir.join(baked_file(&key, compression)), file_size, file_hash })
    }

    /// A fresh path in the cache's `tmp/` for a bake in progress (cleared at start-up, so a
    /// crash leaves nothing behind).
    pub fn bake_temp_file(&self) -> Result<PathBuf, Error> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        Ok(self.inner.config.cache_dir.join("tmp").join(format!("bake.{}.{n}", std::process::id())))
    }

    /// Moves a finished, checked and synced bake into place, records it, and evicts what no
    /// longer fits. Blocking.
    pub fn commit_baked(
        &self,
        nar_hash: &NarHash,
        compression: Compression,
        temp: &Path,
        file_size: u64,
        file_hash: NarHash,
    ) -> Result<Baked, Error> {
        let key = nar_hash.to_nix32();
        let path = self.inner.config.cache_dir.join(baked_file(&key, compression));
        std::fs::rename(temp, &path).map_err(|e| Error::io(&path, e))?;
        self.inner.index.put_baked(&key, compression.name(), file_size, &file_hash.to_string(), unix_now_ms())?;
        self.inner.evict();
        Ok(Baked { path, file_size, file_hash })
    }

    /// The NAR of the indexed entry for `hash`, if what the URL names `matches` it.
    async fn nar_of(
        &self,
        hash: &StorePathHash,
        client: Option<IpAddr>,
        matches: impl FnOnce(&Expected) -> bool,
    ) -> Option<NarSource> {
        let key = hash.to_string();
        let inner = Arc::clone(&self.inner);
        let k = key.clone();
        let mut entry = blocking(move || inner.index.get(&k)).await;
        if matches!(entry, Ok(None)) && matches!(self.lookup(hash, client).await, Lookup::Found(_)) {
            // A URL from a narinfo whose entry was pruned (or never made here): the narinfo
            // is fetched and verified again, and the NAR with it.
            let (inner, k) = (Arc::clone(&self.inner), key.clone());
            entry = blocking(move || inner.index.get(&k)).await;
        }
        let entry = match entry {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "cache index");
                return None;
            }
        };
        let expected = self.inner.parse_entry(&entry)?.expected()?;
        if !matches(&expected) {
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
        let download = self.inner.start_download(&key, &entry, expected)?;
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
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task panicked")
}

impl Inner {
    /// Reads an index entry's text in the proxy's flavour.
    fn parse_entry(&self, entry: &index::Entry) -> Option<Proxied> {
        match self.config.flavour {
            Flavour::Nix => NarInfo::parse(&entry.narinfo).ok().map(|info| Proxied::Nix(Box::new(info))),
            Flavour::Guix => guix::from_stored(&entry.narinfo, &self.config.store_dir)
                .ok()
                .map(|proxied| Proxied::Guix(Box::new(proxied))),
        }
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
    fn start_download(self: &Arc<Self>, key: &str, entry: &index::Entry, expected: Expected) -> Option<Arc<Download>> {
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
        // Guix NAR files live in a subdirectory per compression; temp files all sit in tmp/.
        let temp_name = format!("{}.{}.{n}", entry.nar_file.replace('/', "_"), std::process::id());
        let temp = self.config.cache_dir.join("tmp").join(temp_name);
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
            expected,
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
            for victim in victims {
                if total <= self.config.max_size {
                    break;
                }
                // Index first: from then on no client is sent to the file. A client already
                // reading it keeps its open file and finishes.
                let size = match victim {
                    Victim::Proxied { hash, nar_file, size } => {
                        if self.index.remove(&hash).is_err() {
                            return;
                        }
                        let _ = std::fs::remove_file(self.config.cache_dir.join(format!("{hash}.narinfo")));
                        let _ = std::fs::remove_file(self.config.cache_dir.join("nar").join(&nar_file));
                        size
                    }
                    Victim::Baked { nar_hash, compression, size } => {
                        if self.index.remove_baked(&nar_hash, &compression).is_err() {
                            return;
                        }
                        if let Ok(c) = compression.parse::<Compression>() {
                            let _ = std::fs::remove_file(self.config.cache_dir.join(baked_file(&nar_hash, c)));
                        }
                        tracing::info!(nar_hash = %nar_hash, %compression, size, "evicted a baked NAR");
                        size
                    }
                };
                total = total.saturating_sub(size);
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Brings the cache directory and the index back in line after a crash, or after the cache
/// was last used by a proxy of the other flavour.
fn recover(dir: &Path, index: &Index) -> Result<(), Error> {
    for hash in index.retire_other_flavours()? {
        let _ = std::fs::remove_file(dir.join(format!("{hash}.narinfo")));
    }
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
    // NAR files no entry names, in nar/ and in the subdirectories Guix entries use
    // (nar/<compression>/); other subdirectories are not the proxy's and are left alone.
    let nar = dir.join("nar");
    for entry in std::fs::read_dir(&nar).map_err(|e| Error::io(&nar, e))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            if !known.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        } else if guix::nar_subdirectories().any(|s| s == name) {
            let sub = entry.path();
            for file in std::fs::read_dir(&sub).map_err(|e| Error::io(&sub, e))?.flatten() {
                if !known.contains(&format!("{name}/{}", file.file_name().to_string_lossy())) {
                    let _ = std::fs::remove_file(file.path());
                }
            }
        }
    }
    // Baked files: entries without a file go, files without an entry go.
    let mut baked = std::collections::HashSet::new();
    for (nar_hash, compression) in index.baked_files()? {
        let file = compression.parse::<Compression>().ok().map(|c| dir.join(baked_file(&nar_hash, c)));
        match file {
            Some(file) if file.is_file() => {
                baked.insert(file);
            }
            _ => index.remove_baked(&nar_hash, &compression)?,
        }
    }
    let baked_dir = dir.join("baked");
    for entry in std::fs::read_dir(&baked_dir).map_err(|e| Error::io(&baked_dir, e))?.flatten() {
        if !baked.contains(&entry.path()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    index.prune_uncached(unix_now() - UNCACHED_TTL)?;
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
