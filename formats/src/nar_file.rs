//! NAR file names, `<store hash>-<NarHash in Nix32>.nar<ext>`: the one type that parses the
//! name a client asks for and prints the name a narinfo hands out.
//!
//! Both hashes are in the name so that a URL handed out in a narinfo stays valid exactly as
//! long as the path keeps the same contents (nix-serve's layout too); the extension says the
//! compression (see [`Compression::extension`]).

use std::fmt;
use std::str::FromStr;

use crate::{Compression, NarHash, StorePathHash};

/// A parsed NAR file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NarFile {
    /// The store path's hash part.
    pub hash: StorePathHash,
    /// The hash of the uncompressed NAR.
    pub nar_hash: NarHash,
    /// The compression the extension names.
    pub compression: Compression,
}

/// Why a file name is not a [`NarFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NarFileError {
    /// The name does not end in `.nar` plus a known extension: not a NAR at all (a server
    /// answers "not found", as for any unknown file).
    #[error("not a NAR file name")]
    NotANar,
    /// A NAR file name whose hashes are malformed (a server answers "bad request").
    #[error("invalid NAR file name: {0}")]
    Malformed(&'static str),
}

impl NarFile {
    /// Parses `<store hash>-<nar hash>.nar<ext>`.
    pub fn parse(name: &str) -> Result<Self, NarFileError> {
        let (stem, compression) = Compression::split_file_name(name).ok_or(NarFileError::NotANar)?;
        let (hash, nar_hash) = stem.split_once('-').ok_or(NarFileError::Malformed("no '-' between the hashes"))?;
        let hash = StorePathHash::parse(hash).map_err(|_| NarFileError::Malformed("invalid store path hash"))?;
        let nar_hash = NarHash::from_nix32(nar_hash).map_err(|_| NarFileError::Malformed("invalid NAR hash"))?;
        Ok(NarFile { hash, nar_hash, compression })
    }

    /// The same NAR in another compression.
    pub fn with_compression(&self, compression: Compression) -> Self {
        NarFile { compression, ..self.clone() }
    }

    /// The URL a narinfo gives for this file, relative to the cache root: `nar/<name>`.
    pub fn url(&self) -> String {
        format!("nar/{self}")
    }
}

impl fmt::Display for NarFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}.nar{}", self.hash, self.nar_hash.to_nix32(), self.compression.extension())
    }
}

impl FromStr for NarFile {
    type Err = NarFileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NarFile::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HASH: &str = "7rjj86a15146cq1d3qy068lml7n8ykzm";

    fn nar_hash() -> NarHash {
        NarHash::digest(b"a NAR")
    }

    #[test]
    fn names_round_trip_in_every_compression() {
        for compression in Compression::ALL {
            let file = NarFile { hash: StorePathHash::parse(HASH).unwrap(), nar_hash: nar_hash(), compression };
            let name = file.to_string();
            assert_eq!(name, format!("{HASH}-{}.nar{}", nar_hash().to_nix32(), compression.extension()));
            assert_eq!(NarFile::parse(&name), Ok(file.clone()));
            assert_eq!(file.url(), format!("nar/{name}"));
        }
    }

    #[test]
    fn what_is_not_a_nar_is_told_from_what_is_malformed() {
        let nar = nar_hash().to_nix32();
        for name in ["", "x", &format!("{HASH}-{nar}.narinfo"), &format!("{HASH}-{nar}.nar.lz"), "nix-cache-info"] {
            assert_eq!(NarFile::parse(name), Err(NarFileError::NotANar), "{name:?}");
        }
        for name in [
            format!("{HASH}{nar}.nar"),
            format!("{}-{nar}.nar.zst", &HASH[1..]),
            format!("{HASH}-{}.nar.xz", &nar[1..]),
            format!("{}-{nar}.nar", HASH.replace('7', "e")),
            format!("../{HASH}-{nar}.nar"),
        ] {
            assert!(matches!(NarFile::parse(&name), Err(NarFileError::Malformed(_))), "{name:?}");
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(name in "\\PC{0,120}") {
            let _ = NarFile::parse(&name);
        }
    }
}
