//! Guix narinfo signatures: the value of the `Signature: 1;<host>;<base64>` field, made as
//! `guix publish` makes it and checked as `guix substitute` checks it
//! (docs/protocol.md §5.2, §5.3). Which bytes a signature covers is the narinfo format's
//! business (`formats::guix::signed`): this module gets those bytes and the value, and knows
//! no narinfo fields.

use data_encoding::{BASE64, HEXUPPER};
use sha2::{Digest, Sha256};

use super::ecdsa::{self, Signature};
use super::public_key::GuixPublicKey;
use super::secret_key::GuixSecretKey;
use super::sexp::Sexp;
use crate::Error;

impl GuixSecretKey {
    /// The signature sexp for `signed_text`, as guix/pki.scm's `signature-sexp` builds it:
    /// `(signature (data (flags rfc6979) (hash sha256 #…#)) (sig-val (ecdsa (r #…#) (s #…#)))
    /// (public-key …))`, with this key's public sexp embedded and r, s as libgcrypt prints them.
    pub fn signature_sexp(&self, signed_text: &str) -> Sexp {
        let hash: [u8; 32] = Sha256::digest(signed_text.as_bytes()).into();
        let Signature { r, s } = ecdsa::sign(self.secret(), &hash);
        let data = Sexp::named(
            "data",
            [
                Sexp::named("flags", [Sexp::atom("rfc6979")]),
                Sexp::named("hash", [Sexp::atom("sha256"), Sexp::atom(hash.to_vec())]),
            ],
        );
        let sig_val = Sexp::named(
            "sig-val",
            [Sexp::named(
                "ecdsa",
                [
                    Sexp::named("r", [Sexp::Atom(ecdsa::scalar_to_usg(&r))]),
                    Sexp::named("s", [Sexp::Atom(ecdsa::scalar_to_usg(&s))]),
                ],
            )],
        );
        Sexp::named("signature", [data, sig_val, self.to_public().sexp().clone()])
    }

    /// Signs the narinfo text that goes above `Signature:` and returns the field's value,
    /// `1;<host>;<base64 of the signature sexp in libgcrypt's advanced format>`.
    ///
    /// `signed_text` is exactly the `StorePath`, `NarHash`, `NarSize`, `References` and
    /// (if any) `Deriver` lines, each ending in `\n`, the way `guix publish` emits them; the
    /// narinfo is then `signed_text`, `Signature: <this>\n`, and the URL lines. Signing is
    /// deterministic (RFC 6979) and matches libgcrypt byte for byte.
    ///
    /// `host` is informational (clients ignore it; `guix publish` puts its host name there).
    /// The only error is a host that is empty or contains `;` or whitespace, so checking the
    /// host once at start-up with a test signature is enough.
    pub fn sign_narinfo(&self, host: &str, signed_text: &str) -> Result<String, Error> {
        if host.is_empty() || host.contains(';') || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::InvalidHost { host: host.to_owned() });
        }
        let sexp = self.signature_sexp(signed_text);
        Ok(format!("1;{host};{}", BASE64.encode(sexp.to_advanced().as_bytes())))
    }
}

/// Checks the value of a narinfo's first `Signature` field (`1;<host>;<base64>`) over
/// `signed_text`, the text before that field, the way `guix substitute` does (`narinfo-sha256`
/// and guix/pki.scm's `signature-case`), accepting it only if a key of `acl` signed it.
///
/// In order: the value must be `1;<host>;<base64>`; the base64 must decode to UTF-8 text of a
/// sexp; its `(public-key …)` must be structurally equal to a key of `acl`; its
/// `(hash sha256 …)` must be the sha256 of `signed_text`; and its `(sig-val (ecdsa (r …)
/// (s …)))` must verify under that key. Only ECDSA on Ed25519 with sha256 is supported
/// (RSA-signed narinfos, which old Guix test keys make, are refused).
pub fn verify(signature: &str, signed_text: &str, acl: &[GuixPublicKey]) -> Result<(), Error> {
    let sexp = decode_signature_field(signature)?;
    let hash: [u8; 32] = Sha256::digest(signed_text.as_bytes()).into();
    verify_signature_sexp(&sexp, &hash, acl)
}

/// `1;<host>;<base64>` → the sexp, as `narinfo-signature->canonical-sexp` reads it.
fn decode_signature_field(value: &str) -> Result<Sexp, Error> {
    let parts: Vec<&str> = value.split(';').collect();
    let [version, _host, base64] = parts[..] else {
        return Err(Error::SignatureParts { parts: parts.len() });
    };
    if version != "1" {
        return Err(Error::SignatureVersion);
    }
    let bytes = BASE64.decode(base64.as_bytes()).map_err(|source| Error::SignatureBase64 { source })?;
    // Guix decodes the bytes as UTF-8 text before libgcrypt parses them.
    let text = std::str::from_utf8(&bytes).map_err(|error| Error::SignatureSexp {
        source: Box::new(Error::Sexp { offset: error.valid_up_to(), problem: crate::SexpProblem::NotUtf8 }),
    })?;
    Sexp::parse(text.as_bytes()).map_err(|source| Error::SignatureSexp { source: Box::new(source) })
}

/// guix/pki.scm's `signature-case`: key in the ACL, then hash, then the signature itself.
fn verify_signature_sexp(sexp: &Sexp, hash: &[u8; 32], acl: &[GuixPublicKey]) -> Result<(), Error> {
    let data = sexp.find_token("data").ok_or(Error::SignatureElement { element: "data" })?;
    let subject = sexp.find_token("public-key").ok_or(Error::SignatureElement { element: "public-key" })?;
    let key = acl.iter().find(|key| key.sexp() == subject).ok_or_else(|| Error::UntrustedKey {
        q: GuixPublicKey::from_sexp(subject.clone()).ok().map(|key| HEXUPPER.encode(key.q())),
    })?;

    let hash_list = data.find_token("hash").ok_or(Error::SignatureElement { element: "hash" })?;
    let (algorithm, value) = match hash_list.as_list() {
        Some([_, algorithm, value, ..]) => (algorithm.as_atom(), value.as_atom()),
        _ => (None, None),
    };
    let (Some(algorithm), Some(value)) = (algorithm, value) else {
        return Err(Error::SignatureElement { element: "hash" });
    };
    if algorithm != b"sha256" {
        return Err(Error::SignatureScheme { scheme: "a hash other than sha256" });
    }
    if value != hash {
        return Err(Error::HashMismatch);
    }

    let sig_val = sexp.find_token("sig-val").ok_or(Error::SignatureElement { element: "sig-val" })?;
    let ecdsa = match sig_val.as_list() {
        Some([_, algorithm]) if algorithm.name() == Some(b"ecdsa") => algorithm,
        _ => return Err(Error::SignatureScheme { scheme: "a sig-val other than (ecdsa (r …) (s …))" }),
    };
    let r = ecdsa.token_value("r").ok_or(Error::SignatureElement { element: "r" })?;
    let s = ecdsa.token_value("s").ok_or(Error::SignatureElement { element: "s" })?;
    let (Some(r), Some(s)) = (ecdsa::canonical_scalar(r), ecdsa::canonical_scalar(s)) else {
        return Err(Error::BadSignature);
    };
    if !ecdsa::verify(key.point(), hash, &Signature { r, s }) {
        return Err(Error::BadSignature);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_that_break_the_field_are_refused() {
        let key = GuixSecretKey::generate().unwrap();
        for host in ["", "a;b", "a b", "a\nb", "tab\t"] {
            assert!(matches!(key.sign_narinfo(host, "x"), Err(Error::InvalidHost { .. })), "{host:?}");
        }
        assert!(key
            .sign_narinfo("cache.example.org", "x")
            .unwrap()
            .starts_with("1;cache.example.org;KHNpZ25hdHVyZSAK"));
    }
}
