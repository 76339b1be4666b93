//! The options of `subserve serve`, each declared once, as one field of [`GlobalOptions`] or
//! [`StoreOptions`]: clap reads that field as a flag, the same parser reads `SUBSERVE_*`
//! variables ([`Options::from_env`]), and serde reads it from the config file. The names
//! follow from the field's: `bake_min_size` is `--bake-min-size`, `SUBSERVE_BAKE_MIN_SIZE`
//! and the file key `bake-min-size`; a repeatable flag is singular (`--bake-root` for
//! `bake-roots`). The upstreams are the one exception: flags and variables name URLs and
//! keys, the file `[[upstream]]` tables.
//!
//! Every field is an `Option`, `None` when that source does not set it; `Layers` stacks the
//! three sources of one scope (flag > variable > file) and remembers where each value came
//! from, so that an error names the flag, the variable or the file key the operator wrote.

use std::path::PathBuf;

use clap::{ArgAction, Args, Command, FromArgMatches};
use serde::{Deserialize, Deserializer};

use super::file::UpstreamTable;
use super::{Env, ListenAddr, LogFormat, SettingsError};
use crate::access::Cidr;
use crate::compression::CompressionList;
use formats::Dialect;

/// What [`Layers`] needs to know of an options struct without naming its fields; implemented
/// by the `option_set!` declarations below.
pub(crate) trait OptionSet: Args + FromArgMatches + Default {
    /// The fields, by their Rust names.
    const FIELDS: &'static [&'static str];
    /// The fields this source sets.
    fn given(&self) -> Vec<&'static str>;
}

/// Declares an options struct and its [`OptionSet`] implementation: written once, the field
/// list cannot drift from the struct.
macro_rules! option_set {
    ($(#[$attr:meta])* pub struct $name:ident { $($(#[$field_attr:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$attr])*
        pub struct $name { $($(#[$field_attr])* pub $field: $ty,)* }

        impl OptionSet for $name {
            const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn given(&self) -> Vec<&'static str> {
                let mut given = Vec::new();
                $(if self.$field.is_some() {
                    given.push(stringify!($field));
                })*
                given
            }
        }
    };
}

option_set! {
    /// Settings of the whole process: top-level keys of the config file, never in a
    /// `[[store]]` table.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Args, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct GlobalOptions {
        /// How log lines are written to stderr: text (one line of key=value fields, coloured
        /// only on a terminal) or json (one object per line) [default: text].
        #[arg(long, value_name = "text|json")]
        #[serde(default, deserialize_with = "parsed")]
        pub log_format: Option<LogFormat>,
        /// Address to listen on: ADDRESS:PORT, or unix:/PATH for a Unix socket; ignored when
        /// systemd passes sockets (socket activation) [default: 127.0.0.1:5000].
        #[arg(long, value_name = "ADDR")]
        pub listen: Option<ListenAddr>,
        /// Where subserve keeps its own state, e.g. a generated key [default: /var/lib/subserve
        /// as root, else $XDG_STATE_HOME/subserve].
        #[arg(long, value_name = "DIR")]
        pub state_dir: Option<PathBuf>,
        /// NAR bodies sent at once, over all stores (uncompressed, baked and proxied); more wait
        /// in a queue for up to 60 s, then get 503 [default: 16 per core, 32-256].
        #[arg(long, value_name = "N")]
        pub max_streams: Option<usize>,
        /// NARs compressed on the fly at once, over all stores; more wait likewise
        /// [default: 2 per core, 2-64].
        #[arg(long, value_name = "N")]
        pub max_compressed_streams: Option<usize>,
        /// NAR bodies one client address may hold at once, out of --max-streams; more wait in
        /// line [default: a quarter of --max-streams, at least 4].
        #[arg(long, value_name = "N")]
        pub max_streams_per_client: Option<usize>,
        /// NARs compressed on the fly for one client address at once, out of
        /// --max-compressed-streams [default: half of it, at least 1].
        #[arg(long, value_name = "N")]
        pub max_compressed_streams_per_client: Option<usize>,
        /// Connections open at once; at the cap the longest-idle ones are closed and accepting
        /// pauses [default: what the descriptor limit leaves, at most 16384].
        #[arg(long, value_name = "N")]
        pub max_connections: Option<usize>,
        /// Seconds a connection may wait for its next request [default: 60].
        #[arg(long, value_name = "SECS")]
        pub idle_timeout: Option<u64>,
        /// Seconds a request head may take once its first byte has arrived [default: 20].
        #[arg(long, value_name = "SECS")]
        pub header_timeout: Option<u64>,
        /// Seconds a response may go without the client accepting a byte; then it is cut and
        /// its stream slot freed (clients resume with Range) [default: 30].
        #[arg(long, value_name = "SECS")]
        pub write_timeout: Option<u64>,
        /// Seconds a shutdown (SIGTERM, SIGINT) waits for responses in flight [default: 30].
        #[arg(long, value_name = "SECS")]
        pub shutdown_timeout: Option<u64>,
        /// Milliseconds a lookup waits for a store DB locked by a writer (rollback-journal DBs)
        /// before answering from recent lookups [default: 1000].
        #[arg(long, value_name = "MS")]
        pub db_busy_timeout: Option<u64>,
        /// The URL nodes reach this server at, for the client configuration printed at start-up
        /// [default: http://HOSTNAME:PORT when listening on all addresses, else the listen address].
        #[arg(long, value_name = "URL")]
        pub url: Option<String>,
        /// PEM certificate chain to serve HTTPS with (with --tls-key); re-read on SIGHUP.
        #[arg(long, value_name = "FILE")]
        pub tls_cert: Option<PathBuf>,
        /// PEM private key of --tls-cert (mode 0600); re-read on SIGHUP.
        #[arg(long, value_name = "FILE")]
        pub tls_key: Option<PathBuf>,
        /// Keep the audit trail in STATE_DIR/audit.sqlite: which client fetched which store
        /// path, when, and how many bytes (`--audit=off` turns it off) [default: on].
        #[arg(
            long,
            value_name = "on|off",
            num_args = 0..=1,
            default_missing_value = "on",
            value_parser = clap::builder::BoolishValueParser::new(),
            hide_possible_values = true
        )]
        pub audit: Option<bool>,
        /// Days the audit trail keeps a record [default: 90].
        #[arg(long, value_name = "DAYS")]
        pub audit_retention: Option<u64>,
        /// Size the audit trail is kept under, the oldest records deleted first, e.g. 1G, 512M
        /// [default: 1G].
        #[arg(long, value_name = "SIZE")]
        pub audit_max_size: Option<String>,
        /// A reverse proxy (an address or range, repeatable) whose X-Forwarded-For names the
        /// client: the right-most address in it that is not such a proxy [default: none; the
        /// header is ignored].
        #[arg(long = "trusted-proxy", value_name = "CIDR")]
        pub trusted_proxies: Option<Vec<Cidr>>,
        /// Addresses (ranges, repeatable) that may read /metrics and the status page's client
        /// lists; others get 403 [default: 127.0.0.0/8 and ::1, this host].
        #[arg(long = "admin-allow", value_name = "CIDR")]
        pub admin_allow: Option<Vec<Cidr>>,
        /// Addresses (ranges, repeatable) that may read from this server at all; others get
        /// 403, except for /health and the --admin-allow addresses [default: everyone].
        #[arg(long = "allow", value_name = "CIDR")]
        pub allow: Option<Vec<Cidr>>,
    }
}

option_set! {
    /// Settings of one store: flags, variables and top-level keys when one store is served,
    /// the keys of each `[[store]]` table when the config file has them.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Args, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct StoreOptions {
        /// The store directory as clients see it [default: /nix/store].
        #[arg(long, value_name = "DIR")]
        pub store_dir: Option<String>,
        /// Root of a chroot store (as made by `nix-store --store ROOT`): sets the real store dir,
        /// the DB and the log dir below ROOT unless they are given.
        #[arg(long, value_name = "ROOT")]
        pub store_root: Option<PathBuf>,
        /// Where the store's files physically are [default: the store dir].
        #[arg(long, value_name = "DIR")]
        pub real_store_dir: Option<PathBuf>,
        /// The store's SQLite DB [default: /nix/var/nix/db/db.sqlite].
        #[arg(long, value_name = "FILE")]
        pub db: Option<PathBuf>,
        /// Build logs directory [default: /nix/var/log/nix/drvs].
        #[arg(long, value_name = "DIR")]
        pub log_dir: Option<PathBuf>,
        /// Secret key to sign narinfos with (repeatable) [default: STATE_DIR/signing-key.sec,
        /// generated on first start].
        #[arg(long = "sign-key-file", value_name = "FILE")]
        pub sign_key_files: Option<Vec<PathBuf>>,
        /// Compression advertised in narinfos: none, zstd or xz for Nix [default: none]; for Guix
        /// a comma-separated list of groups from none, zstd, gzip, xz [default: zstd,gzip,none].
        #[arg(long, value_name = "none|zstd|xz")]
        #[serde(default, deserialize_with = "parsed")]
        pub compression: Option<CompressionList>,
        /// Which clients the store is for: nix or guix [default: guix for /gnu/store, else nix].
        #[arg(long, value_name = "nix|guix")]
        #[serde(default, deserialize_with = "parsed")]
        pub dialect: Option<Dialect>,
        /// Cache-Control max-age in seconds on narinfos that exist [default: 86400].
        #[arg(long, value_name = "SECONDS")]
        pub narinfo_ttl: Option<u64>,
        /// zstd level for on-the-fly compression, 1-19 [default: 3].
        #[arg(long, value_name = "N")]
        pub zstd_level: Option<i32>,
        /// xz preset for on-the-fly compression, 0-9 [default: 2].
        #[arg(long, value_name = "N")]
        pub xz_level: Option<u32>,
        /// Priority in /nix-cache-info; lower is preferred (cache.nixos.org is 40) [default: 30].
        #[arg(long, value_name = "N")]
        pub priority: Option<i32>,
        /// Which local paths are served: all, or signed (only those whose signatures in the
        /// store DB include one by a --publish-trusted-key); others answer as absent
        /// [default: all].
        #[arg(long, value_name = "all|signed")]
        #[serde(default, deserialize_with = "parsed")]
        pub publish: Option<PublishMode>,
        /// A public key (name:base64, repeatable) whose signatures in the store DB publish a
        /// path under --publish signed.
        #[arg(long = "publish-trusted-key", value_name = "KEY")]
        pub publish_trusted_keys: Option<Vec<String>>,
        /// Upstream cache to proxy (repeatable; `none` turns proxying off)
        /// [default: cache.nixos.org, with its key].
        #[arg(long = "upstream", value_name = "URL")]
        #[serde(skip)]
        pub upstreams: Option<Vec<String>>,
        /// Public key trusted for the --upstream caches (repeatable), `name:base64`.
        #[arg(long = "upstream-key", value_name = "KEY")]
        #[serde(skip)]
        pub upstream_keys: Option<Vec<String>>,
        /// Deadline in seconds for an upstream's response headers (and whole narinfo) [default: 10].
        #[arg(long, value_name = "SECONDS")]
        #[serde(skip)]
        pub upstream_timeout: Option<u64>,
        /// `[[upstream]]` tables: the file's way to name upstreams, each with its keys, priority
        /// and timeout; an empty list turns proxying off.
        #[arg(skip)]
        pub upstream: Option<Vec<UpstreamTable>>,
        /// Where proxied narinfos and NARs are cached [default: STATE_DIR/cache].
        #[arg(long, value_name = "DIR")]
        pub cache_dir: Option<PathBuf>,
        /// Size limit of the cache, e.g. 50G, 512M, or bytes [default: 10G].
        #[arg(long, value_name = "SIZE")]
        pub cache_max_size: Option<String>,
        /// Seconds a path that no upstream has is remembered as absent [default: 300].
        #[arg(long, value_name = "SECONDS")]
        pub negative_ttl: Option<u64>,
        /// Compressions to bake in the background into the cache dir, so large NARs are served
        /// from files: a comma-separated list of zstd, xz, or `none` to turn baking off
        /// [default: zstd].
        #[arg(long, value_name = "LIST")]
        #[serde(default, deserialize_with = "parsed")]
        pub bake: Option<CompressionList>,
        /// NARs smaller than this are compressed on the fly, never baked [default: 1M].
        #[arg(long, value_name = "SIZE")]
        pub bake_min_size: Option<String>,
        /// Threads baking at once, at low CPU priority [default: half the cores, at least 1].
        #[arg(long, value_name = "N")]
        pub bake_workers: Option<usize>,
        /// zstd level for baking, 1-19 [default: 15].
        #[arg(long, value_name = "N")]
        pub bake_zstd_level: Option<i32>,
        /// Seconds a bake queued by a narinfo request waits before a background worker takes
        /// it; a client asking for the file meanwhile gets it baked at once, fast [default: 30].
        #[arg(long, value_name = "SECONDS")]
        pub bake_delay: Option<u64>,
        /// Store path whose closure is baked at start-up (repeatable).
        #[arg(long = "bake-root", value_name = "PATH")]
        pub bake_roots: Option<Vec<String>>,
    }
}

/// Every option of `subserve serve` as one source gives them: the flags, or the variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct Options {
    /// Settings of the whole process.
    #[command(flatten)]
    pub global: GlobalOptions,
    /// Settings of the one store, when the config file has no `[[store]]` tables.
    #[command(flatten, next_help_heading = "Store options (refused beside [[store]] tables in the config file)")]
    pub store: StoreOptions,
}

impl Options {
    /// The options `SUBSERVE_*` variables set: `SUBSERVE_` and the flag's name in upper case
    /// with `_` for `-`, parsed by the flag's own parser. A repeatable flag's variable is a
    /// comma-separated list. Other variables are left alone.
    pub fn from_env(env: &Env) -> Result<Options, SettingsError> {
        Ok(Options { global: from_env(env)?, store: from_env(env)? })
    }
}

fn from_env<T: OptionSet>(env: &Env) -> Result<T, SettingsError> {
    let command = T::augment_args(Command::new("subserve").no_binary_name(true));
    let mut options = T::default();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let var = variable(long);
        let Some(value) = env.vars.get(&var) else { continue };
        let values: Vec<&str> = match arg.get_action() {
            ArgAction::Append => value.split(',').map(str::trim).filter(|v| !v.is_empty()).collect(),
            _ => vec![value.as_str()],
        };
        // One variable at a time, so that a bad value is reported under its variable's name.
        let parsed = command
            .clone()
            .try_get_matches_from(values.iter().map(|v| format!("--{long}={v}")))
            .and_then(|matches| options.update_from_arg_matches(&matches));
        parsed.map_err(|e| SettingsError::Env {
            var,
            value: value.clone(),
            reason: std::error::Error::source(&e).map_or_else(|| e.kind().to_string(), ToString::to_string),
        })?;
    }
    Ok(options)
}

/// The variable of a flag: `SUBSERVE_` and its long name in upper case, `_` for `-`.
fn variable(long: &str) -> String {
    format!("SUBSERVE_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Reads a file value as a string and parses it as the flag does.
/// What `--publish` says; with the keys of `--publish-trusted-key` it becomes a
/// `resolved::Publish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishMode {
    /// Every valid path.
    All,
    /// Paths signed by a trusted key.
    Signed,
}

impl std::str::FromStr for PublishMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "signed" => Ok(Self::Signed),
            other => Err(format!("{other:?} is not a publishing policy: all or signed")),
        }
    }
}

fn parsed<'de, D: Deserializer<'de>, T: std::str::FromStr>(d: D) -> Result<Option<T>, D::Error>
where
    T::Err: std::fmt::Display,
{
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// Where a value came from, as the operator wrote it: the flag, the variable, or the file key
/// (with the `[[store]]` table it is in, counted from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A flag, `--zstd-level`.
    Flag(String),
    /// A variable, `SUBSERVE_ZSTD_LEVEL`.
    Var(String),
    /// A config file key: the file as given, and the key, `store[2].zstd-level`.
    Key(String, String),
}

impl Source {
    /// The flag, variable or key, without the file's name.
    pub fn name(&self) -> &str {
        match self {
            Source::Flag(name) | Source::Var(name) | Source::Key(_, name) => name,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(name) | Source::Var(name) => f.write_str(name),
            Source::Key(file, key) => write!(f, "{file}: {key}"),
        }
    }
}

/// A value, and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Sourced<V> {
    /// The value.
    pub(crate) value: V,
    /// Its source.
    pub(crate) from: Source,
}

impl<V> Sourced<V> {
    /// The error for this value: `reason` under its source's name.
    pub(crate) fn invalid(&self, reason: impl Into<String>) -> SettingsError {
        SettingsError::Invalid { from: self.from.clone(), reason: reason.into() }
    }

    /// What `parse` makes of the value; its error is reported under the source's name.
    pub(crate) fn parse<W>(&self, parse: impl FnOnce(&V) -> Result<W, String>) -> Result<W, SettingsError> {
        parse(&self.value).map_err(|reason| self.invalid(reason))
    }
}

/// The three sources of one scope's options, in precedence order: flags, variables, and the
/// config file (its top level, or one `[[store]]` table). This is the one place where sources
/// are merged.
pub(crate) struct Layers<'a, T> {
    /// From the command line.
    pub(crate) flags: &'a T,
    /// From `SUBSERVE_*` variables.
    pub(crate) vars: &'a T,
    /// From the config file.
    pub(crate) file: &'a T,
    /// The config file's name, for messages.
    pub(crate) file_name: &'a str,
    /// The `[[store]]` table `file` is, counted from 1; `None`: the top level.
    pub(crate) table: Option<usize>,
}

impl<T: OptionSet> Layers<'_, T> {
    /// The value of `field` (read by `read`) from the first source that sets it.
    pub(crate) fn get<V: Clone>(&self, field: &'static str, read: impl Fn(&T) -> &Option<V>) -> Option<Sourced<V>> {
        if let Some(value) = read(self.flags) {
            return Some(Sourced { value: value.clone(), from: self.flag(field) });
        }
        if let Some(value) = read(self.vars) {
            return Some(Sourced { value: value.clone(), from: self.var(field) });
        }
        read(self.file).as_ref().map(|value| Sourced { value: value.clone(), from: self.key(&field.replace('_', "-")) })
    }

    /// The flag of `field`: `--` and its long name.
    pub(crate) fn flag(&self, field: &str) -> Source {
        Source::Flag(format!("--{}", long_name::<T>(field)))
    }

    /// The variable of `field`.
    pub(crate) fn var(&self, field: &str) -> Source {
        Source::Var(variable(&long_name::<T>(field)))
    }

    /// A file key (`narinfo-ttl`, `upstream[1].url`) in this scope's part of the file.
    pub(crate) fn key(&self, key: &str) -> Source {
        let key = match self.table {
            Some(n) => format!("store[{n}].{key}"),
            None => key.to_owned(),
        };
        Source::Key(self.file_name.to_owned(), key)
    }

    /// Where `field` would come from in the source `like` is from: to name a setting that
    /// goes with another (`--tls-key` with `--tls-cert`, `tls-key` with `tls-cert`).
    pub(crate) fn like(&self, like: &Source, field: &str) -> Source {
        match like {
            Source::Flag(_) => self.flag(field),
            Source::Var(_) => self.var(field),
            Source::Key(..) => self.key(&field.replace('_', "-")),
        }
    }

    /// The first option a flag, a variable or the file sets in this scope, by its source.
    pub(crate) fn first_given(&self) -> Option<Source> {
        let first = |options: &T| options.given().first().copied();
        first(self.flags)
            .map(|f| self.flag(f))
            .or_else(|| first(self.vars).map(|f| self.var(f)))
            .or_else(|| first(self.file).map(|f| self.key(&f.replace('_', "-"))))
    }
}

/// The long flag name of `field` (its clap id): `bake-root` for `bake_roots`.
fn long_name<T: Args>(field: &str) -> String {
    let command = T::augment_args(Command::new("subserve"));
    let long = command.get_arguments().find(|a| a.get_id() == field).and_then(|a| a.get_long());
    long.map_or_else(|| field.replace('_', "-"), str::to_owned)
}

/// `get!(layers, field)`: the field's value from the first source that sets it, with its
/// source (see [`Layers::get`]); the field is named once.
macro_rules! get {
    ($layers:expr, $field:ident) => {
        $layers.get(stringify!($field), |options| &options.$field)
    };
}
pub(crate) use get;
