//! Command-line interface of the `subserve` binary (clap definitions only; no I/O here).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::dialect::{CompressionList, Dialect};
use crate::settings::ListenAddr;

/// subserve: a binary-cache server for Nix stores.
#[derive(Debug, Parser)]
#[command(name = "subserve", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a store as a signed binary cache.
    Serve(Box<ServeArgs>),
    /// Generate a signing key pair and print the nix.conf lines clients need.
    Keygen(KeygenArgs),
}

/// Flags of `subserve serve`. Each may also come from a `SUBSERVE_*` environment variable or
/// the TOML file given by `--config`; a flag beats the environment, which beats the file.
#[derive(Debug, Clone, Default, Args)]
#[command(after_help = "Every flag has an environment variable: SUBSERVE_ plus the flag name in upper case \
with '-' as '_' (SUBSERVE_LISTEN, SUBSERVE_SIGN_KEY_FILE as a comma-separated list, ...). \
Precedence: flag > environment > config file > default. See docs/config.md.")]
pub struct ServeArgs {
    /// TOML configuration file [env: SUBSERVE_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on: ADDRESS:PORT, or unix:/PATH for a Unix socket; ignored when systemd
    /// passes sockets (socket activation) [default: 127.0.0.1:5000].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<ListenAddr>,
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
    pub sign_key_files: Vec<PathBuf>,
    /// Compression advertised in narinfos: none, zstd or xz for Nix [default: none]; for Guix
    /// a comma-separated list of groups from none, zstd, gzip, xz [default: zstd,gzip,none].
    #[arg(long, value_name = "none|zstd|xz")]
    pub compression: Option<CompressionList>,
    /// Which clients the store is for: nix or guix [default: guix for /gnu/store, else nix].
    #[arg(long, value_name = "nix|guix")]
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
    /// Upstream cache to proxy (repeatable; `none` turns proxying off)
    /// [default: cache.nixos.org, with its key].
    #[arg(long = "upstream", value_name = "URL")]
    pub upstreams: Vec<String>,
    /// Public key trusted for the --upstream caches (repeatable), `name:base64`.
    #[arg(long = "upstream-key", value_name = "KEY")]
    pub upstream_keys: Vec<String>,
    /// Deadline in seconds for an upstream's response headers (and whole narinfo) [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub upstream_timeout: Option<u64>,
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
    /// Store path whose closure is baked at start-up (repeatable).
    #[arg(long = "bake-root", value_name = "PATH")]
    pub bake_roots: Vec<String>,
    /// NAR bodies sent at once, over all stores (uncompressed, baked and proxied); more wait
    /// in a queue for up to 60 s, then get 503 [default: 16 per core, 32-256].
    #[arg(long, value_name = "N")]
    pub max_streams: Option<usize>,
    /// NARs compressed on the fly at once, over all stores; more wait likewise
    /// [default: 2 per core, 2-64].
    #[arg(long, value_name = "N")]
    pub max_compressed_streams: Option<usize>,
    /// Where subserve keeps its own state, e.g. a generated key [default: /var/lib/subserve
    /// as root, else $XDG_STATE_HOME/subserve].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
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
    /// PEM certificate chain to serve HTTPS with (with --tls-key); re-read on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (mode 0600); re-read on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The URL nodes reach this server at, for the client configuration printed at start-up
    /// [default: http://HOSTNAME:PORT when listening on all addresses, else the listen address].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Milliseconds a lookup waits for a store DB locked by a writer (rollback-journal DBs)
    /// before answering from recent lookups [default: 1000].
    #[arg(long, value_name = "MS")]
    pub db_busy_timeout: Option<u64>,
    /// Seconds a shutdown (SIGTERM, SIGINT) waits for responses in flight [default: 30].
    #[arg(long, value_name = "SECS")]
    pub shutdown_timeout: Option<u64>,
}

/// Key file formats `keygen` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum KeyFormat {
    /// `name:base64` Ed25519 keys, as `nix key generate-secret` writes them.
    #[default]
    Nix,
    /// libgcrypt sexps (ECDSA on Ed25519), as `guix archive --generate-key` writes them.
    Guix,
}

/// Flags of `subserve keygen`.
#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Key name, conventionally the host name and a number (`cache.example.org-1`); Nix
    /// keys only (Guix keys carry no name).
    #[arg(long, required_if_eq("format", "nix"))]
    pub name: Option<String>,
    /// Where to write the secret key (created with mode 0600; never overwritten).
    #[arg(long, value_name = "FILE")]
    pub secret_out: PathBuf,
    /// Where to write the public key.
    #[arg(long, value_name = "FILE")]
    pub public_out: PathBuf,
    /// Key format.
    #[arg(long, value_enum, default_value = "nix")]
    pub format: KeyFormat,
    /// The URL clients will use, for the printed nix.conf lines [default: http://HOSTNAME:5000].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
