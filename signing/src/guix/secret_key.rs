//! Guix secret keys, `signing-key.sec`: `(private-key (ecc (curve Ed25519) (q #…#) (d #…#)))`,
//! the one place a Guix signing secret lives.

use std::fmt;

use data_encoding::HEXUPPER;
use rand::rngs::SysRng;
use rand::TryRng;
use zeroize::{Zeroize, Zeroizing};

use super::ecdsa;
use super::public_key::{decode_point, ecc_elements, ecc_sexp, form, GuixPublicKey};
use super::sexp::Sexp;
use crate::{Error, KeyKind};

/// A Guix signing key, `(private-key (ecc (curve Ed25519) (q #…#) (d #…#)))`.
///
/// `d` is a big-endian integer (libgcrypt's keys have d in [2^254, 2^255), a multiple of 8;
/// it is not an EdDSA seed) and q = d·G. There is no `Display`, `Debug` prints only the
/// public q, and the secret is wiped from memory when the key is dropped.
#[derive(Clone)]
pub struct GuixSecretKey {
    /// d as 32 big-endian bytes, left-padded with zeros.
    d: [u8; 32],
    public: GuixPublicKey,
}

impl GuixSecretKey {
    /// Parses a secret key in any libgcrypt syntax (normally the advanced text of a
    /// `signing-key.sec` file; canonical and transport forms are read too).
    ///
    /// Beyond the public key's rules, `d` must be an unsigned integer of at most 32 bytes
    /// (leading zero bytes allowed) that is not 0 mod n, and q must equal d·G: a key whose
    /// halves do not belong together is refused. Errors never contain key material.
    pub fn parse(input: impl AsRef<[u8]>) -> Result<GuixSecretKey, Error> {
        let sexp = Zeroizing::new(Sexp::parse(input.as_ref())?);
        GuixSecretKey::from_sexp(&sexp)
    }

    /// Checks that `sexp` is a secret key of the form [`GuixSecretKey::parse`] accepts.
    pub fn from_sexp(sexp: &Sexp) -> Result<GuixSecretKey, Error> {
        let kind = KeyKind::Secret;
        let elements = ecc_elements(sexp, kind)?;
        let q = elements.q.ok_or(form(kind, "a (q #…#) element"))?;
        let d = elements.d.ok_or(form(kind, "a (d #…#) element"))?;
        let (q, point) = decode_point(q, kind)?;
        let start = d.iter().position(|&b| b != 0).unwrap_or(d.len());
        if d.len() - start > 32 || start == d.len() {
            return Err(Error::GuixKeyScalar);
        }
        let mut padded = [0u8; 32];
        padded[32 - (d.len() - start)..].copy_from_slice(&d[start..]);
        if ecdsa::is_zero_mod_n(&padded) {
            return Err(Error::GuixKeyScalar);
        }
        let key = GuixSecretKey { d: padded, public: GuixPublicKey::from_q(q, point) };
        if ecdsa::public_point(&key.d).compress().to_bytes() != q {
            return Err(Error::GuixKeyMismatch);
        }
        Ok(key)
    }

    /// Makes a new key from operating-system randomness, as libgcrypt does for
    /// `(genkey (ecdsa (curve Ed25519) (flags rfc6979)))`: 32 random bytes read big-endian,
    /// top bit cleared, next bit set, low three bits cleared, so d ∈ [2^254, 2^255) and 8 | d.
    pub fn generate() -> Result<GuixSecretKey, Error> {
        let mut d = [0u8; 32];
        SysRng.try_fill_bytes(&mut d).map_err(|source| Error::Randomness { source })?;
        d[0] = (d[0] & 0x7f) | 0x40;
        d[31] &= 0xf8;
        let point = ecdsa::public_point(&d);
        let public = GuixPublicKey::from_q(point.compress().to_bytes(), point);
        Ok(GuixSecretKey { d, public })
    }

    /// The matching public key, in the layout libgcrypt writes.
    pub fn to_public(&self) -> GuixPublicKey {
        self.public.clone()
    }

    /// The public key's sexp text, [`GuixPublicKey::to_sexp_string`]: what to write to
    /// `signing-key.pub`, to serve at `/signing-key.pub`, and what every signature embeds.
    pub fn public_sexp(&self) -> String {
        self.public.to_sexp_string()
    }

    /// The secret key in libgcrypt's advanced format, byte for byte as Guix writes
    /// `signing-key.sec`. It contains the secret: only for writing a key file
    /// (see [`write_guix_key_pair`](crate::write_guix_key_pair)); never log it.
    pub fn to_sexp_string(&self) -> Zeroizing<String> {
        let d = ecdsa::std_mpi(&self.d);
        let sexp = Zeroizing::new(Sexp::named("private-key", [ecc_sexp(self.public.q(), Some(d))]));
        Zeroizing::new(sexp.to_advanced())
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.d
    }
}

impl Drop for GuixSecretKey {
    fn drop(&mut self) {
        self.d.zeroize();
    }
}

impl fmt::Debug for GuixSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuixSecretKey")
            .field("public", &HEXUPPER.encode(self.public.q()))
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use proptest::prelude::*;

    use super::*;

    // docs/protocol.md §5.3.
    const D: &str = "594FC4A7EDA72A869A69FC4054FE75888C1EDD59ED217C42ACF9D8041F122CE8";
    const Q: &str = "E998EBA27AC7DA0B02B66670B8D7B832C68E457B33718DCA5F135422F499A864";

    fn secret_text(q: &str, d: &str) -> String {
        format!("(private-key \n (ecc \n  (curve Ed25519)\n  (q #{q}#)\n  (d #{d}#)\n  )\n )\n")
    }

    fn public_text(q: &str) -> String {
        format!("(public-key \n (ecc \n  (curve Ed25519)\n  (q #{q}#)\n  )\n )\n")
    }

    /// Every error in the chain, printed with `Display` and `Debug`.
    fn everything_printed(error: &Error) -> String {
        let mut text = format!("{error:?}\n{error}");
        let mut source = error.source();
        while let Some(inner) = source {
            text.push_str(&format!(": {inner} {inner:?}"));
            source = inner.source();
        }
        text
    }

    #[test]
    fn protocol_vector_key_parses_and_prints_as_libgcrypt_does() {
        let key = GuixSecretKey::parse(secret_text(Q, D)).unwrap();
        assert_eq!(HEXUPPER.encode(key.to_public().q()), Q);
        assert_eq!(*key.to_sexp_string(), secret_text(Q, D));
        assert_eq!(key.public_sexp(), public_text(Q));
        assert_eq!(GuixPublicKey::parse(public_text(Q)).unwrap(), key.to_public());
    }

    #[test]
    fn any_syntax_and_element_order_is_read() {
        let reordered = format!("(private-key(ecc(d #{D}#)(q #{Q}#)(curve \"Ed25519\")))");
        let key = GuixSecretKey::parse(&reordered).unwrap();
        assert_eq!(*key.to_sexp_string(), secret_text(Q, D));
        let canonical = Sexp::parse(secret_text(Q, D).as_bytes()).unwrap().to_canonical();
        assert_eq!(*GuixSecretKey::parse(&canonical).unwrap().to_sexp_string(), secret_text(Q, D));
        let transport = Sexp::parse(public_text(Q).as_bytes()).unwrap().to_transport();
        assert_eq!(GuixPublicKey::parse(&transport).unwrap(), key.to_public());
    }

    #[test]
    fn leading_zeros_in_d_are_allowed_and_dropped() {
        let key = GuixSecretKey::parse(secret_text(Q, &format!("0000{D}"))).unwrap();
        assert_eq!(*key.to_sexp_string(), secret_text(Q, D));
    }

    #[test]
    fn mismatched_halves_are_refused() {
        let other = GuixSecretKey::generate().unwrap();
        let other_q = HEXUPPER.encode(other.to_public().q());
        assert!(matches!(GuixSecretKey::parse(secret_text(&other_q, D)), Err(Error::GuixKeyMismatch)));
    }

    #[test]
    fn unusable_scalars_are_refused() {
        let n_hex = "1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED";
        // d = n gives the identity, whose encoding is 01 00 … 00.
        let identity = format!("01{}", "00".repeat(31));
        for d in ["", "00", "0000", n_hex, &format!("01{D}")] {
            let err = GuixSecretKey::parse(secret_text(&identity, d)).unwrap_err();
            assert!(matches!(err, Error::GuixKeyScalar), "{d}: {err:?}");
        }
    }

    #[test]
    fn wrong_shapes_are_refused_without_echoing_the_secret() {
        let cases = [
            format!("(public-key (ecc (curve Ed25519) (q #{Q}#) (d #{D}#)))"),
            format!("(private-key (ecc (curve Ed25519) (d #{D}#)))"),
            format!("(private-key (ecc (curve Ed25519) (q #{Q}#)))"),
            format!("(private-key (ecc (curve Ed448) (q #{Q}#) (d #{D}#)))"),
            format!("(private-key (ecc (q #{Q}#) (d #{D}#)))"),
            format!("(private-key (ecc (curve Ed25519) (flags eddsa) (q #{Q}#) (d #{D}#)))"),
            format!("(private-key (ecc (curve Ed25519) (q #{Q}#) (d #{D}#) (d #{D}#)))"),
            format!("(private-key (ecc (curve Ed25519) (q #{Q}#) (d #{D}# #00#)))"),
            format!("(private-key (rsa (n #{D}#) (e #010001#)))"),
            format!("(private-key (ecc (curve Ed25519) (q #{Q}#) (d #{D}#)) (x))"),
            format!("(private-key (ecc (curve Ed25519) (q #{Q}00#) (d #{D}#)))"),
            format!("(key-data (ecc (curve Ed25519) (q #{Q}#) (d #{D}#)))"),
            format!("(private-key (ecc (curve Ed25519) (q #{Q}#) (d #{D}#))"),
            format!("(private-key (ecc (curve Ed25519) (q #{Q}#) (d #{D}G#)))"),
            format!("(private-key (ecc (curve Ed25519) (q #{Q}#) (d #{D}#))) {D}"),
            format!("{D}:test-cache-1"),
        ];
        for case in cases {
            let err = GuixSecretKey::parse(&case).unwrap_err();
            let printed = everything_printed(&err);
            assert!(!printed.contains(&D[..16]) && !printed.contains(&D[40..]), "{printed}");
            assert!(!printed.to_lowercase().contains(&D[..16].to_lowercase()), "{printed}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let key = GuixSecretKey::parse(secret_text(Q, D)).unwrap();
        let debug = format!("{key:?} {key:#?}");
        assert_eq!(format!("{key:?}"), format!("GuixSecretKey {{ public: \"{Q}\", secret: \"<redacted>\" }}"));
        assert!(!debug.contains(&D[..16]), "{debug}");
        assert_eq!(format!("{:?}", key.to_public()), format!("GuixPublicKey(\"{Q}\")"));
    }

    #[test]
    fn generated_keys_look_like_libgcrypt_keys() {
        let key = GuixSecretKey::generate().unwrap();
        let d = key.secret();
        assert_eq!(d[0] & 0xc0, 0x40, "d in [2^254, 2^255)");
        assert_eq!(d[31] & 7, 0, "d a multiple of 8");
        assert_ne!(GuixSecretKey::generate().unwrap().to_public(), key.to_public());
    }

    proptest! {
        #[test]
        fn generate_write_parse_round_trips(_round in 0..8u8) {
            let key = GuixSecretKey::generate().unwrap();
            let parsed = GuixSecretKey::parse(key.to_sexp_string()).unwrap();
            prop_assert_eq!(parsed.secret(), key.secret());
            prop_assert_eq!(parsed.to_public(), key.to_public());
            prop_assert_eq!(GuixPublicKey::parse(key.public_sexp()).unwrap(), key.to_public());
        }
    }
}
