//! Command-line interface of the `subserve` binary (clap definitions only; no I/O here).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::Options;

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
    /// Ask the audit trail who fetched what (docs/audit.md).
    Audit(AuditArgs),
}

/// Flags of `subserve audit`.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// The question.
    #[command(subcommand)]
    pub query: AuditQuery,
    /// The server's state directory, where its audit.sqlite is; as `serve` takes it
    /// [env: SUBSERVE_STATE_DIR] [default: as for serve].
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    /// The server's TOML configuration file, read for its state-dir [env: SUBSERVE_CONFIG].
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Only fetches since DATE: YYYY-MM-DD (midnight UTC) or an RFC 3339 time
    /// (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00).
    #[arg(long, value_name = "DATE", global = true, value_parser = crate::audit_report::parse_since)]
    pub since: Option<std::time::SystemTime>,
    /// Print JSON, for scripts, instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The questions `subserve audit` answers.
#[derive(Debug, Clone, Subcommand)]
pub enum AuditQuery {
    /// Which nodes downloaded the NAR of a path: PATTERN is a store path, its hash part, or a
    /// part of its name (glibc-2.39).
    WhoFetched {
        /// A store path, a hash part, or a part of a name.
        pattern: String,
    },
    /// Which paths one node downloaded.
    Node {
        /// The node's address, as the server saw it (or as a trusted proxy named it).
        addr: std::net::IpAddr,
    },
}

/// Flags of `subserve serve`. Each may also come from a `SUBSERVE_*` environment variable or
/// the TOML file given by `--config`; a flag beats the environment, which beats the file.
#[derive(Debug, Clone, Default, Args)]
#[command(after_help = "Every flag has an environment variable: SUBSERVE_ plus the flag name in upper case \
with '-' as '_' (SUBSERVE_LISTEN, SUBSERVE_SIGN_KEY_FILE as a comma-separated list, ...). \
Precedence: flag > environment > config file > default. See docs/config.md. \
SUBSERVE_LOG sets the log filter: info by default; debug, warn, or per module as \
'info,subserve::routes=warn' (which drops the line per request).")]
pub struct ServeArgs {
    /// TOML configuration file [env: SUBSERVE_CONFIG].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Everything else, declared in [`crate::settings::options`].
    #[command(flatten)]
    pub options: Options,
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
    /// Key format: nix (`name:base64` Ed25519, as `nix key generate-secret` writes) or guix
    /// (a libgcrypt sexp, as `guix archive --generate-key` writes).
    #[arg(long, value_name = "nix|guix", default_value = "nix")]
    pub format: formats::Dialect,
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
