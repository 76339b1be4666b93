//! What every request handler shares: the store, the signing keys and the serving policy.

use std::sync::Arc;

use formats::Dialect;
use signing::{GuixSecretKey, SecretKey};
use store_reader::Store;

use crate::admission::Admission;
use crate::bake::Baker;
use crate::compression::Compression;

use crate::narinfo_cache::NarinfoCache;
use crate::settings::StoreSettings;

/// Shared, read-only state of a running server.
#[derive(Debug)]
pub struct AppState {
    /// How the store is served, as resolved from flags, environment and file: its prefix,
    /// dialect, offered compressions, TTLs, levels, priority, log dir.
    pub settings: StoreSettings,
    /// The store being served (shared with the baking of its roots).
    pub store: Arc<Store>,
    /// The keys narinfos are signed with, of the store's dialect.
    pub signer: Signer,
    /// This host's name, written into Guix `Signature:` lines.
    pub host: String,
    /// The cache area, where baked NARs and proxied ones are kept: present when baking or
    /// proxying is on.
    pub cache: Option<upstream::CacheArea>,
    /// The pull-through proxy for paths the store lacks, keeping its entries in `cache`:
    /// present only with upstreams.
    pub proxy: Option<upstream::Proxy>,
    /// Background compression of large local NARs into `cache`, if enabled.
    pub baker: Option<Arc<Baker>>,
    /// Caps on concurrent NAR bodies, with their queues, shared by every served store (see
    /// `crate::admission`).
    pub admission: Arc<Admission>,
    /// Rendered, signed narinfos of local paths, for a short while (see `crate::narinfo_cache`).
    pub narinfo_cache: NarinfoCache,
    /// Recent `.ls` listings (see `routes::listing`).
    pub listings: crate::routes::ListingCache,
    /// Histogram `subserve_store_db_lookup_seconds`: how long store DB lookups take (shared
    /// with the states of reloaded configurations, so that it only grows).
    pub db_lookups: prometheus_client::metrics::histogram::Histogram,
}

/// A new histogram for [`AppState::db_lookups`]: 10 µs to about 5 s.
pub fn db_lookup_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_01, 2.0, 20,
    ))
}

/// The keys a store signs its narinfos with; their kind is the store's dialect, so a Nix
/// store with a Guix key cannot be written.
#[derive(Debug)]
pub enum Signer {
    /// Nix keys: each adds a `Sig:` line to every narinfo, beside the ones the DB has.
    Nix(Vec<SecretKey>),
    /// Guix keys: the first signs (a Guix narinfo carries one `Signature:`).
    Guix(Vec<GuixSecretKey>),
}

impl Signer {
    /// No key yet, for a store of `dialect`.
    pub fn empty(dialect: Dialect) -> Self {
        match dialect {
            Dialect::Nix => Signer::Nix(Vec::new()),
            Dialect::Guix => Signer::Guix(Vec::new()),
        }
    }

    /// The keys of a Nix store; none for a Guix one.
    pub fn nix_keys(&self) -> &[SecretKey] {
        match self {
            Signer::Nix(keys) => keys,
            Signer::Guix(_) => &[],
        }
    }

    /// The key that signs a Guix store's narinfos; none for a Nix store.
    pub fn guix_key(&self) -> Option<&GuixSecretKey> {
        match self {
            Signer::Guix(keys) => keys.first(),
            Signer::Nix(_) => None,
        }
    }

    /// The Guix keys, all of them (the first signs).
    pub fn guix_keys(&self) -> &[GuixSecretKey] {
        match self {
            Signer::Guix(keys) => keys,
            Signer::Nix(_) => &[],
        }
    }
}

impl AppState {
    /// The one compression a Nix narinfo advertises.
    pub fn nix_compression(&self) -> Compression {
        self.settings.compressions[0]
    }

    /// What a node needs to substitute from this store, reached at `server_url` (the server's
    /// URL, without this store's prefix): for Nix the two `nix.conf` lines, for Guix the
    /// `guix archive --authorize` of the signing key and the `--substitute-urls` value. The
    /// lines printed at start-up and shown on the status page.
    pub fn client_config(&self, server_url: &str) -> Vec<String> {
        let url = format!("{}{}", server_url.trim_end_matches('/'), self.settings.prefix);
        match self.settings.dialect {
            Dialect::Nix => {
                let keys: Vec<String> = self.signer.nix_keys().iter().map(|k| k.to_public().to_string()).collect();
                vec![format!("substituters = {url}"), format!("trusted-public-keys = {}", keys.join(" "))]
            }
            Dialect::Guix => {
                let mut lines = Vec::new();
                if let Some(key) = self.signer.guix_key() {
                    lines.push("guix archive --authorize <<'EOF'".to_owned());
                    lines.extend(key.public_sexp().lines().map(str::to_owned));
                    lines.push("EOF".to_owned());
                }
                lines.push(format!("guix-daemon --substitute-urls={url}"));
                lines
            }
        }
    }

    /// `Cache-Control` for a narinfo answer: hits and misses are cached by Guix clients for
    /// `max-age` (Nix clients ignore it and use their own TTLs).
    pub fn cache_control(&self, hit: bool) -> String {
        let ttl = if hit { self.settings.narinfo_ttl } else { self.settings.negative_ttl };
        format!("max-age={}", ttl.as_secs())
    }
}
