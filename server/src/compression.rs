//! The NAR compressions subserve offers, their narinfo names and URL extensions, and the
//! encoders that compress a NAR on the fly.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

/// A compression a NAR can be served with. The narinfo's `Compression:` field names it; it is
/// never sent as a `Content-Encoding` (protocol.md §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// The bare NAR: exact `Content-Length`, `Range` support, any Nix version.
    None,
    /// zstd: fast, needs Nix ≥ 2.4.
    Zstd,
    /// xz: smallest, slowest, readable by every Nix version.
    Xz,
}

impl Compression {
    /// Every compression, in the order URLs are tried when parsing.
    pub const ALL: [Compression; 3] = [Compression::Zstd, Compression::Xz, Compression::None];

    /// The name in the narinfo `Compression:` field and in config.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }

    /// The file extension after `.nar`, as Nix names its own uploads.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
            Compression::Xz => ".xz",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown compression name.
#[derive(Debug, thiserror::Error)]
#[error("unknown compression {0:?} (expected none, zstd or xz)")]
pub struct UnknownCompression(String);

impl FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            "xz" => Ok(Compression::Xz),
            other => Err(UnknownCompression(other.to_owned())),
        }
    }
}

/// Compression levels for on-the-fly encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// zstd level, 1–19.
    pub zstd: i32,
    /// xz preset, 0–9.
    pub xz: u32,
}

impl Default for Levels {
    fn default() -> Self {
        Self { zstd: 3, xz: 2 }
    }
}

/// Writes what `produce` writes into `out`, compressed with `compression`, and hands `out` back
/// once the compressed stream is complete. If `produce` fails, the compressed stream is left
/// unfinished, so the client cannot mistake it for a whole NAR.
pub fn encode<W: Write>(
    compression: Compression,
    levels: Levels,
    out: W,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<W> {
    match compression {
        Compression::None => {
            let mut out = out;
            produce(&mut out)?;
            Ok(out)
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, levels.zstd)?;
            produce(&mut enc)?;
            enc.finish()
        }
        Compression::Xz => {
            let mut enc = xz2::write::XzEncoder::new(out, levels.xz);
            produce(&mut enc)?;
            enc.finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Compression::ALL {
            assert_eq!(c.name().parse::<Compression>().unwrap(), c);
        }
        assert!("gzip".parse::<Compression>().is_err());
        assert!("".parse::<Compression>().is_err());
    }

    #[test]
    fn encoders_round_trip() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for c in Compression::ALL {
            let out = encode(c, Levels::default(), Vec::new(), |w| w.write_all(&data)).unwrap();
            let back = match c {
                Compression::None => out,
                Compression::Zstd => zstd::decode_all(&out[..]).unwrap(),
                Compression::Xz => {
                    let mut v = Vec::new();
                    io::Read::read_to_end(&mut xz2::read::XzDecoder::new(&out[..]), &mut v).unwrap();
                    v
                }
            };
            assert_eq!(back, data, "{c}");
        }
    }

    #[test]
    fn failed_producer_leaves_stream_unfinished() {
        for c in [Compression::Zstd, Compression::Xz] {
            let r = encode(c, Levels::default(), Vec::new(), |w| {
                w.write_all(b"partial")?;
                Err(io::Error::other("file vanished"))
            });
            assert!(r.is_err());
        }
    }
}
