//! Signing keys written the way an operator's are (the secret 0600, beside its public key),
//! made with the signing crate rather than the binary: tests of `subserve keygen` itself run
//! the binary (`tests/e2e`).

use std::path::{Path, PathBuf};

/// A Nix key pair `dir/<name>.sec` and `.pub` named `name`; returns the secret file's path
/// (as text, ready for a command line or a config file) and the public key (`name:base64`,
/// as `trusted-public-keys` takes it).
pub fn keygen(dir: &Path, name: &str) -> (String, String) {
    let key = signing::SecretKey::generate(name).expect("key generation");
    let (secret, public) = (dir.join(format!("{name}.sec")), dir.join(format!("{name}.pub")));
    signing::write_key_pair(&key, &secret, &public).expect("key files");
    (secret.display().to_string(), key.to_public().to_string())
}

/// A Guix key pair `dir/<name>.sec` and `.pub` (libgcrypt sexps); returns the two files.
pub fn guix_keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = signing::GuixSecretKey::generate().expect("key generation");
    let (secret, public) = (dir.join(format!("{name}.sec")), dir.join(format!("{name}.pub")));
    signing::write_guix_key_pair(&key, &secret, &public).expect("key files");
    (secret, public)
}
