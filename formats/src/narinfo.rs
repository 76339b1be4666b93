//! The Nix dialect of `.narinfo` files: rendering in Nix's field order, parsing, and the
//! signature fingerprint (docs/protocol.md §1.2, §1.3).

use std::fmt::Write as _;

use crate::compression::NarCompression;
use crate::{Error, NarHash};

/// MIME type of a narinfo response.
pub const MIME_NARINFO: &str = "text/x-nix-narinfo";

/// One narinfo, with every field Nix reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    /// Absolute store path, `/nix/store/<hash>-<name>`.
    pub store_path: String,
    /// Where the (possibly compressed) NAR is, relative to the cache root.
    pub url: String,
    /// Compression of the file at `url` (an absent or empty field reads as bzip2).
    pub compression: NarCompression,
    /// Hash of the file at `url`, when known.
    pub file_hash: Option<NarHash>,
    /// Size of the file at `url`, when known.
    pub file_size: Option<u64>,
    /// Hash of the uncompressed NAR.
    pub nar_hash: NarHash,
    /// Size of the uncompressed NAR; never zero.
    pub nar_size: u64,
    /// Basenames of the references, self-reference included.
    pub references: Vec<String>,
    /// Basename of the deriver, when known.
    pub deriver: Option<String>,
    /// `Sig:` values, `<keyname>:<base64>`.
    pub sigs: Vec<String>,
    /// Content address, copied verbatim from the store DB.
    pub ca: Option<String>,
}

impl NarInfo {
    /// Renders the narinfo as Nix writes it: fields in `NarInfo::to_string` order, references
    /// and signatures sorted, `References: ` always present, every line ending in `\n`.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(512 + 80 * self.references.len());
        let _ = writeln!(out, "StorePath: {}", self.store_path);
        let _ = writeln!(out, "URL: {}", self.url);
        let _ = writeln!(out, "Compression: {}", self.compression);
        if let Some(h) = &self.file_hash {
            let _ = writeln!(out, "FileHash: {h}");
        }
        if let Some(s) = self.file_size.filter(|&s| s != 0) {
            let _ = writeln!(out, "FileSize: {s}");
        }
        let _ = writeln!(out, "NarHash: {}", self.nar_hash);
        let _ = writeln!(out, "NarSize: {}", self.nar_size);
        let mut refs: Vec<&str> = self.references.iter().map(String::as_str).collect();
        refs.sort_unstable();
        let _ = writeln!(out, "References: {}", refs.join(" "));
        if let Some(d) = &self.deriver {
            let _ = writeln!(out, "Deriver: {d}");
        }
        let mut sigs: Vec<&str> = self.sigs.iter().map(String::as_str).collect();
        sigs.sort_unstable();
        sigs.dedup();
        for s in sigs {
            let _ = writeln!(out, "Sig: {s}");
        }
        if let Some(ca) = &self.ca {
            let _ = writeln!(out, "CA: {ca}");
        }
        out
    }

    /// Parses narinfo text with the strictness of Nix's parser: every line `Key: value\n`,
    /// no blank lines, no CR; `StorePath`, `URL`, `NarHash` and a non-zero `NarSize` required.
    pub fn parse(text: &str) -> Result<Self, Error> {
        if !text.ends_with('\n') {
            return Err(Error::NarInfo("missing final newline"));
        }
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = None;
        let mut deriver = None;
        let mut sigs = Vec::new();
        let mut ca = None;
        for line in text[..text.len() - 1].split('\n') {
            if line.contains('\r') {
                return Err(Error::NarInfo("carriage return"));
            }
            let (key, value) = line.split_once(": ").ok_or(Error::NarInfo("line without ': '"))?;
            let num = |v: &str| v.parse::<u64>().map_err(|_| Error::NarInfo("bad number"));
            match key {
                "StorePath" => store_path = Some(value.to_owned()),
                "URL" => url = Some(value.to_owned()),
                "Compression" => compression = Some(value.to_owned()),
                "FileHash" => file_hash = Some(NarHash::parse(value)?),
                "FileSize" => file_size = Some(num(value)?),
                "NarHash" => nar_hash = Some(NarHash::parse(value)?),
                "NarSize" => nar_size = Some(num(value)?),
                "References" => {
                    if references.is_some() {
                        return Err(Error::NarInfo("extra References"));
                    }
                    references = Some(value.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect());
                }
                "Deriver" if value != "unknown-deriver" => deriver = Some(value.to_owned()),
                "Sig" => sigs.push(value.to_owned()),
                "CA" => ca = Some(value.to_owned()),
                _ => {}
            }
        }
        let nar_size = nar_size.filter(|&s| s != 0).ok_or(Error::NarInfo("NarSize missing or zero"))?;
        Ok(Self {
            store_path: store_path.ok_or(Error::NarInfo("missing StorePath"))?,
            url: url.filter(|u| !u.is_empty()).ok_or(Error::NarInfo("missing URL"))?,
            // Absent or empty means bzip2 to Nix.
            compression: NarCompression::read(compression.as_deref().unwrap_or("")),
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or(Error::NarInfo("missing NarHash"))?,
            nar_size,
            references: references.unwrap_or_default(),
            deriver,
            sigs,
            ca,
        })
    }

    /// The string Nix signs for this path; `store_dir` turns reference basenames into full paths.
    pub fn fingerprint(&self, store_dir: &str) -> String {
        let refs: Vec<String> = self.references.iter().map(|r| format!("{store_dir}/{r}")).collect();
        fingerprint(&self.store_path, &self.nar_hash, self.nar_size, &refs)
    }
}

/// `1;<path>;sha256:<nix32>;<size>;<full refs sorted, comma-joined>`, Nix's signature fingerprint.
pub fn fingerprint(store_path: &str, nar_hash: &NarHash, nar_size: u64, references: &[String]) -> String {
    let mut refs: Vec<&str> = references.iter().map(String::as_str).collect();
    refs.sort_unstable();
    format!("1;{store_path};{nar_hash};{nar_size};{}", refs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `nix copy --to file://…?compression=xz&secret-key=…` (Nix 2.8.0), docs/protocol.md §1.2.
    const REAL: &str = "StorePath: /nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt
URL: nar/17gd6zzlkx90irc6qawagdkgh1d7qvlnq46yjf7xiqw9ycz7zq4a.nar.xz
Compression: xz
FileHash: sha256:17gd6zzlkx90irc6qawagdkgh1d7qvlnq46yjf7xiqw9ycz7zq4a
FileSize: 128
NarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw
NarSize: 120
References: 
Sig: test-cache-1:DRiCvx4YLygRdFAaRWbQCbIJmM5lbkCfMMHm5KlsxlwixZkHgwuv2nSPJgc93MnBsvIMcjxoXKE9sZHFZmJSDg==
CA: fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw
";

    #[test]
    fn parse_then_render_reproduces_nix_output_byte_for_byte() {
        let info = NarInfo::parse(REAL).unwrap();
        assert_eq!(info.render(), REAL);
        assert_eq!(
            info.fingerprint("/nix/store"),
            "1;/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt;sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw;120;"
        );
    }

    #[test]
    fn references_sorted_and_fingerprint_uses_full_paths() {
        let mut info = NarInfo::parse(REAL).unwrap();
        info.references = vec!["zzzz".into(), "aaaa".into()];
        assert!(info.render().contains("References: aaaa zzzz\n"));
        assert!(info.fingerprint("/nix/store").ends_with(";120;/nix/store/aaaa,/nix/store/zzzz"));
    }

    #[test]
    fn parser_is_as_strict_as_nix() {
        assert!(NarInfo::parse(&REAL.replace('\n', "\r\n")).is_err());
        assert!(NarInfo::parse(REAL.trim_end()).is_err());
        assert!(NarInfo::parse(&REAL.replace("NarSize: 120", "NarSize: 0")).is_err());
        assert!(NarInfo::parse(&REAL.replace("References: \n", "References: \n\n")).is_err());
        assert!(NarInfo::parse(&format!("{REAL}References: x\n")).is_err());
        let no_comp = NarInfo::parse(&REAL.replace("Compression: xz\n", "")).unwrap();
        assert_eq!(no_comp.compression, NarCompression::Known(crate::Compression::Bzip2));
    }

    fn basename() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy as _;
        ("[0-9a-df-np-sv-z]{32}", "[a-zA-Z0-9+._?=-]{1,40}").prop_map(|(h, n)| format!("{h}-{n}"))
    }

    proptest::proptest! {
        /// Whatever we render, Nix's line syntax parses back to the same narinfo (sorted).
        #[test]
        fn render_then_parse_round_trips(
            path in basename(),
            refs in proptest::collection::vec(basename(), 0..8),
            deriver in proptest::option::of(basename()),
            sigs in proptest::collection::vec("[a-z0-9.-]{1,20}:[A-Za-z0-9+/]{86}==", 0..3),
            hash in proptest::array::uniform32(proptest::num::u8::ANY),
            size in 1u64..u64::MAX,
            compressed in proptest::bool::ANY,
        ) {
            let mut info = NarInfo {
                store_path: format!("/nix/store/{path}"),
                url: format!("nar/{path}.nar"),
                compression: if compressed { crate::Compression::Zstd } else { crate::Compression::None }.into(),
                file_hash: (!compressed).then_some(NarHash(hash)),
                file_size: (!compressed).then_some(size),
                nar_hash: NarHash(hash),
                nar_size: size,
                references: refs,
                deriver,
                sigs,
                ca: None,
            };
            let text = info.render();
            let parsed = NarInfo::parse(&text).unwrap();
            info.references.sort();
            info.sigs.sort();
            info.sigs.dedup();
            proptest::prop_assert_eq!(parsed, info);
            proptest::prop_assert!(text.ends_with('\n') && !text.contains("\n\n") && !text.contains('\r'));
        }
    }
}
