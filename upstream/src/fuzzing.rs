//! The proxy's readers of untrusted Guix narinfo text, opened to the fuzz targets in `fuzz/`
//! (the `fuzzing` feature, which nothing else enables).
//!
//! On the real path these run only after an HTTP fetch or a read of the cache directory, too
//! slow for a fuzzer; here they take the text directly. Errors are flattened to their message:
//! a fuzz target only tells refusal from acceptance.

use formats::StorePathHash;

use crate::{GuixProxied, UpstreamConfig};

/// Reads an upstream's Guix narinfo before any trust is decided, as the proxy does first:
/// recutils fields, the signed part, the fields subserve relies on and every URL group.
pub fn parse_guix_narinfo(text: &str, store_dir: &str) -> Result<GuixProxied, String> {
    crate::guix::parse(text, store_dir).map(|parsed| parsed.proxied).map_err(|e| e.to_string())
}

/// The proxy's whole decision on an upstream's answer for `hash`: parsed, the path asked for,
/// signed by a key of `up`, and offering a group subserve can verify. Returns what it would
/// serve and the upstream URL it would download.
pub fn accept_guix_narinfo(
    up: &UpstreamConfig,
    store_dir: &str,
    hash: &StorePathHash,
    text: &str,
) -> Result<(GuixProxied, String), String> {
    crate::guix::accept(up, store_dir, hash, text).map_err(|e| e.to_string())
}

/// Reads back an entry as the proxy stored it ([`GuixProxied::render`] of the upstream's
/// signature), as a cache hit does.
pub fn read_stored_guix_narinfo(text: &str, store_dir: &str) -> Result<GuixProxied, String> {
    crate::guix::from_stored(text, store_dir).map_err(|e| e.to_string())
}
