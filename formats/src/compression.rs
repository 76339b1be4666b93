//! The compressions a narinfo's `Compression:` field can name, with the file extensions Nix
//! gives them (docs/protocol.md §1.2). Which of them a component can *produce* or *verify* is that
//! component's business; this is only the vocabulary.

use std::fmt;
use std::str::FromStr;

/// A NAR file compression that subserve knows how to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Compression {
    /// The bare NAR.
    None,
    /// zstd (`.zst`).
    Zstd,
    /// xz (`.xz`), cache.nixos.org's historical choice.
    Xz,
    /// bzip2 (`.bz2`); also what an absent or empty `Compression:` field means.
    Bzip2,
    /// gzip (`.gz` in subserve's own file names); guix publish's default.
    Gzip,
}

impl Compression {
    /// Every compression, the longest extensions first so suffix matching is unambiguous.
    pub const ALL: [Compression; 5] =
        [Compression::Zstd, Compression::Xz, Compression::Bzip2, Compression::Gzip, Compression::None];

    /// The name in a narinfo's `Compression:` field.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Gzip => "gzip",
        }
    }

    /// The extension after `.nar` in file names (empty for the bare NAR).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
            Compression::Xz => ".xz",
            Compression::Bzip2 => ".bz2",
            Compression::Gzip => ".gz",
        }
    }

    /// Splits `<stem>.nar<ext>` into the stem and the compression its extension names.
    pub fn split_file_name(file: &str) -> Option<(&str, Compression)> {
        Self::ALL.iter().find_map(|&c| file.strip_suffix(c.extension())?.strip_suffix(".nar").map(|s| (s, c)))
    }
}

/// The NAR file name subserve gives a store path's NAR: `<store hash>-<NarHash nix32>.nar<ext>`.
///
/// Both hashes are in it so that a URL handed out in a narinfo stays valid exactly as long as
/// the path keeps the same contents; this is also nix-serve's layout.
pub fn nar_file_name(hash: &crate::StorePathHash, nar_hash: &crate::NarHash, compression: Compression) -> String {
    format!("{hash}-{}.nar{}", nar_hash.to_nix32(), compression.extension())
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compression name subserve cannot decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported compression {0:?}")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;

    /// Parses a `Compression:` value; empty means bzip2, as it does to Nix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            "xz" => Ok(Compression::Xz),
            "bzip2" | "" => Ok(Compression::Bzip2),
            "gzip" => Ok(Compression::Gzip),
            other => Err(UnknownCompression(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_file_names() {
        for c in Compression::ALL {
            assert_eq!(c.name().parse::<Compression>().unwrap(), c);
            assert_eq!(Compression::split_file_name(&format!("abc.nar{}", c.extension())), Some(("abc", c)));
        }
        assert_eq!("".parse::<Compression>().unwrap(), Compression::Bzip2);
        assert!("br".parse::<Compression>().is_err());
        assert_eq!(Compression::split_file_name("abc.nar.lz"), None);
        assert_eq!(Compression::split_file_name("abc.narinfo"), None);
    }
}
