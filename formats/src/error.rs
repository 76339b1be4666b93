//! The one error type of the wire-format crate.

/// Why a piece of wire-format text or data could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A character outside the Nix32 alphabet.
    #[error("invalid nix32 character {0:?}")]
    Nix32Char(char),
    /// A Nix32 string whose length or top bits do not fit the expected byte length.
    #[error("invalid nix32 string of length {len} for {bytes} bytes")]
    Nix32Length {
        /// Length of the offending string.
        len: usize,
        /// Number of bytes it should decode to.
        bytes: usize,
    },
    /// A hash string that is not `sha256:<base16|nix32|base64>` or SRI.
    #[error("invalid sha256 hash {0:?}")]
    Hash(String),
    /// A store-path hash part that is not 32 Nix32 characters.
    #[error("invalid store path hash part {0:?}")]
    HashPart(String),
    /// A store path name with forbidden characters, empty, or too long.
    #[error("invalid store path name {0:?}")]
    Name(String),
    /// A path that is not `<store dir>/<hash>-<name>`.
    #[error("{path:?} is not a store path under {store_dir:?}")]
    NotInStore {
        /// The path given.
        path: String,
        /// The store directory it should be under.
        store_dir: String,
    },
    /// A narinfo that does not follow the line syntax or lacks a required field.
    #[error("corrupt narinfo: {0}")]
    NarInfo(&'static str),
    /// A line of a Guix narinfo that `recutils->alist` cannot read, which makes Guix refuse
    /// the whole narinfo.
    #[error("narinfo line {line}: {what}")]
    Recutils {
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// A Guix narinfo without a field that must come before its first `Signature:`, so Guix
    /// treats it as unsigned.
    #[error("narinfo is unsigned: no {field} field before the first `Signature:`")]
    Unsigned {
        /// The missing field: `Signature`, `StorePath`, `NarHash` or `References`.
        field: &'static str,
    },
    /// A NAR that breaks the archive grammar.
    #[error("corrupt nar at byte {offset}: {what}")]
    Nar {
        /// Offset of the token that broke the grammar.
        offset: u64,
        /// What was wrong.
        what: &'static str,
    },
}
