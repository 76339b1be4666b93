//! The one error type of the signing crate, built so that no message can carry secret material.
//!
//! Parse errors deliberately carry no part of the text that failed to parse: a secret key
//! written the wrong way round (`base64:name`) would otherwise put the secret into a log line.
//! A key name appears only once the rest of the key has decoded, when it is known to be a name.

use std::fmt;
use std::path::PathBuf;

/// Which of the two kinds of Nix key a parse error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A `name:base64(seed ++ public key)` signing key.
    Secret,
    /// A `name:base64(public key)` verification key.
    Public,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Secret => "secret",
            KeyKind::Public => "public",
        })
    }
}

/// Why a key could not be parsed, generated, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key text has no `:` between the name and the base64 data.
    #[error("{kind} key has no ':' separating its name from its base64 data")]
    MissingColon {
        /// Which kind of key was being parsed.
        kind: KeyKind,
    },
    /// The key text starts with `:`, so its name is empty.
    #[error("{kind} key has an empty name before the ':'")]
    EmptyName {
        /// Which kind of key was being parsed.
        kind: KeyKind,
    },
    /// The part after the `:` is not standard padded base64.
    #[error("{kind} key data after the ':' is not valid base64")]
    Base64 {
        /// Which kind of key was being parsed.
        kind: KeyKind,
        /// The decoder's complaint (a kind and a position, never the input).
        #[source]
        source: data_encoding::DecodeError,
    },
    /// The base64 data decodes to the wrong number of bytes.
    #[error("{kind} key data decodes to {actual} bytes, expected {expected}")]
    Length {
        /// Which kind of key was being parsed.
        kind: KeyKind,
        /// Bytes a key of this kind has (64 secret, 32 public).
        expected: usize,
        /// Bytes the data decoded to.
        actual: usize,
    },
    /// The last 32 bytes of a secret key are not the public key of its first 32.
    #[error("secret key {name:?} embeds a public key that does not belong to its seed")]
    PublicHalfMismatch {
        /// The key's name.
        name: String,
    },
    /// The 32 bytes of a public key are not a point on the Ed25519 curve.
    #[error("public key {name:?} is not a valid ed25519 public key")]
    InvalidPublicKey {
        /// The key's name.
        name: String,
        /// Why the bytes were rejected.
        #[source]
        source: ed25519_dalek::SignatureError,
    },
    /// A name given to [`SecretKey::generate`](crate::SecretKey::generate) that Nix could not use.
    #[error("invalid key name {name:?}: it must be non-empty and contain no ':' or whitespace")]
    InvalidName {
        /// The name that was refused.
        name: String,
    },
    /// The operating system could not supply randomness for a new key.
    #[error("cannot get random bytes from the operating system for a new key")]
    Randomness {
        /// The underlying failure.
        #[source]
        source: rand::Error,
    },
    /// A key file could not be opened or read.
    #[error("cannot read key file {}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A key file was read but its contents are not a valid key.
    #[error("invalid key in file {}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What was wrong with the key.
        #[source]
        source: Box<Error>,
    },
    /// A secret key file can be read or written by its group or by others.
    #[error(
        "secret key file {} has mode {mode:04o}, which gives its group or others access; \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file to be written already exists.
    #[error("key file {} already exists, refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A key file (or its directory) could not be created, written or synced.
    #[error("cannot write key file {}", path.display())]
    Write {
        /// The file or directory being written.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
}
