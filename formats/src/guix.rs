//! The Guix dialect of narinfo (docs/protocol.md §5.2, §9): the signed part first (`StorePath`,
//! `NarHash`, `NarSize`, `References`, `Deriver`), then one `Signature:` line, then one
//! `URL`/`Compression`/`FileSize` group per offered compression.
//!
//! The signature covers the literal bytes before `Signature:`, so [`GuixNarInfo::signed_part`]
//! is rendered once and kept byte for byte; the groups after it may change without re-signing.

use std::fmt::Write as _;

use crate::{Error, NarHash};

/// MIME type guix publish sends narinfos with.
pub const MIME_GUIX_NARINFO: &str = "application/x-nix-narinfo";

/// One way to download the NAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuixUrl {
    /// Relative (`nar/zstd/<basename>`) or absolute URL.
    pub url: String,
    /// `none`, `gzip`, `zstd`, `lzip`, `xz`, `bzip2`.
    pub compression: String,
    /// Size of the file at `url`, when known. Given for all groups or for none.
    pub file_size: Option<u64>,
}

/// A narinfo as `guix substitute` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuixNarInfo {
    /// Absolute store path, `/gnu/store/<hash>-<name>`.
    pub store_path: String,
    /// Hash of the uncompressed NAR; always printed as `sha256:<nix32>`, the only form Guix reads.
    pub nar_hash: NarHash,
    /// Size of the uncompressed NAR.
    pub nar_size: u64,
    /// Reference basenames, in the order given (guix publish keeps the daemon's order).
    pub references: Vec<String>,
    /// Deriver basename, when known.
    pub deriver: Option<String>,
    /// The value of the `Signature:` line (`1;<host>;<base64>`), if signed.
    pub signature: Option<String>,
    /// The download groups, in order of preference of the server.
    pub urls: Vec<GuixUrl>,
}

impl GuixNarInfo {
    /// The text the signature covers: every line before `Signature:`, each ending in `\n`.
    /// `References: ` is always present, with its space, even when empty.
    pub fn signed_part(&self) -> String {
        let mut out = String::with_capacity(256 + 80 * self.references.len());
        let _ = writeln!(out, "StorePath: {}", self.store_path);
        let _ = writeln!(out, "NarHash: {}", self.nar_hash);
        let _ = writeln!(out, "NarSize: {}", self.nar_size);
        let _ = writeln!(out, "References: {}", self.references.join(" "));
        if let Some(d) = &self.deriver {
            let _ = writeln!(out, "Deriver: {d}");
        }
        out
    }

    /// The whole narinfo: signed part, `Signature:`, then the URL groups. `FileSize` lines
    /// are written for every group or for none (Guix pairs the lists by position).
    pub fn render(&self) -> String {
        let mut out = self.signed_part();
        if let Some(sig) = &self.signature {
            let _ = writeln!(out, "Signature: {sig}");
        }
        let sizes = self.urls.iter().all(|u| u.file_size.is_some());
        for u in &self.urls {
            let _ = writeln!(out, "URL: {}", u.url);
            let _ = writeln!(out, "Compression: {}", u.compression);
            if let (true, Some(size)) = (sizes, u.file_size) {
                let _ = writeln!(out, "FileSize: {size}");
            }
        }
        out
    }

    /// Parses narinfo text as Guix's `read-narinfo` does: `Field: value` lines, values
    /// trimmed; `StorePath`, `NarHash` (Nix32 only), `NarSize` and `References` required;
    /// `URL`, `Compression` and `FileSize` zipped by position. Stricter than Guix where Guix
    /// would silently misbehave: CR, blank lines and mismatched group lengths are errors.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut store_path = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = None;
        let mut deriver = None;
        let mut signature = None;
        let (mut urls, mut compressions, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
        // Split on LF only: `str::lines` would quietly accept CRLF, which breaks Guix clients.
        for line in text.strip_suffix('\n').unwrap_or(text).split('\n') {
            if line.contains('\r') || line.trim().is_empty() {
                return Err(Error::NarInfo("blank line or carriage return"));
            }
            let (key, value) = line.split_once(':').ok_or(Error::NarInfo("line without ':'"))?;
            let value = value.trim();
            let number = |v: &str| v.parse::<u64>().map_err(|_| Error::NarInfo("bad number"));
            match key {
                "StorePath" => store_path = Some(value.to_owned()),
                "NarHash" => {
                    let nix32 = value.strip_prefix("sha256:").ok_or(Error::NarInfo("NarHash is not sha256"))?;
                    nar_hash = Some(NarHash::from_nix32(nix32)?);
                }
                "NarSize" => nar_size = Some(number(value)?),
                "References" => references = Some(value.split_whitespace().map(str::to_owned).collect()),
                "Deriver" => deriver = Some(value.to_owned()).filter(|d| !d.is_empty()),
                "Signature" => signature = Some(value.to_owned()),
                "URL" => urls.push(value.to_owned()),
                "Compression" => compressions.push(value.to_owned()),
                "FileSize" => sizes.push(number(value)?),
                _ => {}
            }
        }
        if urls.is_empty() || urls.len() != compressions.len() || !(sizes.is_empty() || sizes.len() == urls.len()) {
            return Err(Error::NarInfo("URL, Compression and FileSize lines do not pair up"));
        }
        let urls = urls
            .into_iter()
            .zip(compressions)
            .enumerate()
            .map(|(i, (url, compression))| GuixUrl { url, compression, file_size: sizes.get(i).copied() })
            .collect();
        Ok(Self {
            store_path: store_path.ok_or(Error::NarInfo("missing StorePath"))?,
            nar_hash: nar_hash.ok_or(Error::NarInfo("missing NarHash"))?,
            nar_size: nar_size.ok_or(Error::NarInfo("missing NarSize"))?,
            references: references.ok_or(Error::NarInfo("missing References"))?,
            deriver,
            signature,
            urls,
        })
    }
}

/// The part of `text` a Guix signature covers: everything before the first `Signature:`.
pub fn signed_prefix(text: &str) -> &str {
    text.find("Signature:").map_or(text, |i| &text[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by guix publish's own narinfo code and signed by libgcrypt (a golden file kept
    /// in `tests/data`).
    const GOLDEN: &str = include_str!("../tests/data/guix-golden.narinfo");

    #[test]
    fn golden_narinfo_round_trips_byte_for_byte() {
        let info = GuixNarInfo::parse(GOLDEN).unwrap();
        assert_eq!(info.render(), GOLDEN);
        assert_eq!(info.signed_part(), signed_prefix(GOLDEN));
        assert_eq!(info.signed_part().len(), 345, "the README's signed length");
        assert_eq!(
            NarHash::digest(info.signed_part().as_bytes()).to_base16().to_uppercase(),
            "8834DE7BFB1781BB556E9411D883B516D7A6A367D2284755A306CFC30ECD8A83"
        );
        assert_eq!(info.references.len(), 3);
        assert_eq!(info.urls.len(), 4);
        assert_eq!(
            info.urls[3],
            GuixUrl {
                url: format!("nar/{}", &info.store_path[11..]),
                compression: "none".into(),
                file_size: Some(1000)
            }
        );
    }

    #[test]
    fn empty_references_keep_their_space_and_sizes_are_all_or_none() {
        let mut info = GuixNarInfo::parse(GOLDEN).unwrap();
        info.references.clear();
        info.deriver = None;
        info.signature = None;
        info.urls[1].file_size = None;
        let text = info.render();
        assert!(text.contains("NarSize: 1000\nReferences: \nURL: "), "{text}");
        assert!(!text.contains("FileSize"), "{text}");
        let spaced: Vec<&str> = text.lines().filter(|l| l.ends_with(' ')).collect();
        assert_eq!(spaced, ["References: "], "only an empty References may end in a space");
        let back = GuixNarInfo::parse(&text).unwrap();
        assert!(back.references.is_empty() && back.urls.iter().all(|u| u.file_size.is_none()));
    }

    #[test]
    fn traps_are_errors() {
        assert!(GuixNarInfo::parse(&GOLDEN.replace('\n', "\r\n")).is_err());
        assert!(GuixNarInfo::parse(&GOLDEN.replacen("References:", "X-References:", 1)).is_err());
        assert!(GuixNarInfo::parse(&GOLDEN.replacen("\nURL:", "\n\nURL:", 1)).is_err());
        let hex = GOLDEN.replacen(
            "sha256:0p5phbm786zwqkcqx1x7vngp9dp1wyl3lp2dhw3in51nblg21nbm",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            1,
        );
        assert!(GuixNarInfo::parse(&hex).is_err(), "Guix reads NarHash as Nix32 only");
        let unpaired = GOLDEN.replacen("FileSize: 297\n", "", 1);
        assert!(GuixNarInfo::parse(&unpaired).is_err());
    }
}
