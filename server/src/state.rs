//! What every request handler shares: the store, the signing keys and the serving policy.

use std::sync::Arc;

use signing::{GuixSecretKey, SecretKey};
use store_reader::Store;

use crate::admission::Admission;
use crate::bake::Baker;
use crate::compression::Compression;
use crate::dialect::Dialect;
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
    /// Keys that sign every Nix narinfo, added to the signatures the DB already has.
    pub keys: Vec<SecretKey>,
    /// Keys for Guix narinfos; the first signs (a Guix narinfo carries one signature).
    pub guix_keys: Vec<GuixSecretKey>,
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
                let keys: Vec<String> = self.keys.iter().map(|k| k.to_public().to_string()).collect();
                vec![format!("substituters = {url}"), format!("trusted-public-keys = {}", keys.join(" "))]
            }
            Dialect::Guix => {
                let mut lines = Vec::new();
                if let Some(key) = self.guix_keys.first() {
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
