//! Integration tests of the signing crate: Guix signatures against the golden narinfo and the
//! test vector of docs/protocol.md §5.3, and against libgcrypt itself (through Guile).

mod guix;
mod key_files;
mod libgcrypt;

use signing::guix::GuixPublicKey;

/// Why a narinfo was refused: its text (by `formats::guix`), or its signature.
#[derive(Debug)]
pub(crate) enum Refusal {
    Text(formats::Error),
    Signature(signing::Error),
}

impl Refusal {
    /// The signature's error; panics when the text was refused before the signature was seen.
    pub(crate) fn signature(self) -> signing::Error {
        match self {
            Refusal::Signature(e) => e,
            Refusal::Text(e) => panic!("refused as text, not by its signature: {e}"),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Text(e) => e.fmt(f),
            Refusal::Signature(e) => e.fmt(f),
        }
    }
}

/// What `guix substitute` checks of a narinfo: the narinfo format finds the signed text and
/// the signature's value (`formats::guix::signed`), then `signing::guix::verify` checks it.
pub(crate) fn verify_narinfo(text: &str, acl: &[GuixPublicKey]) -> Result<(), Refusal> {
    let signed = formats::guix::signed(text).map_err(Refusal::Text)?;
    signing::guix::verify(&signed.signature, signed.text, acl).map_err(Refusal::Signature)
}
