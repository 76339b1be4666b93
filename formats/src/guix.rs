//! The Guix dialect of narinfo (docs/protocol.md §5.2, §9): the signed part first (`StorePath`,
//! `NarHash`, `NarSize`, `References`, `Deriver`), then one `Signature:` line, then one
//! `URL`/`Compression`/`FileSize` group per offered compression.
//!
//! This module is the one place that knows the text: the recutils reader ([`fields`], as
//! `guix substitute` reads), the signed part ([`signed`]: a signature covers the literal bytes
//! before the first `Signature:`, so they are kept byte for byte), the URL groups
//! ([`write_groups`], one `FileSize` rule) and guix publish's NAR URLs ([`nar_url`]). The
//! signature itself is `signing::guix`'s business: it gets the signed bytes and the value.

use std::fmt::Write as _;

use crate::compression::NarCompression;
use crate::{Compression, Error, NarHash};

/// MIME type guix publish sends narinfos with.
pub const MIME_GUIX_NARINFO: &str = "application/x-nix-narinfo";

/// The fields `guix substitute` requires above `Signature:`; without them a narinfo is unsigned.
const MANDATORY_SIGNED_FIELDS: [&str; 3] = ["StorePath", "NarHash", "References"];

const SIGNATURE_MARKER: &str = "Signature:";

/// One way to download the NAR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuixUrl {
    /// Relative (`nar/zstd/<basename>`) or absolute URL.
    pub url: String,
    /// `none`, `gzip`, `zstd`, `xz`, `bzip2`, or another name (`lzip`) kept as written.
    pub compression: NarCompression,
    /// Size of the file at `url`, when known. Written for all groups or for none.
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

    /// The whole narinfo: signed part, `Signature:`, then the URL groups ([`write_groups`]).
    pub fn render(&self) -> String {
        let mut out = self.signed_part();
        if let Some(sig) = &self.signature {
            let _ = writeln!(out, "Signature: {sig}");
        }
        write_groups(&mut out, &self.urls);
        out
    }

    /// Parses narinfo text strictly: as Guix reads it ([`fields`]; `StorePath`, `NarHash`
    /// (Nix32 only), `NarSize` and `References` required; `URL`, `Compression` and `FileSize`
    /// zipped by position), and refusing what Guix would silently misread or what no narinfo
    /// writer makes: CR, blank lines, comments, continuations and groups that do not pair up
    /// are errors. The check that subserve's narinfos are what a
    /// Guix client expects.
    pub fn parse(text: &str) -> Result<Self, Error> {
        // `str::lines` would quietly accept CRLF, which breaks Guix clients.
        let body = text.strip_suffix('\n').unwrap_or(text);
        if body.contains('\r') || body.split('\n').any(|line| line.trim().is_empty()) {
            return Err(Error::NarInfo("blank line or carriage return"));
        }
        // Comments and continued values are recutils, but no narinfo writer makes them.
        if body.split('\n').any(|line| line.starts_with(['#', '+'])) {
            return Err(Error::NarInfo("comment or continuation line"));
        }
        let record = fields(text)?;
        let first = |name: &str| record.iter().find(|(n, _)| *n == name).map(|(_, v)| v.trim_end());
        let all = |name: &'static str| record.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v.trim_end());
        let number = |v: &str| v.parse::<u64>().map_err(|_| Error::NarInfo("bad number"));
        let nar_hash = match first("NarHash") {
            Some(value) => {
                let nix32 = value.strip_prefix("sha256:").ok_or(Error::NarInfo("NarHash is not sha256"))?;
                Some(NarHash::from_nix32(nix32)?)
            }
            None => None,
        };
        let (urls, compressions): (Vec<&str>, Vec<&str>) = (all("URL").collect(), all("Compression").collect());
        let sizes = all("FileSize").map(number).collect::<Result<Vec<u64>, Error>>()?;
        if urls.is_empty() || urls.len() != compressions.len() || !(sizes.is_empty() || sizes.len() == urls.len()) {
            return Err(Error::NarInfo("URL, Compression and FileSize lines do not pair up"));
        }
        let urls = urls
            .into_iter()
            .zip(compressions)
            .enumerate()
            .map(|(i, (url, compression))| GuixUrl {
                url: url.to_owned(),
                compression: NarCompression::read_exact(compression),
                file_size: sizes.get(i).copied(),
            })
            .collect();
        Ok(Self {
            store_path: first("StorePath").ok_or(Error::NarInfo("missing StorePath"))?.to_owned(),
            nar_hash: nar_hash.ok_or(Error::NarInfo("missing NarHash"))?,
            nar_size: number(first("NarSize").ok_or(Error::NarInfo("missing NarSize"))?)?,
            references: first("References")
                .ok_or(Error::NarInfo("missing References"))?
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            deriver: first("Deriver").filter(|d| !d.is_empty()).map(str::to_owned),
            signature: first("Signature").map(str::to_owned),
            urls,
        })
    }
}

/// Writes the URL groups, in order: `URL`, `Compression`, and `FileSize` when every group
/// has a size. Guix pairs the `FileSize` list with the URL list by position, so sizes are
/// written for all groups or for none.
pub fn write_groups(out: &mut String, urls: &[GuixUrl]) {
    let sizes = urls.iter().all(|u| u.file_size.is_some());
    for u in urls {
        let _ = writeln!(out, "URL: {}", u.url);
        let _ = writeln!(out, "Compression: {}", u.compression);
        if let (true, Some(size)) = (sizes, u.file_size) {
            let _ = writeln!(out, "FileSize: {size}");
        }
    }
}

/// guix publish's URL for the NAR of `basename` (`<hash>-<name>`) in `compression`, relative
/// to the cache: `nar/<compression>/<basename>`, or `nar/<basename>` uncompressed.
pub fn nar_url(compression: Compression, basename: &str) -> String {
    match compression {
        Compression::None => format!("nar/{basename}"),
        c => format!("nar/{}/{basename}", c.name()),
    }
}

/// guix/records.scm's `recutils->alist`: the `(name, value)` fields of the first record of
/// `text`. A `#` line is a comment, a `+` line continues the previous value (after a `+ ` or
/// `+`), a blank line ends the record (blank lines before it are skipped), values are
/// left-trimmed; any other line that is not `Name: value` (a name starting with a letter or
/// `%`) makes the whole narinfo unreadable, as it does for Guix. Empty text is refused.
pub fn fields(text: &str) -> Result<Vec<(&str, String)>, Error> {
    if text.is_empty() {
        return Err(Error::Recutils { line: 1, what: "empty narinfo" });
    }
    let mut fields: Vec<(&str, String)> = Vec::new();
    // `read-line` sees no line after the last newline.
    let body = text.strip_suffix('\n').unwrap_or(text);
    for (index, line) in body.split('\n').enumerate() {
        let bad = |what| Error::Recutils { line: index + 1, what };
        match line.as_bytes().first() {
            None if fields.is_empty() => continue,
            None => break,
            Some(b'#') => continue,
            Some(b'+') => {
                let (_, value) = fields.last_mut().ok_or(bad("a continuation of nothing"))?;
                value.push('\n');
                value.push_str(line.strip_prefix("+ ").unwrap_or(&line[1..]));
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'%' => {
                let (name, value) = line.split_once(':').ok_or(bad("no ':'"))?;
                fields.push((name, value.trim_start().to_owned()));
            }
            Some(_) => return Err(bad("not a field")),
        }
    }
    Ok(fields)
}

/// The part of a narinfo that its signature covers, as `guix substitute` takes it: all the
/// text before the first occurrence of `Signature:` (anywhere, even mid-line), or `None` if
/// there is none. What follows (URL, Compression, FileSize…) can change without re-signing.
pub fn signed_part(text: &str) -> Option<&str> {
    text.find(SIGNATURE_MARKER).map(|index| &text[..index])
}

/// A narinfo's signature and what it covers, before the signature is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<'a> {
    /// The text the signature covers ([`signed_part`]), byte for byte.
    pub text: &'a str,
    /// The value of the first `Signature` field, `1;<host>;<base64>`.
    pub signature: String,
}

/// Splits a narinfo into its signed text and its signature as `guix substitute`'s
/// `valid-narinfo?` does before checking the signature: the whole text must read as recutils
/// ([`fields`]), and the signed part must hold `StorePath`, `NarHash` and `References`;
/// otherwise it is unsigned ([`Error::Unsigned`]).
pub fn signed(text: &str) -> Result<Signed<'_>, Error> {
    let all = fields(text)?;
    let covered = signed_part(text).ok_or(Error::Unsigned { field: "Signature" })?;
    let covered_fields = if covered.is_empty() { Vec::new() } else { fields(covered)? };
    for field in MANDATORY_SIGNED_FIELDS {
        if !covered_fields.iter().any(|(name, _)| *name == field) {
            return Err(Error::Unsigned { field });
        }
    }
    let signature = all
        .into_iter()
        .find(|(name, _)| *name == "Signature")
        .map(|(_, value)| value)
        .ok_or(Error::Unsigned { field: "Signature" })?;
    Ok(Signed { text: covered, signature })
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
        assert_eq!(Some(info.signed_part().as_str()), signed_part(GOLDEN));
        assert_eq!(signed(GOLDEN).unwrap().text, info.signed_part());
        assert_eq!(signed(GOLDEN).unwrap().signature, info.signature.clone().unwrap());
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
                compression: Compression::None.into(),
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
        assert!(GuixNarInfo::parse(&GOLDEN.replacen("\nURL:", "\n# a comment\nURL:", 1)).is_err());
        assert!(GuixNarInfo::parse(&GOLDEN.replacen("\nURL:", "\n+ continued\nURL:", 1)).is_err());
        let hex = GOLDEN.replacen(
            "sha256:0p5phbm786zwqkcqx1x7vngp9dp1wyl3lp2dhw3in51nblg21nbm",
            "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            1,
        );
        assert!(GuixNarInfo::parse(&hex).is_err(), "Guix reads NarHash as Nix32 only");
        let unpaired = GOLDEN.replacen("FileSize: 297\n", "", 1);
        assert!(GuixNarInfo::parse(&unpaired).is_err());
    }

    #[test]
    fn recutils_reading_follows_guix() {
        let names = |t: &str| fields(t).unwrap().into_iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>();
        assert_eq!(names("A: 1\nB:2 \n# c\nC:   x\n+ y\n+z\n"), ["A=1", "B=2 ", "C=x\ny\nz"]);
        assert_eq!(names("\n\nA: 1\n\nB: 2\n"), ["A=1"]);
        assert_eq!(names("A: 1"), ["A=1"]);
        assert_eq!(names("%rec: x\nA: 1\n"), ["%rec=x", "A=1"]);
        for (bad, line) in [("", 1), ("A: 1\nno colon\n", 2), (" A: 1\n", 1), ("+ x\n", 1), ("<html>\n", 1)] {
            assert!(matches!(fields(bad), Err(Error::Recutils { line: l, .. }) if l == line), "{bad:?}");
        }
    }

    #[test]
    fn the_signature_covers_the_text_before_the_first_marker_anywhere() {
        let text = "StorePath: /gnu/store/x\nNarHash: h\nReferences: \nSignature: 1;h;c2ln\nURL: a\n";
        let split = signed(text).unwrap();
        assert_eq!(split.text, "StorePath: /gnu/store/x\nNarHash: h\nReferences: \n");
        assert_eq!(split.signature, "1;h;c2ln");
        assert_eq!(signed_part("X: aSignature: b\n"), Some("X: a"));
        assert_eq!(signed_part("no marker\n"), None);
    }

    #[test]
    fn a_narinfo_without_its_signed_fields_is_unsigned() {
        let full = "StorePath: /gnu/store/x\nNarHash: h\nReferences: \nSignature: 1;h;c2ln\n";
        for (field, text) in [
            ("StorePath", full.replacen("StorePath: /gnu/store/x\n", "", 1)),
            ("References", full.replacen("References: \n", "", 1) + "References: \n"),
            ("Signature", full.replacen("Signature: 1;h;c2ln\n", "", 1)),
        ] {
            assert_eq!(signed(&text), Err(Error::Unsigned { field }), "{text:?}");
        }
        assert_eq!(signed("Signature: 1;h;c2ln\n"), Err(Error::Unsigned { field: "StorePath" }));
        assert!(matches!(signed(&format!("{full}<html>\n")), Err(Error::Recutils { line: 5, .. })));
    }

    #[test]
    fn guix_publish_urls() {
        assert_eq!(nar_url(Compression::None, "b-x"), "nar/b-x");
        assert_eq!(nar_url(Compression::Zstd, "b-x"), "nar/zstd/b-x");
        assert_eq!(nar_url(Compression::Gzip, "b-x"), "nar/gzip/b-x");
    }
}
