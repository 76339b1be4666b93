//! The streaming NAR parser, which checks every NAR the proxy downloads.
//!
//! Any bytes must parse or be refused, never panic nor allocate from a forged length. Only
//! canonical NARs are accepted, so one that parses must serialise back byte for byte.
#![no_main]

use formats::nar::Node;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(node) = Node::parse(data) else { return };
    assert!(node.to_nar() == data, "a parsed NAR does not serialise back identically");
});
