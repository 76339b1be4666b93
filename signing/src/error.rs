//! The one error type of the signing crate, built so that no message can carry secret material.
//!
//! Parse errors deliberately carry no part of the text that failed to parse: a secret key
//! written the wrong way round (`base64:name`) would otherwise put the secret into a log line.
//! A key name appears only once the rest of the key has decoded, when it is known to be a name.
//! Guix key errors say which element was wrong, never its value; s-expression errors carry a
//! byte offset and a [`SexpProblem`], never the text.

use std::fmt;
use std::path::PathBuf;

/// Which of the two kinds of key (Nix or Guix) a parse error is about.
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
        source: rand::rngs::SysError,
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
    /// A secret key file whose POSIX ACL lets a group or another user read or write it.
    #[error(
        "secret key file {} has an ACL that gives {grantee} access; run `setfacl -b {}` \
         and `chmod 600 {}`",
        path.display(),
        path.display(),
        path.display()
    )]
    AclGrantsAccess {
        /// The key file.
        path: PathBuf,
        /// Who besides the owner and this process the ACL lets in (`group 100`, `user 1001`).
        grantee: String,
    },
    /// A file given as a secret key holds a public key.
    #[error(
        "{} holds a public key; signing needs the secret key (the .sec file written with it)",
        path.display()
    )]
    PublicKeyGiven {
        /// The key file.
        path: PathBuf,
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
    /// Text that should be a libgcrypt S-expression is not one (or exceeds our bounds).
    #[error("invalid s-expression at byte {offset}: {problem}")]
    Sexp {
        /// Byte offset in the input where the problem was found.
        offset: usize,
        /// What was wrong there.
        problem: SexpProblem,
    },
    /// A Guix key sexp is well-formed but is not an ECDSA key on Ed25519 in libgcrypt's layout.
    #[error("guix {kind} key is not an ECDSA key on Ed25519 in libgcrypt's layout: expected {expected}")]
    GuixKeyForm {
        /// Which kind of key was being parsed.
        kind: KeyKind,
        /// What was missing or unexpected.
        expected: &'static str,
    },
    /// The `q` of a Guix key is not the canonical 32-byte encoding of an Ed25519 point.
    #[error("guix {kind} key has a q that is not a canonical 32-byte Ed25519 point")]
    GuixKeyPoint {
        /// Which kind of key was being parsed.
        kind: KeyKind,
    },
    /// The `d` of a Guix secret key is empty, longer than 32 bytes or a multiple of the group order.
    #[error("guix secret key has a d that is not a usable scalar (1 to 32 bytes, not 0 mod the group order)")]
    GuixKeyScalar,
    /// The `q` of a Guix secret key is not `d·G`.
    #[error("guix secret key has a q that is not d·G: its public half does not belong to its secret")]
    GuixKeyMismatch,
    /// A host name given to [`GuixSecretKey::sign_narinfo`](crate::guix::GuixSecretKey::sign_narinfo)
    /// that cannot go into a `Signature: 1;<host>;<base64>` field.
    #[error(
        "invalid host name {host:?} for a guix Signature field: it must be non-empty and contain no ';' or whitespace"
    )]
    InvalidHost {
        /// The host name that was refused.
        host: String,
    },
    /// The `Signature` field is not `<version>;<host>;<base64>`.
    #[error("narinfo Signature field has {parts} ';'-separated parts, expected 3 (version;host;base64)")]
    SignatureParts {
        /// How many parts it has.
        parts: usize,
    },
    /// The `Signature` field has a version other than `1`.
    #[error("narinfo Signature field has an unsupported version (only 1 is defined)")]
    SignatureVersion,
    /// The third part of the `Signature` field is not standard padded base64.
    #[error("narinfo Signature field is not valid base64")]
    SignatureBase64 {
        /// The decoder's complaint.
        #[source]
        source: data_encoding::DecodeError,
    },
    /// The base64 of the `Signature` field does not decode to a libgcrypt S-expression text.
    #[error("narinfo Signature field does not decode to an s-expression")]
    SignatureSexp {
        /// The parse error.
        #[source]
        source: Box<Error>,
    },
    /// The signature sexp lacks an element a Guix signature has.
    #[error("signature s-expression has no usable ({element} …) element")]
    SignatureElement {
        /// The element's token, e.g. `data`, `hash`, `sig-val`, `public-key`, `r`, `s`.
        element: &'static str,
    },
    /// The signature uses a scheme this crate does not implement (RSA, a hash other than sha256).
    #[error("signature uses an unsupported scheme: {scheme}")]
    SignatureScheme {
        /// What was found, e.g. `a sig-val other than ecdsa`.
        scheme: &'static str,
    },
    /// The key embedded in the signature is not structurally equal to any key of the ACL.
    #[error("signature was made by a key that is not in the ACL{}",
        q.as_ref().map(|q| format!(" (q #{q}#)")).unwrap_or_default())]
    UntrustedKey {
        /// The key's `q` in uppercase hex, if the embedded key has the Ed25519 form.
        q: Option<String>,
    },
    /// The hash in the signature is not the sha256 of the narinfo text before `Signature:`.
    #[error("signature is for another text: its hash is not the sha256 of the narinfo above `Signature:`")]
    HashMismatch,
    /// The ECDSA check failed (or `r`, `s` are out of range).
    #[error("ECDSA signature does not verify")]
    BadSignature,
}

/// What is wrong with an S-expression; the input itself is never quoted, since it may be a secret key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SexpProblem {
    /// Nothing but whitespace.
    Empty,
    /// Longer than [`MAX_SEXP_LEN`](crate::guix::sexp::MAX_SEXP_LEN) bytes.
    TooLong,
    /// Lists nested deeper than [`MAX_SEXP_DEPTH`](crate::guix::sexp::MAX_SEXP_DEPTH).
    TooDeep,
    /// A value outside any list, where a list was expected.
    NotAList,
    /// A `)` with no open list.
    UnmatchedClose,
    /// The input ends inside a list, string, hex or base64 value.
    Unterminated,
    /// Something other than whitespace after the top-level list.
    TrailingData,
    /// A byte that cannot start or continue any element.
    BadCharacter,
    /// A backslash escape inside a quoted string that libgcrypt does not define.
    BadEscape,
    /// A non-hex character inside `#…#`.
    BadHex,
    /// An odd number of hex digits inside `#…#`.
    OddHex,
    /// Invalid base64 inside `|…|` or `{…}`.
    BadBase64,
    /// A length prefix that starts with `0`, overflows or is not followed by `:`, `"`, `#` or `|`.
    BadLength,
    /// A `len:` prefix longer than the rest of the input.
    LengthPastEnd,
    /// A `[display hint]`, which this reader does not support.
    DisplayHint,
    /// A `{…}` transport block inside another one or after other elements.
    NestedTransport,
    /// Bytes that are not UTF-8 where text was required.
    NotUtf8,
}

impl fmt::Display for SexpProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::guix::sexp::{MAX_SEXP_DEPTH, MAX_SEXP_LEN};
        match self {
            SexpProblem::Empty => f.write_str("no s-expression, only whitespace"),
            SexpProblem::TooLong => write!(f, "longer than {MAX_SEXP_LEN} bytes"),
            SexpProblem::TooDeep => write!(f, "lists nested deeper than {MAX_SEXP_DEPTH}"),
            SexpProblem::NotAList => f.write_str("expected a list"),
            SexpProblem::UnmatchedClose => f.write_str("')' without a matching '('"),
            SexpProblem::Unterminated => f.write_str("input ends inside an element"),
            SexpProblem::TrailingData => f.write_str("data after the end of the s-expression"),
            SexpProblem::BadCharacter => f.write_str("unexpected character"),
            SexpProblem::BadEscape => f.write_str("invalid escape in a quoted string"),
            SexpProblem::BadHex => f.write_str("invalid character in #hex#"),
            SexpProblem::OddHex => f.write_str("odd number of digits in #hex#"),
            SexpProblem::BadBase64 => f.write_str("invalid base64"),
            SexpProblem::BadLength => f.write_str("invalid length prefix"),
            SexpProblem::LengthPastEnd => f.write_str("length prefix runs past the end of the input"),
            SexpProblem::DisplayHint => f.write_str("display hints ([…]) are not supported"),
            SexpProblem::NestedTransport => f.write_str("'{' transport block where none may be"),
            SexpProblem::NotUtf8 => f.write_str("not valid UTF-8"),
        }
    }
}
