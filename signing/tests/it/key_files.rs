//! Guix key files through the public API: written and read back in Guix's exact text, told
//! apart from Nix keys by content, and refused when others can read them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use signing::guix::Sexp;
use signing::{
    read_any_secret_key_file, read_guix_public_key_file, read_guix_secret_key_file, write_guix_key_pair, AnySecretKey,
    Error, GuixPublicKey, GuixSecretKey,
};

const SECRET: &str =
    "test-cache-1:3RYTN0JwkMRMunJQdy82GW+lwR/u9TwtXAntnBfvdqyCy51dorjLzHL5rI5nV+sHE5AIOhAneQ8o/UwwEp1vSA==";

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

const GUIX_SECRET: &str = "(private-key \n (ecc \n  (curve Ed25519)\n  \
    (q #E998EBA27AC7DA0B02B66670B8D7B832C68E457B33718DCA5F135422F499A864#)\n  \
    (d #594FC4A7EDA72A869A69FC4054FE75888C1EDD59ED217C42ACF9D8041F122CE8#)\n  )\n )\n";

#[test]
fn written_guix_pair_reads_back_in_guix_form() {
    let dir = tempfile::tempdir().unwrap();
    let (secret_path, public_path) = (dir.path().join("signing-key.sec"), dir.path().join("signing-key.pub"));
    let key = GuixSecretKey::generate().unwrap();
    write_guix_key_pair(&key, &secret_path, &public_path).unwrap();
    assert_eq!(mode(&secret_path), 0o600);
    assert_eq!(mode(&public_path) & !0o644, 0);

    assert_eq!(fs::read_to_string(&secret_path).unwrap(), *key.to_sexp_string());
    assert_eq!(fs::read_to_string(&public_path).unwrap(), key.public_sexp());
    let secret = read_guix_secret_key_file(&secret_path).unwrap();
    assert_eq!(*secret.to_sexp_string(), *key.to_sexp_string());
    assert_eq!(read_guix_public_key_file(&public_path).unwrap(), key.to_public());
    let Ok(AnySecretKey::Guix(any)) = read_any_secret_key_file(&secret_path) else {
        panic!("not read as a Guix key");
    };
    assert_eq!(any.to_public(), key.to_public());
}

#[test]
fn write_guix_key_pair_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let (secret_path, public_path) = (dir.path().join("key.sec"), dir.path().join("key.pub"));
    write_with_mode(&secret_path, GUIX_SECRET.as_bytes(), 0o600);
    let key = GuixSecretKey::generate().unwrap();
    let err = write_guix_key_pair(&key, &secret_path, &public_path).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { ref path } if *path == secret_path));
    assert_eq!(fs::read_to_string(&secret_path).unwrap(), GUIX_SECRET);
    assert!(!public_path.exists());
}

#[test]
fn read_any_tells_the_kinds_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (nix, guix) = (dir.path().join("nix.sec"), dir.path().join("guix.sec"));
    write_with_mode(&nix, format!("{SECRET}\n").as_bytes(), 0o600);
    write_with_mode(&guix, format!("\n  {GUIX_SECRET}").as_bytes(), 0o400);
    assert!(matches!(read_any_secret_key_file(&nix), Ok(AnySecretKey::Nix(ref k)) if k.to_nix_string() == SECRET));
    assert!(
        matches!(read_any_secret_key_file(&guix), Ok(AnySecretKey::Guix(ref k)) if *k.to_sexp_string() == GUIX_SECRET)
    );
    // A canonical (binary) Guix key file is read as well.
    let canonical = dir.path().join("canonical.sec");
    let bytes = Sexp::parse(GUIX_SECRET.as_bytes()).unwrap().to_canonical();
    fs::write(&canonical, bytes).unwrap();
    fs::set_permissions(&canonical, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(read_any_secret_key_file(&canonical), Ok(AnySecretKey::Guix(_))));
}

#[test]
fn guix_secret_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing-key.sec");
    for bad in [0o644, 0o640, 0o444, 0o604] {
        write_with_mode(&path, GUIX_SECRET.as_bytes(), bad);
        for err in [read_any_secret_key_file(&path).unwrap_err(), read_guix_secret_key_file(&path).unwrap_err()] {
            assert!(matches!(err, Error::InsecurePermissions { mode, .. } if mode == bad), "{bad:o}: {err:?}");
            assert!(err.to_string().contains(&format!("chmod 600 {}", path.display())), "{err}");
        }
    }
}

#[test]
fn bad_guix_key_in_file_names_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing-key.sec");
    let other_q = data_encoding::HEXUPPER.encode(GuixSecretKey::generate().unwrap().to_public().q());
    let mismatched = GUIX_SECRET.replace("E998EBA27AC7DA0B02B66670B8D7B832C68E457B33718DCA5F135422F499A864", &other_q);
    write_with_mode(&path, mismatched.as_bytes(), 0o600);
    let err = read_any_secret_key_file(&path).unwrap_err();
    let Error::KeyFile { path: ref named, ref source } = err else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!(*named, path);
    assert!(matches!(**source, Error::GuixKeyMismatch));
    assert!(!format!("{err:?} {err} {source}").contains("594FC4A7EDA72A86"));
}

#[test]
fn golden_public_key_file_reads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/guix/signing-key.pub");
    let key = read_guix_public_key_file(&path).unwrap();
    assert_eq!(key.to_sexp_string(), fs::read_to_string(&path).unwrap());
    assert_eq!(key, GuixPublicKey::parse(fs::read(&path).unwrap()).unwrap());
}
