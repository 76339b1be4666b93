//! The Guix narinfo readers: `formats::guix` (the recutils reader, the signed part, and the
//! strict parser of what subserve writes) and the proxy's reading with its trust decision
//! (`upstream`, through its `fuzzing` feature).
//!
//! Any text must be read or refused, never panic. What `GuixNarInfo` parses renders back to
//! itself; what the proxy accepts (signed by the golden key) and stores reads back the same.
//! With `FUZZ_VERBOSE` set, each accepted input is reported (to check that inputs get that far).
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use formats::guix::{fields, signed_part, GuixNarInfo};
use libfuzzer_sys::fuzz_target;
use signing::GuixPublicKey;
use upstream::{fuzzing, Trust, UpstreamConfig};

const STORE: &str = "/gnu/store";

/// An upstream trusting the key that signed the golden narinfo of the seed corpus, so that
/// mutations after its `Signature:` line still reach the accepting path.
fn upstream() -> &'static UpstreamConfig {
    static UP: OnceLock<UpstreamConfig> = OnceLock::new();
    UP.get_or_init(|| UpstreamConfig {
        url: "http://127.0.0.1:1".into(),
        trust: Trust::Guix(vec![key().clone()]),
        priority: 0,
        timeout: Duration::from_secs(1),
    })
}

/// The key that signed the golden narinfo.
fn key() -> &'static GuixPublicKey {
    static KEY: OnceLock<GuixPublicKey> = OnceLock::new();
    KEY.get_or_init(|| {
        GuixPublicKey::parse(include_bytes!("../../signing/tests/data/guix/signing-key.pub"))
            .expect("the golden key parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = (fields(text), signed_part(text));
    if let Ok(info) = GuixNarInfo::parse(text) {
        let back = GuixNarInfo::parse(&info.render()).expect("a rendered Guix narinfo parses");
        assert_eq!(back, info, "render then parse changed the narinfo");
    }
    if let Ok(signed) = formats::guix::signed(text) {
        let _ = signing::guix::verify(&signed.signature, signed.text, std::slice::from_ref(key()));
    }
    let Ok(parsed) = fuzzing::parse_guix_narinfo(text, STORE) else { return };
    let hash = parsed.store_path.hash().clone();
    let Ok((accepted, _url)) = fuzzing::accept_guix_narinfo(upstream(), STORE, &hash, text) else { return };
    if std::env::var_os("FUZZ_VERBOSE").is_some() {
        eprintln!("accepted, offering {:?}", accepted.urls);
    }
    let stored = accepted.render(&accepted.upstream_signature);
    let back = fuzzing::read_stored_guix_narinfo(&stored, STORE).expect("a stored entry reads back");
    assert_eq!(back, accepted, "a stored entry read back differently");
});
