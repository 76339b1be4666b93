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

/// The `Compression:` of a narinfo (Nix's one, or each Guix URL group's) as it travels: one
/// subserve knows, or another kept as written, byte for byte, so that a narinfo read from an
/// upstream renders back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NarCompression {
    /// A compression subserve can decode.
    Known(Compression),
    /// Any other name (`lzip`, `br`, …): carried, never decoded.
    Other(String),
}

impl NarCompression {
    /// Reads a `Compression:` value as a client does: empty means bzip2, an unknown name is
    /// kept.
    pub fn read(text: &str) -> Self {
        match text.parse() {
            Ok(c) => NarCompression::Known(c),
            Err(UnknownCompression(other)) => NarCompression::Other(other),
        }
    }

    /// Reads a name exactly, with no default: an empty value stays empty (Guix has no
    /// bzip2 default).
    pub fn read_exact(text: &str) -> Self {
        match text {
            "" => NarCompression::Other(String::new()),
            name => Self::read(name),
        }
    }

    /// The compression, if subserve knows it.
    pub fn known(&self) -> Option<Compression> {
        match self {
            NarCompression::Known(c) => Some(*c),
            NarCompression::Other(_) => None,
        }
    }

    /// [`NarCompression::known`], or the error naming the unknown one.
    pub fn require(&self) -> Result<Compression, UnknownCompression> {
        match self {
            NarCompression::Known(c) => Ok(*c),
            NarCompression::Other(name) => Err(UnknownCompression(name.clone())),
        }
    }

    /// The name as a narinfo writes it.
    pub fn as_str(&self) -> &str {
        match self {
            NarCompression::Known(c) => c.name(),
            NarCompression::Other(name) => name,
        }
    }
}

impl From<Compression> for NarCompression {
    fn from(c: Compression) -> Self {
        NarCompression::Known(c)
    }
}

/// Compares by the name a narinfo writes.
impl PartialEq<&str> for NarCompression {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

impl fmt::Display for NarCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

    #[test]
    fn unknown_names_travel_unchanged() {
        assert_eq!(NarCompression::read("zstd"), NarCompression::Known(Compression::Zstd));
        assert_eq!(NarCompression::read("").as_str(), "bzip2");
        let lzip = NarCompression::read("lzip");
        assert_eq!((lzip.as_str(), lzip.known()), ("lzip", None));
        assert_eq!(lzip.require().unwrap_err().to_string(), "unsupported compression \"lzip\"");
    }
}
