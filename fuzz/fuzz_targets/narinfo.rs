//! The Nix narinfo parser, which reads every narinfo a Nix upstream sends the proxy.
//!
//! Any text must parse or be refused, never panic; and what parses must render to a narinfo
//! that parses back to the same rendering (render is the normal form).
#![no_main]

use formats::NarInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(info) = NarInfo::parse(text) else { return };
    let rendered = info.render();
    let again = NarInfo::parse(&rendered).expect("a rendered narinfo parses");
    assert_eq!(again.render(), rendered, "render is not a fixed point");
    let _ = info.fingerprint("/nix/store");
});
