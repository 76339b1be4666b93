//! The Nix flavour: narinfos of a Nix binary cache, trusted the way the Nix client trusts
//! them, with their NAR URL moved into subserve's namespace. The twin of `guix.rs`.
//!
//! A narinfo is trusted when one of its `Sig:` lines verifies under a key configured for
//! *that* upstream (a key of another upstream proves nothing about this one), or when it has
//! a `CA` field (Nix checks content-addressed paths by their contents). Its signatures cover
//! the fingerprint (store path, NarHash, NarSize, references), not the URL or compression,
//! so the URL can be rewritten and the upstream's signatures still verify at the nodes.

use formats::compression::nar_file_name;
use formats::{NarInfo, StorePath, StorePathHash};

use crate::error::FetchError;
use crate::{Trust, UpstreamConfig};

/// Checks an upstream's narinfo `text` for `hash`: it parses, names the path asked for and
/// valid references, is trusted (see the module doc) and in a compression subserve can
/// verify. Returns it with its `URL` rewritten to subserve's `nar/<hash>-<narhash>.nar<ext>`,
/// and the absolute upstream URL of the NAR.
pub(crate) fn accept(
    up: &UpstreamConfig,
    store_dir: &str,
    hash: &StorePathHash,
    text: &str,
) -> Result<(NarInfo, String), FetchError> {
    let garbage = |e: &dyn std::fmt::Display| FetchError::Garbage(e.to_string());
    let mut info = NarInfo::parse(text).map_err(|e| garbage(&e))?;
    let path = StorePath::from_absolute(store_dir, &info.store_path).map_err(|e| garbage(&e))?;
    if path.hash() != hash {
        return Err(FetchError::Garbage(format!("asked for {hash}, got {}", info.store_path)));
    }
    for r in &info.references {
        StorePath::from_basename(r).map_err(|e| garbage(&e))?;
    }
    let fingerprint = info.fingerprint(store_dir);
    let keys = match &up.trust {
        Trust::Nix(keys) => keys.as_slice(),
        Trust::Guix(_) => &[],
    };
    if !signing::verify_any(keys, &fingerprint, &info.sigs) && info.ca.is_none() {
        return Err(FetchError::Untrusted);
    }
    let compression = info.compression.require().map_err(|e| garbage(&e))?;
    let upstream_url = crate::fetch::resolve(&up.url, &info.url);
    info.url = format!("nar/{}", nar_file_name(hash, &info.nar_hash, compression));
    info.compression = compression.into();
    Ok((info, upstream_url))
}
