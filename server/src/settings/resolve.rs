//! [`resolve`]: the flags, the `SUBSERVE_*` variables and the config file into [`Settings`],
//! each option from the first source that sets it (flag > variable > file > default), every
//! value checked. Pure: what it needs of the machine (the variables, the core count, whether
//! it runs as root) comes in an [`Env`].

use std::collections::HashMap;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use signing::{GuixPublicKey, PublicKey};
use store_reader::StoreConfig;
use upstream::{ProxyConfig, Trust, UpstreamConfig};

use super::file::{FileConfig, StoreTable};
use super::options::{get, GlobalOptions, Layers, Options, PublishMode, Source, Sourced, StoreOptions};
use super::{AuditSettings, ConnSettings, Publish, Settings, SettingsError, StoreSettings};
use crate::access::Access;
use crate::admission;
use crate::bake::{self, BakeConfig};
use crate::compression::{Compression, Levels};
use formats::Dialect;

/// Default listen address: loopback only, so a fresh install exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
/// Default priority: preferred over cache.nixos.org (40).
pub const DEFAULT_PRIORITY: i32 = 30;
/// Default Cache-Control max-age of a narinfo hit.
pub const DEFAULT_NARINFO_TTL: Duration = Duration::from_secs(86400);

/// The public caches a store of each dialect proxies by default, with their keys and
/// priorities; an upstream named by one of these URLs needs no key.
const PUBLIC_CACHES: [(Dialect, &str, &str, i32); 3] = [
    (Dialect::Nix, upstream::CACHE_NIXOS_ORG, upstream::CACHE_NIXOS_ORG_KEY, 40),
    (Dialect::Guix, upstream::GUIX_BORDEAUX, upstream::GUIX_BORDEAUX_KEY, 40),
    (Dialect::Guix, upstream::GUIX_CI, upstream::GUIX_CI_KEY, 50),
];

/// What the binary knows of its machine: `SUBSERVE_*`, `HOME`, `XDG_STATE_HOME`, whether it
/// runs as root, and its cores.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Environment variables.
    pub vars: HashMap<String, String>,
    /// Whether the process runs as root (chooses the default state directory).
    pub is_root: bool,
    /// The cores the process may run on (the stream caps and bake workers follow from it).
    pub cores: usize,
}

/// Applies flag > variable > file > default to every option, then validates.
///
/// Without `[[store]]` tables there is one store, set by flags, variables and the file's
/// top-level keys. With them, each table sets one store and nothing else may: a store option
/// given by a flag, a variable or a top-level key would be ambiguous, so it is an error that
/// says where the setting belongs.
pub fn resolve(flags: &Options, env: &Env, file: &FileConfig) -> Result<Settings, SettingsError> {
    let vars = Options::from_env(env)?;
    let g = Layers { flags: &flags.global, vars: &vars.global, file: &file.global, file_name: &file.name, table: None };
    let listen = get!(g, listen).map_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"), |l| l.value);
    let state_dir = match get!(g, state_dir) {
        Some(dir) => dir.value,
        None => default_state_dir(env)
            .ok_or_else(|| invalid(g.flag("state_dir"), "not given, and neither HOME nor XDG_STATE_HOME is set"))?,
    };
    let cores = env.cores.max(1);
    let max_streams = at_least_one(get!(g, max_streams))?.unwrap_or_else(|| admission::default_max_streams(cores));
    let max_compressed_streams = at_least_one(get!(g, max_compressed_streams))?
        .unwrap_or_else(|| admission::default_max_compressed_streams(cores));
    let max_streams_per_client = at_least_one(get!(g, max_streams_per_client))?
        .unwrap_or_else(|| admission::default_per_client(max_streams, 4, 4));
    let max_compressed_streams_per_client = at_least_one(get!(g, max_compressed_streams_per_client))?
        .unwrap_or_else(|| admission::default_per_client(max_compressed_streams, 2, 1));
    let conn = ConnSettings {
        idle_timeout: seconds(get!(g, idle_timeout), crate::conn::DEFAULT_IDLE_TIMEOUT)?,
        header_timeout: seconds(get!(g, header_timeout), crate::conn::DEFAULT_HEADER_TIMEOUT)?,
        write_timeout: seconds(get!(g, write_timeout), crate::conn::DEFAULT_WRITE_TIMEOUT)?,
        shutdown_timeout: seconds(get!(g, shutdown_timeout), crate::conn::DEFAULT_SHUTDOWN_TIMEOUT)?,
        max_connections: at_least_one(get!(g, max_connections))?,
    };
    let db_busy_timeout =
        get!(g, db_busy_timeout).map_or(store_reader::DEFAULT_BUSY_TIMEOUT, |ms| Duration::from_millis(ms.value));
    let url = match get!(g, url) {
        Some(url) if !is_http(&url.value) || url.value.contains(char::is_whitespace) => {
            return Err(url.invalid(format!("{:?} is not an http:// or https:// URL", url.value)))
        }
        url => url.map(|u| u.value),
    };
    let tls = match (get!(g, tls_cert), get!(g, tls_key)) {
        (Some(cert), Some(key)) => Some((cert.value, key.value)),
        (None, None) => None,
        (Some(cert), None) => return Err(cert.invalid(format!("needs {} too", g.like(&cert.from, "tls_key").name()))),
        (None, Some(key)) => return Err(key.invalid(format!("needs {} too", g.like(&key.from, "tls_cert").name()))),
    };
    let audit = resolve_audit(&g, &state_dir)?;
    let access = Access {
        admin_allow: get!(g, admin_allow).map_or_else(crate::access::default_admin_allow, |a| a.value),
        trusted_proxies: get!(g, trusted_proxies).map(|t| t.value).unwrap_or_default(),
        allow: get!(g, allow).map(|a| a.value),
    };
    let s = Layers { flags: &flags.store, vars: &vars.store, file: &file.store, file_name: &file.name, table: None };
    let stores = match &file.stores {
        None => vec![resolve_store(&s, env, &state_dir, String::new())?],
        Some(tables) => store_tables(&s, tables, env, &state_dir)?,
    };
    Ok(Settings {
        log_format: get!(g, log_format).map(|f| f.value).unwrap_or_default(),
        listen,
        state_dir,
        max_streams,
        max_compressed_streams,
        max_streams_per_client,
        max_compressed_streams_per_client,
        conn,
        db_busy_timeout,
        url,
        tls,
        audit,
        access,
        stores,
    })
}

/// The audit trail: on unless `audit` is off, in `STATE_DIR/audit.sqlite`.
fn resolve_audit(g: &Layers<'_, GlobalOptions>, state_dir: &Path) -> Result<Option<AuditSettings>, SettingsError> {
    let retention = match get!(g, audit_retention) {
        Some(days) => days.parse(|&d| match d {
            0 => Err("must be at least 1 day".into()),
            d => d.checked_mul(86_400).map(Duration::from_secs).ok_or_else(|| format!("{d} days is too long")),
        })?,
        None => Duration::from_secs(AuditSettings::DEFAULT_RETENTION_DAYS * 86_400),
    };
    let max_bytes = match get!(g, audit_max_size) {
        Some(size) => size.parse(|v| match parse_size(v) {
            Some(n) if n >= 1 << 20 => Ok(n),
            Some(_) => Err(format!("{v:?} is too small: at least 1M")),
            None => Err(format!("{v:?} is not a size like 1G")),
        })?,
        None => AuditSettings::DEFAULT_MAX_BYTES,
    };
    if get!(g, audit).is_some_and(|on| !on.value) {
        return Ok(None);
    }
    Ok(Some(AuditSettings { path: state_dir.join(AuditSettings::FILE_NAME), retention, max_bytes }))
}

/// The stores of `[[store]]` tables, each under its own prefix; `top` (the store options of
/// flags, variables and the file's top level) must be empty.
fn store_tables(
    top: &Layers<'_, StoreOptions>,
    tables: &[StoreTable],
    env: &Env,
    state_dir: &Path,
) -> Result<Vec<StoreSettings>, SettingsError> {
    if let Some(from) = top.first_given() {
        let reason = match from {
            Source::Key(..) => "a store's setting at the top level, beside [[store]] tables: set it in each table",
            _ => "a store's setting, and the config file has [[store]] tables: set it in each table instead",
        };
        return Err(invalid(from, reason));
    }
    if tables.is_empty() {
        return Err(invalid(top.key("store"), "`store = []` serves nothing: remove it or add [[store]] tables"));
    }
    let none = StoreOptions::default();
    let mut stores: Vec<StoreSettings> = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let s =
            Layers { flags: &none, vars: &none, file: &table.options, file_name: top.file_name, table: Some(i + 1) };
        let prefix = match table.prefix.as_deref() {
            Some(p) => parse_prefix(p).map_err(|reason| invalid(s.key("prefix"), reason))?,
            None if tables.len() == 1 => String::new(),
            None => {
                let reason =
                    "missing: a URL prefix such as \"/nix\" or \"/guix\" is needed when several stores are served";
                return Err(invalid(s.key("prefix"), reason));
            }
        };
        if prefix.is_empty() && tables.len() > 1 {
            return Err(invalid(
                s.key("prefix"),
                "every [[store]] table needs a prefix when several stores are served",
            ));
        }
        let store = resolve_store(&s, env, state_dir, prefix)?;
        if let Some(other) = stores.iter().find(|o| o.prefix == store.prefix) {
            return Err(invalid(s.key("prefix"), format!("two [[store]] tables use the prefix {:?}", other.prefix)));
        }
        if let Some(dir) = store.proxy.as_ref().map(|p| &p.cache_dir) {
            if stores.iter().any(|o| o.proxy.as_ref().is_some_and(|p| &p.cache_dir == dir)) {
                return Err(invalid(s.key("cache-dir"), format!("two stores share the proxy cache {}", dir.display())));
            }
        }
        stores.push(store);
    }
    Ok(stores)
}

/// One store's settings, served under `prefix`.
fn resolve_store(
    s: &Layers<'_, StoreOptions>,
    env: &Env,
    state_dir: &Path,
    prefix: String,
) -> Result<StoreSettings, SettingsError> {
    let (dialect, store, log_dir) = resolve_location(s)?;
    let compressions = resolve_compressions(s, dialect)?;
    let defaults = Levels::default();
    let zstd = get!(s, zstd_level).map(|l| l.parse(|&z| in_range(z, 1..=19))).transpose()?.unwrap_or(defaults.zstd);
    let xz = get!(s, xz_level).map(|l| l.parse(|&x| in_range(x, 0..=9))).transpose()?.unwrap_or(defaults.xz);
    let levels = Levels { zstd, xz, gzip: defaults.gzip };
    let negative_ttl =
        get!(s, negative_ttl).map_or(ProxyConfig::DEFAULT_NEGATIVE_TTL, |t| Duration::from_secs(t.value));
    // The cache area of the unprefixed store is STATE_DIR/cache (cache-guix for a Guix store,
    // so that a Nix and a Guix service on one state dir never share one); `/nix` gets
    // cache-nix.
    let default_cache = match (prefix.is_empty(), dialect) {
        (true, Dialect::Guix) => state_dir.join("cache-guix"),
        _ => state_dir.join(format!("cache{}", prefix.replace('/', "-"))),
    };
    let bake = resolve_bake(s, env, &store.store_dir, levels)?;
    let proxy = resolve_proxy(s, dialect, &store.store_dir, default_cache, negative_ttl)?;
    let publish = resolve_publish(s, dialect)?;
    Ok(StoreSettings {
        prefix,
        dialect,
        // Without upstreams and without baking there is no cache area to open.
        proxy: (!proxy.upstreams.is_empty() || !bake.compressions.is_empty()).then_some(proxy),
        store,
        log_dir,
        sign_key_files: get!(s, sign_key_files).map(|k| k.value).unwrap_or_default(),
        compressions,
        levels,
        priority: get!(s, priority).map_or(DEFAULT_PRIORITY, |p| p.value),
        narinfo_ttl: get!(s, narinfo_ttl).map_or(DEFAULT_NARINFO_TTL, |t| Duration::from_secs(t.value)),
        negative_ttl,
        bake,
        publish,
    })
}

/// `--publish` and its `--publish-trusted-key`s: keys only with `signed`, and `signed` only
/// with keys and for a Nix store (Guix's DB keeps no signatures).
fn resolve_publish(s: &Layers<'_, StoreOptions>, dialect: Dialect) -> Result<Publish, SettingsError> {
    let mode = get!(s, publish);
    let keys = get!(s, publish_trusted_keys);
    match (mode, keys) {
        (None, None) => Ok(Publish::All),
        (Some(m), None) if m.value == PublishMode::All => Ok(Publish::All),
        (Some(m), _) if m.value == PublishMode::Signed && dialect == Dialect::Guix => {
            Err(m.invalid("a Guix store's DB keeps no signatures: serve it with `all`".to_owned()))
        }
        (Some(m), None) => Err(m.invalid(format!("`signed` needs {}", s.like(&m.from, "publish_trusted_keys").name()))),
        (Some(m), Some(keys)) if m.value == PublishMode::Signed => {
            let parsed = keys
                .value
                .iter()
                .map(|k| PublicKey::parse(k).map_err(|e| keys.invalid(format!("{k:?}: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            if parsed.is_empty() {
                return Err(keys.invalid("no key given".to_owned()));
            }
            Ok(Publish::Signed(parsed))
        }
        (_, Some(keys)) => {
            Err(keys.invalid(format!("only has a use with {} signed", s.like(&keys.from, "publish").name())))
        }
    }
}

/// The store's dialect and locations: an explicit path wins, then one under `store-root`,
/// then the dialect's default location.
fn resolve_location(s: &Layers<'_, StoreOptions>) -> Result<(Dialect, StoreConfig, PathBuf), SettingsError> {
    let explicit_dialect = get!(s, dialect).map(|d| d.value);
    let store_dir = match get!(s, store_dir) {
        Some(dir) => {
            dir.parse(|d| match d.starts_with('/') && d.len() >= 2 && !d.ends_with('/') && !d.contains("//") {
                true => Ok(d.clone()),
                false => Err(format!("{d:?} must be an absolute path without a trailing slash")),
            })?
        }
        None => explicit_dialect.unwrap_or(Dialect::Nix).default_store_dir().to_owned(),
    };
    let dialect = explicit_dialect.unwrap_or_else(|| Dialect::for_store_dir(&store_dir));
    let store_root = get!(s, store_root).map(|r| r.value);
    let located = |rel: &str| match &store_root {
        Some(root) => root.join(rel.trim_start_matches('/')),
        None => Path::new("/").join(rel.trim_start_matches('/')),
    };
    let real_store_dir = get!(s, real_store_dir).map_or_else(|| located(&store_dir), |d| d.value);
    let db = get!(s, db).map_or_else(|| located(dialect.db_path()), |d| d.value);
    let log_dir = get!(s, log_dir).map_or_else(|| located(dialect.log_dir()), |d| d.value);
    Ok((dialect, StoreConfig { store_dir, real_store_dir, db }, log_dir))
}

/// What narinfos offer: one compression for Nix, one or more groups for Guix, each one the
/// dialect's clients can decode and subserve can produce.
fn resolve_compressions(s: &Layers<'_, StoreOptions>, dialect: Dialect) -> Result<Vec<Compression>, SettingsError> {
    let Some(list) = get!(s, compression) else { return Ok(dialect.default_compressions()) };
    list.parse(|l| {
        if let Some(bad) = l.0.iter().find(|c| !dialect.can_offer(**c)) {
            let allowed = if dialect == Dialect::Nix { "none, zstd or xz" } else { "none, zstd, gzip or xz" };
            return Err(format!("{bad} cannot be offered to {dialect} clients (use {allowed})"));
        }
        match l.0.len() {
            0 => Err("no compression given".into()),
            1 => Ok(l.0.clone()),
            _ if dialect == Dialect::Nix => Err("a Nix narinfo names exactly one compression".into()),
            _ => Ok(l.0.clone()),
        }
    })
}

/// What to bake: `zstd` unless told otherwise, `none` for nothing.
fn resolve_bake(
    s: &Layers<'_, StoreOptions>,
    env: &Env,
    store_dir: &str,
    serve_levels: Levels,
) -> Result<BakeConfig, SettingsError> {
    let compressions = match get!(s, bake) {
        None => vec![Compression::Zstd],
        Some(list) => list.parse(|l| match l.0.as_slice() {
            [Compression::None] => Ok(vec![]),
            list => match list.iter().find(|c| !matches!(c, Compression::Zstd | Compression::Xz)) {
                Some(bad) => Err(format!("{bad} cannot be baked (use zstd, xz, or none alone)")),
                None => Ok(list.to_vec()),
            },
        })?,
    };
    let min_size = match get!(s, bake_min_size) {
        Some(size) => size.parse(|v| parse_size(v).ok_or_else(|| format!("{v:?} is not a size like 1M")))?,
        None => bake::DEFAULT_BAKE_MIN_SIZE,
    };
    let workers = match get!(s, bake_workers) {
        Some(w) => w.parse(|&n| match n {
            0 => Err(format!("must be at least 1 (use {} none to turn baking off)", s.like(&w.from, "bake").name())),
            n => Ok(n),
        })?,
        None => bake::default_workers(env.cores),
    };
    let zstd = get!(s, bake_zstd_level)
        .map(|l| l.parse(|&z| in_range(z, 1..=19)))
        .transpose()?
        .unwrap_or(bake::DEFAULT_BAKE_ZSTD_LEVEL);
    let roots = match get!(s, bake_roots) {
        Some(roots) => roots.parse(|roots| {
            match roots.iter().find(|r| !r.starts_with(&format!("{store_dir}/")) || r.contains("/../")) {
                Some(bad) => Err(format!("{bad:?} is not a path in {store_dir}")),
                None => Ok(roots.clone()),
            }
        })?,
        None => vec![],
    };
    let levels = Levels { zstd, xz: bake::DEFAULT_BAKE_XZ_LEVEL, gzip: serve_levels.gzip };
    let delay = get!(s, bake_delay).map_or(bake::DEFAULT_BAKE_DELAY, |d| Duration::from_secs(d.value));
    Ok(BakeConfig { compressions, min_size, workers, levels, urgent_levels: serve_levels, delay, roots })
}

/// The cache area and proxy settings: upstreams from flags, else `SUBSERVE_UPSTREAM`, else
/// the file's `[[upstream]]` tables, else the dialect's public caches (cache.nixos.org; for
/// Guix bordeaux.guix.gnu.org and ci.guix.gnu.org); `none` (or an empty list in the file)
/// leaves no upstream.
fn resolve_proxy(
    s: &Layers<'_, StoreOptions>,
    dialect: Dialect,
    store_dir: &str,
    default_cache_dir: PathBuf,
    negative_ttl: Duration,
) -> Result<ProxyConfig, SettingsError> {
    let timeout = get!(s, upstream_timeout).map_or(UpstreamConfig::DEFAULT_TIMEOUT, |t| Duration::from_secs(t.value));
    let upstreams = match (get!(s, upstreams), get!(s, upstream)) {
        (Some(urls), _) if urls.value.iter().any(|u| u == "none") => {
            if urls.value.len() > 1 {
                return Err(urls.invalid("`none` cannot be combined with other upstreams"));
            }
            Ok(vec![])
        }
        (Some(urls), _) => {
            let keys = get!(s, upstream_keys)
                .unwrap_or_else(|| Sourced { value: vec![], from: s.like(&urls.from, "upstream_keys") });
            let url = |url: &String| Sourced { value: url.clone(), from: urls.from.clone() };
            let priorities = 0..;
            urls.value
                .iter()
                .zip(priorities)
                .map(|(u, p)| upstream_config(url(u), &keys, p, timeout, dialect))
                .collect::<Result<Vec<_>, _>>()
        }
        (None, Some(tables)) => tables
            .value
            .iter()
            .zip(1..)
            .map(|(table, n)| {
                let url = Sourced { value: table.url.clone(), from: s.key(&format!("upstream[{n}].url")) };
                let keys = Sourced { value: table.keys.clone(), from: s.key(&format!("upstream[{n}].keys")) };
                let timeout = table.timeout.map_or(timeout, Duration::from_secs);
                upstream_config(url, &keys, table.priority.unwrap_or(n - 1), timeout, dialect)
            })
            .collect::<Result<Vec<_>, _>>(),
        (None, None) => PUBLIC_CACHES
            .iter()
            .filter(|(d, ..)| *d == dialect)
            .map(|&(_, url, _, priority)| {
                let url = Sourced { value: url.to_owned(), from: s.flag("upstreams") };
                let keys = Sourced { value: vec![], from: s.flag("upstream_keys") };
                upstream_config(url, &keys, priority, timeout, dialect)
            })
            .collect::<Result<Vec<_>, _>>(),
    }?;
    let cache_dir = get!(s, cache_dir).map_or(default_cache_dir, |d| d.value);
    let max_size = match get!(s, cache_max_size) {
        Some(size) => size.parse(|v| parse_size(v).ok_or_else(|| format!("{v:?} is not a size like 50G")))?,
        None => ProxyConfig::DEFAULT_MAX_SIZE,
    };
    Ok(ProxyConfig { upstreams, max_size, negative_ttl, ..ProxyConfig::new(dialect, store_dir, cache_dir) })
}

/// Validates one upstream: an http(s) URL and at least one trusted key, in the dialect's
/// format (`name:base64` for Nix, a `(public-key …)` sexp for Guix). The public caches' own
/// keys are implied for their URLs.
fn upstream_config(
    url: Sourced<String>,
    keys: &Sourced<Vec<String>>,
    priority: i32,
    timeout: Duration,
    dialect: Dialect,
) -> Result<UpstreamConfig, SettingsError> {
    if !is_http(&url.value) {
        return Err(url.invalid(format!("{:?} is not an http:// or https:// URL", url.value)));
    }
    let bare = url.value.trim_end_matches('/');
    let implied = PUBLIC_CACHES.iter().find(|(d, u, ..)| *d == dialect && *u == bare).map(|&(_, _, key, _)| key);
    let texts: Vec<&str> = match keys.value.is_empty() {
        true => implied.into_iter().collect(),
        false => keys.value.iter().map(String::as_str).collect(),
    };
    if texts.is_empty() {
        return Err(keys.invalid(format!("no trusted key for upstream {}", url.value)));
    }
    let trust = match dialect {
        Dialect::Nix => Trust::Nix(
            texts
                .into_iter()
                .map(|k| PublicKey::parse(k).map_err(|e| keys.invalid(format!("{k:?}: {e}"))))
                .collect::<Result<_, _>>()?,
        ),
        Dialect::Guix => Trust::Guix(
            texts
                .into_iter()
                .map(|k| {
                    GuixPublicKey::parse(k)
                        .map_err(|e| keys.invalid(format!("{k:?}: {e} (a Guix upstream key is a (public-key …) sexp)")))
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(UpstreamConfig { url: url.value, trust, priority, timeout })
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

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

fn invalid(from: Source, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid { from, reason: reason.into() }
}

/// A cap, if given: at least 1.
fn at_least_one(value: Option<Sourced<usize>>) -> Result<Option<usize>, SettingsError> {
    value.map(|v| v.parse(|&n| if n == 0 { Err("must be at least 1".into()) } else { Ok(n) })).transpose()
}

/// A timeout in seconds, if given (at least 1), else `default`.
fn seconds(value: Option<Sourced<u64>>, default: Duration) -> Result<Duration, SettingsError> {
    match value {
        Some(v) => {
            v.parse(|&s| if s == 0 { Err("must be at least 1 second".into()) } else { Ok(Duration::from_secs(s)) })
        }
        None => Ok(default),
    }
}

fn in_range<N: PartialOrd + Display + Copy>(n: N, range: RangeInclusive<N>) -> Result<N, String> {
    match range.contains(&n) {
        true => Ok(n),
        false => Err(format!("{n} is not in {}..={}", range.start(), range.end())),
    }
}

fn default_state_dir(env: &Env) -> Option<PathBuf> {
    if env.is_root {
        return Some(PathBuf::from("/var/lib/subserve"));
    }
    let absolute = |v: &String| Path::new(v).is_absolute().then(|| PathBuf::from(v));
    if let Some(xdg) = env.vars.get("XDG_STATE_HOME").and_then(absolute) {
        return Some(xdg.join("subserve"));
    }
    env.vars.get("HOME").and_then(absolute).map(|home| home.join(".local/state/subserve"))
}
