//! Store path names: `<store dir>/<32 Nix32 chars>-<name>` (docs/protocol.md §1.5).
//!
//! Requests name store objects by hash part; everything taken from a URL is validated here
//! before it reaches the database or the filesystem.

use std::fmt;

use crate::{nixbase32, Error};

/// Length of a store path's hash part in characters.
pub const HASH_PART_LEN: usize = 32;
/// Longest name Nix accepts after the hash part.
pub const MAX_NAME_LEN: usize = 211;

/// The validated 32-character Nix32 hash part of a store path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePathHash(String);

impl StorePathHash {
    /// Validates a hash part: exactly 32 characters of the Nix32 alphabet.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s.len() != HASH_PART_LEN || !nixbase32::is_valid(s) {
            return Err(Error::HashPart(s.chars().take(64).collect()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The hash part as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StorePathHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StorePathHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Whether `name` is a valid store path name (the part after `<hash>-`).
///
/// Accepts what Nix 2.8 accepts, so that every path in a real store DB can be served; names
/// `.` and `..` are refused outright since they could never be a file in the store.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c))
}

/// A store object's identity: its hash part and name, independent of the store directory.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    hash: StorePathHash,
    name: String,
}

impl StorePath {
    /// Parses a basename `<hash>-<name>`.
    pub fn from_basename(s: &str) -> Result<Self, Error> {
        let (hash, name) =
            s.split_at_checked(HASH_PART_LEN).ok_or_else(|| Error::HashPart(s.chars().take(64).collect()))?;
        let hash = StorePathHash::parse(hash)?;
        let name = name
            .strip_prefix('-')
            .filter(|n| is_valid_name(n))
            .ok_or_else(|| Error::Name(s.chars().take(300).collect()))?;
        Ok(Self { hash, name: name.to_owned() })
    }

    /// Parses an absolute path `<store_dir>/<hash>-<name>`.
    pub fn from_absolute(store_dir: &str, path: &str) -> Result<Self, Error> {
        let not_in_store = || Error::NotInStore { path: path.to_owned(), store_dir: store_dir.to_owned() };
        let base = path.strip_prefix(store_dir).and_then(|rest| rest.strip_prefix('/')).ok_or_else(not_in_store)?;
        Self::from_basename(base)
    }

    /// The hash part.
    pub fn hash(&self) -> &StorePathHash {
        &self.hash
    }

    /// The name after the hash part.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<hash>-<name>`.
    pub fn basename(&self) -> String {
        format!("{}-{}", self.hash, self.name)
    }

    /// `<store_dir>/<hash>-<name>`.
    pub fn absolute(&self, store_dir: &str) -> String {
        format!("{}/{}-{}", store_dir, self.hash, self.name)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.hash, self.name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// The store path Nix and Guix give a flat (non-recursive) fixed-output file with this
/// content sha256 and name: `makeFixedOutputPath` for `fixed:out:sha256:<hex>:`. guix publish
/// serves `/file/<name>/sha256/<hash>` by computing it.
pub fn fixed_output_path(store_dir: &str, name: &str, content: &crate::NarHash) -> Result<StorePath, Error> {
    use sha2::{Digest, Sha256};
    if !is_valid_name(name) {
        return Err(Error::Name(name.chars().take(300).collect()));
    }
    let inner = Sha256::digest(format!("fixed:out:sha256:{}:", content.to_base16()));
    let fingerprint = format!("output:out:sha256:{}:{store_dir}:{name}", data_encoding::HEXLOWER.encode(&inner));
    let digest = Sha256::digest(fingerprint.as_bytes());
    // Nix's compressHash: XOR-fold the 32-byte digest into 20 bytes.
    let mut folded = [0u8; 20];
    for (i, b) in digest.iter().enumerate() {
        folded[i % 20] ^= b;
    }
    Ok(StorePath { hash: StorePathHash(nixbase32::encode(&folded)), name: name.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "i9pmrzmpshapij2kin22pff6fc2adavx";

    #[test]
    fn hash_parts() {
        assert!(StorePathHash::parse(H).is_ok());
        for bad in [
            "",
            "i9pmrzmpshapij2kin22pff6fc2adav",
            "e9pmrzmpshapij2kin22pff6fc2adavx",
            "I9PMRZMPSHAPIJ2KIN22PFF6FC2ADAVX",
            "../../../../../../../../etc/pass",
            "i9pmrzmpshapij2kin22pff6fc2adavxx",
        ] {
            assert!(StorePathHash::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        for good in ["hello-2.12", "a", "x+y=z?_.-", ".dotfile", &"n".repeat(211)] {
            assert!(is_valid_name(good), "{good:?}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"n".repeat(212), "a\0b"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        let p = StorePath::from_absolute("/nix/store", &format!("/nix/store/{H}-hello.txt")).unwrap();
        assert_eq!(p.hash().as_str(), H);
        assert_eq!(p.name(), "hello.txt");
        assert_eq!(p.absolute("/gnu/store"), format!("/gnu/store/{H}-hello.txt"));
        assert!(StorePath::from_absolute("/nix/store", &format!("/nix/storex/{H}-a")).is_err());
        assert!(StorePath::from_absolute("/nix/store", &format!("/nix/store/{H}")).is_err());
        assert!(StorePath::from_absolute("/nix/store", &format!("/nix/store/{H}-a/b")).is_err());
        assert!(StorePath::from_basename(&format!("{H}_a")).is_err());
        assert!(StorePath::from_basename("short").is_err());
        assert!(StorePath::from_basename("ééééééééééééééééééééééééééééééééé").is_err());
    }

    #[test]
    fn fixed_output_paths_match_nix_store_add_fixed() {
        // `printf 'fixed content\n' > src.tar; nix-store --add-fixed sha256 src.tar` (Nix 2.8),
        // into a /nix/store and a /gnu/store chroot store.
        let content =
            crate::NarHash::parse("sha256:adcf791ae2803c0c10f0dab9c430c39ac580bf95d6a834a248f4dedd72c69665").unwrap();
        let nix = fixed_output_path("/nix/store", "src.tar", &content).unwrap();
        assert_eq!(nix.absolute("/nix/store"), "/nix/store/sm0y5kfpf5rpkvzm8d03f1c633bgn3q5-src.tar");
        let guix = fixed_output_path("/gnu/store", "src.tar", &content).unwrap();
        assert_eq!(guix.absolute("/gnu/store"), "/gnu/store/4w8qcp22b6g7hzybrb2hdgqkifpdcwyb-src.tar");
        assert!(fixed_output_path("/gnu/store", "../x", &content).is_err());
    }
}
