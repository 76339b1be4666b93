//! The NAR compressions subserve produces on the fly, and their encoders. The vocabulary of
//! compression names and extensions is `formats::Compression`; a compression is never sent
//! as a `Content-Encoding` (protocol.md §3.5).

use std::io::{self, Write};

pub use formats::Compression;

/// Compression levels for on-the-fly encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// zstd level, 1–19.
    pub zstd: i32,
    /// xz preset, 0–9.
    pub xz: u32,
    /// gzip level, 1–9 (Guix clients only).
    pub gzip: u32,
}

impl Default for Levels {
    fn default() -> Self {
        Self { zstd: 3, xz: 2, gzip: 3 }
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
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(levels.gzip));
            produce(&mut enc)?;
            enc.finish()
        }
        Compression::Bzip2 => Err(io::Error::new(io::ErrorKind::Unsupported, "bzip2 is not produced on the fly")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoders_round_trip() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for c in [Compression::None, Compression::Zstd, Compression::Xz, Compression::Gzip] {
            let out = encode(c, Levels::default(), Vec::new(), |w| w.write_all(&data)).unwrap();
            let back = match c {
                Compression::None => out,
                Compression::Zstd => zstd::decode_all(&out[..]).unwrap(),
                Compression::Xz => {
                    let mut v = Vec::new();
                    io::Read::read_to_end(&mut xz2::read::XzDecoder::new(&out[..]), &mut v).unwrap();
                    v
                }
                Compression::Gzip => {
                    let mut v = Vec::new();
                    io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&out[..]), &mut v).unwrap();
                    v
                }
                Compression::Bzip2 => unreachable!("not produced on the fly"),
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
