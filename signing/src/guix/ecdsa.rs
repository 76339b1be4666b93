//! ECDSA over the Ed25519 group, exactly as libgcrypt computes it for Guix's keys.
//!
//! Guix keys are `(ecdsa (curve Ed25519) (flags rfc6979))` keys, so libgcrypt signs with
//! plain ECDSA in the twisted-Edwards group of Ed25519 (not EdDSA; see docs/protocol.md §5.3).
//! With n the group order (253 bits) and h = sha256(text):
//!
//! - e = int(h) >> 3: libgcrypt truncates the hash to the bit length of n;
//! - k comes from RFC 6979 with HMAC-SHA256, qlen = 253 and the same truncation, seeded with
//!   d as 32 big-endian bytes *as stored*, even when d ≥ n (libgcrypt's Ed25519 keys have
//!   d in [2^254, 2^255), so d is not reduced before it is hashed);
//! - R = k·G, r = x(R) mod n with x the affine x coordinate, s = k⁻¹(e + r·d) mod n;
//! - verification: w = s⁻¹, X = (e·w)·G + (r·w)·Q, accept if r, s ∈ [1, n−1] and x(X) mod n = r.
//!
//! Crate choices. `curve25519-dalek` does the group work: constant-time k·G (k is the secret
//! nonce), variable-time double-base multiplication for verification, and [`Scalar`]
//! arithmetic modulo ℓ, which is exactly n. dalek keeps its field elements private and has no
//! affine x accessor (only the compressed y and the sign of x, or the Montgomery u, which
//! does not determine x either), so [`affine_x`] recovers x from the compressed point with a
//! square root modulo p = 2^255 − 19, computed with `num-bigint`. That step is variable-time,
//! which is harmless: it runs on R and X, whose x coordinates are published (as r) or public.
//! `hmac` and `sha2` implement RFC 6979. No field arithmetic is written by hand here.

use std::sync::LazyLock;

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use hmac::{Hmac, Mac};
use num_bigint::BigUint;
use sha2::Sha256;

/// An ECDSA signature: both values are in [1, n−1].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Signature {
    pub(crate) r: Scalar,
    pub(crate) s: Scalar,
}

/// Signs the sha256 `hash` of a text with the secret `d` (32 big-endian bytes, as stored).
///
/// Deterministic: the same key and hash give libgcrypt's signature, bit for bit.
pub(crate) fn sign(d: &[u8; 32], hash: &[u8; 32]) -> Signature {
    let e = scalar_from_be(&shr3(hash));
    let d_scalar = scalar_from_be(d);
    let mut nonces = Rfc6979::new(d, hash);
    // libgcrypt retries with the next RFC 6979 candidate if r or s is 0; it never happens in
    // practice (probability about 2^-252), but the loop keeps the result defined.
    loop {
        let k = nonces.next_k();
        let r = affine_x(&EdwardsPoint::mul_base(&k));
        if r == Scalar::ZERO {
            continue;
        }
        let s = k.invert() * (e + r * d_scalar);
        if s != Scalar::ZERO {
            return Signature { r, s };
        }
    }
}

/// True if `signature` is a valid signature of the sha256 `hash` under the public point `q`.
pub(crate) fn verify(q: &EdwardsPoint, hash: &[u8; 32], signature: &Signature) -> bool {
    let Signature { r, s } = *signature;
    if r == Scalar::ZERO || s == Scalar::ZERO {
        return false;
    }
    let e = scalar_from_be(&shr3(hash));
    let w = s.invert();
    let x = EdwardsPoint::vartime_double_scalar_mul_basepoint(&(r * w), q, &(e * w));
    affine_x(&x) == r
}

/// The public point d·G of a secret d given as big-endian bytes (any value; reduced mod n).
pub(crate) fn public_point(d: &[u8; 32]) -> EdwardsPoint {
    EdwardsPoint::mul_base(&scalar_from_be(d))
}

/// `d mod n == 0`, a secret whose public point is the identity.
pub(crate) fn is_zero_mod_n(d: &[u8; 32]) -> bool {
    scalar_from_be(d) == Scalar::ZERO
}

/// Reads a big-endian unsigned integer of any length as a scalar in [0, n−1], or `None` if it
/// is n or more (leading zero bytes are allowed, as libgcrypt's unsigned MPIs allow them).
pub(crate) fn canonical_scalar(be: &[u8]) -> Option<Scalar> {
    let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    let digits = &be[start..];
    if digits.len() > 32 {
        return None;
    }
    let mut le = [0u8; 32];
    for (i, b) in digits.iter().rev().enumerate() {
        le[i] = *b;
    }
    Option::from(Scalar::from_canonical_bytes(le))
}

/// A scalar as libgcrypt's USG MPI format prints it: big-endian without leading zero bytes.
///
/// libgcrypt builds the signature with `(sig-val(ecdsa(r%M)(s%M)))`, and `%M` is the unsigned
/// format, so an r or s whose first significant byte is 0x80 or more gets no `00` in front
/// (observed with guile-gcrypt: 31-byte r values starting with E8, 83, …).
pub(crate) fn scalar_to_usg(scalar: &Scalar) -> Vec<u8> {
    let be: Vec<u8> = scalar.to_bytes().into_iter().rev().collect();
    let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    be[start..].to_vec()
}

/// Big-endian bytes in libgcrypt's STD MPI format, as `%m` prints the secret `d` of a
/// generated key: no leading zero bytes, but a `00` byte in front if the top bit would
/// otherwise be set (STD MPIs are signed).
pub(crate) fn std_mpi(be: &[u8]) -> Vec<u8> {
    let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    let digits = &be[start..];
    let mut out = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_some_and(|&b| b & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

/// RFC 6979 §3.2 with HMAC-SHA256, q = n, qlen = 253, rlen = 256, as libgcrypt's
/// `_gcry_dsa_gen_rfc6979_k` implements it.
struct Rfc6979 {
    key: [u8; 32],
    v: [u8; 32],
    /// Whether a candidate was already produced, so the next call must first update K and V.
    used: bool,
}

impl Rfc6979 {
    fn new(d: &[u8; 32], hash: &[u8; 32]) -> Rfc6979 {
        // bits2octets(h1) = int2octets(bits2int(h1) mod n); int2octets(x) is d's stored bytes.
        let h1 = scalar_from_be(&shr3(hash));
        let h1_octets: Vec<u8> = h1.to_bytes().into_iter().rev().collect();
        let mut key = [0u8; 32];
        let mut v = [1u8; 32];
        key = hmac(&key, &[&v, &[0x00], d, &h1_octets]);
        v = hmac(&key, &[&v]);
        key = hmac(&key, &[&v, &[0x01], d, &h1_octets]);
        v = hmac(&key, &[&v]);
        Rfc6979 { key, v, used: false }
    }

    /// The next k in [1, n−1]: one HMAC output T (256 ≥ qlen bits), k = T >> 3.
    fn next_k(&mut self) -> Scalar {
        loop {
            if self.used {
                self.key = hmac(&self.key, &[&self.v, &[0x00]]);
                self.v = hmac(&self.key, &[&self.v]);
            }
            self.used = true;
            self.v = hmac(&self.key, &[&self.v]);
            if let Some(k) = canonical_scalar(&shr3(&self.v)) {
                if k != Scalar::ZERO {
                    return k;
                }
            }
        }
    }
}

impl Drop for Rfc6979 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
        zeroize::Zeroize::zeroize(&mut self.v);
    }
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A 256-bit big-endian integer shifted right by 3 bits: libgcrypt's truncation to 253 bits.
fn shr3(be: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u8;
    for (o, &b) in out.iter_mut().zip(be) {
        *o = (b >> 3) | carry;
        carry = b << 5;
    }
    out
}

/// A big-endian 256-bit integer reduced modulo n.
fn scalar_from_be(be: &[u8; 32]) -> Scalar {
    let mut le = *be;
    le.reverse();
    Scalar::from_bytes_mod_order(le)
}

/// p = 2^255 − 19 and the constants of the Ed25519 curve −x² + y² = 1 + D·x²·y² over it.
struct Field {
    p: BigUint,
    d: BigUint,
    /// A square root of −1 mod p, 2^((p−1)/4).
    sqrt_m1: BigUint,
}

static FIELD: LazyLock<Field> = LazyLock::new(|| {
    let p = (BigUint::from(1u8) << 255u32) - 19u32;
    let inverse = |a: &BigUint| a.modpow(&(&p - 2u32), &p);
    // D = −121665 / 121666.
    let d = (&p - BigUint::from(121_665u32)) * inverse(&BigUint::from(121_666u32)) % &p;
    let sqrt_m1 = BigUint::from(2u8).modpow(&((&p - 1u32) >> 2u32), &p);
    Field { p, d, sqrt_m1 }
});

/// The affine x coordinate of `point`, reduced modulo n, as libgcrypt's
/// `_gcry_mpi_ec_get_affine` followed by `mpi_mod(x, n)` computes it.
///
/// dalek only reveals the compressed form (y, and the parity of x in the top bit), so x is
/// recovered as RFC 8032 §5.1.3 decodes a point: x² = (y² − 1)/(D·y² + 1), one square root.
pub(crate) fn affine_x(point: &EdwardsPoint) -> Scalar {
    let Field { p, d, sqrt_m1 } = &*FIELD;
    let mut compressed = point.compress().to_bytes();
    let x_is_odd = compressed[31] >> 7 == 1;
    compressed[31] &= 0x7f;
    let y = BigUint::from_bytes_le(&compressed);
    let y2 = &y * &y % p;
    let u = (&y2 + p - 1u32) % p;
    let v = (d * &y2 + 1u32) % p;
    let x2 = u * v.modpow(&(p - 2u32), p) % p;
    // p ≡ 5 (mod 8): a candidate root is x2^((p+3)/8), possibly off by a factor of √−1.
    let mut x = x2.modpow(&((p + 3u32) >> 3u32), p);
    if &x * &x % p != x2 {
        x = x * sqrt_m1 % p;
    }
    debug_assert_eq!(&x * &x % p, x2, "a point dalek produced is on the curve");
    if x.bit(0) != x_is_odd && x != BigUint::ZERO {
        x = p - x;
    }
    let mut le = x.to_bytes_le();
    le.resize(32, 0);
    Scalar::from_bytes_mod_order(le.try_into().expect("x < p < 2^256 fits in 32 bytes"))
}

#[cfg(test)]
mod tests {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use data_encoding::HEXUPPER;

    use super::*;

    fn be32(hex: &str) -> [u8; 32] {
        HEXUPPER.decode(hex.as_bytes()).unwrap().try_into().unwrap()
    }

    fn mpi_hex(scalar: &Scalar) -> String {
        HEXUPPER.encode(&scalar_to_usg(scalar))
    }

    // docs/protocol.md §5.3.
    const D: &str = "594FC4A7EDA72A869A69FC4054FE75888C1EDD59ED217C42ACF9D8041F122CE8";
    const HASH: &str = "9904E1A36D844AC823B6F3834C036E9ADC75618A5407B7B0BF3B55302DE5FE1B";

    #[test]
    fn protocol_vector_r_and_s() {
        let signature = sign(&be32(D), &be32(HASH));
        assert_eq!(mpi_hex(&signature.r), "0EBD8310AC0877349DCF97D34B89CB0BCE39965E347866D86B8C1424C471B094");
        assert_eq!(mpi_hex(&signature.s), "038F7B42D8FF9A41E0E458FEF419649D32CED865B4B0DD2266F98D8495AF8C01");
        assert!(verify(&public_point(&be32(D)), &be32(HASH), &signature));
    }

    #[test]
    fn basepoint_affine_x_is_the_rfc_8032_value() {
        // RFC 8032 §5.1: x(B) = 15112221349535400772501151409588531511454012693041857206046113283949847762202.
        let x =
            BigUint::parse_bytes(b"15112221349535400772501151409588531511454012693041857206046113283949847762202", 10)
                .unwrap();
        let n = BigUint::from_bytes_le(&Scalar::ONE.to_bytes()) + BigUint::from_bytes_le(&(-Scalar::ONE).to_bytes());
        let expected = x % n;
        assert_eq!(BigUint::from_bytes_le(&affine_x(&ED25519_BASEPOINT_POINT).to_bytes()), expected);
    }

    #[test]
    fn affine_x_of_negated_point_is_negated() {
        let p = &FIELD.p;
        for k in 1u64..20 {
            let point = EdwardsPoint::mul_base(&Scalar::from(k));
            let x = BigUint::from_bytes_le(&affine_x(&point).to_bytes());
            let minus_x = BigUint::from_bytes_le(&affine_x(&-point).to_bytes());
            // x and p − x, both reduced mod n: their sum is p mod n.
            let n = BigUint::from_bytes_le(&(-Scalar::ONE).to_bytes()) + 1u32;
            assert_eq!((x + minus_x) % &n, p % &n, "k = {k}");
        }
        // The identity (0, 1) and the 2-torsion point (0, −1) have x = 0.
        assert_eq!(affine_x(&EIGHT_TORSION[0]), Scalar::ZERO);
        assert_eq!(affine_x(&EIGHT_TORSION[4]), Scalar::ZERO);
    }

    #[test]
    fn shr3_truncates_to_253_bits() {
        let all = [0xffu8; 32];
        let shifted = shr3(&all);
        assert_eq!(shifted[0], 0x1f);
        assert!(shifted[1..].iter().all(|&b| b == 0xff));
        assert_eq!(shr3(&be32(&format!("{:064X}", 8))), be32(&format!("{:064X}", 1)));
    }

    #[test]
    fn std_mpis_are_minimal_and_signed() {
        assert_eq!(std_mpi(&[0, 0, 0x12, 0x34]), [0x12, 0x34]);
        assert_eq!(std_mpi(&[0, 0x80, 1]), [0, 0x80, 1]);
        assert_eq!(std_mpi(&[0xff]), [0, 0xff]);
        assert_eq!(std_mpi(&[0, 0]), [0u8; 0]);
    }

    #[test]
    fn usg_mpis_are_minimal_and_unsigned() {
        assert_eq!(scalar_to_usg(&Scalar::from(0x1234u32)), [0x12, 0x34]);
        assert_eq!(scalar_to_usg(&Scalar::from(0xe801u32)), [0xe8, 0x01]);
        assert_eq!(scalar_to_usg(&Scalar::ZERO), [0u8; 0]);
    }

    #[test]
    fn canonical_scalar_range() {
        let n_minus_1: Vec<u8> = (-Scalar::ONE).to_bytes().into_iter().rev().collect();
        assert_eq!(canonical_scalar(&n_minus_1), Some(-Scalar::ONE));
        let mut n = n_minus_1.clone();
        n[31] += 1;
        assert_eq!(canonical_scalar(&n), None);
        assert_eq!(canonical_scalar(&[0, 0, 0, 5]), Some(Scalar::from(5u8)));
        assert_eq!(canonical_scalar(&[1; 33]), None);
        assert_eq!(canonical_scalar(&[]), Some(Scalar::ZERO));
    }

    #[test]
    fn out_of_range_or_tampered_signatures_fail() {
        let (d, hash) = (be32(D), be32(HASH));
        let q = public_point(&d);
        let good = sign(&d, &hash);
        for bad in [
            Signature { r: Scalar::ZERO, ..good },
            Signature { s: Scalar::ZERO, ..good },
            Signature { r: good.r + Scalar::ONE, ..good },
            Signature { s: good.s + Scalar::ONE, ..good },
            Signature { r: good.s, s: good.r },
        ] {
            assert!(!verify(&q, &hash, &bad));
        }
        let mut other = hash;
        other[31] ^= 0b1000;
        assert!(!verify(&q, &other, &good));
        // A flip in the three bits the truncation drops leaves e, and so the signature, intact:
        // that is libgcrypt's behaviour too, and why the whole hash is compared separately.
        let mut low = hash;
        low[31] ^= 0b100;
        assert!(verify(&q, &low, &good));
    }
}
