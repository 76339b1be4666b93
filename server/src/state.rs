//! What every request handler shares: the store, the signing keys and the serving policy.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use signing::{GuixSecretKey, SecretKey};
use store_reader::Store;

use crate::admission::Admission;
use crate::bake::Baker;
use crate::compression::{Compression, Levels};
use crate::dialect::Dialect;
use crate::narinfo_cache::NarinfoCache;

/// Shared, read-only state of a running server.
#[derive(Debug)]
pub struct AppState {
    /// URL prefix the store is served under: empty, or `/name`.
    pub prefix: String,
    /// The store being served.
    pub store: Store,
    /// Keys that sign every Nix narinfo, added to the signatures the DB already has.
    pub keys: Vec<SecretKey>,
    /// Keys for Guix narinfos; the first signs (a Guix narinfo carries one signature).
    pub guix_keys: Vec<GuixSecretKey>,
    /// This host's name, written into Guix `Signature:` lines.
    pub host: String,
    /// Which clients the store is for.
    pub dialect: Dialect,
    /// What narinfos offer: one compression for Nix, one URL group each for Guix.
    pub compressions: Vec<Compression>,
    /// Cache-Control max-age on narinfo hits.
    pub narinfo_ttl: Duration,
    /// Cache-Control max-age on narinfo misses.
    pub negative_ttl: Duration,
    /// Levels for on-the-fly compression.
    pub levels: Levels,
    /// `Priority:` in `/nix-cache-info`; lower is preferred by clients.
    pub priority: i32,
    /// Build logs: `<log_dir>/<2 chars>/<rest of drv basename>[.bz2]`.
    pub log_dir: PathBuf,
    /// The cache area: the pull-through proxy for paths the store lacks (when it has
    /// upstreams) and the home of baked NARs.
    pub proxy: Option<upstream::Proxy>,
    /// Background compression of large local NARs, if enabled.
    pub baker: Option<Arc<Baker>>,
    /// Caps on concurrent NAR bodies, with their queues, shared by every served store (see
    /// `crate::admission`).
    pub admission: Arc<Admission>,
    /// Rendered, signed narinfos of local paths, for a short while (see `crate::narinfo_cache`).
    pub narinfo_cache: NarinfoCache,
}

impl AppState {
    /// The one compression a Nix narinfo advertises.
    pub fn nix_compression(&self) -> Compression {
        self.compressions[0]
    }

    /// `Cache-Control` for a narinfo answer: hits and misses are cached by Guix clients for
    /// `max-age` (Nix clients ignore it and use their own TTLs).
    pub fn cache_control(&self, hit: bool) -> String {
        let ttl = if hit { self.narinfo_ttl } else { self.negative_ttl };
        format!("max-age={}", ttl.as_secs())
    }
}
