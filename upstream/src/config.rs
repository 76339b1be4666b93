//! What the proxy is told: which kind of binary cache it proxies (Nix or Guix), its upstreams
//! with the keys trusted for each, and its cache directory. Plain data; the server fills it.

use std::path::PathBuf;
use std::time::Duration;

use formats::Dialect;
use signing::{GuixPublicKey, PublicKey};

use crate::CacheConfig;

/// The public cache of NixOS, the default upstream.
pub const CACHE_NIXOS_ORG: &str = "https://cache.nixos.org";
/// The key cache.nixos.org signs with.
pub const CACHE_NIXOS_ORG_KEY: &str = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

/// The Guix project's build farm behind `ci.guix.gnu.org` (formerly berlin.guix.gnu.org).
pub const GUIX_CI: &str = "https://ci.guix.gnu.org";
/// The key ci.guix.gnu.org signs with (Guix's `etc/substitutes/ci.guix.gnu.org.pub`).
pub const GUIX_CI_KEY: &str =
    "(public-key (ecc (curve Ed25519) (q #8D156F295D24B0D9A86FA5741A840FF2D24F60F7B6C4134814AD55625971B394#)))";
/// The Guix project's second build farm, asked first by Guix clients.
pub const GUIX_BORDEAUX: &str = "https://bordeaux.guix.gnu.org";
/// The key bordeaux.guix.gnu.org signs with (Guix's `etc/substitutes/bordeaux.guix.gnu.org.pub`).
pub const GUIX_BORDEAUX_KEY: &str =
    "(public-key (ecc (curve Ed25519) (q #7D602902D3A2DBB83F8A0FB98602A754C5493B0B778C8D1DD4E0F41DE14DE34F#)))";

/// The keys an upstream's narinfos are trusted under. An upstream's dialect is its keys'
/// kind, so a Nix upstream with Guix keys cannot be written; a proxy refuses upstreams of
/// the other dialect when it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Nix keys: a narinfo is trusted when one of its `Sig:` lines verifies under one (or it
    /// has a `CA` field).
    Nix(Vec<PublicKey>),
    /// Guix ACL keys: a narinfo is trusted when its one `Signature:` verifies under one.
    Guix(Vec<GuixPublicKey>),
}

impl Trust {
    /// The dialect of these keys, and so of the upstream.
    pub fn dialect(&self) -> Dialect {
        match self {
            Trust::Nix(_) => Dialect::Nix,
            Trust::Guix(_) => Dialect::Guix,
        }
    }

    /// Whether there is no key at all.
    pub fn is_empty(&self) -> bool {
        match self {
            Trust::Nix(keys) => keys.is_empty(),
            Trust::Guix(keys) => keys.is_empty(),
        }
    }
}

/// One upstream cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Base URL, without a trailing slash.
    pub url: String,
    /// The keys whose signatures make its narinfos trusted; their kind is its dialect.
    pub trust: Trust,
    /// Lower is asked first.
    pub priority: i32,
    /// Deadline for connecting and receiving response headers (and a whole narinfo).
    pub timeout: Duration,
}

impl UpstreamConfig {
    /// The default [`UpstreamConfig::timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
}

/// Everything the proxy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Nix or Guix: the narinfo format, how trust is decided, the NAR URL layout.
    pub dialect: Dialect,
    /// The upstreams, in any order (sorted by priority on open).
    pub upstreams: Vec<UpstreamConfig>,
    /// The cache area's directory ([`CacheConfig::dir`]).
    pub cache_dir: PathBuf,
    /// Cached NAR bytes beyond which least-recently-used entries are evicted
    /// ([`CacheConfig::max_size`]).
    pub max_size: u64,
    /// How long a path no upstream has stays a known miss.
    pub negative_ttl: Duration,
    /// The store dir narinfos must be under (`/nix/store`, `/gnu/store`).
    pub store_dir: String,
    /// A NAR download with no new byte for this long is abandoned.
    pub stall_timeout: Duration,
    /// How often an upstream whose breaker opened (after repeated failures) is probed again;
    /// between probes it is skipped.
    pub breaker_cool_down: Duration,
    /// How long a narinfo request may spend on upstream trouble before it answers "absent for
    /// now" ([`Lookup::Unavailable`](crate::Lookup::Unavailable)): waiting in line for a fetch
    /// slot, retrying upstreams that failed (after a back-off), waiting for an open breaker's
    /// probe. Measured from the start of the request; a first try at each upstream still gets
    /// that upstream's whole `timeout`. Nix waits minutes for a narinfo, so a few seconds here
    /// hide an upstream blip from the nodes.
    pub retry_budget: Duration,
    /// While an upstream has been failing for less than this, a request that finds its breaker
    /// open waits (within the retry budget) for the next probe; after that, it answers at
    /// once, so a long outage costs the nodes no latency.
    pub outage_patience: Duration,
    /// Upstream narinfo lookups in progress at once, over all clients; more wait in line.
    pub max_narinfo_fetches: usize,
    /// Narinfo lookups that need an upstream in progress at once per client IP address
    /// (waiting for another client's fetch of the same path included); more wait in line.
    pub max_narinfo_fetches_per_client: usize,
}

impl ProxyConfig {
    /// A proxy of `dialect` for the store at `store_dir`, caching in `cache_dir`, without
    /// upstreams, and every size, timing and cap at its default: the caller sets what it
    /// configures, the defaults live here.
    pub fn new(dialect: Dialect, store_dir: impl Into<String>, cache_dir: PathBuf) -> Self {
        ProxyConfig {
            dialect,
            upstreams: Vec::new(),
            cache_dir,
            max_size: Self::DEFAULT_MAX_SIZE,
            negative_ttl: Self::DEFAULT_NEGATIVE_TTL,
            store_dir: store_dir.into(),
            stall_timeout: Self::DEFAULT_STALL_TIMEOUT,
            breaker_cool_down: Self::DEFAULT_BREAKER_COOL_DOWN,
            retry_budget: Self::DEFAULT_RETRY_BUDGET,
            outage_patience: Self::DEFAULT_OUTAGE_PATIENCE,
            max_narinfo_fetches: Self::DEFAULT_MAX_NARINFO_FETCHES,
            max_narinfo_fetches_per_client: Self::DEFAULT_MAX_NARINFO_FETCHES_PER_CLIENT,
        }
    }

    /// The default [`ProxyConfig::max_size`]: 10 GiB.
    pub const DEFAULT_MAX_SIZE: u64 = 10 << 30;
    /// The default [`ProxyConfig::negative_ttl`].
    pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(300);
    /// The default [`ProxyConfig::stall_timeout`]: a minute without a byte, five times less
    /// than Nix's own `stalled-download-timeout`.
    pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
    /// The default [`ProxyConfig::breaker_cool_down`].
    pub const DEFAULT_BREAKER_COOL_DOWN: Duration = Duration::from_secs(2);
    /// The default [`ProxyConfig::retry_budget`]: well below Nix's own patience (its
    /// `stalled-download-timeout` is 300 s), above a typical blip.
    pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(5);
    /// The default [`ProxyConfig::outage_patience`].
    pub const DEFAULT_OUTAGE_PATIENCE: Duration = Duration::from_secs(60);
    /// The default [`ProxyConfig::max_narinfo_fetches`].
    pub const DEFAULT_MAX_NARINFO_FETCHES: usize = 256;
    /// The default [`ProxyConfig::max_narinfo_fetches_per_client`]: above the 25 connections
    /// a Nix client opens at most (`http-connections`), so a real node never waits in line.
    pub const DEFAULT_MAX_NARINFO_FETCHES_PER_CLIENT: usize = 32;

    /// The cache area this proxy keeps its entries in: the same for a baker of the store.
    pub fn cache(&self) -> CacheConfig {
        CacheConfig {
            dir: self.cache_dir.clone(),
            max_size: self.max_size,
            store_dir: self.store_dir.clone(),
            dialect: self.dialect,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_guix_keys_parse() {
        for key in [GUIX_CI_KEY, GUIX_BORDEAUX_KEY] {
            let q: String = GuixPublicKey::parse(key).unwrap().q().iter().map(|b| format!("{b:02X}")).collect();
            assert!(key.contains(&format!("(q #{q}#)")), "{key}");
        }
        assert_ne!(GuixPublicKey::parse(GUIX_CI_KEY).unwrap(), GuixPublicKey::parse(GUIX_BORDEAUX_KEY).unwrap());
    }
}
