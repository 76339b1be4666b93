//! Turns flags, environment and config file into validated [`Settings`], with one pure
//! function, [`resolve`]: flag > `SUBSERVE_*` environment > TOML file > default.
//!
//! Nothing here reads the process environment: the binary passes it in as an [`Env`], so
//! tests can pin the precedence order with plain values.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use std::time::Duration;

use serde::Deserialize;
use signing::{GuixPublicKey, PublicKey};
use store_reader::StoreConfig;
use upstream::{ProxyConfig, UpstreamConfig};

use crate::admission;
use crate::bake::{self, BakeConfig};
use crate::cli::ServeArgs;
use crate::compression::{Compression, Levels};
use crate::dialect::{CompressionList, Dialect};

/// Default listen address: loopback only, so a fresh install exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
/// Default priority: preferred over cache.nixos.org (40).
pub const DEFAULT_PRIORITY: i32 = 30;

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

/// The `[serve]`-level keys of the TOML config file; every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<ListenAddr>,
    /// Logical store directory.
    pub store_dir: Option<String>,
    /// Root of a chroot store.
    pub store_root: Option<PathBuf>,
    /// Physical store directory.
    pub real_store_dir: Option<PathBuf>,
    /// Store DB.
    pub db: Option<PathBuf>,
    /// Build logs directory.
    pub log_dir: Option<PathBuf>,
    /// Secret keys to sign with.
    pub sign_key_files: Option<Vec<PathBuf>>,
    /// Compression advertised in narinfos (a comma-separated list for Guix).
    pub compression: Option<String>,
    /// `nix` or `guix`.
    pub dialect: Option<String>,
    /// Cache-Control max-age of narinfo hits, seconds.
    pub narinfo_ttl: Option<u64>,
    /// zstd level.
    pub zstd_level: Option<i32>,
    /// xz preset.
    pub xz_level: Option<u32>,
    /// Priority in `/nix-cache-info`.
    pub priority: Option<i32>,
    /// subserve's state directory.
    pub state_dir: Option<PathBuf>,
    /// Upstream caches to proxy; an empty list turns proxying off.
    pub upstream: Option<Vec<FileUpstream>>,
    /// Proxy cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Proxy cache size limit (`50G`, `512M`, bytes).
    pub cache_max_size: Option<String>,
    /// Seconds a miss is remembered.
    pub negative_ttl: Option<u64>,
    /// Compressions to bake (`zstd`, `xz`, `none`).
    pub bake: Option<String>,
    /// NARs smaller than this are not baked.
    pub bake_min_size: Option<String>,
    /// Bake worker threads.
    pub bake_workers: Option<usize>,
    /// zstd level for baking.
    pub bake_zstd_level: Option<i32>,
    /// Store paths whose closures are baked at start-up.
    pub bake_roots: Option<Vec<String>>,
    /// NAR bodies sent at once, over all stores.
    pub max_streams: Option<usize>,
    /// NARs compressed on the fly at once, over all stores.
    pub max_compressed_streams: Option<usize>,
    /// NAR bodies one client address may hold at once.
    pub max_streams_per_client: Option<usize>,
    /// NARs compressed on the fly for one client address at once.
    pub max_compressed_streams_per_client: Option<usize>,
    /// Connections open at once.
    pub max_connections: Option<usize>,
    /// Seconds a connection may wait for its next request.
    pub idle_timeout: Option<u64>,
    /// Seconds a request head may take once its first byte has arrived.
    pub header_timeout: Option<u64>,
    /// Seconds a response may go without the client accepting a byte.
    pub write_timeout: Option<u64>,
    /// Seconds a shutdown waits for responses in flight.
    pub shutdown_timeout: Option<u64>,
    /// Milliseconds a lookup waits for a locked store DB.
    pub db_busy_timeout: Option<u64>,
    /// The URL nodes reach this server at.
    pub url: Option<String>,
    /// PEM certificate chain for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// URL prefix of a store, in a `[[store]]` table (`/nix`, `/guix`).
    pub prefix: Option<String>,
    /// Several stores served side by side, each under its own URL prefix: one table per store,
    /// with the per-store keys of this struct.
    pub store: Option<Vec<FileConfig>>,
}

/// One `[[upstream]]` table of the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileUpstream {
    /// Base URL.
    pub url: String,
    /// Trusted public keys, `name:base64`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Lower is asked first [default: the order in the file].
    pub priority: Option<i32>,
    /// Seconds to wait for response headers [default: 10].
    pub timeout: Option<u64>,
}

impl FileConfig {
    /// Parses the TOML text of a config file.
    pub fn parse(text: &str) -> Result<Self, SettingsError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            // toml's Display spans several lines with a source excerpt; keep it to one.
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().replace('\n', " ");
            SettingsError::File(match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            })
        })
    }
}

/// What the binary knows of its environment: `SUBSERVE_*`, `HOME`, `XDG_STATE_HOME`, and
/// whether it runs as root.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Environment variables.
    pub vars: HashMap<String, String>,
    /// Whether the process runs as root (chooses the default state directory).
    pub is_root: bool,
}

/// Everything `subserve serve` needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
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
    /// The stores served, each under its own URL prefix; one store with an empty prefix
    /// unless the config file has `[[store]]` tables.
    pub stores: Vec<StoreSettings>,
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
}

/// Default size limit of the proxy cache.
pub const DEFAULT_CACHE_MAX_SIZE: u64 = 10 << 30;
/// Default upstream timeout.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Default Cache-Control max-age of a narinfo hit.
pub const DEFAULT_NARINFO_TTL: Duration = Duration::from_secs(86400);
/// Default time a miss is remembered.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(300);

/// A setting that is malformed or out of range.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A value from the environment does not parse.
    #[error("environment variable {var}: invalid value {value:?}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The config file does not parse.
    #[error("config file: {0}")]
    File(String),
    /// A value parses but is not allowed.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The setting, as its flag name.
        setting: &'static str,
        /// Why.
        reason: String,
    },
}

/// Applies flag > environment > file > default, then validates.
///
/// Without `[[store]]` tables there is one store, set by flags, environment and the file's
/// top-level keys. With them, each table sets one store and nothing else may: a per-store
/// flag, variable or top-level key would be ambiguous, so it is an error that says where the
/// setting belongs.
pub fn resolve(args: &ServeArgs, env: &Env, file: &FileConfig) -> Result<Settings, SettingsError> {
    let listen = pick(args.listen.clone(), env_var(env, "LISTEN")?, file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
    let state_dir = pick(args.state_dir.clone(), env_var(env, "STATE_DIR")?, file.state_dir.clone())
        .map_or_else(|| default_state_dir(env), Ok)?;
    let cores = admission::cores();
    let max_streams = pick(args.max_streams, env_var(env, "MAX_STREAMS")?, file.max_streams)
        .unwrap_or_else(|| admission::default_max_streams(cores));
    let max_compressed_streams =
        pick(args.max_compressed_streams, env_var(env, "MAX_COMPRESSED_STREAMS")?, file.max_compressed_streams)
            .unwrap_or_else(|| admission::default_max_compressed_streams(cores));
    if max_streams == 0 {
        return Err(invalid("--max-streams", "must be at least 1".into()));
    }
    if max_compressed_streams == 0 {
        return Err(invalid("--max-compressed-streams", "must be at least 1".into()));
    }
    let max_streams_per_client =
        pick(args.max_streams_per_client, env_var(env, "MAX_STREAMS_PER_CLIENT")?, file.max_streams_per_client)
            .unwrap_or_else(|| admission::default_per_client(max_streams, 4, 4));
    let max_compressed_streams_per_client = pick(
        args.max_compressed_streams_per_client,
        env_var(env, "MAX_COMPRESSED_STREAMS_PER_CLIENT")?,
        file.max_compressed_streams_per_client,
    )
    .unwrap_or_else(|| admission::default_per_client(max_compressed_streams, 2, 1));
    if max_streams_per_client == 0 {
        return Err(invalid("--max-streams-per-client", "must be at least 1".into()));
    }
    if max_compressed_streams_per_client == 0 {
        return Err(invalid("--max-compressed-streams-per-client", "must be at least 1".into()));
    }
    let max_connections = pick(args.max_connections, env_var(env, "MAX_CONNECTIONS")?, file.max_connections);
    if max_connections == Some(0) {
        return Err(invalid("--max-connections", "must be at least 1".into()));
    }
    let seconds = |flag: &'static str, value: Option<u64>, default: Duration| match value {
        Some(0) => Err(invalid(flag, "must be at least 1 second".into())),
        Some(s) => Ok(Duration::from_secs(s)),
        None => Ok(default),
    };
    let conn = ConnSettings {
        idle_timeout: seconds(
            "--idle-timeout",
            pick(args.idle_timeout, env_var(env, "IDLE_TIMEOUT")?, file.idle_timeout),
            crate::conn::DEFAULT_IDLE_TIMEOUT,
        )?,
        header_timeout: seconds(
            "--header-timeout",
            pick(args.header_timeout, env_var(env, "HEADER_TIMEOUT")?, file.header_timeout),
            crate::conn::DEFAULT_HEADER_TIMEOUT,
        )?,
        write_timeout: seconds(
            "--write-timeout",
            pick(args.write_timeout, env_var(env, "WRITE_TIMEOUT")?, file.write_timeout),
            crate::conn::DEFAULT_WRITE_TIMEOUT,
        )?,
        shutdown_timeout: seconds(
            "--shutdown-timeout",
            pick(args.shutdown_timeout, env_var(env, "SHUTDOWN_TIMEOUT")?, file.shutdown_timeout),
            crate::conn::DEFAULT_SHUTDOWN_TIMEOUT,
        )?,
        max_connections,
    };
    let db_busy_timeout = Duration::from_millis(
        pick(args.db_busy_timeout, env_var(env, "DB_BUSY_TIMEOUT")?, file.db_busy_timeout)
            .unwrap_or(store_reader::DEFAULT_BUSY_TIMEOUT.as_millis() as u64),
    );
    let url = pick(args.url.clone(), env_var(env, "URL")?, file.url.clone());
    if let Some(url) = &url {
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(char::is_whitespace) {
            return Err(invalid("--url", format!("{url:?} is not an http:// or https:// URL")));
        }
    }
    let tls = match (
        pick(args.tls_cert.clone(), env_var(env, "TLS_CERT")?, file.tls_cert.clone()),
        pick(args.tls_key.clone(), env_var(env, "TLS_KEY")?, file.tls_key.clone()),
    ) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => return Err(invalid("--tls-cert", "needs --tls-key too".into())),
        (None, Some(_)) => return Err(invalid("--tls-key", "needs --tls-cert too".into())),
    };
    let global = |stores| Settings {
        listen,
        state_dir: state_dir.clone(),
        max_streams,
        max_compressed_streams,
        max_streams_per_client,
        max_compressed_streams_per_client,
        conn,
        db_busy_timeout,
        url: url.clone(),
        tls: tls.clone(),
        stores,
    };
    let Some(tables) = &file.store else {
        if file.prefix.is_some() {
            return Err(SettingsError::File("`prefix` belongs in a [[store]] table".into()));
        }
        let store = resolve_store_settings(args, env, file, &state_dir, String::new())?;
        return Ok(global(vec![store]));
    };
    if let Some(flag) = per_store_flag(args) {
        return Err(invalid(flag, "the config file has [[store]] tables: set this in each table instead".into()));
    }
    if let Some(var) =
        env.vars.keys().filter(|k| k.starts_with("SUBSERVE_")).find(|k| !GLOBAL_VARS.contains(&k.as_str()))
    {
        return Err(SettingsError::Env {
            var: var.clone(),
            value: env.vars[var].clone(),
            reason: "the config file has [[store]] tables: set this in each table instead".into(),
        });
    }
    if let Some(key) = per_store_key(file) {
        return Err(SettingsError::File(format!(
            "`{key}` is set at the top level and there are [[store]] tables: set it in each table"
        )));
    }
    if tables.is_empty() {
        return Err(SettingsError::File("`store = []` serves nothing: remove it or add [[store]] tables".into()));
    }
    let table_env = Env { vars: HashMap::new(), is_root: env.is_root };
    let mut stores: Vec<StoreSettings> = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let n = i + 1;
        if let Some(key) = global_key(table) {
            return Err(SettingsError::File(format!("[[store]] table {n}: `{key}` belongs at the top level")));
        }
        let prefix = match table.prefix.as_deref() {
            Some(p) => parse_prefix(p).map_err(|reason| invalid("prefix", format!("[[store]] table {n}: {reason}")))?,
            None if tables.len() == 1 => String::new(),
            None => {
                return Err(invalid(
                    "prefix",
                    format!("[[store]] table {n} needs a URL prefix such as \"/nix\" or \"/guix\" when several stores are served"),
                ))
            }
        };
        let store = resolve_store_settings(&ServeArgs::default(), &table_env, table, &state_dir, prefix)?;
        if let Some(other) = stores.iter().find(|s| s.prefix == store.prefix) {
            return Err(invalid("prefix", format!("two [[store]] tables use the prefix {:?}", other.prefix)));
        }
        if let Some(dir) = store.proxy.as_ref().map(|p| &p.cache_dir) {
            if stores.iter().any(|s| s.proxy.as_ref().is_some_and(|p| &p.cache_dir == dir)) {
                return Err(invalid("cache-dir", format!("two stores share the proxy cache {}", dir.display())));
            }
        }
        stores.push(store);
    }
    if stores.len() > 1 && stores.iter().any(|s| s.prefix.is_empty()) {
        return Err(invalid("prefix", "every [[store]] table needs a prefix when several stores are served".into()));
    }
    Ok(global(stores))
}

/// The `SUBSERVE_*` variables that are not per-store settings.
const GLOBAL_VARS: [&str; 17] = [
    "SUBSERVE_LISTEN",
    "SUBSERVE_STATE_DIR",
    "SUBSERVE_CONFIG",
    "SUBSERVE_LOG",
    "SUBSERVE_MAX_STREAMS",
    "SUBSERVE_MAX_COMPRESSED_STREAMS",
    "SUBSERVE_MAX_STREAMS_PER_CLIENT",
    "SUBSERVE_MAX_COMPRESSED_STREAMS_PER_CLIENT",
    "SUBSERVE_MAX_CONNECTIONS",
    "SUBSERVE_IDLE_TIMEOUT",
    "SUBSERVE_HEADER_TIMEOUT",
    "SUBSERVE_WRITE_TIMEOUT",
    "SUBSERVE_SHUTDOWN_TIMEOUT",
    "SUBSERVE_DB_BUSY_TIMEOUT",
    "SUBSERVE_URL",
    "SUBSERVE_TLS_CERT",
    "SUBSERVE_TLS_KEY",
];

/// The first process-wide key set in a `[[store]]` table, by its file name.
fn global_key(f: &FileConfig) -> Option<&'static str> {
    [
        (f.listen.is_some(), "listen"),
        (f.state_dir.is_some(), "state-dir"),
        (f.store.is_some(), "store"),
        (f.max_streams.is_some(), "max-streams"),
        (f.max_compressed_streams.is_some(), "max-compressed-streams"),
        (f.max_streams_per_client.is_some(), "max-streams-per-client"),
        (f.max_compressed_streams_per_client.is_some(), "max-compressed-streams-per-client"),
        (f.max_connections.is_some(), "max-connections"),
        (f.idle_timeout.is_some(), "idle-timeout"),
        (f.header_timeout.is_some(), "header-timeout"),
        (f.write_timeout.is_some(), "write-timeout"),
        (f.shutdown_timeout.is_some(), "shutdown-timeout"),
        (f.db_busy_timeout.is_some(), "db-busy-timeout"),
        (f.url.is_some(), "url"),
        (f.tls_cert.is_some(), "tls-cert"),
        (f.tls_key.is_some(), "tls-key"),
    ]
    .into_iter()
    .find_map(|(set, name)| set.then_some(name))
}

/// The first per-store flag given, by its flag name.
fn per_store_flag(args: &ServeArgs) -> Option<&'static str> {
    let a = args;
    [
        (a.store_dir.is_some(), "--store-dir"),
        (a.store_root.is_some(), "--store-root"),
        (a.real_store_dir.is_some(), "--real-store-dir"),
        (a.db.is_some(), "--db"),
        (a.log_dir.is_some(), "--log-dir"),
        (!a.sign_key_files.is_empty(), "--sign-key-file"),
        (a.compression.is_some(), "--compression"),
        (a.dialect.is_some(), "--dialect"),
        (a.narinfo_ttl.is_some(), "--narinfo-ttl"),
        (a.zstd_level.is_some(), "--zstd-level"),
        (a.xz_level.is_some(), "--xz-level"),
        (a.priority.is_some(), "--priority"),
        (!a.upstreams.is_empty(), "--upstream"),
        (!a.upstream_keys.is_empty(), "--upstream-key"),
        (a.upstream_timeout.is_some(), "--upstream-timeout"),
        (a.cache_dir.is_some(), "--cache-dir"),
        (a.cache_max_size.is_some(), "--cache-max-size"),
        (a.negative_ttl.is_some(), "--negative-ttl"),
        (a.bake.is_some(), "--bake"),
        (a.bake_min_size.is_some(), "--bake-min-size"),
        (a.bake_workers.is_some(), "--bake-workers"),
        (a.bake_zstd_level.is_some(), "--bake-zstd-level"),
        (!a.bake_roots.is_empty(), "--bake-root"),
    ]
    .into_iter()
    .find_map(|(set, name)| set.then_some(name))
}

/// The first per-store key set at the top level of the file, by its key name.
fn per_store_key(f: &FileConfig) -> Option<&'static str> {
    [
        (f.store_dir.is_some(), "store-dir"),
        (f.store_root.is_some(), "store-root"),
        (f.real_store_dir.is_some(), "real-store-dir"),
        (f.db.is_some(), "db"),
        (f.log_dir.is_some(), "log-dir"),
        (f.sign_key_files.is_some(), "sign-key-files"),
        (f.compression.is_some(), "compression"),
        (f.dialect.is_some(), "dialect"),
        (f.narinfo_ttl.is_some(), "narinfo-ttl"),
        (f.zstd_level.is_some(), "zstd-level"),
        (f.xz_level.is_some(), "xz-level"),
        (f.priority.is_some(), "priority"),
        (f.upstream.is_some(), "upstream"),
        (f.cache_dir.is_some(), "cache-dir"),
        (f.cache_max_size.is_some(), "cache-max-size"),
        (f.negative_ttl.is_some(), "negative-ttl"),
        (f.prefix.is_some(), "prefix"),
        (f.bake.is_some(), "bake"),
        (f.bake_min_size.is_some(), "bake-min-size"),
        (f.bake_workers.is_some(), "bake-workers"),
        (f.bake_zstd_level.is_some(), "bake-zstd-level"),
        (f.bake_roots.is_some(), "bake-roots"),
    ]
    .into_iter()
    .find_map(|(set, name)| set.then_some(name))
}

/// A URL prefix: `/` followed by one or more `/`-separated segments of letters, digits, `.`,
/// `_` and `-`, without a trailing slash; `""` and `"/"` mean the root.
fn parse_prefix(prefix: &str) -> Result<String, String> {
    if prefix.is_empty() || prefix == "/" {
        return Ok(String::new());
    }
    let segments_ok = prefix.strip_prefix('/').is_some_and(|rest| {
        rest.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
        })
    });
    if !segments_ok {
        return Err(format!("{prefix:?} is not a URL prefix like \"/nix\" (letters, digits, '.', '_', '-')"));
    }
    Ok(prefix.to_owned())
}

/// One store's settings from flags, environment and a file (or `[[store]]` table).
fn resolve_store_settings(
    args: &ServeArgs,
    env: &Env,
    file: &FileConfig,
    state_dir: &Path,
    prefix: String,
) -> Result<StoreSettings, SettingsError> {
    let (dialect, store, log_dir) = resolve_store(args, env, file)?;
    let env_keys = env
        .vars
        .get("SUBSERVE_SIGN_KEY_FILE")
        .map(|v| v.split(',').filter(|s| !s.trim().is_empty()).map(|s| PathBuf::from(s.trim())).collect::<Vec<_>>());
    let sign_key_files = pick(
        (!args.sign_key_files.is_empty()).then(|| args.sign_key_files.clone()),
        env_keys,
        file.sign_key_files.clone(),
    )
    .unwrap_or_default();
    let compressions = resolve_compressions(args, env, file, dialect)?;
    let defaults = Levels::default();
    let zstd = pick(args.zstd_level, env_var(env, "ZSTD_LEVEL")?, file.zstd_level).unwrap_or(defaults.zstd);
    if !(1..=19).contains(&zstd) {
        return Err(invalid("--zstd-level", format!("{zstd} is not in 1..=19")));
    }
    let xz = pick(args.xz_level, env_var(env, "XZ_LEVEL")?, file.xz_level).unwrap_or(defaults.xz);
    if xz > 9 {
        return Err(invalid("--xz-level", format!("{xz} is not in 0..=9")));
    }
    let priority = pick(args.priority, env_var(env, "PRIORITY")?, file.priority).unwrap_or(DEFAULT_PRIORITY);
    let narinfo_ttl = pick(args.narinfo_ttl, env_var(env, "NARINFO_TTL")?, file.narinfo_ttl)
        .map_or(DEFAULT_NARINFO_TTL, Duration::from_secs);
    let negative_ttl = pick(args.negative_ttl, env_var(env, "NEGATIVE_TTL")?, file.negative_ttl)
        .map_or(DEFAULT_NEGATIVE_TTL, Duration::from_secs);
    // The cache area of the unprefixed store is STATE_DIR/cache (cache-guix for a Guix store,
    // so that a Nix and a Guix service on one state dir never share one); `/nix` gets
    // cache-nix.
    let default_cache = match (prefix.is_empty(), dialect) {
        (true, Dialect::Guix) => state_dir.join("cache-guix"),
        _ => state_dir.join(format!("cache{}", prefix.replace('/', "-"))),
    };
    let bake = resolve_bake(args, env, file, &store.store_dir, Levels { zstd, xz, gzip: defaults.gzip })?;
    let proxy = resolve_proxy(args, env, file, dialect, &store.store_dir, default_cache, negative_ttl)?;
    // Without upstreams and without baking there is no cache area to open.
    let proxy = (!proxy.upstreams.is_empty() || !bake.compressions.is_empty()).then_some(proxy);
    Ok(StoreSettings {
        prefix,
        dialect,
        proxy,
        store,
        log_dir,
        sign_key_files,
        compressions,
        levels: Levels { zstd, xz, gzip: defaults.gzip },
        priority,
        narinfo_ttl,
        negative_ttl,
        bake,
    })
}

/// What to bake: `zstd` unless told otherwise, `none` for nothing.
fn resolve_bake(
    args: &ServeArgs,
    env: &Env,
    file: &FileConfig,
    store_dir: &str,
    serve_levels: Levels,
) -> Result<BakeConfig, SettingsError> {
    let from_file = file.bake.as_deref().map(parse_file_value::<CompressionList>).transpose()?;
    let list = pick(args.bake.clone(), env_var(env, "BAKE")?, from_file).map_or(vec![Compression::Zstd], |l| l.0);
    let compressions = match list.as_slice() {
        [Compression::None] => vec![],
        _ => {
            if let Some(bad) = list.iter().find(|c| !matches!(c, Compression::Zstd | Compression::Xz)) {
                return Err(invalid("--bake", format!("{bad} cannot be baked (use zstd, xz, or none alone)")));
            }
            list
        }
    };
    let min_size = match pick(args.bake_min_size.clone(), env_var(env, "BAKE_MIN_SIZE")?, file.bake_min_size.clone()) {
        Some(s) => parse_size(&s).ok_or_else(|| invalid("--bake-min-size", format!("{s:?} is not a size like 1M")))?,
        None => bake::DEFAULT_BAKE_MIN_SIZE,
    };
    let workers =
        pick(args.bake_workers, env_var(env, "BAKE_WORKERS")?, file.bake_workers).unwrap_or_else(bake::default_workers);
    if workers == 0 {
        return Err(invalid("--bake-workers", "must be at least 1 (use --bake none to turn baking off)".into()));
    }
    let zstd = pick(args.bake_zstd_level, env_var(env, "BAKE_ZSTD_LEVEL")?, file.bake_zstd_level)
        .unwrap_or(bake::DEFAULT_BAKE_ZSTD_LEVEL);
    if !(1..=19).contains(&zstd) {
        return Err(invalid("--bake-zstd-level", format!("{zstd} is not in 1..=19")));
    }
    let env_roots = env
        .vars
        .get("SUBSERVE_BAKE_ROOT")
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect::<Vec<_>>());
    let roots =
        pick((!args.bake_roots.is_empty()).then(|| args.bake_roots.clone()), env_roots, file.bake_roots.clone())
            .unwrap_or_default();
    if let Some(bad) = roots.iter().find(|r| !r.starts_with(&format!("{store_dir}/")) || r.contains("/../")) {
        return Err(invalid("--bake-root", format!("{bad:?} is not a path in {store_dir}")));
    }
    let levels = Levels { zstd, xz: bake::DEFAULT_BAKE_XZ_LEVEL, gzip: serve_levels.gzip };
    Ok(BakeConfig { compressions, min_size, workers, levels, roots })
}

/// The store's dialect and locations: an explicit path wins, then one under `--store-root`,
/// then the dialect's default location.
fn resolve_store(
    args: &ServeArgs,
    env: &Env,
    file: &FileConfig,
) -> Result<(Dialect, StoreConfig, PathBuf), SettingsError> {
    let explicit_dialect =
        pick(args.dialect, env_var(env, "DIALECT")?, file.dialect.as_deref().map(parse_file_value).transpose()?);
    let store_dir = pick(args.store_dir.clone(), env_var(env, "STORE_DIR")?, file.store_dir.clone())
        .unwrap_or_else(|| explicit_dialect.unwrap_or(Dialect::Nix).default_store_dir().to_owned());
    if !store_dir.starts_with('/') || store_dir.len() < 2 || store_dir.ends_with('/') || store_dir.contains("//") {
        return Err(invalid("--store-dir", format!("{store_dir:?} must be an absolute path without a trailing slash")));
    }
    let dialect = explicit_dialect.unwrap_or_else(|| Dialect::for_store_dir(&store_dir));
    let store_root = pick(args.store_root.clone(), env_var(env, "STORE_ROOT")?, file.store_root.clone());
    let located = |rel: &str| match &store_root {
        Some(root) => root.join(rel.trim_start_matches('/')),
        None => Path::new("/").join(rel.trim_start_matches('/')),
    };
    let real_store_dir =
        pick(args.real_store_dir.clone(), env_var(env, "REAL_STORE_DIR")?, file.real_store_dir.clone())
            .unwrap_or_else(|| located(&store_dir));
    let db = pick(args.db.clone(), env_var(env, "DB")?, file.db.clone()).unwrap_or_else(|| located(dialect.db_path()));
    let log_dir = pick(args.log_dir.clone(), env_var(env, "LOG_DIR")?, file.log_dir.clone())
        .unwrap_or_else(|| located(dialect.log_dir()));
    Ok((dialect, StoreConfig { store_dir, real_store_dir, db }, log_dir))
}

/// What narinfos offer: one compression for Nix, one or more groups for Guix, each one the
/// dialect's clients can decode and subserve can produce.
fn resolve_compressions(
    args: &ServeArgs,
    env: &Env,
    file: &FileConfig,
    dialect: Dialect,
) -> Result<Vec<Compression>, SettingsError> {
    let from_file = file.compression.as_deref().map(parse_file_value::<CompressionList>).transpose()?;
    let list = pick(args.compression.clone(), env_var(env, "COMPRESSION")?, from_file)
        .map_or_else(|| dialect.default_compressions(), |l| l.0);
    if let Some(bad) = list.iter().find(|c| !dialect.can_offer(**c)) {
        let allowed = if dialect == Dialect::Nix { "none, zstd or xz" } else { "none, zstd, gzip or xz" };
        return Err(invalid("--compression", format!("{bad} cannot be offered to {dialect} clients (use {allowed})")));
    }
    if dialect == Dialect::Nix && list.len() != 1 {
        return Err(invalid("--compression", "a Nix narinfo names exactly one compression".into()));
    }
    if list.is_empty() {
        return Err(invalid("--compression", "no compression given".into()));
    }
    Ok(list)
}

fn parse_file_value<T: FromStr>(value: &str) -> Result<T, SettingsError>
where
    T::Err: Display,
{
    value.parse().map_err(|e: T::Err| SettingsError::File(e.to_string()))
}

/// The cache area and proxy settings: upstreams from flags, else `SUBSERVE_UPSTREAM`, else
/// the file's `[[upstream]]` tables, else the dialect's public caches (cache.nixos.org; for
/// Guix bordeaux.guix.gnu.org and ci.guix.gnu.org); `none` (or an empty list in the file)
/// leaves no upstream.
fn resolve_proxy(
    args: &ServeArgs,
    env: &Env,
    file: &FileConfig,
    dialect: Dialect,
    store_dir: &str,
    default_cache_dir: PathBuf,
    negative_ttl: Duration,
) -> Result<ProxyConfig, SettingsError> {
    let timeout = pick(args.upstream_timeout, env_var(env, "UPSTREAM_TIMEOUT")?, None)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT);
    let list = |v: &String| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect::<Vec<_>>();
    let flag_urls = (!args.upstreams.is_empty()).then(|| args.upstreams.clone());
    let flag_keys = (!args.upstream_keys.is_empty()).then(|| args.upstream_keys.clone());
    let urls = flag_urls.or_else(|| env.vars.get("SUBSERVE_UPSTREAM").map(list));
    let upstreams: Vec<FileUpstream> = match urls {
        Some(urls) => {
            let keys = flag_keys.or_else(|| env.vars.get("SUBSERVE_UPSTREAM_KEY").map(list)).unwrap_or_default();
            if urls.iter().any(|u| u == "none") {
                if urls.len() > 1 {
                    return Err(invalid("--upstream", "`none` cannot be combined with other upstreams".into()));
                }
                vec![]
            } else {
                urls.into_iter()
                    .enumerate()
                    .map(|(i, url)| FileUpstream { url, keys: keys.clone(), priority: Some(i as i32), timeout: None })
                    .collect()
            }
        }
        None => file.upstream.clone().unwrap_or_else(|| match dialect {
            Dialect::Nix => vec![FileUpstream {
                url: upstream::CACHE_NIXOS_ORG.into(),
                keys: vec![upstream::CACHE_NIXOS_ORG_KEY.into()],
                priority: Some(40),
                timeout: None,
            }],
            Dialect::Guix => [
                (upstream::GUIX_BORDEAUX, upstream::GUIX_BORDEAUX_KEY, 40),
                (upstream::GUIX_CI, upstream::GUIX_CI_KEY, 50),
            ]
            .into_iter()
            .map(|(url, key, priority)| FileUpstream {
                url: url.into(),
                keys: vec![key.into()],
                priority: Some(priority),
                timeout: None,
            })
            .collect(),
        }),
    };
    let upstreams = upstreams
        .into_iter()
        .enumerate()
        .map(|(i, up)| upstream_config(i, up, timeout, dialect))
        .collect::<Result<Vec<_>, _>>()?;
    let cache_dir =
        pick(args.cache_dir.clone(), env_var(env, "CACHE_DIR")?, file.cache_dir.clone()).unwrap_or(default_cache_dir);
    let max_size = match pick(args.cache_max_size.clone(), env_var(env, "CACHE_MAX_SIZE")?, file.cache_max_size.clone())
    {
        Some(s) => {
            parse_size(&s).ok_or_else(|| invalid("--cache-max-size", format!("{s:?} is not a size like 50G")))?
        }
        None => DEFAULT_CACHE_MAX_SIZE,
    };
    Ok(ProxyConfig {
        flavour: match dialect {
            Dialect::Nix => upstream::Flavour::Nix,
            Dialect::Guix => upstream::Flavour::Guix,
        },
        upstreams,
        cache_dir,
        max_size,
        negative_ttl,
        store_dir: store_dir.to_owned(),
        stall_timeout: Duration::from_secs(60),
        breaker_cool_down: ProxyConfig::DEFAULT_BREAKER_COOL_DOWN,
        retry_budget: ProxyConfig::DEFAULT_RETRY_BUDGET,
        outage_patience: ProxyConfig::DEFAULT_OUTAGE_PATIENCE,
        max_narinfo_fetches: ProxyConfig::DEFAULT_MAX_NARINFO_FETCHES,
        max_narinfo_fetches_per_client: ProxyConfig::DEFAULT_MAX_NARINFO_FETCHES_PER_CLIENT,
    })
}

/// Validates one upstream: an http(s) URL and at least one trusted key, in the dialect's
/// format (`name:base64` for Nix, a `(public-key …)` sexp for Guix). The public caches' own
/// keys are implied for their URLs.
fn upstream_config(
    index: usize,
    up: FileUpstream,
    timeout: Duration,
    dialect: Dialect,
) -> Result<UpstreamConfig, SettingsError> {
    if !(up.url.starts_with("http://") || up.url.starts_with("https://")) {
        return Err(invalid("--upstream", format!("{:?} is not an http:// or https:// URL", up.url)));
    }
    let url = up.url.trim_end_matches('/');
    let (mut keys, mut guix_keys) = (Vec::new(), Vec::new());
    match dialect {
        Dialect::Nix => {
            for k in &up.keys {
                keys.push(PublicKey::parse(k).map_err(|e| invalid("--upstream-key", format!("{k:?}: {e}")))?);
            }
            if keys.is_empty() && url == upstream::CACHE_NIXOS_ORG {
                keys.push(PublicKey::parse(upstream::CACHE_NIXOS_ORG_KEY).expect("valid built-in key"));
            }
        }
        Dialect::Guix => {
            for k in &up.keys {
                let key = GuixPublicKey::parse(k).map_err(|e| {
                    invalid("--upstream-key", format!("{k:?}: {e} (a Guix upstream key is a (public-key …) sexp)"))
                })?;
                guix_keys.push(key);
            }
            let implied = match url {
                upstream::GUIX_BORDEAUX => Some(upstream::GUIX_BORDEAUX_KEY),
                upstream::GUIX_CI => Some(upstream::GUIX_CI_KEY),
                _ => None,
            };
            if let (true, Some(key)) = (guix_keys.is_empty(), implied) {
                guix_keys.push(GuixPublicKey::parse(key).expect("valid built-in key"));
            }
        }
    }
    if keys.is_empty() && guix_keys.is_empty() {
        return Err(invalid("--upstream-key", format!("no trusted key for upstream {}", up.url)));
    }
    Ok(UpstreamConfig {
        url: up.url,
        keys,
        guix_keys,
        priority: up.priority.unwrap_or(index as i32),
        timeout: up.timeout.map(Duration::from_secs).unwrap_or(timeout),
    })
}

/// Parses `1024`, `512K`, `512M`, `50G`, `2T` (binary units; a trailing `B`/`iB` is allowed).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_suffix("iB").or_else(|| s.strip_suffix('B')).unwrap_or(s);
    let (digits, shift) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 10),
        'M' => (&s[..s.len() - 1], 20),
        'G' => (&s[..s.len() - 1], 30),
        'T' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

fn pick<T>(flag: Option<T>, env: Option<T>, file: Option<T>) -> Option<T> {
    flag.or(env).or(file)
}

fn invalid(setting: &'static str, reason: String) -> SettingsError {
    SettingsError::Invalid { setting, reason }
}

/// Reads and parses `SUBSERVE_<name>`, if set.
fn env_var<T: FromStr>(env: &Env, name: &str) -> Result<Option<T>, SettingsError>
where
    T::Err: Display,
{
    let var = format!("SUBSERVE_{name}");
    match env.vars.get(&var) {
        None => Ok(None),
        Some(value) => value.parse().map(Some).map_err(|e: T::Err| SettingsError::Env {
            var,
            value: value.clone(),
            reason: e.to_string(),
        }),
    }
}

fn default_state_dir(env: &Env) -> Result<PathBuf, SettingsError> {
    if env.is_root {
        return Ok(PathBuf::from("/var/lib/subserve"));
    }
    let absolute = |v: &String| Path::new(v).is_absolute().then(|| PathBuf::from(v));
    if let Some(xdg) = env.vars.get("XDG_STATE_HOME").and_then(absolute) {
        return Ok(xdg.join("subserve"));
    }
    if let Some(home) = env.vars.get("HOME").and_then(absolute) {
        return Ok(home.join(".local/state/subserve"));
    }
    Err(invalid("--state-dir", "not given, and neither HOME nor XDG_STATE_HOME is set".to_owned()))
}

#[cfg(test)]
mod tests;
