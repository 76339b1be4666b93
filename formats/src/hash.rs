//! The sha256 hashes that narinfos and the store DB carry (`NarHash`, `FileHash`, `ValidPaths.hash`).

use std::fmt;

use data_encoding::{BASE64, HEXLOWER_PERMISSIVE};
use sha2::{Digest, Sha256};

use crate::{nixbase32, Error};

/// A sha256 digest, printed the way Nix writes it: `sha256:<nix32>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NarHash(pub [u8; 32]);

impl NarHash {
    /// Hashes a byte string.
    pub fn digest(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Parses any encoding Nix accepts: `sha256:` followed by base16 (64), Nix32 (52) or
    /// base64 (44) characters, chosen by length, or the SRI form `sha256-<base64>`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || Error::Hash(s.chars().take(120).collect());
        let bytes = if let Some(rest) = s.strip_prefix("sha256:") {
            match rest.len() {
                64 => HEXLOWER_PERMISSIVE.decode(rest.as_bytes()).map_err(|_| bad())?,
                52 => nixbase32::decode(rest, 32).map_err(|_| bad())?,
                44 => BASE64.decode(rest.as_bytes()).map_err(|_| bad())?,
                _ => return Err(bad()),
            }
        } else if let Some(rest) = s.strip_prefix("sha256-") {
            BASE64.decode(rest.as_bytes()).map_err(|_| bad())?
        } else {
            return Err(bad());
        };
        Ok(Self(bytes.try_into().map_err(|_| bad())?))
    }

    /// Parses a bare Nix32 digest (52 characters, no `sha256:` prefix), as found in NAR URLs.
    pub fn from_nix32(s: &str) -> Result<Self, Error> {
        let bytes = nixbase32::decode(s, 32).map_err(|_| Error::Hash(s.chars().take(120).collect()))?;
        Ok(Self(bytes.try_into().expect("decode returns 32 bytes")))
    }

    /// The digest in Nix32, without prefix.
    pub fn to_nix32(&self) -> String {
        nixbase32::encode(&self.0)
    }

    /// The digest in lowercase hex, without prefix.
    pub fn to_base16(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }
}

impl fmt::Display for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_nix32())
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "1c37d01a5e4ffcb3b5dcde7d1a2b71b4e5d4b9c1b1d6b9c0d3d5c4cfbe71fc13";

    #[test]
    fn every_encoding_parses_to_the_same_digest() {
        let h = NarHash::parse(&format!("sha256:{HEX}")).unwrap();
        let nix32 = h.to_string();
        assert_eq!(NarHash::parse(&nix32).unwrap(), h);
        assert_eq!(NarHash::parse(&format!("sha256:{}", HEX.to_uppercase())).unwrap(), h);
        let b64 = BASE64.encode(&h.0);
        assert_eq!(NarHash::parse(&format!("sha256:{b64}")).unwrap(), h);
        assert_eq!(NarHash::parse(&format!("sha256-{b64}")).unwrap(), h);
        assert_eq!(h.to_base16(), HEX);
    }

    #[test]
    fn nar_of_hello_matches_protocol_doc() {
        // docs/protocol.md §1.4: the NAR of a file containing "hello\n".
        let mut nar = Vec::new();
        for tok in [&b"nix-archive-1"[..], b"(", b"type", b"regular", b"contents", b"hello\n", b")"] {
            nar.extend_from_slice(&(tok.len() as u64).to_le_bytes());
            nar.extend_from_slice(tok);
            nar.resize(nar.len().next_multiple_of(8), 0);
        }
        assert_eq!(nar.len(), 120);
        assert_eq!(NarHash::digest(&nar).to_string(), "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw");
    }

    #[test]
    fn rejects_malformed() {
        for s in ["", "sha256:", "md5:abcd", "sha256:zz", &format!("sha1:{HEX}"), "sha256-!!!"] {
            assert!(NarHash::parse(s).is_err(), "{s:?}");
        }
    }
}
