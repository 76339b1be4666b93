//! Nix public keys (`name:base64(32 bytes)`), the half a client trusts, and signature checks.

use std::fmt;

use data_encoding::BASE64;
use ed25519_dalek::{Signature, VerifyingKey, PUBLIC_KEY_LENGTH, SIGNATURE_LENGTH};

use crate::{decode_base64, decode_named_key, Error, KeyKind};

/// A named Ed25519 public key, as written in Nix's `trusted-public-keys`.
///
/// `Display` and [`PublicKey::to_nix_string`] give the `name:base64` form back.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses `name:base64(32 bytes)`, trimming surrounding whitespace.
    ///
    /// The name is everything before the first `:` and must be non-empty. Newlines inside the
    /// base64 are skipped, as Nix does. Unlike Nix, 32 bytes that are not a curve point are
    /// refused here rather than failing every later verification.
    pub fn parse(text: &str) -> Result<PublicKey, Error> {
        let kind = KeyKind::Public;
        let (name, bytes) = decode_named_key(kind, text.trim())?;
        let bytes: [u8; PUBLIC_KEY_LENGTH] = bytes.as_slice().try_into().map_err(|_| Error::Length {
            kind,
            expected: PUBLIC_KEY_LENGTH,
            actual: bytes.len(),
        })?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|source| Error::InvalidPublicKey { name: name.to_owned(), source })?;
        Ok(PublicKey::new(name, key))
    }

    /// Pairs a name with a verifying key; the secret key's [`to_public`](crate::SecretKey::to_public)
    /// is the usual way to get here.
    pub(crate) fn new(name: &str, key: VerifyingKey) -> PublicKey {
        PublicKey { name: name.to_owned(), key }
    }

    /// The key's name, which signatures must carry to be checked against it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `name:base64` form, as `nix key convert-secret-to-public` prints it.
    pub fn to_nix_string(&self) -> String {
        format!("{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }

    /// True if `sig`, a whole `Sig:` value `name:base64(64 bytes)`, carries this key's name and
    /// is a valid signature of `fingerprint`.
    ///
    /// A different name, base64 that does not decode to 64 bytes, and a bad signature all give
    /// `false`. The check is `verify_strict`, which like libsodium refuses malleable signatures
    /// and small-order keys; every signature Nix makes passes it.
    pub fn verify(&self, fingerprint: &str, sig: &str) -> bool {
        let Some((name, data)) = sig.split_once(':') else {
            return false;
        };
        if name != self.name {
            return false;
        }
        let Ok(bytes) = decode_base64(data) else {
            return false;
        };
        let Ok(bytes) = <[u8; SIGNATURE_LENGTH]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let signature = Signature::from_bytes(&bytes);
        self.key.verify_strict(fingerprint.as_bytes(), &signature).is_ok()
    }
}

impl fmt::Display for PublicKey {
    /// Writes the `name:base64` form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix_string())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicKey").field(&self.to_nix_string()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: &str = "test-cache-1:gsudXaK4y8xy+ayOZ1frBxOQCDoQJ3kPKP1MMBKdb0g=";

    #[test]
    fn parse_trims_and_skips_newlines() {
        let wrapped = "  test-cache-1:gsudXaK4y8xy+ayOZ1frBx\nOQCDoQJ3kPKP1MMBKdb0g=\n";
        let key = PublicKey::parse(wrapped).unwrap();
        assert_eq!(key.name(), "test-cache-1");
        assert_eq!(key.to_nix_string(), PUBLIC);
    }

    #[test]
    fn parse_splits_at_the_first_colon() {
        assert!(matches!(
            PublicKey::parse("a:b:gsudXaK4y8xy+ayOZ1frBxOQCDoQJ3kPKP1MMBKdb0g="),
            Err(Error::Base64 { .. })
        ));
    }

    #[test]
    fn parse_errors_say_what_was_wrong() {
        assert!(matches!(
            PublicKey::parse("gsudXaK4y8xy+ayOZ1frBxOQCDoQJ3kPKP1MMBKdb0g="),
            Err(Error::MissingColon { kind: KeyKind::Public })
        ));
        assert!(matches!(
            PublicKey::parse(":gsudXaK4y8xy+ayOZ1frBxOQCDoQJ3kPKP1MMBKdb0g="),
            Err(Error::EmptyName { .. })
        ));
        assert!(matches!(PublicKey::parse("k:AAEC"), Err(Error::Length { expected: 32, actual: 3, .. })));
        assert!(matches!(PublicKey::parse("k:gsudXaK4y8xy+ayOZ1frBxOQCDoQJ3kPKP1MMBKdb0g"), Err(Error::Base64 { .. })));
    }

    #[test]
    fn parse_refuses_bytes_off_the_curve() {
        // About half of all y coordinates have no point; find one rather than hard-code it.
        let off_curve = (0..=255u8).map(|b| [b; 32]).find(|bytes| VerifyingKey::from_bytes(bytes).is_err()).unwrap();
        let text = format!("k:{}", BASE64.encode(&off_curve));
        assert!(matches!(
            PublicKey::parse(&text),
            Err(Error::InvalidPublicKey { ref name, .. }) if name == "k"
        ));
    }

    #[test]
    fn debug_and_display_show_the_nix_form() {
        let key = PublicKey::parse(PUBLIC).unwrap();
        assert_eq!(key.to_string(), PUBLIC);
        assert_eq!(format!("{key:?}"), format!("PublicKey({PUBLIC:?})"));
    }
}
