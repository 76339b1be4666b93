//! Nix32 ("Nix base32"), the encoding of store path hashes and of `sha256:` hashes in narinfos.
//!
//! The byte string is read as one little-endian integer and written in base 32, most
//! significant digit first, with the alphabet below (docs/protocol.md §1.4).

use crate::Error;

/// The 32 symbols, without `e o u t`.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Number of Nix32 characters for `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (8 * n - 1) / 5 + 1
    }
}

/// Encodes bytes as Nix32.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let low = bytes[i] as u16 >> j;
        let high = if i + 1 < bytes.len() { (bytes[i + 1] as u16) << (8 - j) } else { 0 };
        out.push(ALPHABET[((low | high) & 0x1f) as usize] as char);
    }
    out
}

/// Value of one Nix32 character, or `None` outside the alphabet.
pub fn digit(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

/// Whether `s` consists only of Nix32 characters.
pub fn is_valid(s: &str) -> bool {
    s.bytes().all(|c| digit(c).is_some())
}

/// Decodes a Nix32 string into exactly `n` bytes, rejecting bits beyond `n` bytes.
pub fn decode(s: &str, n: usize) -> Result<Vec<u8>, Error> {
    if s.len() != encoded_len(n) {
        return Err(Error::Nix32Length { len: s.len(), bytes: n });
    }
    let mut out = vec![0u8; n];
    for (k, c) in s.bytes().rev().enumerate() {
        let d = digit(c).ok_or(Error::Nix32Char(c as char))? as u16;
        let b = k * 5;
        let i = b / 8;
        let j = b % 8;
        out[i] |= (d << j) as u8;
        let carry = d >> (8 - j);
        if i + 1 < n {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return Err(Error::Nix32Length { len: s.len(), bytes: n });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn protocol_examples() {
        assert_eq!(encode(&[0x01]), "01");
        assert_eq!(encode(&[0xff]), "7z");
        assert_eq!(encode(&[0x12, 0x34]), "0d0j");
        let empty_sha = data_encoding::HEXLOWER
            .decode(b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            .unwrap();
        assert_eq!(encode(&empty_sha), "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
    }

    #[test]
    fn decode_rejects_bad_input() {
        assert_eq!(decode("0e", 1), Err(Error::Nix32Char('e')));
        assert!(decode("0", 1).is_err());
        // "zz" would need 10 bits; only 8 fit in one byte.
        assert!(decode("zz", 1).is_err());
        assert_eq!(decode("7z", 1).unwrap(), vec![0xff]);
    }

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let s = encode(&bytes);
            prop_assert_eq!(s.len(), encoded_len(bytes.len()));
            prop_assert_eq!(decode(&s, bytes.len()).unwrap(), bytes);
        }
    }
}
