//! Cross-checks with libgcrypt, an implementation no one here wrote, through Debian's
//! guile-3.0 and guile-gcrypt and `tests/guile/gcrypt-check.scm`, which signs and checks
//! narinfos the way `guix publish` and `guix substitute` do.
//!
//! A missing Guile or guile-gcrypt fails these tests with the command that installs them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use signing::{read_guix_public_key_file, read_guix_secret_key_file, write_guix_key_pair, Error, GuixSecretKey};

use test_support::gcrypt::gcrypt;

use crate::guix::vector_key;
use crate::{verify_narinfo, Refusal};

/// libgcrypt's verdict, one line per narinfo.
fn libgcrypt_verdicts(public_key: &Path, narinfos: &[PathBuf]) -> Vec<String> {
    let mut args = vec![Path::new("verify"), public_key];
    args.extend(narinfos.iter().map(PathBuf::as_path));
    gcrypt(&args).lines().map(str::to_owned).collect()
}

/// The signed part of a narinfo; `i` varies the fields, and some have a Deriver or non-ASCII.
fn text(i: usize) -> String {
    let hash = format!("{:0>32}", format!("{i}a")).replace('e', "f");
    let mut text = format!(
        "StorePath: /gnu/store/{hash}-pkg-{i}.0\nNarHash: sha256:{}\nNarSize: {}\nReferences: {}\n",
        "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
        1000 + i * 7919,
        (0..i % 4).map(|j| format!("{hash}-dep-{j}")).collect::<Vec<_>>().join(" ")
    );
    if i.is_multiple_of(3) {
        text.push_str(&format!("Deriver: {hash}-pkg-{i}.0{}.drv\n", if i.is_multiple_of(2) { "-café" } else { "" }));
    }
    text
}

fn narinfo(key: &GuixSecretKey, text: &str) -> String {
    format!("{text}Signature: {}\nURL: nar/gzip/x\nCompression: gzip\n", key.sign_narinfo("subserve", text).unwrap())
}

#[test]
fn libgcrypt_verifies_our_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let keys = [vector_key(), GuixSecretKey::generate().unwrap(), GuixSecretKey::generate().unwrap()];
    let mut next = 0;
    for (k, key) in keys.iter().enumerate() {
        let (secret_path, public_path) = (dir.path().join(format!("{k}.sec")), dir.path().join(format!("{k}.pub")));
        write_guix_key_pair(key, &secret_path, &public_path).unwrap();
        let count = if k == 0 { 8 } else { 6 };
        let mut files = Vec::new();
        for _ in 0..count {
            let path = dir.path().join(format!("ours-{next}.narinfo"));
            fs::write(&path, narinfo(key, &text(next))).unwrap();
            files.push(path);
            next += 1;
        }
        // Two that must fail, so that the check is not vacuous: a changed NarSize, another key.
        let tampered = dir.path().join(format!("tampered-{k}.narinfo"));
        fs::write(&tampered, fs::read_to_string(&files[0]).unwrap().replacen("NarSize: ", "NarSize: 1", 1)).unwrap();
        let foreign = dir.path().join(format!("foreign-{k}.narinfo"));
        fs::write(&foreign, narinfo(&keys[(k + 1) % keys.len()], &text(99))).unwrap();
        files.extend([tampered, foreign]);

        let verdicts = libgcrypt_verdicts(&public_path, &files);
        let mut expected = vec!["valid"; count];
        expected.extend(["invalid hash-mismatch", "invalid unauthorized-key"]);
        assert_eq!(verdicts, expected, "key {k}");
    }
    assert_eq!(next, 20);
}

/// Has libgcrypt make a key and sign texts with it, in `dir`; returns the key files and narinfos.
fn libgcrypt_signed(dir: &Path, count: usize) -> (PathBuf, PathBuf, Vec<(String, PathBuf)>) {
    let (secret, public) = (dir.join("signing-key.sec"), dir.join("signing-key.pub"));
    gcrypt(&[Path::new("genkey"), &secret, &public]);
    let signed = libgcrypt_sign(dir, &secret, &public, count);
    (secret, public, signed)
}

/// Has libgcrypt sign `count` texts with the key in `secret` and `public`.
fn libgcrypt_sign(dir: &Path, secret: &Path, public: &Path, count: usize) -> Vec<(String, PathBuf)> {
    let mut args: Vec<PathBuf> = vec!["sign".into(), secret.to_owned(), public.to_owned(), "subserve".into()];
    let mut signed = Vec::new();
    for i in 0..count {
        let (text_path, narinfo_path) = (dir.join(format!("{i}.txt")), dir.join(format!("{i}.narinfo")));
        fs::write(&text_path, text(i)).unwrap();
        args.extend([text_path, narinfo_path.clone()]);
        signed.push((text(i), narinfo_path));
    }
    let args: Vec<&Path> = args.iter().map(PathBuf::as_path).collect();
    gcrypt(&args);
    signed
}

#[test]
fn we_verify_libgcrypt_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public_path, signed) = libgcrypt_signed(dir.path(), 10);
    let public = read_guix_public_key_file(&public_path).unwrap();
    assert_eq!(public.to_sexp_string(), fs::read_to_string(&public_path).unwrap());
    let other = GuixSecretKey::generate().unwrap().to_public();
    for (text, path) in &signed {
        let narinfo = fs::read_to_string(path).unwrap();
        assert!(narinfo.starts_with(text.as_str()));
        verify_narinfo(&narinfo, std::slice::from_ref(&public)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(matches!(
            verify_narinfo(&narinfo, std::slice::from_ref(&other)),
            Err(Refusal::Signature(Error::UntrustedKey { .. }))
        ));
        let tampered = narinfo.replacen("NarSize: ", "NarSize: 1", 1);
        assert!(matches!(
            verify_narinfo(&tampered, std::slice::from_ref(&public)),
            Err(Refusal::Signature(Error::HashMismatch))
        ));
    }
}

#[test]
fn libgcrypt_keys_load_and_sign_exactly_as_libgcrypt_does() {
    let dir = tempfile::tempdir().unwrap();
    let (secret_path, public_path, signed) = libgcrypt_signed(dir.path(), 10);
    fs::set_permissions(&secret_path, fs::Permissions::from_mode(0o600)).unwrap();
    let key = read_guix_secret_key_file(&secret_path).unwrap();
    // Our printing of libgcrypt's key files is byte for byte what Guile wrote.
    assert_eq!(*key.to_sexp_string(), fs::read_to_string(&secret_path).unwrap());
    assert_eq!(key.public_sexp(), fs::read_to_string(&public_path).unwrap());

    let mut ours = Vec::new();
    for (i, (text, path)) in signed.iter().enumerate() {
        let theirs = fs::read_to_string(path).unwrap();
        let mine = narinfo(&key, text);
        // RFC 6979 makes both deterministic: the whole Signature line must be identical.
        assert_eq!(mine, theirs, "narinfo {i}");
        let path = dir.path().join(format!("ours-{i}.narinfo"));
        fs::write(&path, narinfo(&key, &format!("{text}Deriver: extra-{i}.drv\n"))).unwrap();
        ours.push(path);
    }
    assert_eq!(libgcrypt_verdicts(&public_path, &ours), vec!["valid"; ours.len()]);
}

#[test]
fn libgcrypt_signs_like_us_with_the_vector_key() {
    // A fixed key and fixed texts make the signatures fixed, so this covers r and s values
    // whose first significant byte has its top bit set, which libgcrypt prints without a 00
    // byte in front (its `%M` is the unsigned MPI format), and short (31-byte) values.
    let dir = tempfile::tempdir().unwrap();
    let (secret_path, public_path) = (dir.path().join("vector.sec"), dir.path().join("vector.pub"));
    let key = vector_key();
    write_guix_key_pair(&key, &secret_path, &public_path).unwrap();
    let signed = libgcrypt_sign(dir.path(), &secret_path, &public_path, 64);
    let mut high_bit_values = 0;
    for (text, path) in &signed {
        let theirs = fs::read_to_string(path).unwrap();
        assert_eq!(narinfo(&key, text), theirs);
        let sexp = key.signature_sexp(text);
        for token in ["r", "s"] {
            let value = sexp.token_value(token).unwrap();
            if value.len() < 32 && value[0] & 0x80 != 0 {
                high_bit_values += 1;
            }
        }
    }
    assert!(high_bit_values > 0, "no r or s with its top bit set among these texts: pick others");
}
