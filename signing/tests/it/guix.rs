//! Guix narinfo signatures through the public API: the test vector of docs/protocol.md §5.3 bit
//! for bit, the golden narinfo signed by libgcrypt, tampering of every kind, and sign → verify
//! properties.

use std::path::PathBuf;

use data_encoding::BASE64;
use formats::guix::signed_part as signed_text;
use proptest::prelude::*;
use signing::guix::Sexp;
use signing::{read_guix_public_key_file, Error, GuixPublicKey, GuixSecretKey};

use crate::{verify_narinfo, Refusal};

pub(crate) const VECTOR_D: &str = "594FC4A7EDA72A869A69FC4054FE75888C1EDD59ED217C42ACF9D8041F122CE8";
pub(crate) const VECTOR_Q: &str = "E998EBA27AC7DA0B02B66670B8D7B832C68E457B33718DCA5F135422F499A864";
pub(crate) const VECTOR_TEXT: &str = "StorePath: /gnu/store/0000000000000000000000000000000a-hello-2.12\n\
    NarHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\n\
    NarSize: 112\nReferences: \n";

/// The exact text libgcrypt prints for the signature of docs/protocol.md §5.3.
const VECTOR_SIGNATURE: &str = "(signature \n (data \n  (flags rfc6979)\n  \
    (hash sha256 #9904E1A36D844AC823B6F3834C036E9ADC75618A5407B7B0BF3B55302DE5FE1B#)\n  )\n \
    (sig-val \n  (ecdsa \n   (r #0EBD8310AC0877349DCF97D34B89CB0BCE39965E347866D86B8C1424C471B094#)\n   \
    (s #038F7B42D8FF9A41E0E458FEF419649D32CED865B4B0DD2266F98D8495AF8C01#)\n   )\n  )\n \
    (public-key \n  (ecc \n   (curve Ed25519)\n   \
    (q #E998EBA27AC7DA0B02B66670B8D7B832C68E457B33718DCA5F135422F499A864#)\n   )\n  )\n )\n";

pub(crate) fn vector_key() -> GuixSecretKey {
    GuixSecretKey::parse(format!("(private-key (ecc (curve Ed25519) (q #{VECTOR_Q}#) (d #{VECTOR_D}#)))")).unwrap()
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/guix")
}

fn golden_narinfo() -> String {
    std::fs::read_to_string(data_dir().join("amvwkw6xrfp2nvhf9bwfdavri3k5j6sy.narinfo")).unwrap()
}

fn golden_key() -> GuixPublicKey {
    read_guix_public_key_file(&data_dir().join("signing-key.pub")).unwrap()
}

/// Replaces the value of the narinfo's Signature line.
fn with_signature(narinfo: &str, value: &str) -> String {
    narinfo
        .lines()
        .map(|line| if line.starts_with("Signature:") { format!("Signature: {value}\n") } else { format!("{line}\n") })
        .collect()
}

fn signature_value(narinfo: &str) -> &str {
    narinfo.lines().find_map(|line| line.strip_prefix("Signature: ")).unwrap()
}

fn signature_sexp(narinfo: &str) -> Sexp {
    let base64 = signature_value(narinfo).split(';').nth(2).unwrap();
    Sexp::parse(&BASE64.decode(base64.as_bytes()).unwrap()).unwrap()
}

/// The signature sexp with one list's atom replaced.
fn replace_atom(sexp: &Sexp, token: &str, new: Vec<u8>) -> Sexp {
    match sexp {
        Sexp::List(items) if sexp.name() == Some(token.as_bytes()) => {
            Sexp::List(vec![items[0].clone(), Sexp::Atom(new)])
        }
        Sexp::List(items) => Sexp::List(items.iter().map(|item| replace_atom(item, token, new.clone())).collect()),
        atom => atom.clone(),
    }
}

fn resigned(narinfo: &str, sexp: &Sexp) -> String {
    with_signature(narinfo, &format!("1;vm;{}", BASE64.encode(sexp.to_advanced().as_bytes())))
}

#[test]
fn protocol_vector_signature_is_libgcrypts_bit_for_bit() {
    let key = vector_key();
    let sexp = key.signature_sexp(VECTOR_TEXT);
    assert_eq!(sexp.to_advanced(), VECTOR_SIGNATURE);
    let value = key.sign_narinfo("vector-host", VECTOR_TEXT).unwrap();
    let base64 = value.strip_prefix("1;vector-host;").unwrap();
    assert!(base64.starts_with("KHNpZ25hdHVyZSAKIChkYXRhIAogIChmbGFncyByZmM2OTc5KQog"), "{base64}");
    assert_eq!(BASE64.decode(base64.as_bytes()).unwrap(), VECTOR_SIGNATURE.as_bytes());
    assert_eq!(key.public_sexp(), format!("(public-key \n (ecc \n  (curve Ed25519)\n  (q #{VECTOR_Q}#)\n  )\n )\n"));
}

#[test]
fn protocol_vector_narinfo_verifies() {
    let key = vector_key();
    let narinfo = format!(
        "{VECTOR_TEXT}Signature: {}\nURL: nar/gzip/0000000000000000000000000000000a-hello-2.12\nCompression: gzip\n",
        key.sign_narinfo("h", VECTOR_TEXT).unwrap()
    );
    verify_narinfo(&narinfo, &[key.to_public()]).unwrap();
    assert_eq!(signed_text(&narinfo), Some(VECTOR_TEXT));
}

#[test]
fn golden_key_file_is_read_and_printed_byte_for_byte() {
    let text = std::fs::read_to_string(data_dir().join("signing-key.pub")).unwrap();
    let key = GuixPublicKey::parse(&text).unwrap();
    assert_eq!(key.to_sexp_string(), text);
    assert_eq!(key, golden_key());
}

#[test]
fn golden_narinfo_is_accepted() {
    let narinfo = golden_narinfo();
    verify_narinfo(&narinfo, &[golden_key()]).unwrap();
    // With other keys around it in the ACL too.
    let others = [GuixSecretKey::generate().unwrap().to_public(), vector_key().to_public()];
    verify_narinfo(&narinfo, &[others[0].clone(), golden_key(), others[1].clone()]).unwrap();
    assert_eq!(signed_text(&narinfo).unwrap().len(), 345);
}

#[test]
fn golden_signature_sexp_is_reprinted_exactly() {
    // libgcrypt printed this text; our printer must give the same bytes back.
    let narinfo = golden_narinfo();
    let base64 = signature_value(&narinfo).split(';').nth(2).unwrap();
    let text = String::from_utf8(BASE64.decode(base64.as_bytes()).unwrap()).unwrap();
    let sexp = Sexp::parse(text.as_bytes()).unwrap();
    assert_eq!(sexp.to_advanced(), text);
    let r = sexp.find_token("r").unwrap().as_list().unwrap()[1].as_atom().unwrap().to_vec();
    assert_eq!(data_encoding::HEXUPPER.encode(&r), "06AB2CEB3BE218B414981592DC06E4F77FB6B3B19A9F8920EA558B48E76DE903");
}

#[test]
fn any_byte_change_above_the_signature_is_rejected() {
    let narinfo = golden_narinfo();
    let acl = [golden_key()];
    let signed_len = signed_text(&narinfo).unwrap().len();
    let bytes = narinfo.as_bytes();
    for position in 0..signed_len {
        for flip in [0x01u8, 0x20] {
            let mut changed = bytes.to_vec();
            changed[position] ^= flip;
            let Ok(changed) = String::from_utf8(changed) else { continue };
            assert!(verify_narinfo(&changed, &acl).is_err(), "accepted a change at byte {position} (^{flip:#x})");
        }
    }
    // Inserting or deleting a byte anywhere above is rejected too.
    for position in 0..signed_len {
        let deleted = format!("{}{}", &narinfo[..position], &narinfo[position + 1..]);
        assert!(verify_narinfo(&deleted, &acl).is_err(), "accepted deleting byte {position}");
        let inserted = format!("{} {}", &narinfo[..position], &narinfo[position..]);
        assert!(verify_narinfo(&inserted, &acl).is_err(), "accepted inserting at byte {position}");
    }
}

#[test]
fn missing_mandatory_fields_make_it_unsigned() {
    let narinfo = golden_narinfo();
    for field in ["StorePath", "NarHash", "References"] {
        let removed: String = narinfo.lines().filter(|l| !l.starts_with(field)).map(|l| format!("{l}\n")).collect();
        let err = verify_narinfo(&removed, &[golden_key()]).unwrap_err();
        assert!(matches!(err, Refusal::Text(formats::Error::Unsigned { field: f }) if f == field), "{field}: {err:?}");
    }
    // Moving References below the Signature line leaves it unsigned as well.
    let moved: String = narinfo.lines().filter(|l| !l.starts_with("References")).map(|l| format!("{l}\n")).collect();
    let references = narinfo.lines().find(|l| l.starts_with("References")).unwrap();
    let moved = format!("{moved}{references}\n");
    assert!(matches!(
        verify_narinfo(&moved, &[golden_key()]),
        Err(Refusal::Text(formats::Error::Unsigned { field: "References" }))
    ));
    let no_signature: String =
        narinfo.lines().filter(|l| !l.starts_with("Signature")).map(|l| format!("{l}\n")).collect();
    assert!(matches!(
        verify_narinfo(&no_signature, &[golden_key()]),
        Err(Refusal::Text(formats::Error::Unsigned { field: "Signature" }))
    ));
}

#[test]
fn keys_outside_the_acl_are_refused() {
    let narinfo = golden_narinfo();
    let other = GuixSecretKey::generate().unwrap().to_public();
    let err = verify_narinfo(&narinfo, &[other]).unwrap_err().signature();
    assert!(err.to_string().contains("3B1F1CCB7CD65DEE6FCA5399487B77490B00E770B5D61FEA4D1DBC163E2EB716"), "{err}");
    assert!(matches!(err, Error::UntrustedKey { q: Some(_) }));
    assert!(matches!(verify_narinfo(&narinfo, &[]), Err(Refusal::Signature(Error::UntrustedKey { .. }))));
    // The same q with its elements in another order is another key for Guix.
    let q = "3B1F1CCB7CD65DEE6FCA5399487B77490B00E770B5D61FEA4D1DBC163E2EB716";
    let reordered = GuixPublicKey::parse(format!("(public-key (ecc (q #{q}#) (curve Ed25519)))")).unwrap();
    assert!(matches!(verify_narinfo(&narinfo, &[reordered]), Err(Refusal::Signature(Error::UntrustedKey { .. }))));
}

#[test]
fn mangled_signature_lines_are_refused() {
    let narinfo = golden_narinfo();
    let acl = [golden_key()];
    let value = signature_value(&narinfo);
    let base64 = value.split(';').nth(2).unwrap();
    let text = String::from_utf8(BASE64.decode(base64.as_bytes()).unwrap()).unwrap();
    let truncated = BASE64.encode(&text.as_bytes()[..text.len() / 2]);
    let check = |value: &str| verify_narinfo(&with_signature(&narinfo, value), &acl).unwrap_err().signature();

    assert!(matches!(check(&format!("1;{base64}")), Error::SignatureParts { parts: 2 }));
    assert!(matches!(check(&format!("1;vm;x;{base64}")), Error::SignatureParts { parts: 4 }));
    assert!(matches!(check(&format!("2;vm;{base64}")), Error::SignatureVersion));
    assert!(matches!(check(&format!(";vm;{base64}")), Error::SignatureVersion));
    assert!(matches!(check(&format!("1;vm;{}", &base64[1..])), Error::SignatureBase64 { .. }));
    assert!(matches!(check(&format!("1;vm;{base64}!")), Error::SignatureBase64 { .. }));
    assert!(matches!(check(&format!("1;vm;{truncated}")), Error::SignatureSexp { .. }));
    assert!(matches!(check(&format!("1;vm;{}", BASE64.encode(b"(a \xff)"))), Error::SignatureSexp { .. }));
    assert!(matches!(check("1;vm;"), Error::SignatureSexp { .. }));
    let without_key = text.replace("public-key", "public-kez");
    assert!(matches!(
        check(&format!("1;vm;{}", BASE64.encode(without_key.as_bytes()))),
        Error::SignatureElement { element: "public-key" }
    ));
    let rsa = text.replace("(ecdsa", "(rsa");
    assert!(matches!(check(&format!("1;vm;{}", BASE64.encode(rsa.as_bytes()))), Error::SignatureScheme { .. }));
    let sha512 = text.replace("sha256", "sha512");
    assert!(matches!(check(&format!("1;vm;{}", BASE64.encode(sha512.as_bytes()))), Error::SignatureScheme { .. }));
    // The host is not checked, as in Guix.
    verify_narinfo(&with_signature(&narinfo, &format!("1;elsewhere;{base64}")), &acl).unwrap();
}

#[test]
fn tampered_signature_values_are_refused() {
    let narinfo = golden_narinfo();
    let acl = [golden_key()];
    let sexp = signature_sexp(&narinfo);
    let r = sexp.token_value("r").unwrap().to_vec();
    let s = sexp.token_value("s").unwrap().to_vec();
    let n = hex("1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED");
    let mut r_plus_n = r.clone();
    add_be(&mut r_plus_n, &n);

    for (token, value) in [
        ("r", vec![]),
        ("r", vec![0]),
        ("s", vec![0; 32]),
        ("r", r_plus_n),
        ("s", n.clone()),
        ("r", s.clone()),
        ("s", r.clone()),
    ] {
        let changed = resigned(&narinfo, &replace_atom(&sexp, token, value.clone()));
        assert!(verify_narinfo(&changed, &acl).is_err(), "{token} = {value:02X?}");
    }
    let hash = sexp.find_token("hash").unwrap().as_list().unwrap()[2].as_atom().unwrap().to_vec();
    let mut other_hash = hash.clone();
    other_hash[0] ^= 1;
    let data = Sexp::named(
        "data",
        [
            Sexp::named("flags", [Sexp::atom("rfc6979")]),
            Sexp::named("hash", [Sexp::atom("sha256"), Sexp::Atom(other_hash)]),
        ],
    );
    let swapped = Sexp::List(
        sexp.as_list()
            .unwrap()
            .iter()
            .map(|item| if item.name() == Some(b"data") { data.clone() } else { item.clone() })
            .collect(),
    );
    assert!(matches!(
        verify_narinfo(&resigned(&narinfo, &swapped), &acl),
        Err(Refusal::Signature(Error::HashMismatch))
    ));
    // Leading zeros in r and s are accepted, as libgcrypt reads unsigned MPIs.
    let padded = replace_atom(&replace_atom(&sexp, "r", [vec![0, 0], r].concat()), "s", [vec![0], s].concat());
    verify_narinfo(&resigned(&narinfo, &padded), &acl).unwrap();
}

#[test]
fn lines_below_the_signature_are_not_covered() {
    let narinfo = golden_narinfo();
    let acl = [golden_key()];
    let changed = narinfo
        .replace("URL: nar/lzip/", "URL: elsewhere/lzip/")
        .replace("Compression: zstd", "Compression: xz")
        .replace("FileSize: 297", "FileSize: 298");
    assert_ne!(changed, narinfo);
    verify_narinfo(&changed, &acl).unwrap();
    let cut = format!("{}Signature: {}\n", signed_text(&narinfo).unwrap(), signature_value(&narinfo));
    verify_narinfo(&cut, &acl).unwrap();
    verify_narinfo(&format!("{narinfo}URL: nar/extra\nCompression: none\nFileSize: 1000\n"), &acl).unwrap();
}

fn hex(text: &str) -> Vec<u8> {
    data_encoding::HEXUPPER.decode(text.as_bytes()).unwrap()
}

/// `a += b` for big-endian byte strings, growing `a` as needed.
fn add_be(a: &mut Vec<u8>, b: &[u8]) {
    let len = a.len().max(b.len()) + 1;
    let mut out = vec![0u8; len];
    let mut carry = 0u16;
    for i in 0..len {
        let x =
            u16::from(*a.iter().rev().nth(i).unwrap_or(&0)) + u16::from(*b.iter().rev().nth(i).unwrap_or(&0)) + carry;
        out[len - 1 - i] = (x & 0xff) as u8;
        carry = x >> 8;
    }
    *a = out;
}

fn narinfo_text() -> impl Strategy<Value = String> {
    (
        "[0-9a-df-np-sv-z]{32}-[a-zA-Z0-9+._-]{1,30}",
        "[0-9a-df-np-sv-z]{52}",
        any::<u32>(),
        proptest::collection::vec("[0-9a-df-np-sv-z]{32}-[a-z0-9.-]{1,20}", 0..4),
        proptest::option::of("[ -~é€]{0,40}"),
    )
        .prop_map(|(path, hash, size, references, deriver)| {
            let mut text = format!(
                "StorePath: /gnu/store/{path}\nNarHash: sha256:{hash}\nNarSize: {size}\nReferences: {}\n",
                references.join(" ")
            );
            if let Some(deriver) = deriver {
                text.push_str(&format!("Deriver: {}\n", deriver.replace("Signature:", "S")));
            }
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn generated_keys_sign_and_verify(text in narinfo_text(), other in narinfo_text()) {
        let key = GuixSecretKey::generate().unwrap();
        let value = key.sign_narinfo("host", &text).unwrap();
        let narinfo = format!("{text}Signature: {value}\nURL: nar/x\nCompression: none\n");
        prop_assert!(verify_narinfo(&narinfo, &[key.to_public()]).is_ok());
        // Signing is deterministic, and a signature does not carry over to another text.
        prop_assert_eq!(key.sign_narinfo("host", &text).unwrap(), value.clone());
        let moved = format!("{other}Signature: {value}\n");
        prop_assert_eq!(verify_narinfo(&moved, &[key.to_public()]).is_ok(), other == text);
    }

    #[test]
    fn flipping_a_bit_of_r_or_s_is_rejected(text in narinfo_text(), use_s in any::<bool>(), bit in 0usize..256) {
        let key = vector_key();
        let narinfo = format!("{text}Signature: {}\n", key.sign_narinfo("h", &text).unwrap());
        let sexp = signature_sexp(&narinfo);
        let token = if use_s { "s" } else { "r" };
        let mut value = sexp.token_value(token).unwrap().to_vec();
        let bit = bit % (value.len() * 8);
        value[bit / 8] ^= 1 << (bit % 8);
        let changed = resigned(&narinfo, &replace_atom(&sexp, token, value));
        prop_assert!(verify_narinfo(&changed, &[key.to_public()]).is_err());
    }
}
