//! The cache area: one directory on local disk that holds the NARs the proxy fetched and the
//! NARs the server baked, under one size limit, owned by one process.
//!
//! It exists apart from [`Proxy`](crate::Proxy) because baking needs it without proxying: a
//! server with no upstream still bakes its large local NARs here, and the baker never goes
//! through the proxy. The proxy, when there is one, stores its entries in the same area, so
//! proxied and baked files share one limit and one least-recently-used order.
//!
//! Layout: `lock` (the owner's lock, see `owner.rs`), `nix-cache-info` (the store dir this
//! area belongs to; another store's area is refused), `index.sqlite` (see `index.rs`),
//! `<hash>.narinfo` beside `nar/<file>` for proxied entries (a plain binary cache that any
//! web server could serve), `baked/<NarHash>.nar<ext>` for baked NARs, and `tmp/` for files
//! being written, cleared on open. A file reaches its final name only by an atomic rename
//! after it was checked and synced, and the index records it last; eviction removes the
//! index row first. Opening the area repairs what a crash left (see `recover.rs`).
//!
//! # The interface, and what a second backend would provide
//!
//! This type is the seam where another storage backend (an object store such as S3) would
//! plug in. Everything outside this module uses only these operations:
//! - open: take ownership (one process per area), check the store dir, recover;
//! - baked files: [`CacheArea::baked`] (look up by NarHash and compression, marking it
//!   used), [`CacheArea::temp_file`] (where a bake writes) and [`CacheArea::commit_baked`]
//!   (move a checked file into place and record it);
//! - proxied entries, for the proxy only: read, write and touch an entry (its narinfo text,
//!   NAR file name, upstream URL, whether the NAR is cached), remember and ask about a miss,
//!   a temp file for a download, and `commit_nar` (move the verified NAR into place, write
//!   its narinfo, record it);
//! - eviction after every commit, least recently used first over both kinds, down to
//!   [`CacheConfig::max_size`].
//!
//! A second backend would also have to answer how a committed file is served: today a
//! [`Baked`] and a cached proxied NAR are local paths the server opens (with `Range`); an
//! object store would hand out a reader or a URL instead. Writes would still go to a local
//! temp file first, since a NAR is verified (or a bake checked) before it is committed.

mod index;
mod owner;
mod recover;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use formats::{Compression, NarHash, StorePathHash};

pub(crate) use index::Entry;
use index::{Index, Victim};

use crate::{guix, Dialect, Error};

/// Where the cache area is and what it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// The directory (created if missing).
    pub dir: PathBuf,
    /// Cached bytes, proxied and baked together, beyond which the least recently used
    /// entries are evicted.
    pub max_size: u64,
    /// The store dir the area serves (`/nix/store`, `/gnu/store`); an area written for
    /// another is refused.
    pub store_dir: String,
    /// The flavour of the proxied entries it holds: entries of the other flavour are
    /// dropped on open. Baked files have no flavour.
    pub dialect: Dialect,
}

/// What a cache area holds (see [`CacheArea::usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of cached NAR files, proxied and baked.
    pub bytes: u64,
    /// Cached NAR files, proxied and baked.
    pub files: u64,
    /// The size limit beyond which the least recently used files are evicted.
    pub max_size: u64,
    /// Upstream misses remembered and not yet expired (the negative cache).
    pub misses: u64,
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

/// The cache area: cheap to clone, shared by the proxy, the baker and every request.
#[derive(Clone)]
pub struct CacheArea {
    inner: Arc<Area>,
}

struct Area {
    config: CacheConfig,
    index: Index,
    /// Entries evicted to respect the size limit.
    evictions: AtomicU64,
    /// Files and entries removed by crash recovery when the area was opened.
    recovered: u64,
    /// When narinfo-only entries were last pruned (unix seconds).
    last_prune: AtomicI64,
    /// The lock that makes this process the area's only user, held as long as any clone.
    _owner: owner::Owner,
}

impl std::fmt::Debug for CacheArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheArea").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

/// A narinfo whose NAR was never fetched is forgotten after this long unused: as long as Nix
/// keeps a positive narinfo (`narinfo-cache-positive-ttl`, 30 days). A NAR request for a
/// forgotten entry asks the upstream for the narinfo again.
const UNCACHED_TTL: i64 = 30 * 86400;
/// How often narinfo-only entries are pruned.
const PRUNE_EVERY: i64 = 3600;

fn unix_now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Where a baked NAR lives, relative to the area: content-addressed by NarHash and
/// compression, so one file serves every store path (and store) with that NAR.
fn baked_file(nar_hash: &str, compression: Compression) -> PathBuf {
    Path::new("baked").join(format!("{nar_hash}.nar{}", compression.extension()))
}

impl CacheArea {
    /// Opens (or creates) the area and its index, after taking its lock and checking that it
    /// belongs to this store dir, and clears what a crash left: files in `tmp/`, entries
    /// whose file is gone, files no entry names, and entries of the other flavour.
    pub fn open(config: CacheConfig) -> Result<Self, Error> {
        let dir = &config.dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let owner = owner::Owner::lock(dir)?;
        owner::check_store_dir(dir, &config.store_dir)?;
        let mut subdirs = vec!["nar".to_owned(), "tmp".into(), "baked".into()];
        if config.dialect == Dialect::Guix {
            subdirs.extend(guix::nar_subdirectories().map(|c| format!("nar/{c}")));
        }
        for sub in subdirs {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        let info = dir.join("nix-cache-info");
        std::fs::write(&info, format!("StoreDir: {}\nWantMassQuery: 1\nPriority: 50\n", config.store_dir))
            .map_err(|e| Error::io(&info, e))?;
        let index = Index::open(&dir.join("index.sqlite"), config.dialect)?;
        let recovered = recover::recover(dir, &index)?;
        if recovered > 0 {
            tracing::info!(dir = %dir.display(), removed = recovered, "cache area: cleaned up after an unclean stop");
        }
        index.prune_uncached(unix_now() - UNCACHED_TTL)?;
        index.prune_negative(unix_now())?;
        let area = Area {
            config,
            index,
            evictions: AtomicU64::new(0),
            recovered,
            last_prune: AtomicI64::new(0),
            _owner: owner,
        };
        Ok(Self { inner: Arc::new(area) })
    }

    /// What the area was opened with.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// How many entries, proxied or baked, were evicted to respect the size limit.
    pub fn evictions(&self) -> u64 {
        self.inner.evictions.load(Ordering::Relaxed)
    }

    /// Files and entries crash recovery removed when the area was opened (temp files of
    /// downloads and bakes cut short, entries whose file is gone, files no entry names).
    pub fn recovered(&self) -> u64 {
        self.inner.recovered
    }

    /// What the area holds now, against its limit. Blocking (three SQLite reads).
    pub fn usage(&self) -> Result<Usage, Error> {
        let index = &self.inner.index;
        Ok(Usage {
            bytes: index.cached_bytes()?,
            files: index.cached_files_count()?,
            max_size: self.inner.config.max_size,
            misses: index.misses_count(unix_now())?,
        })
    }

    /// The baked file of a NAR in `compression`, if one is ready; marks it used. Blocking
    /// (one indexed SQLite read and write): call it from a blocking thread.
    pub fn baked(&self, nar_hash: &NarHash, compression: Compression) -> Option<Baked> {
        let key = nar_hash.to_nix32();
        let (file_size, file_hash) = match self.inner.index.get_baked(&key, compression.name(), unix_now_ms()) {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "cache index");
                return None;
            }
        };
        let file_hash = NarHash::parse(&file_hash).ok()?;
        Some(Baked { path: self.inner.config.dir.join(baked_file(&key, compression)), file_size, file_hash })
    }

    /// A fresh path in `tmp/`, on the area's filesystem, for a file being written: a bake or
    /// a download, named after `what` for whoever looks. `tmp/` is cleared on open, so a
    /// crash leaves nothing behind.
    pub fn temp_file(&self, what: &str) -> PathBuf {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        // Guix NAR files live in a subdirectory per compression; temp files all sit in tmp/.
        let what = what.replace('/', "_");
        self.inner.config.dir.join("tmp").join(format!("{what}.{}.{n}", std::process::id()))
    }

    /// Moves a finished, checked and synced bake from `temp` (a [`CacheArea::temp_file`])
    /// into place, records it, and evicts what no longer fits. Blocking.
    pub fn commit_baked(
        &self,
        nar_hash: &NarHash,
        compression: Compression,
        temp: &Path,
        file_size: u64,
        file_hash: NarHash,
    ) -> Result<Baked, Error> {
        let key = nar_hash.to_nix32();
        let path = self.inner.config.dir.join(baked_file(&key, compression));
        std::fs::rename(temp, &path).map_err(|e| Error::io(&path, e))?;
        self.inner.index.put_baked(&key, compression.name(), file_size, &file_hash.to_string(), unix_now_ms())?;
        self.inner.evict();
        Ok(Baked { path, file_size, file_hash })
    }

    /// The proxied entry of `hash` (a store path hash part), of the area's flavour.
    pub(crate) fn entry(&self, hash: &StorePathHash) -> Result<Option<Entry>, Error> {
        self.inner.index.get(hash.as_str())
    }

    /// Marks the proxied entry of `hash` used, for eviction.
    pub(crate) fn touch(&self, hash: &StorePathHash) -> Result<(), Error> {
        self.inner.index.touch(hash.as_str(), unix_now())
    }

    /// Whether `hash` is a recent miss.
    pub(crate) fn is_negative(&self, hash: &StorePathHash) -> Result<bool, Error> {
        self.inner.index.is_negative(hash.as_str(), unix_now())
    }

    /// Remembers that no upstream has `hash`, for `ttl`.
    pub(crate) fn put_negative(&self, hash: &StorePathHash, ttl: Duration) -> Result<(), Error> {
        self.inner.index.put_negative(hash.as_str(), unix_now() + ttl.as_secs() as i64)
    }

    /// Forgets every remembered miss: for new upstreams, which may have what the old ones
    /// lacked.
    pub fn forget_misses(&self) -> Result<(), Error> {
        self.inner.index.clear_negative()
    }

    /// Records a verified narinfo whose NAR is not fetched yet (its `text` as it will be
    /// written beside the NAR, the NAR's file name under `nar/`, where it is downloaded
    /// from) and clears a miss; once an hour also forgets narinfo-only entries unused for
    /// 30 days.
    pub(crate) fn put_narinfo(
        &self,
        hash: &StorePathHash,
        text: &str,
        nar_file: &str,
        upstream_url: &str,
    ) -> Result<(), Error> {
        let now = unix_now();
        self.inner.index.put_narinfo(hash.as_str(), text, nar_file, upstream_url, now)?;
        if now - self.inner.last_prune.swap(now, Ordering::Relaxed) >= PRUNE_EVERY {
            let pruned = self.inner.index.prune_uncached(now - UNCACHED_TTL)?;
            if pruned > 0 {
                tracing::info!(pruned, "forgot narinfos whose NAR was not fetched in 30 days");
            }
        }
        Ok(())
    }

    /// Where the NAR file of a proxied entry lives once committed.
    pub(crate) fn nar_path(&self, nar_file: &str) -> PathBuf {
        self.inner.config.dir.join("nar").join(nar_file)
    }

    /// Commits a verified, synced download of the entry `hash`: renames `temp` to its
    /// [`CacheArea::nar_path`], writes the entry's narinfo beside it, records the NAR as
    /// cached with `size` bytes, and evicts what no longer fits. Only the rename can fail
    /// the commit; a narinfo file or index row that cannot be written is logged (the file is
    /// in place, and recovery reconciles them on the next open). Blocking.
    pub(crate) fn commit_nar(
        &self,
        hash: &StorePathHash,
        temp: &Path,
        entry: &Entry,
        size: u64,
    ) -> std::io::Result<()> {
        let final_path = self.nar_path(&entry.nar_file);
        std::fs::rename(temp, &final_path)?;
        if let Some(dir) = final_path.parent() {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        let path = self.inner.config.dir.join(format!("{hash}.narinfo"));
        if let Err(e) = write_atomically(&path, entry.narinfo.as_bytes()) {
            tracing::error!(path = %path.display(), error = %e, "cannot write narinfo");
        }
        if let Err(e) = self.inner.index.set_nar_cached(hash.as_str(), size, unix_now()) {
            tracing::error!(error = %e, "cache index");
        }
        self.inner.evict();
        Ok(())
    }
}

impl Area {
    /// Removes least-recently-used entries, proxied (narinfo and NAR together) or baked,
    /// until the cached bytes fit the limit. Entries being downloaded or baked are not in the
    /// index as cached, so never chosen.
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
                        let _ = std::fs::remove_file(self.config.dir.join(format!("{hash}.narinfo")));
                        let _ = std::fs::remove_file(self.config.dir.join("nar").join(&nar_file));
                        size
                    }
                    Victim::Baked { nar_hash, compression, size } => {
                        if self.index.remove_baked(&nar_hash, &compression).is_err() {
                            return;
                        }
                        if let Ok(c) = compression.parse::<Compression>() {
                            let _ = std::fs::remove_file(self.config.dir.join(baked_file(&nar_hash, c)));
                        }
                        tracing::info!(nar_hash = %nar_hash, %compression, size, "evicted a baked NAR");
                        size
                    }
                };
                total = total.saturating_sub(size);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Writes `data` to `path` through a synced temp file beside it and a rename, so a reader
/// sees the old file or the whole new one.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("narinfo.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
