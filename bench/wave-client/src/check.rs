//! Checking every NAR body without decompressing every one: bodies are known by the SHA-256
//! of their bytes, and per URL one body at a time is decompressed and checked against the
//! narinfo. Bytes equal to checked bytes are checked; bytes no checked body had wait for the
//! next body of their URL to be decompressed, or for [`after_the_wave`].

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use formats::narinfo::NarInfo;
use formats::NarHash;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::conn::{Conn, Trouble};
use crate::node::Plan;

/// The SHA-256 of a body's bytes.
pub(crate) type BodyDigest = [u8; 32];

/// What is known about the bodies of each URL.
#[derive(Default)]
pub(crate) struct Checks {
    urls: HashMap<String, UrlChecks>,
    /// Bodies decompressed (or, uncompressed, hashed) and found to be the narinfo's NAR.
    pub(crate) decoded: u64,
}

#[derive(Default)]
struct UrlChecks {
    /// The narinfo that named this URL (for the checks after the wave).
    info: Option<NarInfo>,
    /// Digests of bodies that decompressed to the right NAR.
    good: HashSet<BodyDigest>,
    /// Whether a body of this URL is being decompressed now.
    decoding: bool,
    /// Digests of bodies not yet known to be good, and how many bodies had them.
    pending: HashMap<BodyDigest, u64>,
}

impl Checks {
    /// Whether the body about to be read from `url` should be decompressed and checked: when
    /// no other is, and no good body is known or some bodies wait for a check.
    pub(crate) fn begin(&mut self, url: &str, info: &NarInfo) -> bool {
        let entry = self.urls.entry(url.to_owned()).or_default();
        entry.info.get_or_insert_with(|| info.clone());
        let wanted = entry.good.is_empty() || !entry.pending.is_empty();
        if entry.decoding || !wanted {
            return false;
        }
        entry.decoding = true;
        true
    }

    /// Records a body of `url` that was only hashed.
    pub(crate) fn hashed(&mut self, url: &str, digest: BodyDigest) {
        let entry = self.urls.entry(url.to_owned()).or_default();
        if !entry.good.contains(&digest) {
            *entry.pending.entry(digest).or_default() += 1;
        }
    }

    /// Records the end of a decompressed body of `url`: `Some(digest)` when it was the right
    /// NAR, `None` when it was cut or failed its check (the failure is reported by the caller).
    pub(crate) fn decoded(&mut self, url: &str, good: Option<BodyDigest>) {
        let entry = self.urls.entry(url.to_owned()).or_default();
        entry.decoding = false;
        if let Some(digest) = good {
            entry.pending.remove(&digest);
            entry.good.insert(digest);
            self.decoded += 1;
        }
    }
}

/// Fetches again, with a check, each URL some of whose bodies were never matched by a checked
/// body; returns one line per body still unverified after that.
pub(crate) async fn after_the_wave(plan: &Plan, checks: &RefCell<Checks>) -> Vec<String> {
    let waiting: Vec<(String, NarInfo)> = checks
        .borrow()
        .urls
        .iter()
        .filter(|(_, c)| !c.pending.is_empty())
        .filter_map(|(url, c)| Some((url.clone(), c.info.clone()?)))
        .collect();
    let mut conn = Conn::new(plan.addr);
    for (url, info) in waiting {
        for _ in 0..3 {
            if let Ok(Some(digest)) = fetch_checked(&mut conn, &plan.url(&url), &info).await {
                checks.borrow_mut().decoded(&url, Some(digest));
            }
            if checks.borrow().urls[&url].pending.is_empty() {
                break;
            }
        }
    }
    let checks = checks.borrow();
    checks
        .urls
        .iter()
        .flat_map(|(url, c)| {
            c.pending.values().map(move |n| format!("{n} bodies of {url} never matched a checked body"))
        })
        .collect()
}

/// Fetches `path` and checks its body against `info`; returns the body's digest when it is
/// the right NAR.
async fn fetch_checked(conn: &mut Conn, path: &str, info: &NarInfo) -> Result<Option<BodyDigest>, Trouble> {
    let response = conn.get(path).await?;
    let mut body = response.into_body();
    let mut reader = BodyCheck::new(info, true)?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Trouble::Transient(format!("body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            reader.update(&data)?;
        }
    }
    let (digest, decoded) = reader.finish(info)?;
    Ok(decoded.then_some(digest))
}

/// The running checks of one body: the SHA-256 of its bytes, and optionally its decompressed
/// NAR's hash and size.
pub(crate) struct BodyCheck {
    sha: Sha256,
    len: u64,
    decoder: Option<Decoder>,
    /// An uncompressed body: its own hash and size are the NAR's, nothing to decompress.
    plain: bool,
}

impl BodyCheck {
    /// Starts the checks of a body named by `info`; `decode` decompresses it too (an
    /// uncompressed body is always checked against the NAR, at no extra cost).
    pub(crate) fn new(info: &NarInfo, decode: bool) -> Result<Self, Trouble> {
        let plain = is_plain(info);
        let decoder = if decode && !plain { Some(Decoder::new(info.compression.as_str())?) } else { None };
        Ok(BodyCheck { sha: Sha256::new(), len: 0, decoder, plain })
    }

    /// Takes the next bytes of the body.
    pub(crate) fn update(&mut self, data: &[u8]) -> Result<(), Trouble> {
        self.sha.update(data);
        self.len += data.len() as u64;
        if let Some(decoder) = self.decoder.as_mut() {
            decoder.write_all(data).map_err(|e| Trouble::Fatal(format!("decompressing: {e}")))?;
        }
        Ok(())
    }

    /// Ends the body: checks `FileHash`/`FileSize` when the narinfo has them, and the NAR when
    /// decompressing; returns the body's digest and whether the NAR was checked.
    pub(crate) fn finish(self, info: &NarInfo) -> Result<(BodyDigest, bool), Trouble> {
        let digest: BodyDigest = self.sha.finalize().into();
        if let Some(expected) = info.file_hash.filter(|h| h.0 != digest) {
            return Err(Trouble::Fatal(format!("{}: FileHash {expected}, body hashes differently", info.url)));
        }
        if let Some(expected) = info.file_size.filter(|&s| s != 0 && s != self.len) {
            return Err(Trouble::Fatal(format!("{}: FileSize {expected}, body has {} bytes", info.url, self.len)));
        }
        let (nar_hash, nar_size) = match self.decoder {
            _ if self.plain => (NarHash(digest), self.len),
            Some(decoder) => {
                let nar = decoder.finish().map_err(|e| Trouble::Fatal(format!("{}: decompressing: {e}", info.url)))?;
                (NarHash(nar.sha.finalize().into()), nar.len)
            }
            None => return Ok((digest, false)),
        };
        if nar_hash != info.nar_hash || nar_size != info.nar_size {
            return Err(Trouble::Fatal(format!(
                "{}: the NAR is {nar_size} bytes with hash {nar_hash}, the narinfo says {} bytes, {}",
                info.url, info.nar_size, info.nar_hash
            )));
        }
        Ok((digest, true))
    }
}

/// Whether the body named by `info` is the bare NAR.
pub(crate) fn is_plain(info: &NarInfo) -> bool {
    info.compression.known() == Some(formats::Compression::None)
}

/// A writer that hashes and counts what it is given.
struct Hashing {
    sha: Sha256,
    len: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sha.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A decompressor for a narinfo's `Compression:` that writes the NAR into a [`Hashing`].
enum Decoder {
    Zstd(zstd::stream::write::Decoder<'static, Hashing>),
    Xz(liblzma::write::XzDecoder<Hashing>),
    Bzip2(bzip2::write::BzDecoder<Hashing>),
}

impl Decoder {
    fn new(compression: &str) -> Result<Self, Trouble> {
        let out = Hashing { sha: Sha256::new(), len: 0 };
        Ok(match compression {
            "zstd" => Decoder::Zstd(
                zstd::stream::write::Decoder::new(out).map_err(|e| Trouble::Fatal(format!("zstd decoder: {e}")))?,
            ),
            "xz" => Decoder::Xz(liblzma::write::XzDecoder::new(out)),
            "bzip2" | "" => Decoder::Bzip2(bzip2::write::BzDecoder::new(out)),
            other => return Err(Trouble::Fatal(format!("compression {other:?} is not one Nix reads"))),
        })
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Decoder::Zstd(d) => d.write_all(data),
            Decoder::Xz(d) => d.write_all(data),
            Decoder::Bzip2(d) => d.write_all(data),
        }
    }

    fn finish(self) -> io::Result<Hashing> {
        match self {
            Decoder::Zstd(mut d) => {
                d.flush()?;
                Ok(d.into_inner())
            }
            Decoder::Xz(d) => d.finish(),
            Decoder::Bzip2(mut d) => d.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(compression: &str, nar: &[u8]) -> NarInfo {
        NarInfo {
            store_path: "/nix/store/7rjj86a15146cq1d3qy068lml7n8ykzm-x".into(),
            url: format!("nar/x.nar.{compression}"),
            compression: formats::compression::NarCompression::read(compression),
            file_hash: None,
            file_size: None,
            nar_hash: NarHash::digest(nar),
            nar_size: nar.len() as u64,
            references: vec![],
            deriver: None,
            sigs: vec![],
            ca: None,
        }
    }

    fn check(info: &NarInfo, body: &[u8], decode: bool) -> Result<(BodyDigest, bool), Trouble> {
        let mut check = BodyCheck::new(info, decode)?;
        for chunk in body.chunks(7) {
            check.update(chunk)?;
        }
        check.finish(info)
    }

    #[test]
    fn a_decompressed_body_is_checked_against_the_nar() {
        let nar = b"a NAR of some bytes".repeat(100);
        let info = info("zstd", &nar);
        let body = zstd::encode_all(&nar[..], 3).unwrap();
        let (digest, decoded) = check(&info, &body, true).unwrap();
        assert!(decoded);
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&body)));
        assert_eq!(check(&info, &body, false).unwrap(), (digest, false));
        let other = zstd::encode_all(&b"another NAR"[..], 3).unwrap();
        assert!(matches!(check(&info, &other, true), Err(Trouble::Fatal(_))));
        assert!(matches!(check(&info, &body[..body.len() - 3], true), Err(Trouble::Fatal(_))));
    }

    #[test]
    fn a_plain_body_is_its_own_nar_and_file_fields_must_match() {
        let nar = b"plain".repeat(10);
        let mut info = info("none", &nar);
        assert!(check(&info, &nar, false).unwrap().1, "an uncompressed body is always checked");
        assert!(matches!(check(&info, &nar[1..], false), Err(Trouble::Fatal(_))));
        info.file_size = Some(3);
        assert!(matches!(check(&info, &nar, false), Err(Trouble::Fatal(_))));
        info.file_size = None;
        info.file_hash = Some(NarHash::digest(b"something else"));
        assert!(matches!(check(&info, &nar, false), Err(Trouble::Fatal(_))));
    }

    #[test]
    fn bodies_wait_for_a_checked_body_with_their_bytes() {
        let info = info("zstd", b"nar");
        let mut checks = Checks::default();
        assert!(checks.begin(&info.url, &info), "the first body is decompressed");
        assert!(!checks.begin(&info.url, &info), "one at a time");
        checks.hashed(&info.url, [1; 32]);
        checks.decoded(&info.url, Some([1; 32]));
        assert!(checks.urls[&info.url].pending.is_empty(), "checked by the decompressed body");
        assert!(!checks.begin(&info.url, &info), "known good, nothing waits");
        checks.hashed(&info.url, [2; 32]);
        assert!(checks.begin(&info.url, &info), "other bytes: the next body is decompressed");
        checks.decoded(&info.url, Some([3; 32]));
        assert_eq!(checks.urls[&info.url].pending.get(&[2; 32]), Some(&1), "still waiting");
        assert!(checks.begin(&info.url, &info));
        checks.decoded(&info.url, Some([2; 32]));
        assert!(checks.urls[&info.url].pending.is_empty());
        assert_eq!(checks.decoded, 3);
    }
}
