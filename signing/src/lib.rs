//! Nix signing keys and narinfo signatures, kept apart from store paths and HTTP so the secret has one home.
//!
//! Nix signs the fingerprint of a store path (see docs/protocol.md §1.3) with Ed25519 and
//! writes both keys and signatures as `<name>:<standard base64>`:
//!
//! - a [`SecretKey`] is `name:base64(32-byte seed ++ 32-byte public key)`, as printed by
//!   `nix key generate-secret`;
//! - a [`PublicKey`] is `name:base64(32-byte public key)`, as in `trusted-public-keys`;
//! - a signature, the value of a narinfo `Sig:` line, is `name:base64(64-byte signature)`.
//!
//! This crate parses and prints those forms, signs and verifies fingerprints, and reads and
//! writes key files with safe permissions. It never prints a secret: [`SecretKey`] has no
//! `Display`, its `Debug` is redacted, and no [`Error`] carries key material.
//!
//! Guix keys and signatures, libgcrypt S-expressions and ECDSA on the Ed25519 group, live in
//! the [`guix`] module under the same rules; [`read_any_secret_key_file`] loads either kind.

mod error;
pub mod guix;
mod key_file;
mod public_key;
mod secret_key;

use data_encoding::{DecodeError, BASE64};

pub use error::{Error, KeyKind, SexpProblem};
pub use guix::{GuixPublicKey, GuixSecretKey};
pub use key_file::{
    read_any_secret_key_file, read_guix_public_key_file, read_guix_secret_key_file, read_public_key_file,
    read_secret_key_file, write_guix_key_pair, write_key_pair, AnySecretKey,
};
pub use public_key::PublicKey;
pub use secret_key::SecretKey;

/// True if any of `sigs` (whole `name:base64` `Sig:` values) verifies `fingerprint` under a
/// key of `keys` with the same name.
///
/// This is Nix's acceptance rule for a substituted path: signatures by unknown key names are
/// simply not counted, and one good signature is enough.
pub fn verify_any(keys: &[PublicKey], fingerprint: &str, sigs: &[String]) -> bool {
    sigs.iter().any(|sig| keys.iter().any(|key| key.verify(fingerprint, sig)))
}

/// Splits a `name:base64` key at the first `:` and decodes the base64 part as Nix does.
///
/// The returned errors name only `kind`, never the input, since the input may be a secret.
fn decode_named_key(kind: KeyKind, text: &str) -> Result<(&str, Vec<u8>), Error> {
    let (name, data) = text.split_once(':').ok_or(Error::MissingColon { kind })?;
    if name.is_empty() {
        return Err(Error::EmptyName { kind });
    }
    let bytes = decode_base64(data).map_err(|source| Error::Base64 { kind, source })?;
    Ok((name, bytes))
}

/// Decodes standard padded base64, skipping `\n` as Nix's decoder does, so that key files
/// wrapped by an editor still load. Any other stray character is an error, as in Nix.
fn decode_base64(text: &str) -> Result<Vec<u8>, DecodeError> {
    if text.contains('\n') {
        let compact: String = text.chars().filter(|&c| c != '\n').collect();
        BASE64.decode(compact.as_bytes())
    } else {
        BASE64.decode(text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The throwaway key and signature of docs/protocol.md §1.3, made by the real Nix.
    const SECRET: &str =
        "test-cache-1:3RYTN0JwkMRMunJQdy82GW+lwR/u9TwtXAntnBfvdqyCy51dorjLzHL5rI5nV+sHE5AIOhAneQ8o/UwwEp1vSA==";
    const PUBLIC: &str = "test-cache-1:gsudXaK4y8xy+ayOZ1frBxOQCDoQJ3kPKP1MMBKdb0g=";
    const FINGERPRINT: &str = "1;/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt;sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw;120;";
    const SIG: &str =
        "test-cache-1:DRiCvx4YLygRdFAaRWbQCbIJmM5lbkCfMMHm5KlsxlwixZkHgwuv2nSPJgc93MnBsvIMcjxoXKE9sZHFZmJSDg==";

    #[test]
    fn protocol_vector_signs_byte_for_byte() {
        let secret = SecretKey::parse(SECRET).unwrap();
        assert_eq!(secret.name(), "test-cache-1");
        assert_eq!(secret.sign(FINGERPRINT), SIG);
    }

    #[test]
    fn protocol_vector_derives_public_key() {
        let secret = SecretKey::parse(SECRET).unwrap();
        assert_eq!(secret.to_public().to_nix_string(), PUBLIC);
        assert_eq!(secret.to_public(), PublicKey::parse(PUBLIC).unwrap());
    }

    #[test]
    fn protocol_vector_round_trips_through_nix_strings() {
        assert_eq!(SecretKey::parse(SECRET).unwrap().to_nix_string(), SECRET);
        assert_eq!(PublicKey::parse(PUBLIC).unwrap().to_string(), PUBLIC);
    }

    #[test]
    fn protocol_vector_verifies() {
        let public = PublicKey::parse(PUBLIC).unwrap();
        assert!(public.verify(FINGERPRINT, SIG));
    }

    #[test]
    fn verify_rejects_one_byte_change_of_fingerprint() {
        let public = PublicKey::parse(PUBLIC).unwrap();
        let tampered = FINGERPRINT.replace(";120;", ";121;");
        assert_ne!(tampered, FINGERPRINT);
        assert!(!public.verify(&tampered, SIG));
    }

    #[test]
    fn verify_rejects_wrong_key_name() {
        let public = PublicKey::parse(PUBLIC).unwrap();
        let renamed = SIG.replacen("test-cache-1:", "test-cache-2:", 1);
        assert!(!public.verify(FINGERPRINT, &renamed));
        // The same bytes under a public key of another name are not counted either.
        let other = PublicKey::parse(&PUBLIC.replacen("test-cache-1:", "other:", 1)).unwrap();
        assert!(!other.verify(FINGERPRINT, SIG));
    }

    #[test]
    fn verify_rejects_garbage_signatures() {
        let public = PublicKey::parse(PUBLIC).unwrap();
        for sig in [
            "test-cache-1:not base64 at all!",
            "test-cache-1:AAAA",
            "test-cache-1:",
            "test-cache-1",
            "",
            ":DRiCvx4YLygRdFAaRWbQCbIJmM5lbkCfMMHm5KlsxlwixZkHgwuv2nSPJgc93MnBsvIMcjxoXKE9sZHFZmJSDg==",
        ] {
            assert!(!public.verify(FINGERPRINT, sig), "accepted {sig:?}");
        }
    }

    #[test]
    fn verify_any_counts_only_trusted_names() {
        let trusted = [PublicKey::parse(PUBLIC).unwrap()];
        let other = SecretKey::generate("other-cache").unwrap();
        let sigs = vec![other.sign(FINGERPRINT), SIG.to_owned()];
        assert!(verify_any(&trusted, FINGERPRINT, &sigs));
        assert!(verify_any(&[other.to_public()], FINGERPRINT, &sigs));
        assert!(!verify_any(&trusted, FINGERPRINT, &sigs[..1]));
        assert!(!verify_any(&[], FINGERPRINT, &sigs));
        assert!(!verify_any(&trusted, FINGERPRINT, &[]));
    }

    #[test]
    fn several_keys_sign_the_same_fingerprint() {
        let keys = [
            SecretKey::parse(SECRET).unwrap(),
            SecretKey::generate("cache-a-1").unwrap(),
            SecretKey::generate("cache-b-1").unwrap(),
        ];
        let sigs: Vec<String> = keys.iter().map(|k| k.sign(FINGERPRINT)).collect();
        for key in &keys {
            let public = key.to_public();
            assert_eq!(sigs.iter().filter(|s| public.verify(FINGERPRINT, s)).count(), 1);
            assert!(verify_any(&[public], FINGERPRINT, &sigs));
        }
    }

    #[test]
    fn base64_skips_newlines_only() {
        assert_eq!(decode_base64("AAEC\nAw==\n").unwrap(), [0, 1, 2, 3]);
        assert!(decode_base64("AAEC\r\nAw==").is_err());
        assert!(decode_base64("AAEC Aw==").is_err());
    }
}
