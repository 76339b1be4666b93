//! Narinfo lookups upstream: the upstreams asked in priority order, under the fetch cap, with
//! upstream trouble retried within the request (the index and single flight come first, in
//! `flight.rs`).
//!
//! Nix remembers a narinfo 404 for an hour (`narinfo-cache-negative-ttl`), so a miss that only
//! reflects a blip costs a node that path for an hour. A lookup therefore answers "absent"
//! only when every upstream said so cleanly; on trouble (a timeout, a reset, a 5xx, a
//! truncated answer) it asks the other upstreams, then the failing one again after a short
//! back-off, until its [`ProxyConfig::retry_budget`](crate::ProxyConfig::retry_budget) is
//! spent, and only then answers [`Lookup::Unavailable`], which is never remembered.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use formats::StorePathHash;
use tokio::time::Instant;

use crate::breaker::Gate;
use crate::error::FetchError;
use crate::fetch::{self, Upstream};
use crate::flight::Proxied;
use crate::{guix, nix, Dialect, Inner};

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

/// An upstream narinfo that passed every check, and how the index records it.
pub(crate) struct Accepted {
    pub(crate) proxied: Proxied,
    /// The text stored in the index and, once the NAR is cached, in `<hash>.narinfo`.
    pub(crate) text: String,
    /// The NAR's file name under `nar/`.
    pub(crate) nar_file: String,
    /// Where the NAR is downloaded from.
    pub(crate) upstream_url: String,
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

impl Inner {
    /// Asks the upstreams in priority order; the first trusted, usable answer wins. Upstreams
    /// in trouble are asked again, after the others, until `deadline`; a miss is remembered
    /// only when every upstream answered cleanly.
    pub(crate) async fn fetch_narinfo(self: &Arc<Self>, hash: &StorePathHash, deadline: Instant) -> Lookup<Proxied> {
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
        up.counters.narinfo_fetches.fetch_add(1, Ordering::Relaxed);
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
                up.failed(&self.stats, &format!("{hash}.narinfo"), &e);
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
        let store_dir = &self.config.store_dir;
        match self.config.dialect {
            Dialect::Nix => {
                let (info, upstream_url) = nix::accept(&up.config, store_dir, hash, text)?;
                let nar_file = info.url.trim_start_matches("nar/").to_owned();
                Ok(Accepted { text: info.render(), nar_file, upstream_url, proxied: Proxied::Nix(Box::new(info)) })
            }
            Dialect::Guix => {
                let (proxied, upstream_url) = guix::accept(&up.config, store_dir, hash, text)?;
                let nar_file = proxied.nar_file().unwrap_or_default().to_owned();
                let text = proxied.render(&proxied.upstream_signature);
                Ok(Accepted { text, nar_file, upstream_url, proxied: Proxied::Guix(Box::new(proxied)) })
            }
        }
    }
}
