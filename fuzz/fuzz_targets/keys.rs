//! Key and signature text: libgcrypt S-expressions (`signing::guix::sexp`), Guix public and
//! secret keys read from them, and Nix's `name:base64` keys and signatures.
//!
//! Every input goes to every reader. Nothing may panic; what parses must print in each
//! form the crate writes and read back the same.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use signing::guix::sexp::{Sexp, MAX_SEXP_LEN};
use signing::{GuixPublicKey, GuixSecretKey, PublicKey, SecretKey};

/// A real key (docs/protocol.md §1.3), for verifying fuzzed signatures against.
fn nix_key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| PublicKey::parse("test-cache-1:gsudXaK4y8xy+ayOZ1frBxOQCDoQJ3kPKP1MMBKdb0g=").expect("parses"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(sexp) = Sexp::parse(data) {
        for printed in [sexp.to_advanced().into_bytes(), sexp.to_canonical(), sexp.to_transport().into_bytes()] {
            if printed.len() <= MAX_SEXP_LEN {
                assert_eq!(Sexp::parse(&printed).expect("a printed sexp parses"), sexp);
            }
        }
        let _ = format!("{sexp:?}");
    }
    if let Ok(key) = GuixPublicKey::parse(data) {
        let back = GuixPublicKey::parse(key.to_sexp_string()).expect("a printed public key parses");
        assert_eq!(back.q(), key.q());
    }
    if let Ok(key) = GuixSecretKey::parse(data) {
        let back = GuixSecretKey::parse(key.to_sexp_string().as_bytes()).expect("a printed secret key parses");
        assert_eq!(back.to_public().q(), key.to_public().q());
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = nix_key().verify("1;/nix/store/x;sha256:0;1;", text);
    if let Ok(key) = PublicKey::parse(text) {
        assert_eq!(PublicKey::parse(&key.to_nix_string()).expect("a printed public key parses"), key);
    }
    if let Ok(key) = SecretKey::parse(text) {
        let back = SecretKey::parse(&key.to_nix_string()).expect("a printed secret key parses");
        assert_eq!(back.to_public(), key.to_public());
    }
});
