//! Guix narinfo signatures: the `Signature: 1;<host>;<base64>` field, made as `guix publish`
//! makes it and checked as `guix substitute` checks it (docs/protocol.md §5.2, §5.3).

use data_encoding::{BASE64, HEXUPPER};
use sha2::{Digest, Sha256};

use super::ecdsa::{self, Signature};
use super::public_key::GuixPublicKey;
use super::secret_key::GuixSecretKey;
use super::sexp::Sexp;
use crate::Error;

/// The fields `guix substitute` requires above `Signature:`; without them a narinfo is unsigned.
const MANDATORY_SIGNED_FIELDS: [&str; 3] = ["StorePath", "NarHash", "References"];

const SIGNATURE_MARKER: &str = "Signature:";

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

/// The part of a narinfo that its signature covers, as `guix substitute` takes it: all the text
/// before the first occurrence of `Signature:`, or `None` if there is none.
///
/// Anything after that point (URL, Compression, FileSize…) can change without re-signing.
pub fn signed_text(narinfo: &str) -> Option<&str> {
    narinfo.find(SIGNATURE_MARKER).map(|index| &narinfo[..index])
}

/// Checks a narinfo's `Signature` field the way `guix substitute` does (`narinfo-sha256`,
/// `valid-narinfo?` and guix/pki.scm's `signature-case`), accepting it only if a key of `acl`
/// signed it.
///
/// In order: the text before the first `Signature:` must hold `StorePath`, `NarHash` and
/// `References` fields; the first `Signature` field must be `1;<host>;<base64>`; the base64
/// must decode to UTF-8 text of a sexp; its `(public-key …)` must be structurally equal to a
/// key of `acl`; its `(hash sha256 …)` must be the sha256 of the signed text; and its
/// `(sig-val (ecdsa (r …) (s …)))` must verify under that key. Only ECDSA on Ed25519 with
/// sha256 is supported (RSA-signed narinfos, which old Guix test keys make, are refused).
///
/// Lines are read as `recutils->alist` reads them: a leading `#` is a comment, a leading `+`
/// continues the previous value, an empty line ends the record, values are left-trimmed,
/// and any other line that is not `Field: value` makes the whole narinfo invalid.
pub fn verify_narinfo(narinfo: &str, acl: &[GuixPublicKey]) -> Result<(), Error> {
    let all_fields = recutils_fields(narinfo)?;
    let signed = signed_text(narinfo).ok_or(Error::NarinfoUnsigned { field: "Signature" })?;
    let signed_fields = recutils_fields(signed)?;
    for field in MANDATORY_SIGNED_FIELDS {
        if !signed_fields.iter().any(|(name, _)| *name == field) {
            return Err(Error::NarinfoUnsigned { field });
        }
    }
    let value = all_fields
        .iter()
        .find(|(name, _)| *name == "Signature")
        .map(|(_, value)| value.as_str())
        .ok_or(Error::NarinfoUnsigned { field: "Signature" })?;
    let sexp = decode_signature_field(value)?;
    let hash: [u8; 32] = Sha256::digest(signed.as_bytes()).into();
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

/// Guix's `recutils->alist`: the `(name, value)` fields of the first record of `text`.
fn recutils_fields(text: &str) -> Result<Vec<(&str, String)>, Error> {
    let mut fields: Vec<(&str, String)> = Vec::new();
    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        // `read-line` sees no final line after the last '\n'.
        if line.is_empty() && lines.peek().is_none() {
            break;
        }
        if line.is_empty() {
            if fields.is_empty() {
                continue; // blank lines before the record are skipped
            }
            break; // a blank line ends the record
        }
        let first = line.as_bytes()[0];
        if first.is_ascii_alphabetic() || first == b'%' {
            let (name, value) = line.split_once(':').ok_or(Error::NarinfoLine { line: index + 1 })?;
            fields.push((name, value.trim_start().to_owned()));
        } else if first == b'#' {
            continue;
        } else if first == b'+' {
            let continued = line.strip_prefix("+ ").unwrap_or(&line[1..]);
            let (_, value) = fields.last_mut().ok_or(Error::NarinfoLine { line: index + 1 })?;
            value.push('\n');
            value.push_str(continued);
        } else {
            return Err(Error::NarinfoLine { line: index + 1 });
        }
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        recutils_fields(text).unwrap().into_iter().map(|(n, v)| format!("{n}={v}")).collect()
    }

    #[test]
    fn recutils_reading_follows_guix() {
        assert_eq!(names("A: 1\nB:2 \n# c\nC:   x\n+ y\n+z\n"), ["A=1", "B=2 ", "C=x\ny\nz"]);
        assert_eq!(names("\n\nA: 1\n\nB: 2\n"), ["A=1"]);
        assert_eq!(names("A: 1"), ["A=1"]);
        assert_eq!(names(""), [] as [String; 0]);
        assert!(matches!(recutils_fields("A: 1\nno colon\n"), Err(Error::NarinfoLine { line: 2 })));
        assert!(matches!(recutils_fields(" A: 1\n"), Err(Error::NarinfoLine { line: 1 })));
        assert!(matches!(recutils_fields("+ x\n"), Err(Error::NarinfoLine { line: 1 })));
    }

    #[test]
    fn signed_text_ends_at_the_first_marker_anywhere() {
        assert_eq!(signed_text("A: 1\nSignature: x\nSignature: y"), Some("A: 1\n"));
        assert_eq!(signed_text("A: xSignature:"), Some("A: x"));
        assert_eq!(signed_text("A: 1\n"), None);
    }

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
