//! The settings of `subserve serve`: every option declared once ([`options`]: a field that
//! clap reads as a flag and as a `SUBSERVE_*` variable, and serde as a key of the config
//! file, [`file`](mod@file)), merged flag > variable > file > default and checked by the pure
//! [`resolve`](fn@resolve) into the [`Settings`] the server runs with ([`resolved`]).
//!
//! Nothing here reads the process environment: the binary passes it in as an [`Env`], so
//! tests pin the precedence with plain values.
//!
//! # Adding a setting
//!
//! Add a field to [`GlobalOptions`] (the whole process) or [`StoreOptions`] (one store): its
//! doc comment is its `--help`, and its name gives the flag, the variable and the file key.
//! Read it in `resolve.rs` with `get!`, which yields the value and where it came from, for
//! errors. Then document it in `docs/config.md` (and `docs/subserve.example.toml`). Scope
//! errors (a store's setting beside `[[store]]` tables, a global key inside one) follow from
//! the struct the field is in.

pub mod file;
pub mod options;
mod resolve;
pub mod resolved;

pub use file::{FileConfig, StoreTable, UpstreamTable};
pub use options::{GlobalOptions, Options, Source, StoreOptions};
pub use resolve::{parse_size, resolve, Env, DEFAULT_LISTEN, DEFAULT_NARINFO_TTL, DEFAULT_PRIORITY};
pub use resolved::{AuditSettings, ConnSettings, ListenAddr, LogFormat, Publish, Settings, StoreSettings};

/// A setting that is malformed or out of range, named as the operator gave it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A `SUBSERVE_*` variable does not parse.
    #[error("environment variable {var}: invalid value {value:?}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The config file does not parse, or has a key where none belongs.
    #[error("{file}: {message}")]
    File {
        /// The file, as given.
        file: String,
        /// What is wrong, and where (a line, or a key).
        message: String,
    },
    /// A value parses but is not allowed.
    #[error("{from}: {reason}")]
    Invalid {
        /// Where the value came from.
        from: Source,
        /// Why it is not allowed.
        reason: String,
    },
}

#[cfg(test)]
mod tests;
