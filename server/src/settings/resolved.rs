//! What `subserve serve` runs with, validated: [`Settings`] for the process and one
//! [`StoreSettings`] per served store, which each store's `AppState` holds. Plain data, with
//! no trace of where a value came from (flags, environment, file: see `resolve`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use store_reader::StoreConfig;
use upstream::ProxyConfig;

use crate::access::Access;
use crate::bake::BakeConfig;
use crate::compression::{Compression, Levels};
use formats::Dialect;

/// Where the server listens: a TCP address and port, or `unix:PATH` (behind a reverse proxy
/// on the same host).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ListenAddr {
    /// `ADDRESS:PORT`.
    Tcp(SocketAddr),
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl ListenAddr {
    /// The TCP port, if this is a TCP address.
    pub fn port(&self) -> Option<u16> {
        match self {
            ListenAddr::Tcp(addr) => Some(addr.port()),
            ListenAddr::Unix(_) => None,
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!("{s:?}: a Unix socket needs an absolute path (unix:/run/subserve.sock)"));
            }
            return Ok(ListenAddr::Unix(path.into()));
        }
        s.parse()
            .map(ListenAddr::Tcp)
            .map_err(|_| format!("{s:?} is not ADDRESS:PORT (0.0.0.0:5000, [::]:5000) or unix:/PATH"))
    }
}

impl TryFrom<String> for ListenAddr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Everything `subserve serve` needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Address to listen on.
    pub listen: ListenAddr,
    /// subserve's state directory.
    pub state_dir: PathBuf,
    /// Cap on NAR bodies sent at once, over all stores.
    pub max_streams: usize,
    /// Cap on NARs compressed on the fly at once, over all stores.
    pub max_compressed_streams: usize,
    /// Share of `max_streams` one client address may hold.
    pub max_streams_per_client: usize,
    /// Share of `max_compressed_streams` one client address may hold.
    pub max_compressed_streams_per_client: usize,
    /// Timeouts and the connection cap; `None` for the cap means "derive it from the
    /// descriptor limit at start-up".
    pub conn: ConnSettings,
    /// How long a lookup waits for a store DB locked by a writer.
    pub db_busy_timeout: Duration,
    /// The URL nodes reach this server at, as configured (`None`: derived from `listen`).
    pub url: Option<String>,
    /// Certificate chain and key files for HTTPS, when it is on.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The audit trail, when it is on.
    pub audit: Option<AuditSettings>,
    /// Who may read the operator's pages, and whose `X-Forwarded-For` is believed.
    pub access: Access,
    /// The stores served, each under its own URL prefix; one store with an empty prefix
    /// unless the config file has `[[store]]` tables.
    pub stores: Vec<StoreSettings>,
}

/// How the audit trail is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// The database: `STATE_DIR/audit.sqlite`.
    pub path: PathBuf,
    /// Records older than this are deleted.
    pub retention: Duration,
    /// The database is kept under this size, the oldest records deleted first.
    pub max_bytes: u64,
}

impl AuditSettings {
    /// The audit database's file name in the state directory.
    pub const FILE_NAME: &'static str = "audit.sqlite";
    /// The default retention: 90 days.
    pub const DEFAULT_RETENTION_DAYS: u64 = 90;
    /// The default size cap: 1 GiB.
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
}

/// Connection timeouts and cap, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnSettings {
    /// See [`crate::ConnLimits::idle_timeout`].
    pub idle_timeout: Duration,
    /// See [`crate::ConnLimits::header_timeout`].
    pub header_timeout: Duration,
    /// See [`crate::ConnLimits::write_timeout`].
    pub write_timeout: Duration,
    /// See [`crate::ConnLimits::shutdown_timeout`].
    pub shutdown_timeout: Duration,
    /// See [`crate::ConnLimits::max_connections`]; `None`: from the descriptor limit.
    pub max_connections: Option<usize>,
}

impl ConnSettings {
    /// The limits to serve with, given the descriptor limit in force and the descriptors
    /// to keep for everything but client connections.
    pub fn limits(&self, nofile: u64, reserved: u64) -> crate::ConnLimits {
        crate::ConnLimits {
            idle_timeout: self.idle_timeout,
            header_timeout: self.header_timeout,
            write_timeout: self.write_timeout,
            shutdown_timeout: self.shutdown_timeout,
            max_connections: self
                .max_connections
                .unwrap_or_else(|| crate::conn::default_max_connections(nofile, reserved)),
        }
    }
}

/// How one store is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// URL prefix the store is served under: empty, or `/name` (e.g. `/nix`, `/guix`).
    pub prefix: String,
    /// Where the store is.
    pub store: StoreConfig,
    /// Build logs directory.
    pub log_dir: PathBuf,
    /// Secret key files; empty means use (or create) `state_dir/signing-key.sec`.
    pub sign_key_files: Vec<PathBuf>,
    /// Which clients the store is for.
    pub dialect: Dialect,
    /// Compressions narinfos offer: exactly one for Nix, one group each for Guix.
    pub compressions: Vec<Compression>,
    /// Cache-Control max-age on narinfo hits.
    pub narinfo_ttl: Duration,
    /// Cache-Control max-age on narinfo misses, and how long the proxy remembers a miss.
    pub negative_ttl: Duration,
    /// On-the-fly compression levels.
    pub levels: Levels,
    /// Priority in `/nix-cache-info`.
    pub priority: i32,
    /// The cache area with the upstreams to proxy (possibly none, when only baking uses it);
    /// `None` when neither proxying nor baking is on.
    pub proxy: Option<ProxyConfig>,
    /// Background compression of local NARs into the cache area.
    pub bake: BakeConfig,
    /// Which local paths are served.
    pub publish: Publish,
}

/// Which local paths a store serves (`--publish`); the others answer as absent paths do, on
/// every route. Proxied paths are not concerned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Publish {
    /// Every valid path.
    #[default]
    All,
    /// The paths whose signatures in the store DB include a valid one by one of these keys.
    Signed(Vec<signing::PublicKey>),
}

impl Publish {
    /// Whether `info` is served; `store_dir` is the store dir its signatures are made for.
    pub fn allows(&self, info: &store_reader::PathInfo, store_dir: &str) -> bool {
        match self {
            Publish::All => true,
            Publish::Signed(keys) => {
                let refs: Vec<String> = info.references.iter().map(|r| r.absolute(store_dir)).collect();
                let path = info.path.absolute(store_dir);
                let fingerprint = formats::narinfo::fingerprint(&path, &info.nar_hash, info.nar_size, &refs);
                signing::verify_any(keys, &fingerprint, &info.sigs)
            }
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `tracing`'s text lines: time, level, target, message and key=value fields.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (expected text or json)")),
        }
    }
}
