//! Narinfo lookups: the cache index first, then the upstreams — one upstream request per hash
//! at a time, under the caps, with upstream trouble retried within the request.
//!
//! Nix remembers a narinfo 404 for an hour (`narinfo-cache-negative-ttl`), so a miss that only
//! reflects a blip costs a node that path for an hour. A lookup therefore answers "absent"
//! only when every upstream said so cleanly; on trouble (a timeout, a reset, a 5xx, a
//! truncated answer) it asks the other upstreams, then the failing one again after a short
//! back-off, until its [`ProxyConfig::retry_budget`](crate::ProxyConfig::retry_budget) is
//! spent, and only then answers [`Lookup::Unavailable`], which is never remembered.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use formats::compression::nar_file_name;
use formats::{Compression, NarInfo, StorePath, StorePathHash};
use tokio::time::Instant;

use crate::breaker::Gate;
use crate::error::FetchError;
use crate::{blocking, fetch, guix, unix_now, Accepted, Error, Flavour, Inner, Proxied, Proxy, Upstream};

/// What the proxy can say about a path's narinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    /// Found, trusted and usable.
    Found(T),
    /// No upstream has it, or none offers it in a form subserve can trust and verify: a real
    /// miss.
    Absent,
    /// Not known now: upstream trouble lasted longer than the retry budget, or the request
    /// stayed over a cap. Nothing is remembered; asking again later may find it.
    Unavailable,
}

impl<T> Lookup<T> {
    /// The narinfo, if found.
    pub fn found(self) -> Option<T> {
        match self {
            Lookup::Found(t) => Some(t),
            Lookup::Absent | Lookup::Unavailable => None,
        }
    }

    /// Maps what was found; `None` from `f` makes it absent.
    pub(crate) fn and_then<U>(self, f: impl FnOnce(T) -> Option<U>) -> Lookup<U> {
        match self {
            Lookup::Found(t) => f(t).map_or(Lookup::Absent, Lookup::Found),
            Lookup::Absent => Lookup::Absent,
            Lookup::Unavailable => Lookup::Unavailable,
        }
    }
}

/// The first pause before asking a failing upstream again; it doubles up to [`MAX_BACK_OFF`].
const FIRST_BACK_OFF: Duration = Duration::from_millis(100);
/// The longest pause between two rounds of asking.
const MAX_BACK_OFF: Duration = Duration::from_secs(1);

pub(crate) enum Cached {
    Hit(Proxied),
    Negative,
    Miss,
}

/// How one upstream answered one request.
enum Asked {
    /// A trusted narinfo.
    Found(Accepted),
    /// A clean miss: 404 or an answer subserve cannot use.
    Miss,
    /// An answer that will not get better by asking again: untrusted, garbage.
    Refused,
    /// Trouble that may pass: worth another try.
    Trouble,
}

impl Proxy {
    /// Looks `hash` up in the index, then upstream, one upstream request per hash at a time,
    /// within `client`'s cap. Without upstreams (a cache area used for baking only) nothing is
    /// proxied.
    pub(crate) async fn lookup(&self, hash: &StorePathHash, client: Option<IpAddr>) -> Lookup<Proxied> {
        if self.inner.upstreams.is_empty() {
            return Lookup::Absent;
        }
        let key = hash.to_string();
        let (inner, k) = (Arc::clone(&self.inner), key.clone());
        match blocking(move || inner.cached_narinfo(&k)).await {
            Cached::Hit(proxied) => return Lookup::Found(proxied),
            Cached::Negative => return Lookup::Absent,
            Cached::Miss => {}
        }
        let deadline = Instant::now() + self.inner.config.retry_budget;
        // Held while this request waits for any fetch of this hash, its own or another's.
        let Some(_slot) = self.inner.caps.client(client, deadline).await else {
            self.inner.stats.over_cap.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?client, %hash, "over the per-client cap of upstream narinfo lookups");
            return Lookup::Unavailable;
        };
        let cell = {
            let mut flights = self.inner.narinfo_flights.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(flights.entry(key.clone()).or_default())
        };
        let result = cell
            .get_or_init(|| async {
                // A flight that finished just before this one started has filled the index.
                let (inner, k) = (Arc::clone(&self.inner), key.clone());
                match blocking(move || inner.cached_narinfo(&k)).await {
                    Cached::Hit(proxied) => Lookup::Found(proxied),
                    Cached::Negative => Lookup::Absent,
                    Cached::Miss => self.inner.fetch_narinfo(hash, deadline).await,
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
}

impl Inner {
    pub(crate) fn cached_narinfo(&self, hash: &str) -> Cached {
        let now = unix_now();
        match self.index.get(hash) {
            Ok(Some(entry)) => {
                if let Some(proxied) = self.parse_entry(&entry) {
                    let _ = self.index.touch(hash, now);
                    self.stats.narinfo_hits.fetch_add(1, Ordering::Relaxed);
                    return Cached::Hit(proxied);
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

    /// Asks the upstreams in priority order; the first trusted, usable answer wins. Upstreams
    /// in trouble are asked again, after the others, until `deadline`; a miss is remembered
    /// only when every upstream answered cleanly.
    async fn fetch_narinfo(self: &Arc<Self>, hash: &StorePathHash, deadline: Instant) -> Lookup<Proxied> {
        let Some(_fetching) = self.caps.fetch(deadline).await else {
            self.stats.over_cap.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%hash, "too many upstream narinfo fetches in progress: answering absent for now");
            return Lookup::Unavailable;
        };
        // The upstreams still to be asked, by priority, and whether this request asked each yet.
        let mut pending: Vec<(usize, bool)> = (0..self.upstreams.len()).map(|i| (i, false)).collect();
        let (mut refused, mut skipped) = (false, false);
        let mut back_off = FIRST_BACK_OFF;
        loop {
            let mut again = Vec::new();
            let mut next_probe: Option<Instant> = None;
            for (i, asked) in pending {
                let up = &self.upstreams[i];
                let now = Instant::now();
                match up.breaker.gate(now.into_std()) {
                    Gate::Go => {}
                    Gate::Wait(at) => {
                        let at = Instant::from_std(at);
                        next_probe = Some(next_probe.map_or(at, |n| n.min(at)));
                        again.push((i, asked));
                        continue;
                    }
                    Gate::Skip => {
                        skipped = true;
                        continue;
                    }
                }
                // A first try gets the upstream's whole timeout; a retry what the budget has left.
                let timeout = if asked {
                    up.config.timeout.min(deadline.saturating_duration_since(now))
                } else {
                    up.config.timeout
                };
                if timeout.is_zero() {
                    again.push((i, asked));
                    continue;
                }
                if asked {
                    self.stats.narinfo_retries.fetch_add(1, Ordering::Relaxed);
                }
                match self.ask(up, hash, timeout).await {
                    Asked::Found(accepted) => return self.remember(hash, accepted).await,
                    Asked::Miss => {}
                    Asked::Refused => refused = true,
                    Asked::Trouble => again.push((i, true)),
                }
            }
            if again.is_empty() {
                if skipped {
                    return Lookup::Unavailable;
                }
                // Untrusted or garbled answers are not remembered as misses: a key or a
                // fix upstream may change them.
                if !refused {
                    self.remember_miss(hash).await;
                }
                return Lookup::Absent;
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::info!(%hash, "upstream trouble outlasted the retry budget: answering absent for now");
                return Lookup::Unavailable;
            }
            let wake = next_probe.map_or(now + back_off, |p| p.min(now + back_off)).min(deadline);
            tokio::time::sleep_until(wake).await;
            back_off = (back_off * 2).min(MAX_BACK_OFF);
            pending = again;
        }
    }

    /// One request to one upstream, its outcome recorded in the upstream's breaker.
    async fn ask(&self, up: &Upstream, hash: &StorePathHash, timeout: Duration) -> Asked {
        self.stats.narinfo_fetches.fetch_add(1, Ordering::Relaxed);
        let result = fetch::narinfo(&self.client, &up.config, hash, timeout).await.and_then(|found| match found {
            None => Ok(None),
            Some(text) => self.accept(up, hash, &text).map(Some),
        });
        match result {
            Ok(None) => {
                up.breaker.success();
                Asked::Miss
            }
            Ok(Some(accepted)) => {
                up.breaker.success();
                Asked::Found(accepted)
            }
            Err(FetchError::Unusable(why)) => {
                // A healthy upstream with nothing we can offer: as good as a miss.
                up.breaker.success();
                tracing::info!(upstream = %up.config.url, %hash, %why, "upstream narinfo not usable");
                Asked::Miss
            }
            Err(e) => {
                if matches!(e, FetchError::Untrusted) {
                    self.stats.untrusted.fetch_add(1, Ordering::Relaxed);
                }
                self.failed(up, &format!("{hash}.narinfo"), &e);
                if e.is_transient() {
                    Asked::Trouble
                } else {
                    Asked::Refused
                }
            }
        }
    }

    /// Checks an upstream narinfo in the proxy's flavour and moves its NAR URL into ours.
    fn accept(&self, up: &Upstream, hash: &StorePathHash, text: &str) -> Result<Accepted, FetchError> {
        match self.config.flavour {
            Flavour::Nix => {
                let info = NarInfo::parse(text).map_err(|e| FetchError::Garbage(e.to_string()))?;
                let (info, upstream_url) = self.accept_nix(up, hash, info)?;
                let nar_file = info.url.trim_start_matches("nar/").to_owned();
                Ok(Accepted { text: info.render(), nar_file, upstream_url, proxied: Proxied::Nix(Box::new(info)) })
            }
            Flavour::Guix => {
                let (proxied, upstream_url) = guix::accept(&up.config, &self.config.store_dir, hash, text)?;
                let nar_file = proxied.nar_file().unwrap_or_default().to_owned();
                let text = proxied.render(&proxied.upstream_signature);
                Ok(Accepted { text, nar_file, upstream_url, proxied: Proxied::Guix(Box::new(proxied)) })
            }
        }
    }

    /// Checks a Nix narinfo and rewrites its URL into our namespace.
    fn accept_nix(
        &self,
        up: &Upstream,
        hash: &StorePathHash,
        mut info: NarInfo,
    ) -> Result<(NarInfo, String), FetchError> {
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

    async fn remember(self: &Arc<Self>, hash: &StorePathHash, accepted: Accepted) -> Lookup<Proxied> {
        let this = Arc::clone(self);
        let h = hash.to_string();
        let Accepted { proxied, text, nar_file, upstream_url } = accepted;
        let stored = blocking(move || {
            let now = unix_now();
            this.index.put_narinfo(&h, &text, &nar_file, &upstream_url, now)?;
            if now - this.last_prune.swap(now, Ordering::Relaxed) >= crate::PRUNE_EVERY {
                let pruned = this.index.prune_uncached(now - crate::UNCACHED_TTL)?;
                if pruned > 0 {
                    tracing::info!(pruned, "forgot narinfos whose NAR was not fetched in 30 days");
                }
            }
            Ok::<_, Error>(())
        })
        .await;
        if let Err(e) = stored {
            tracing::error!(error = %e, "cache index");
        }
        Lookup::Found(proxied)
    }

    /// Records that no upstream has `hash`, for the negative TTL.
    async fn remember_miss(self: &Arc<Self>, hash: &StorePathHash) {
        let expires = unix_now() + self.config.negative_ttl.as_secs() as i64;
        let this = Arc::clone(self);
        let h = hash.to_string();
        let _ = blocking(move || this.index.put_negative(&h, expires)).await;
    }
}
