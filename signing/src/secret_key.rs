//! Nix secret keys (`name:base64(seed ++ public key)`): the one place the signing secret lives.

use std::fmt;

use data_encoding::BASE64;
use ed25519_dalek::{Signer, SigningKey, KEYPAIR_LENGTH, SECRET_KEY_LENGTH};
use rand::rngs::SysRng;
use rand::TryRng;

use crate::{decode_named_key, Error, KeyKind, PublicKey};

/// A named Ed25519 signing key in Nix's format, used to sign narinfo fingerprints.
///
/// There is deliberately no `Display`, and `Debug` prints only the name, so the secret cannot
/// reach a log by accident; [`SecretKey::to_nix_string`] exists for writing key files.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// Parses `name:base64(64 bytes)` as `nix key generate-secret` prints it.
    ///
    /// The 64 bytes are the 32-byte seed followed by its 32-byte public key (libsodium's
    /// layout); a public half that does not belong to the seed is refused. Surrounding
    /// whitespace is trimmed and newlines inside the base64 are skipped, as in Nix. The name
    /// is everything before the first `:` and must be non-empty. Errors never echo the input.
    pub fn parse(text: &str) -> Result<SecretKey, Error> {
        let kind = KeyKind::Secret;
        let (name, bytes) = decode_named_key(kind, text.trim())?;
        let bytes: &[u8; KEYPAIR_LENGTH] = bytes.as_slice().try_into().map_err(|_| Error::Length {
            kind,
            expected: KEYPAIR_LENGTH,
            actual: bytes.len(),
        })?;
        // Nix itself signs with the seed and never checks the public half, but a mismatch
        // means the file was damaged or hand-assembled, and the public key derived from it
        // would not be the one clients were told to trust.
        let key =
            SigningKey::from_keypair_bytes(bytes).map_err(|_| Error::PublicHalfMismatch { name: name.to_owned() })?;
        Ok(SecretKey { name: name.to_owned(), key })
    }

    /// Makes a new key from operating-system randomness, like `nix key generate-secret`.
    ///
    /// Nix conventionally names keys after the cache with a counter (`cache.example.org-1`).
    /// Names that are empty or contain `:` or whitespace are refused, since they would not
    /// survive a round trip through a key file or a `Sig:` line.
    pub fn generate(name: &str) -> Result<SecretKey, Error> {
        if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
            return Err(Error::InvalidName { name: name.to_owned() });
        }
        let mut seed = [0u8; SECRET_KEY_LENGTH];
        SysRng.try_fill_bytes(&mut seed).map_err(|source| Error::Randomness { source })?;
        Ok(SecretKey { name: name.to_owned(), key: SigningKey::from_bytes(&seed) })
    }

    /// The key's name, which every signature it makes carries.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key, with the same name, for clients' `trusted-public-keys`.
    pub fn to_public(&self) -> PublicKey {
        PublicKey::new(&self.name, self.key.verifying_key())
    }

    /// The `name:base64(64 bytes)` form, which contains the secret.
    ///
    /// Only for writing a key file (see [`write_key_pair`](crate::write_key_pair)); never log it.
    pub fn to_nix_string(&self) -> String {
        format!("{}:{}", self.name, BASE64.encode(&self.key.to_keypair_bytes()))
    }

    /// Signs a fingerprint (docs/protocol.md §1.3) and returns the value of a narinfo `Sig:`
    /// line, `name:base64(64-byte signature)`.
    ///
    /// Ed25519 is deterministic, so this matches Nix's signature byte for byte. To sign with
    /// several keys, call this on each and emit one `Sig:` line per result.
    pub fn sign(&self, fingerprint: &str) -> String {
        let signature = self.key.sign(fingerprint.as_bytes());
        format!("{}:{}", self.name, BASE64.encode(&signature.to_bytes()))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey").field("name", &self.name).field("secret", &"<redacted>").finish()
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use proptest::prelude::*;

    use super::*;

    const SECRET: &str =
        "test-cache-1:3RYTN0JwkMRMunJQdy82GW+lwR/u9TwtXAntnBfvdqyCy51dorjLzHL5rI5nV+sHE5AIOhAneQ8o/UwwEp1vSA==";

    fn secret_base64() -> &'static str {
        SECRET.split_once(':').unwrap().1
    }

    /// The error and all its sources, as `anyhow`'s `{:#}` would print them, plus `Debug`.
    fn everything_printed(error: &Error) -> String {
        let mut text = format!("{error:?}\n{error}");
        let mut source = error.source();
        while let Some(inner) = source {
            text.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        text
    }

    /// True if `printed` contains any 8-character window of the secret's base64.
    fn leaks(printed: &str, secret_base64: &str) -> bool {
        let chars: Vec<char> = secret_base64.chars().collect();
        chars.windows(8).any(|w| printed.contains(&w.iter().collect::<String>()))
    }

    fn with_bytes(name: &str, bytes: &[u8]) -> String {
        format!("{name}:{}", BASE64.encode(bytes))
    }

    #[test]
    fn parse_trims_and_skips_newlines() {
        let (name, data) = SECRET.split_once(':').unwrap();
        let wrapped = format!("\n  {name}:{}\n{}\n\n", &data[..40], &data[40..]);
        let key = SecretKey::parse(&wrapped).unwrap();
        assert_eq!(key.to_nix_string(), SECRET);
    }

    #[test]
    fn parse_refuses_missing_colon() {
        let err = SecretKey::parse(secret_base64()).unwrap_err();
        assert!(matches!(err, Error::MissingColon { kind: KeyKind::Secret }));
    }

    #[test]
    fn parse_refuses_empty_name() {
        let err = SecretKey::parse(&format!(":{}", secret_base64())).unwrap_err();
        assert!(matches!(err, Error::EmptyName { .. }));
    }

    #[test]
    fn parse_refuses_seed_without_public_half() {
        let bytes = BASE64.decode(secret_base64().as_bytes()).unwrap();
        let err = SecretKey::parse(&with_bytes("k", &bytes[..32])).unwrap_err();
        assert!(matches!(err, Error::Length { kind: KeyKind::Secret, expected: 64, actual: 32 }));
    }

    #[test]
    fn parse_refuses_mismatched_public_half() {
        let mut bytes = BASE64.decode(secret_base64().as_bytes()).unwrap();
        let other = SecretKey::generate("other").unwrap().to_public().to_nix_string();
        let other = BASE64.decode(other.split_once(':').unwrap().1.as_bytes()).unwrap();
        bytes[32..].copy_from_slice(&other);
        let err = SecretKey::parse(&with_bytes("test-cache-1", &bytes)).unwrap_err();
        assert!(matches!(err, Error::PublicHalfMismatch { ref name } if name == "test-cache-1"));
    }

    #[test]
    fn debug_is_redacted() {
        let key = SecretKey::parse(SECRET).unwrap();
        let debug = format!("{key:?} {key:#?}");
        assert!(!leaks(&debug, secret_base64()), "{debug}");
        assert_eq!(format!("{key:?}"), r#"SecretKey { name: "test-cache-1", secret: "<redacted>" }"#);
    }

    #[test]
    fn parse_errors_do_not_echo_the_secret() {
        let data = secret_base64();
        let bytes = BASE64.decode(data.as_bytes()).unwrap();
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        let cases = [
            data.to_owned(),                              // no name at all
            format!("{data}:test-cache-1"),               // written the wrong way round
            format!(":{data}"),                           // empty name
            format!("k:{}", &data[..87]),                 // bad padding
            format!("k:{}!", &data[..86]),                // stray character
            format!("k:{} {}", &data[..40], &data[40..]), // space inside
            with_bytes("k", &bytes[..32]),                // seed only
            with_bytes("k", &flipped),                    // damaged public half
        ];
        for case in cases {
            let err = SecretKey::parse(&case).unwrap_err();
            let printed = everything_printed(&err);
            assert!(!leaks(&printed, data), "{printed}");
        }
    }

    #[test]
    fn generate_refuses_unusable_names() {
        for name in ["", "a:b", "a b", "tab\there", "new\nline"] {
            let err = SecretKey::generate(name).unwrap_err();
            assert!(matches!(err, Error::InvalidName { .. }), "{name:?}");
        }
    }

    #[test]
    fn generated_keys_differ() {
        let a = SecretKey::generate("k").unwrap();
        let b = SecretKey::generate("k").unwrap();
        assert_ne!(a.to_public(), b.to_public());
    }

    proptest! {
        #[test]
        fn generate_to_nix_string_parse_round_trips(
            name in "[A-Za-z0-9._+=-]{1,40}",
            fingerprint in any::<String>(),
        ) {
            let key = SecretKey::generate(&name).unwrap();
            let parsed = SecretKey::parse(&key.to_nix_string()).unwrap();
            prop_assert_eq!(parsed.name(), name.as_str());
            prop_assert_eq!(parsed.to_public(), key.to_public());
            prop_assert_eq!(parsed.sign(&fingerprint), key.sign(&fingerprint));
            prop_assert_eq!(parsed.to_nix_string(), key.to_nix_string());
        }

        #[test]
        fn public_key_round_trips(name in "[A-Za-z0-9._+=-]{1,40}") {
            let public = SecretKey::generate(&name).unwrap().to_public();
            prop_assert_eq!(PublicKey::parse(&public.to_nix_string()).unwrap(), public);
        }

        #[test]
        fn sign_then_verify(fingerprint in any::<String>(), other in any::<String>()) {
            let key = SecretKey::generate("cache.example.org-1").unwrap();
            let sig = key.sign(&fingerprint);
            prop_assert!(key.to_public().verify(&fingerprint, &sig));
            prop_assert_eq!(key.to_public().verify(&other, &sig), other == fingerprint);
        }

        #[test]
        fn debug_never_shows_the_secret(name in "[a-z0-9-]{1,20}") {
            let key = SecretKey::generate(&name).unwrap();
            let nix = key.to_nix_string();
            let data = nix.split_once(':').unwrap().1;
            let debug = format!("{:?}", key);
            prop_assert!(!leaks(&debug, data), "{}", debug);
        }
    }
}
