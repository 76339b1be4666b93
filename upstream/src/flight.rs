//! Narinfo single flight: a lookup is answered from the cache area's index when it can be,
//! and otherwise by one upstream lookup per hash at a time, however many clients ask at once;
//! what it finds (a trusted narinfo, or a clean miss) is remembered in the index.
//!
//! The flights table holds one cell per hash being looked up upstream; every request for that
//! hash waits on the same cell and gets a clone of its answer. The cell leaves the table when
//! its lookup ends, so an answer of "unavailable" (never remembered) is not handed to later
//! requests: they ask again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use formats::{NarInfo, StorePathHash};
use tokio::sync::OnceCell;

use crate::cache::Entry;
use crate::lookup::Accepted;
use crate::verify::Expected;
use crate::{blocking, guix, Dialect, GuixProxied, Inner, Lookup, Proxy};

/// A narinfo the proxy holds, in the proxy's flavour.
#[derive(Clone)]
pub(crate) enum Proxied {
    Nix(Box<NarInfo>),
    Guix(Box<GuixProxied>),
}

impl Proxied {
    /// Reads an index entry's text as a `dialect` proxy wrote it; `None` if it does not read.
    pub(crate) fn read(entry: &Entry, dialect: Dialect, store_dir: &str) -> Option<Self> {
        match dialect {
            Dialect::Nix => NarInfo::parse(&entry.narinfo).ok().map(|info| Proxied::Nix(Box::new(info))),
            Dialect::Guix => {
                guix::from_stored(&entry.narinfo, store_dir).ok().map(|proxied| Proxied::Guix(Box::new(proxied)))
            }
        }
    }

    /// What the download of its NAR must produce.
    pub(crate) fn expected(&self) -> Option<Expected> {
        match self {
            Proxied::Nix(info) => Some(Expected {
                compression: info.compression.known()?,
                nar_hash: info.nar_hash,
                nar_size: info.nar_size,
                file_hash: info.file_hash,
                file_size: info.file_size,
            }),
            Proxied::Guix(proxied) => proxied.expected(),
        }
    }
}

/// The lookups in flight, by store path hash.
pub(crate) type Flights = Mutex<HashMap<StorePathHash, Arc<OnceCell<Lookup<Proxied>>>>>;

/// What the index says of a hash.
enum Cached {
    Hit(Proxied),
    Negative,
    Miss,
}

impl Proxy {
    /// Looks `hash` up in the index, then upstream, one upstream request per hash at a time,
    /// within `client`'s cap. Without upstreams nothing is proxied.
    pub(crate) async fn lookup(&self, hash: &StorePathHash, client: Option<IpAddr>) -> Lookup<Proxied> {
        if self.inner.upstreams.is_empty() {
            return Lookup::Absent;
        }
        let key = hash.clone();
        match self.inner.cached(&key).await {
            Some(Cached::Hit(proxied)) => return Lookup::Found(proxied),
            Some(Cached::Negative) => return Lookup::Absent,
            Some(Cached::Miss) => {}
            None => return Lookup::Unavailable,
        }
        let deadline = tokio::time::Instant::now() + self.inner.config.retry_budget;
        // Held while this request waits for any fetch of this hash, its own or another's.
        let Some(_slot) = self.inner.caps.client(client, deadline).await else {
            self.inner.stats.over_cap.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?client, %hash, "over the per-client cap of upstream narinfo lookups");
            return Lookup::Unavailable;
        };
        let cell = {
            let mut flights = self.inner.flights.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(flights.entry(key.clone()).or_default())
        };
        let result = cell
            .get_or_init(|| async {
                // A flight that finished just before this one started has filled the index.
                match self.inner.cached(&key).await {
                    Some(Cached::Hit(proxied)) => Lookup::Found(proxied),
                    Some(Cached::Negative) => Lookup::Absent,
                    Some(Cached::Miss) => self.inner.fetch_narinfo(hash, deadline).await,
                    None => Lookup::Unavailable,
                }
            })
            .await
            .clone();
        let mut flights = self.inner.flights.lock().unwrap_or_else(|e| e.into_inner());
        if flights.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            flights.remove(&key);
        }
        result
    }
}

impl Inner {
    /// What the index says of `hash`, from a blocking thread; `None` if that thread failed.
    async fn cached(self: &Arc<Self>, hash: &StorePathHash) -> Option<Cached> {
        let (this, hash) = (Arc::clone(self), hash.clone());
        blocking(move || this.cached_blocking(&hash)).await
    }

    fn cached_blocking(&self, hash: &StorePathHash) -> Cached {
        match self.cache.entry(hash) {
            Ok(Some(entry)) => {
                if let Some(proxied) = Proxied::read(&entry, self.config.dialect, &self.config.store_dir) {
                    let _ = self.cache.touch(hash);
                    self.stats.narinfo_hits.fetch_add(1, Ordering::Relaxed);
                    return Cached::Hit(proxied);
                }
                Cached::Miss
            }
            Ok(None) => match self.cache.is_negative(hash) {
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

    /// Records an accepted narinfo in the index (its NAR not fetched yet) and answers it.
    pub(crate) async fn remember(self: &Arc<Self>, hash: &StorePathHash, accepted: Accepted) -> Lookup<Proxied> {
        let Accepted { proxied, text, nar_file, upstream_url } = accepted;
        let (cache, h) = (self.cache.clone(), hash.clone());
        match blocking(move || cache.put_narinfo(&h, &text, &nar_file, &upstream_url)).await {
            Some(Ok(())) | None => {}
            Some(Err(e)) => tracing::error!(error = %e, "cache index"),
        }
        Lookup::Found(proxied)
    }

    /// Records that no upstream has `hash`, for the negative TTL.
    pub(crate) async fn remember_miss(self: &Arc<Self>, hash: &StorePathHash) {
        let (cache, h, ttl) = (self.cache.clone(), hash.clone(), self.config.negative_ttl);
        let _ = blocking(move || cache.put_negative(&h, ttl)).await;
    }
}
