//! Checks a NAR file as it is downloaded: the compressed bytes against `FileHash`/`FileSize`
//! when the narinfo gives them, and the decompressed NAR against `NarHash`/`NarSize`.
//!
//! Decompression output is capped at `NarSize`, so a decompression bomb fails as soon as it
//! produces one byte too many instead of filling memory or disk.

use std::io::{self, Write};

use formats::{Compression, NarHash};
use sha2::{Digest, Sha256};

/// What the narinfo promises about the file and the NAR inside it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expected {
    pub(crate) compression: Compression,
    pub(crate) nar_hash: NarHash,
    pub(crate) nar_size: u64,
    pub(crate) file_hash: Option<NarHash>,
    pub(crate) file_size: Option<u64>,
}

/// Hashes and counts the decompressed NAR, refusing to go past the promised size.
struct NarCheck {
    hasher: Sha256,
    len: u64,
    limit: u64,
}

impl Write for NarCheck {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.len + data.len() as u64 > self.limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "NAR is larger than its NarSize"));
        }
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Decoder {
    None(NarCheck),
    Xz(liblzma::write::XzDecoder<NarCheck>),
    Zstd(zstd::stream::write::Decoder<'static, NarCheck>),
    Bzip2(bzip2::write::BzDecoder<NarCheck>),
    Gzip(flate2::write::MultiGzDecoder<NarCheck>),
}

/// Feed it the file's bytes in order with [`Verifier::update`], then call [`Verifier::finish`].
pub(crate) struct Verifier {
    expected: Expected,
    file_hasher: Sha256,
    file_len: u64,
    decoder: Decoder,
}

impl Verifier {
    pub(crate) fn new(expected: Expected) -> io::Result<Self> {
        let check = NarCheck { hasher: Sha256::new(), len: 0, limit: expected.nar_size };
        let decoder = match expected.compression {
            Compression::None => Decoder::None(check),
            Compression::Xz => Decoder::Xz(liblzma::write::XzDecoder::new(check)),
            Compression::Zstd => Decoder::Zstd(zstd::stream::write::Decoder::new(check)?),
            Compression::Bzip2 => Decoder::Bzip2(bzip2::write::BzDecoder::new(check)),
            Compression::Gzip => Decoder::Gzip(flate2::write::MultiGzDecoder::new(check)),
        };
        Ok(Self { expected, file_hasher: Sha256::new(), file_len: 0, decoder })
    }

    /// Takes the next bytes of the file.
    pub(crate) fn update(&mut self, data: &[u8]) -> Result<(), String> {
        self.file_len += data.len() as u64;
        if let Some(size) = self.expected.file_size.filter(|&s| self.file_len > s) {
            return Err(format!("file is larger than its FileSize {size}"));
        }
        self.file_hasher.update(data);
        let written = match &mut self.decoder {
            Decoder::None(w) => w.write_all(data),
            Decoder::Xz(w) => w.write_all(data),
            Decoder::Zstd(w) => w.write_all(data),
            Decoder::Bzip2(w) => w.write_all(data),
            Decoder::Gzip(w) => w.write_all(data),
        };
        written.map_err(|e| format!("cannot decompress {}: {e}", self.expected.compression))
    }

    /// Checks everything once the whole file has been seen.
    pub(crate) fn finish(self) -> Result<(), String> {
        let e = self.expected;
        let decompress_err = |err: io::Error| format!("cannot decompress {}: {err}", e.compression);
        let check = match self.decoder {
            Decoder::None(w) => w,
            Decoder::Xz(w) => w.finish().map_err(decompress_err)?,
            Decoder::Zstd(mut w) => {
                w.flush().map_err(decompress_err)?;
                w.into_inner()
            }
            Decoder::Bzip2(mut w) => {
                w.try_finish().map_err(decompress_err)?;
                w.finish().map_err(decompress_err)?
            }
            Decoder::Gzip(w) => w.finish().map_err(decompress_err)?,
        };
        let file_hash = NarHash(self.file_hasher.finalize().into());
        if let Some(size) = e.file_size.filter(|&s| s != self.file_len) {
            return Err(format!("file has {} bytes, FileSize says {size}", self.file_len));
        }
        if let Some(hash) = e.file_hash.filter(|&h| h != file_hash) {
            return Err(format!("file hash {file_hash}, FileHash says {hash}"));
        }
        if check.len != e.nar_size {
            return Err(format!("NAR has {} bytes, NarSize says {}", check.len, e.nar_size));
        }
        let nar_hash = NarHash(check.hasher.finalize().into());
        if nar_hash != e.nar_hash {
            return Err(format!("NAR hash {nar_hash}, NarHash says {}", e.nar_hash));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nar() -> Vec<u8> {
        // Any bytes do: the verifier checks hashes and sizes, not NAR grammar.
        (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        match c {
            Compression::None => data.to_vec(),
            Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
            Compression::Xz => {
                let mut w = liblzma::write::XzEncoder::new(Vec::new(), 1);
                w.write_all(data).unwrap();
                w.finish().unwrap()
            }
            Compression::Bzip2 => {
                let mut w = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                w.write_all(data).unwrap();
                w.finish().unwrap()
            }
            Compression::Gzip => {
                let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                w.write_all(data).unwrap();
                w.finish().unwrap()
            }
        }
    }

    fn expected(c: Compression, nar: &[u8], file: &[u8]) -> Expected {
        Expected {
            compression: c,
            nar_hash: NarHash::digest(nar),
            nar_size: nar.len() as u64,
            file_hash: Some(NarHash::digest(file)),
            file_size: Some(file.len() as u64),
        }
    }

    fn run(e: Expected, file: &[u8]) -> Result<(), String> {
        let mut v = Verifier::new(e).unwrap();
        for chunk in file.chunks(7_777) {
            v.update(chunk)?;
        }
        v.finish()
    }

    #[test]
    fn accepts_good_files_in_every_compression() {
        let nar = nar();
        for c in Compression::ALL {
            let file = compress(c, &nar);
            run(expected(c, &nar, &file), &file).unwrap_or_else(|e| panic!("{c}: {e}"));
            let mut no_file_fields = expected(c, &nar, &file);
            no_file_fields.file_hash = None;
            no_file_fields.file_size = None;
            run(no_file_fields, &file).unwrap();
        }
    }

    #[test]
    fn rejects_flipped_truncated_and_oversized() {
        let nar = nar();
        for c in Compression::ALL {
            let file = compress(c, &nar);
            let e = expected(c, &nar, &file);
            let mut flipped = file.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 1;
            assert!(run(e, &flipped).is_err(), "{c}: flipped byte accepted");
            let mut only_nar_fields = e;
            only_nar_fields.file_hash = None;
            only_nar_fields.file_size = None;
            assert!(run(only_nar_fields, &flipped).is_err(), "{c}: flipped byte accepted without FileHash");
            assert!(run(only_nar_fields, &file[..file.len() - 10]).is_err(), "{c}: truncation accepted");
            let mut longer = file.clone();
            longer.extend_from_slice(&file);
            assert!(run(e, &longer).is_err(), "{c}: extra bytes accepted");
        }
    }

    #[test]
    fn a_decompression_bomb_stops_at_nar_size() {
        let bomb = zstd::encode_all(&vec![0u8; 64 << 20][..], 19).unwrap();
        let e = Expected {
            compression: Compression::Zstd,
            nar_hash: NarHash::digest(b"small"),
            nar_size: 1000,
            file_hash: None,
            file_size: None,
        };
        let mut v = Verifier::new(e).unwrap();
        let err = bomb.chunks(4096).try_for_each(|c| v.update(c)).unwrap_err();
        assert!(err.contains("larger than its NarSize"), "{err}");
    }
}
