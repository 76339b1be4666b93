//! The Guix flavour: narinfos of a Guix build farm (`guix publish`), read the way
//! `guix substitute` reads them and trusted the way it trusts them (docs/protocol.md §5.2, §5.3).
//!
//! A Guix signature covers the literal text before the first `Signature:`, whatever fields it
//! holds and in whatever order, so that text is kept byte for byte ([`GuixProxied::signed`]):
//! the server signs the very same bytes with its own key, and a node whose ACL holds only
//! subserve's key accepts the path. What follows the signature is subserve's to write: one
//! `URL`/`Compression`/`FileSize` group naming subserve's own URL for the one upstream group
//! the proxy downloads and verifies.

use formats::compression::NarCompression;
use formats::guix::{self as format, GuixUrl};
use formats::{Compression, NarHash, StorePath, StorePathHash};

use crate::error::FetchError;
use crate::verify::Expected;
use crate::{Trust, UpstreamConfig};

/// A verified Guix narinfo from an upstream, ready for the server to sign and serve.
///
/// The narinfo to serve is [`GuixProxied::render`] of subserve's own `Signature:` value over
/// [`signed`](GuixProxied::signed): the upstream's signed text, then that signature, then
/// [`urls`](GuixProxied::urls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuixProxied {
    /// The upstream narinfo's text before its first `Signature:`, byte for byte: what a Guix
    /// signature covers. It ends with a newline and holds at least `StorePath`, `NarHash`,
    /// `NarSize` and `References`, possibly more fields (`Deriver`, `System`, …) in any order.
    pub signed: String,
    /// The store path (under the proxy's store dir, with the hash asked for).
    pub store_path: StorePath,
    /// Hash of the uncompressed NAR.
    pub nar_hash: NarHash,
    /// Size of the uncompressed NAR.
    pub nar_size: u64,
    /// The references, in the upstream's order.
    pub references: Vec<StorePath>,
    /// The deriver, when the signed text names a valid one.
    pub deriver: Option<StorePath>,
    /// The value of the upstream's `Signature:` line (`1;<host>;<base64>`), which verified
    /// under one of that upstream's keys. It stays valid over `signed`.
    pub upstream_signature: String,
    /// The URL groups subserve offers: exactly one, relative, in guix publish's layout
    /// (`nar/<compression>/<basename>`, or `nar/<basename>` for an uncompressed NAR), with
    /// `FileSize` when the upstream gave one. [`Proxy::guix_nar`](crate::Proxy::guix_nar)
    /// serves it.
    pub urls: Vec<GuixUrl>,
}

impl GuixProxied {
    /// The narinfo text with `signature` (a `1;<host>;<base64>` value) as its signature: the
    /// signed text, `Signature: <signature>`, then the URL groups.
    pub fn render(&self, signature: &str) -> String {
        let mut out = format!("{}Signature: {signature}\n", self.signed);
        format::write_groups(&mut out, &self.urls);
        out
    }

    /// What the download of the offered group must produce.
    pub(crate) fn expected(&self) -> Option<Expected> {
        let offered = self.urls.first()?;
        Some(Expected {
            compression: offered.compression.known()?,
            nar_hash: self.nar_hash,
            nar_size: self.nar_size,
            file_hash: None,
            file_size: offered.file_size,
        })
    }

    /// The offered NAR's file name under the cache's `nar/`: its URL without `nar/`.
    pub(crate) fn nar_file(&self) -> Option<&str> {
        self.urls.first()?.url.strip_prefix("nar/")
    }
}

/// The compressions subserve can verify, most preferred first: fast to decompress before
/// small (zstd, then guix publish's default gzip), and the bare NAR last. lzip, which Guix
/// farms also offer, is missing: subserve has no decoder for it.
const PREFERENCE: [Compression; 5] =
    [Compression::Zstd, Compression::Gzip, Compression::Xz, Compression::Bzip2, Compression::None];

/// The subdirectories of the cache's `nar/` that Guix entries use.
pub(crate) fn nar_subdirectories() -> impl Iterator<Item = &'static str> {
    PREFERENCE.into_iter().filter(|&c| c != Compression::None).map(Compression::name)
}

/// Checks an upstream's narinfo for `hash` and turns it into what subserve offers; returns
/// it with the absolute upstream URL of the chosen group. `FetchError::Unusable` when it
/// offers no group subserve can verify (lzip only, say): a miss, not an upstream fault.
pub(crate) fn accept(
    up: &UpstreamConfig,
    store_dir: &str,
    hash: &StorePathHash,
    text: &str,
) -> Result<(GuixProxied, String), FetchError> {
    let mut parsed = parse(text, store_dir)?;
    if parsed.proxied.store_path.hash() != hash {
        let asked = format!("asked for {hash}, got {}", parsed.proxied.store_path.absolute(store_dir));
        return Err(FetchError::Garbage(asked));
    }
    let signed = format::signed(text).map_err(|_| FetchError::Untrusted)?;
    let keys = match &up.trust {
        Trust::Guix(keys) => keys.as_slice(),
        Trust::Nix(_) => &[],
    };
    if signing::guix::verify(&signed.signature, signed.text, keys).is_err() {
        return Err(FetchError::Untrusted);
    }
    if parsed.signed_has_urls {
        // They would reach clients beside ours, naming URLs subserve does not serve.
        return Err(FetchError::Unusable("URL fields in the signed part".into()));
    }
    let (compression, group) = PREFERENCE
        .into_iter()
        .find_map(|c| parsed.proxied.urls.iter().find(|g| g.compression.known() == Some(c)).map(|g| (c, g)))
        .ok_or_else(|| FetchError::Unusable("no URL in a compression subserve can verify".into()))?;
    let upstream_url = crate::fetch::resolve(&up.url, &group.url);
    let offered = GuixUrl {
        url: format::nar_url(compression, &parsed.proxied.store_path.basename()),
        compression: compression.into(),
        file_size: group.file_size,
    };
    parsed.proxied.urls = vec![offered];
    Ok((parsed.proxied, upstream_url))
}

/// Reads back an entry the proxy stored (`GuixProxied::render` of the upstream signature).
pub(crate) fn from_stored(text: &str, store_dir: &str) -> Result<GuixProxied, FetchError> {
    let parsed = parse(text, store_dir)?;
    if parsed.proxied.urls.len() != 1 || parsed.proxied.expected().is_none() {
        return Err(FetchError::Local("a stored Guix narinfo without its one URL group".into()));
    }
    Ok(parsed.proxied)
}

/// A narinfo parsed, before any trust is decided.
pub(crate) struct Parsed {
    /// Every field but the URL groups, taken from the signed part; `urls` holds every group.
    pub(crate) proxied: GuixProxied,
    /// Whether a URL, Compression or FileSize field sits in the signed part.
    signed_has_urls: bool,
}

/// Parses narinfo text as `guix substitute` does (`recutils->alist`, then the first value of
/// each single-valued field, the multi-valued URL/Compression/FileSize zipped in order and
/// cut to the shortest), except that the fields subserve relies on (StorePath, NarHash,
/// NarSize, References, Deriver) are read from the signed part only.
pub(crate) fn parse(text: &str, store_dir: &str) -> Result<Parsed, FetchError> {
    let garbage = |what: String| FetchError::Garbage(what);
    let record = format::fields(text).map_err(|e| garbage(e.to_string()))?;
    // Without `Signature:` the narinfo is unsigned; checked later (after the path's identity)
    // by the signature verification, which then fails.
    let signed = format::signed_part(text).unwrap_or(text);
    if !signed.is_empty() && !signed.ends_with('\n') {
        return Err(garbage("`Signature:` in the middle of a line".into()));
    }
    let covered = format::fields(signed).map_err(|e| garbage(e.to_string()))?;
    let first = |name: &str| covered.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    let required = |name: &'static str| first(name).ok_or_else(|| garbage(format!("no {name} in the signed part")));

    let store_path = StorePath::from_absolute(store_dir, required("StorePath")?).map_err(|e| garbage(e.to_string()))?;
    let nar_hash = required("NarHash")?
        .strip_prefix("sha256:")
        .and_then(|nix32| NarHash::from_nix32(nix32).ok())
        .ok_or_else(|| garbage("NarHash is not sha256:<nix32>".into()))?;
    let nar_size = required("NarSize")?.parse().map_err(|_| garbage("NarSize is not a number".into()))?;
    let references = required("References")?
        .split_whitespace()
        .map(StorePath::from_basename)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| garbage(e.to_string()))?;
    let deriver = first("Deriver").and_then(|d| StorePath::from_basename(d).ok());
    let upstream_signature = record.iter().find(|(n, _)| *n == "Signature").map(|(_, v)| v.clone()).unwrap_or_default();
    if upstream_signature.contains('\n') {
        // Guix would read a `+` continuation into the value, but the entry the proxy stores
        // writes the value on one line: it would not read back, nor be a valid narinfo.
        return Err(garbage("`Signature:` continued over several lines".into()));
    }

    let all = |name: &'static str| record.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v.as_str());
    let sizes: Vec<Option<u64>> = all("FileSize").map(|s| s.parse().ok()).collect();
    let mut urls: Vec<GuixUrl> = all("URL")
        .zip(all("Compression"))
        .map(|(url, compression)| GuixUrl {
            url: url.to_owned(),
            compression: NarCompression::read_exact(compression),
            file_size: None,
        })
        .collect();
    if !sizes.is_empty() {
        urls.truncate(sizes.len());
        for (u, size) in urls.iter_mut().zip(sizes) {
            u.file_size = size;
        }
    }
    let signed_has_urls = covered.iter().any(|(n, _)| matches!(*n, "URL" | "Compression" | "FileSize"));
    let proxied = GuixProxied {
        signed: signed.to_owned(),
        store_path,
        nar_hash,
        nar_size,
        references,
        deriver,
        upstream_signature,
        urls,
    };
    Ok(Parsed { proxied, signed_has_urls })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: &str = "/gnu/store";
    const HASH: &str = "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb";
    const NAR_HASH: &str = "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";

    fn text(groups: &str) -> String {
        format!(
            "StorePath: {STORE}/{HASH}-hello-2.12\nNarHash: {NAR_HASH}\nNarSize: 112\n\
             References: {HASH}-hello-2.12\nSignature: 1;host;c2ln\n{groups}"
        )
    }

    #[test]
    fn groups_zip_in_order_and_cut_to_the_shortest() {
        let t = text("URL: nar/lzip/x\nCompression: lzip\nURL: nar/zstd/x\nCompression: zstd\nURL: nar/x\n");
        let p = parse(&t, STORE).unwrap().proxied;
        assert_eq!(p.urls.iter().map(|u| u.compression.as_str()).collect::<Vec<_>>(), ["lzip", "zstd"]);
        assert!(p.urls.iter().all(|u| u.file_size.is_none()));
        let t = text("URL: a\nCompression: gzip\nFileSize: 10\nURL: b\nCompression: zstd\n");
        let p = parse(&t, STORE).unwrap().proxied;
        assert_eq!(p.urls, [GuixUrl { url: "a".into(), compression: Compression::Gzip.into(), file_size: Some(10) }]);
    }

    #[test]
    fn the_signed_fields_come_from_the_signed_part_only() {
        let t = text("URL: nar/x\nCompression: none\nNarSize: 999999\nDeriver: ").replacen("NarSize: 112\n", "", 1);
        assert!(matches!(parse(&t, STORE), Err(FetchError::Garbage(_))), "NarSize after the signature");
        let p = parse(&text("URL: nar/x\nCompression: none\n"), STORE).unwrap();
        assert_eq!((p.proxied.nar_size, p.signed_has_urls), (112, false));
        assert_eq!(p.proxied.upstream_signature, "1;host;c2ln");
        assert!(p.proxied.signed.ends_with("References: 0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb-hello-2.12\n"));
        let mid_line = text("").replacen("\nSignature:", " Signature:", 1);
        assert!(parse(&mid_line, STORE).is_err());
    }

    /// The `guix_narinfo` fuzz target's read-back check failed on this: a signature continued
    /// with `+` verifies (its host part is not signed), but the stored entry did not read back.
    #[test]
    fn a_signature_over_several_lines_is_garbage() {
        let t = text("URL: nar/x\nCompression: none\n").replacen("1;host;", "1;host\n+;", 1);
        assert!(matches!(parse(&t, STORE), Err(FetchError::Garbage(_))));
    }

    #[test]
    fn stored_entries_read_back() {
        let p = parse(&text("URL: nar/x\nCompression: none\n"), STORE).unwrap().proxied;
        let mut offered = p.clone();
        offered.urls = vec![GuixUrl {
            url: format::nar_url(Compression::Zstd, "b"),
            compression: Compression::Zstd.into(),
            file_size: None,
        }];
        let back = from_stored(&offered.render(&offered.upstream_signature), STORE).unwrap();
        assert_eq!(back, offered);
        assert_eq!(back.nar_file(), Some("zstd/b"));
        assert_eq!(back.expected().unwrap().compression, Compression::Zstd);
    }
}
