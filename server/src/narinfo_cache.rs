//! A small, short-lived cache of the narinfos of local paths, rendered and signed, so that a
//! client asking for the same path again (or many clients asking for one closure) costs
//! neither a signature, nor a trip to the blocking pool, nor a DB read.
//!
//! Entries are keyed by the store path hash, bounded in total size, evicted by quick_cache's
//! S3-FIFO policy, and trusted for [`TTL`] only: signatures added to the DB, and paths that
//! were deleted or became valid, show within that time. Within it, a hit also skips the
//! on-disk check of the lookup (a path deleted by the garbage collector stays advertised for
//! at most [`TTL`], the same race a client has anyway between narinfo and NAR, and which
//! Nix's own narinfo cache makes far longer). Misses are kept for at most [`NEGATIVE_TTL`].
//!
//! Only local answers are cached. Narinfos of the pull-through proxy are not (the proxy has
//! its own index); a cached local miss still lets the proxy be asked. Store errors are never
//! cached.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use formats::StorePathHash;
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use tokio::time::Instant;

/// How long a rendered narinfo is served from the cache.
pub const TTL: Duration = Duration::from_secs(60);
/// How long a miss is remembered (at most; also never longer than the configured negative TTL
/// clients are told). Short: a path that becomes valid should show almost at once.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Total size of the cached narinfo texts. A typical narinfo is 0.5–2 KiB, so this holds a
/// few thousand: several whole closures.
pub const CAPACITY_BYTES: u64 = 8 * 1024 * 1024;
/// Entries the cache expects to hold, for sizing its tables.
const ESTIMATED_ENTRIES: usize = 4096;
/// What a miss (or the key and bookkeeping of any entry) counts against the capacity.
const ENTRY_OVERHEAD: u64 = 128;

/// Rendered narinfos (or the fact that the store lacks the path) by store path hash.
pub struct NarinfoCache {
    entries: Option<Cache<StorePathHash, Entry, BodyWeighter>>,
    ttl: Duration,
    negative_ttl: Duration,
    /// Lookups answered from a fresh entry, and the others; kept across reloads (see
    /// [`NarinfoCache::reloaded`]) so that they only ever grow.
    counts: Arc<Counts>,
}

/// How often the cache answered.
#[derive(Debug, Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Clone)]
struct Entry {
    /// The narinfo text, or `None` for a path the store does not have.
    body: Option<Bytes>,
    expires: Instant,
    /// For a narinfo that depends on what is baked: the baker's generation it was rendered
    /// at; it is stale once the generation moves.
    baked_at: Option<u64>,
}

#[derive(Clone)]
struct BodyWeighter;

impl Weighter<StorePathHash, Entry> for BodyWeighter {
    fn weight(&self, key: &StorePathHash, entry: &Entry) -> u64 {
        ENTRY_OVERHEAD + key.as_str().len() as u64 + entry.body.as_ref().map_or(0, |b| b.len() as u64)
    }
}

impl NarinfoCache {
    /// A cache of up to `capacity_bytes` of narinfo text, keeping hits for `ttl` and misses for
    /// `negative_ttl`. A zero capacity or TTL turns that part off.
    pub fn new(capacity_bytes: u64, ttl: Duration, negative_ttl: Duration) -> Self {
        let entries = (capacity_bytes > 0 && (!ttl.is_zero() || !negative_ttl.is_zero()))
            .then(|| Cache::with_weighter(ESTIMATED_ENTRIES, capacity_bytes, BodyWeighter));
        Self { entries, ttl, negative_ttl, counts: Arc::default() }
    }

    /// The defaults: [`CAPACITY_BYTES`], [`TTL`], and misses for the shorter of
    /// [`NEGATIVE_TTL`] and `negative_ttl` (what clients are told to cache misses for).
    pub fn with_defaults(negative_ttl: Duration) -> Self {
        Self::new(CAPACITY_BYTES, TTL, NEGATIVE_TTL.min(negative_ttl))
    }

    /// A fresh entry for `hash`: `Some(Some(text))` for a path the store has, `Some(None)` for
    /// one it lacks; `None` if there is no fresh entry. `generation` is the baker's now (see
    /// [`NarinfoCache::insert`]).
    pub fn get(&self, hash: &StorePathHash, generation: u64) -> Option<Option<Bytes>> {
        let fresh = self.entries.as_ref().and_then(|entries| entries.get(hash)).and_then(|entry| {
            let current = entry.baked_at.is_none_or(|at| at == generation);
            (current && Instant::now() < entry.expires).then_some(entry.body)
        });
        let count = if fresh.is_some() { &self.counts.hits } else { &self.counts.misses };
        count.fetch_add(1, Ordering::Relaxed);
        fresh
    }

    /// Lookups answered from a fresh entry, and lookups that were not, since the process
    /// started.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (self.counts.hits.load(Ordering::Relaxed), self.counts.misses.load(Ordering::Relaxed))
    }

    /// An empty cache for a reloaded configuration (`negative_ttl`), counting on from this one.
    pub fn reloaded(&self, negative_ttl: Duration) -> Self {
        Self { counts: Arc::clone(&self.counts), ..Self::with_defaults(negative_ttl) }
    }

    /// Remembers the answer for `hash`: its narinfo text, or `None` if the store lacks it.
    /// `baked_at` is the baker's generation for a narinfo that names (or will name) a baked
    /// file: the entry lapses when a bake lands or a file is evicted.
    pub fn insert(&self, hash: &StorePathHash, body: Option<Bytes>, baked_at: Option<u64>) {
        let Some(entries) = &self.entries else {
            return;
        };
        let ttl = if body.is_some() { self.ttl } else { self.negative_ttl };
        if ttl.is_zero() {
            return;
        }
        entries.insert(hash.clone(), Entry { body, expires: Instant::now() + ttl, baked_at });
    }

    /// Entries held, fresh or not.
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, Cache::len)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the held entries count against the capacity, in bytes.
    pub fn weight(&self) -> u64 {
        self.entries.as_ref().map_or(0, Cache::weight)
    }
}

impl fmt::Debug for NarinfoCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NarinfoCache")
            .field("entries", &self.len())
            .field("weight", &self.weight())
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(text: &str) -> StorePathHash {
        StorePathHash::parse(text).unwrap()
    }

    fn h() -> StorePathHash {
        hash("i9pmrzmpshapij2kin22pff6fc2adavx")
    }

    #[tokio::test(start_paused = true)]
    async fn hits_last_the_ttl_and_misses_the_negative_ttl() {
        let cache = NarinfoCache::new(CAPACITY_BYTES, Duration::from_secs(60), Duration::from_secs(10));
        let absent = &hash("0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb");
        assert_eq!(cache.get(&h(), 0), None);
        cache.insert(&h(), Some(Bytes::from_static(b"StorePath: x\n")), None);
        cache.insert(absent, None, None);
        assert_eq!(cache.get(&h(), 0), Some(Some(Bytes::from_static(b"StorePath: x\n"))));
        assert_eq!(cache.get(absent, 0), Some(None));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(cache.get(absent, 0), None, "a miss expires after the negative TTL");
        assert!(cache.get(&h(), 0).is_some());
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(cache.get(&h(), 0), None, "a hit expires after the TTL");
        // A fresh answer replaces the expired one.
        cache.insert(&h(), Some(Bytes::from_static(b"StorePath: y\n")), None);
        assert_eq!(cache.get(&h(), 0), Some(Some(Bytes::from_static(b"StorePath: y\n"))));
    }

    #[test]
    fn the_total_size_is_bounded() {
        let capacity = 64 * 1024;
        let cache = NarinfoCache::new(capacity, TTL, NEGATIVE_TTL);
        let body = Bytes::from(vec![b'x'; 1000]);
        for i in 0..1000 {
            cache.insert(&hash(&format!("{i:032}")), Some(body.clone()), None);
        }
        assert!(cache.weight() <= capacity, "{} > {capacity}", cache.weight());
        let per_entry = ENTRY_OVERHEAD + 32 + 1000;
        assert!(cache.len() as u64 <= capacity / per_entry);
        // The most recent entry is there; the earliest ones were evicted.
        assert!(cache.get(&hash(&format!("{:032}", 999)), 0).is_some());
        assert!((0..1000).filter(|i| cache.get(&hash(&format!("{i:032}")), 0).is_none()).count() >= 900);
    }

    #[test]
    fn zero_ttls_turn_caching_off() {
        let cache = NarinfoCache::new(CAPACITY_BYTES, TTL, Duration::ZERO);
        cache.insert(&h(), None, None);
        assert_eq!(cache.get(&h(), 0), None, "no negative caching with a zero negative TTL");
        let cache = NarinfoCache::new(CAPACITY_BYTES, Duration::ZERO, Duration::ZERO);
        cache.insert(&h(), Some(Bytes::from_static(b"x")), None);
        assert_eq!((cache.get(&h(), 0), cache.len()), (None, 0));
    }

    #[test]
    fn a_narinfo_of_what_is_baked_lapses_when_the_generation_moves() {
        let cache = NarinfoCache::new(CAPACITY_BYTES, TTL, NEGATIVE_TTL);
        cache.insert(&h(), Some(Bytes::from_static(b"Compression: zstd\n")), Some(7));
        assert!(cache.get(&h(), 7).is_some());
        assert_eq!(cache.get(&h(), 8), None, "a bake landed or a file left since");
    }

    #[test]
    fn hits_and_misses_are_counted_on_across_reloads() {
        let cache = NarinfoCache::new(CAPACITY_BYTES, TTL, NEGATIVE_TTL);
        assert_eq!(cache.get(&h(), 0), None);
        cache.insert(&h(), Some(Bytes::from_static(b"x")), None);
        assert!(cache.get(&h(), 0).is_some());
        assert_eq!(cache.hits_and_misses(), (1, 1));
        let reloaded = cache.reloaded(NEGATIVE_TTL);
        assert_eq!(reloaded.get(&h(), 0), None, "a reloaded cache starts empty");
        assert_eq!(reloaded.hits_and_misses(), (1, 2));
    }
}
