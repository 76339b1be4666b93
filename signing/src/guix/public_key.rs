//! Guix public keys, `signing-key.pub` and ACL entries: `(public-key (ecc (curve Ed25519) (q #…#)))`,
//! and the key layout both halves share, read and written as `guix archive --generate-key` does.

use std::fmt;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use data_encoding::HEXUPPER;

use super::sexp::Sexp;
use crate::{Error, KeyKind};

/// A Guix public key, `(public-key (ecc (curve Ed25519) (q #…#)))`: what a client's
/// `/etc/guix/acl` holds and a server serves at `/signing-key.pub`.
///
/// Two keys are equal when their sexps are structurally equal, the comparison `guix substitute`
/// makes between a signature's embedded key and its ACL entries. The sexp is kept as it was
/// parsed, so a key whose elements come in another order stays distinct, as it is for Guix.
#[derive(Clone)]
pub struct GuixPublicKey {
    sexp: Sexp,
    q: [u8; 32],
    point: EdwardsPoint,
}

impl GuixPublicKey {
    /// Parses a public key in any libgcrypt syntax (normally the advanced text of a
    /// `signing-key.pub` file; canonical and transport forms are read too).
    ///
    /// Only ECDSA keys on Ed25519 are accepted: `(public-key (ecc (curve Ed25519) (q #…#)))`,
    /// its elements in any order, with q the canonical 32-byte encoding of a curve point.
    /// RSA keys and EdDSA keys (`(flags eddsa)`) are refused.
    pub fn parse(input: impl AsRef<[u8]>) -> Result<GuixPublicKey, Error> {
        GuixPublicKey::from_sexp(Sexp::parse(input.as_ref())?)
    }

    /// Checks that `sexp` is a public key of the form [`GuixPublicKey::parse`] accepts.
    pub fn from_sexp(sexp: Sexp) -> Result<GuixPublicKey, Error> {
        let kind = KeyKind::Public;
        let elements = ecc_elements(&sexp, kind)?;
        let q = elements.q.ok_or(form(kind, "a (q #…#) element"))?;
        let (q, point) = decode_point(q, kind)?;
        Ok(GuixPublicKey { sexp, q, point })
    }

    /// The key for the point with this 32-byte Ed25519 encoding, in the layout libgcrypt writes.
    pub(super) fn from_q(q: [u8; 32], point: EdwardsPoint) -> GuixPublicKey {
        let sexp = Sexp::named("public-key", [ecc_sexp(&q, None)]);
        GuixPublicKey { sexp, q, point }
    }

    /// The 32-byte Ed25519 encoding of the public point (little-endian y, sign of x on top).
    pub fn q(&self) -> &[u8; 32] {
        &self.q
    }

    /// The key's sexp, as parsed or built.
    pub fn sexp(&self) -> &Sexp {
        &self.sexp
    }

    /// The key in libgcrypt's advanced format, the exact text of a `signing-key.pub` file
    /// written by Guix (newline-terminated), and the text to serve at `/signing-key.pub`.
    pub fn to_sexp_string(&self) -> String {
        self.sexp.to_advanced()
    }

    pub(crate) fn point(&self) -> &EdwardsPoint {
        &self.point
    }
}

impl PartialEq for GuixPublicKey {
    fn eq(&self, other: &GuixPublicKey) -> bool {
        self.sexp == other.sexp
    }
}

impl Eq for GuixPublicKey {}

impl fmt::Debug for GuixPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GuixPublicKey").field(&HEXUPPER.encode(&self.q)).finish()
    }
}

/// `(ecc (curve Ed25519) (q #…#) [(d #…#)])`, the element order libgcrypt's genkey uses.
pub(super) fn ecc_sexp(q: &[u8; 32], d: Option<Vec<u8>>) -> Sexp {
    let mut items = vec![Sexp::named("curve", [Sexp::atom("Ed25519")]), Sexp::named("q", [Sexp::atom(q.to_vec())])];
    if let Some(d) = d {
        items.push(Sexp::named("d", [Sexp::Atom(d)]));
    }
    Sexp::named("ecc", items)
}

/// The `q` and `d` atoms of `(public-key|private-key (ecc (curve Ed25519) …))`.
pub(super) struct EccElements<'a> {
    pub(super) q: Option<&'a [u8]>,
    pub(super) d: Option<&'a [u8]>,
}

pub(super) fn form(kind: KeyKind, expected: &'static str) -> Error {
    Error::GuixKeyForm { kind, expected }
}

pub(super) fn ecc_elements(sexp: &Sexp, kind: KeyKind) -> Result<EccElements<'_>, Error> {
    let top = match kind {
        KeyKind::Public => "public-key",
        KeyKind::Secret => "private-key",
    };
    let expected_top = if kind == KeyKind::Public { "a (public-key …) list" } else { "a (private-key …) list" };
    let items = sexp.as_list().filter(|_| sexp.name() == Some(top.as_bytes())).ok_or(form(kind, expected_top))?;
    let [_, ecc] = items else {
        return Err(form(kind, "exactly one (ecc …) list inside"));
    };
    if ecc.name() != Some(b"ecc") {
        return Err(form(kind, "an (ecc …) list: only ECDSA keys on Ed25519 are supported"));
    }
    let mut curve = None;
    let mut elements = EccElements { q: None, d: None };
    for element in &ecc.as_list().unwrap_or_default()[1..] {
        let (name, value) = match element.as_list() {
            Some([name, value]) => (name.as_atom(), value.as_atom()),
            _ => (None, None),
        };
        let (Some(name), Some(value)) = (name, value) else {
            return Err(form(kind, "only (name value) elements inside (ecc …)"));
        };
        let slot = match name {
            b"curve" => &mut curve,
            b"q" => &mut elements.q,
            b"d" if kind == KeyKind::Secret => &mut elements.d,
            b"d" => return Err(form(kind, "no (d …) element, since a public key holds no secret")),
            b"flags" => return Err(form(kind, "no (flags …): EdDSA keys cannot sign for Guix")),
            _ => return Err(form(kind, "only curve, q and d elements inside (ecc …)")),
        };
        if slot.replace(value).is_some() {
            return Err(form(kind, "each element of (ecc …) once"));
        }
    }
    if curve != Some(b"Ed25519".as_slice()) {
        return Err(form(kind, "a (curve Ed25519) element"));
    }
    Ok(elements)
}

/// The point q encodes, if q is 32 bytes in the canonical encoding of a curve point.
pub(super) fn decode_point(q: &[u8], kind: KeyKind) -> Result<([u8; 32], EdwardsPoint), Error> {
    let q: [u8; 32] = q.try_into().map_err(|_| Error::GuixKeyPoint { kind })?;
    let point = CompressedEdwardsY(q).decompress().ok_or(Error::GuixKeyPoint { kind })?;
    // dalek accepts a y ≥ p and a negative zero x; re-encoding catches both.
    if point.compress().to_bytes() != q {
        return Err(Error::GuixKeyPoint { kind });
    }
    Ok((q, point))
}

#[cfg(test)]
mod tests {
    use super::*;

    // docs/protocol.md §5.3.
    const Q: &str = "E998EBA27AC7DA0B02B66670B8D7B832C68E457B33718DCA5F135422F499A864";

    fn public_text(q: &str) -> String {
        format!("(public-key \n (ecc \n  (curve Ed25519)\n  (q #{q}#)\n  )\n )\n")
    }

    #[test]
    fn public_keys_compare_structurally() {
        let ordered = GuixPublicKey::parse(public_text(Q)).unwrap();
        let reordered = GuixPublicKey::parse(format!("(public-key (ecc (q #{Q}#) (curve Ed25519)))")).unwrap();
        assert_eq!(ordered.q(), reordered.q());
        // Guix compares the sexps, so the element order matters to it and to us.
        assert_ne!(ordered, reordered);
        assert_eq!(
            reordered.to_sexp_string(),
            format!("(public-key \n (ecc \n  (q #{Q}#)\n  (curve Ed25519)\n  )\n )\n")
        );
    }

    #[test]
    fn points_must_be_canonical_and_on_the_curve() {
        // y = p (non-canonical zero) and a y with no point: about half of all y values.
        let p_plus_0 = "EDFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF7F";
        let off_curve = (0..=255u8)
            .map(|b| [b; 32])
            .find(|q| CompressedEdwardsY(*q).decompress().is_none())
            .map(|q| HEXUPPER.encode(&q))
            .unwrap();
        for q in [p_plus_0, &off_curve, &Q[2..], &format!("40{Q}")] {
            let err = GuixPublicKey::parse(public_text(q)).unwrap_err();
            assert!(matches!(err, Error::GuixKeyPoint { kind: KeyKind::Public }), "{q}: {err:?}");
        }
    }

    #[test]
    fn other_shapes_are_refused() {
        for text in [
            format!("(public-key (ecc (curve Ed25519) (q #{Q}#) (d #01#)))"),
            format!("(public-key (ecc (curve Ed25519) (flags eddsa) (q #{Q}#)))"),
            format!("(public-key (ecc (curve Ed448) (q #{Q}#)))"),
            "(public-key (ecc (curve Ed25519)))".to_owned(),
            format!("(private-key (ecc (curve Ed25519) (q #{Q}#)))"),
            "(public-key (rsa (n #00C1F3#) (e #010001#)))".to_owned(),
            format!("(public-key (ecc (curve Ed25519) (q #{Q}#)) (ecc))"),
        ] {
            let err = GuixPublicKey::parse(&text).unwrap_err();
            assert!(matches!(err, Error::GuixKeyForm { kind: KeyKind::Public, .. }), "{text}: {err:?}");
        }
    }
}
