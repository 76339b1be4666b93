//! What every request handler shares: the store, the signing keys and the serving policy.

use std::path::PathBuf;

use signing::SecretKey;
use store_reader::Store;

use crate::compression::{Compression, Levels};

/// Shared, read-only state of a running server.
#[derive(Debug)]
pub struct AppState {
    /// The store being served.
    pub store: Store,
    /// Keys that sign every narinfo, added to the signatures the DB already has.
    pub keys: Vec<SecretKey>,
    /// The compression narinfos advertise.
    pub compression: Compression,
    /// Levels for on-the-fly compression.
    pub levels: Levels,
    /// `Priority:` in `/nix-cache-info`; lower is preferred by clients.
    pub priority: i32,
    /// Build logs: `<log_dir>/<2 chars>/<rest of drv basename>[.bz2]`.
    pub log_dir: PathBuf,
    /// The pull-through proxy for paths the store lacks, if enabled.
    pub proxy: Option<upstream::Proxy>,
}
