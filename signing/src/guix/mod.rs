//! Guix signing keys and narinfo signatures: libgcrypt S-expressions and ECDSA on Ed25519.
//!
//! Guix does not share Nix's key format or scheme (docs/protocol.md §5.3, §5.4):
//!
//! - keys are libgcrypt S-expressions, `signing-key.pub` holding
//!   `(public-key (ecc (curve Ed25519) (q #…#)))` and `signing-key.sec` adding `(d #…#)`;
//! - a narinfo is signed by a `Signature: 1;<host>;<base64>` field whose base64 is the text of
//!   a `(signature (data …) (sig-val …) (public-key …))` sexp covering the sha256 of the
//!   narinfo text above that field;
//! - the scheme is **ECDSA in the Ed25519 group** with RFC 6979 nonces, what libgcrypt does for
//!   `(genkey (ecdsa (curve Ed25519) (flags rfc6979)))`. It is not EdDSA: an ed25519-dalek
//!   signature does not verify on Guix.
//!
//! [`sexp`] reads and prints the S-expressions, [`GuixSecretKey`] and [`GuixPublicKey`] are the
//! keys, [`GuixSecretKey::sign_narinfo`] makes the `Signature` value and [`verify`] checks
//! one. Signatures match libgcrypt's byte for byte (tests compare with libgcrypt itself).
//!
//! The arithmetic is borrowed, not hand-written: curve25519-dalek for the group (constant-time
//! k·G, its `Scalar` for arithmetic modulo the group order n), hmac and sha2 for the RFC 6979
//! nonce, and num-bigint for the one thing dalek does not expose, the affine x coordinate of a
//! point, recovered from its compressed form with a square root modulo 2^255 − 19 (on public
//! values only). The private `ecdsa` module gives the details.
//!
//! As in the Nix half of the crate, a secret never reaches `Debug`, `Display` or an error.

mod ecdsa;
mod narinfo;
mod public_key;
mod secret_key;
pub mod sexp;

pub use narinfo::verify;
pub use public_key::GuixPublicKey;
pub use secret_key::GuixSecretKey;
pub use sexp::Sexp;
