//! Compressing and decompressing test data in every compression a cache may use, with the
//! reference libraries (not the server's own code paths), so a test compares against an
//! independent implementation.

use std::io::{Read, Write};

use formats::{Compression, NarHash};
use sha2::{Digest, Sha256};

/// `data` compressed with `compression` (fast levels: this is test data).
pub fn compress(compression: Compression, data: &[u8]) -> Vec<u8> {
    match compression {
        Compression::None => data.to_vec(),
        Compression::Zstd => zstd::encode_all(data, 1).expect("zstd"),
        Compression::Xz => {
            let mut w = liblzma::write::XzEncoder::new(Vec::new(), 0);
            w.write_all(data).expect("xz");
            w.finish().expect("xz")
        }
        Compression::Bzip2 => {
            let mut w = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            w.write_all(data).expect("bzip2");
            w.finish().expect("bzip2")
        }
        Compression::Gzip => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            w.write_all(data).expect("gzip");
            w.finish().expect("gzip")
        }
    }
}

/// A reader of what `data` decompresses to; panics at once on a compression that is not
/// one of Nix's or Guix's.
pub fn decoder<'a>(compression: Compression, data: impl Read + 'a) -> Box<dyn Read + 'a> {
    match compression {
        Compression::None => Box::new(data),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(data).expect("zstd decoder")),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new(data)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(data)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
    }
}

/// `data` decompressed whole.
pub fn decompress(compression: Compression, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    decoder(compression, data).read_to_end(&mut out).unwrap_or_else(|e| panic!("not valid {compression}: {e}"));
    out
}

/// The NarHash and length of what `body` decompresses to, read as it streams (for NARs too
/// big to hold twice).
pub fn nar_hash_of(compression: Compression, body: impl Read) -> (NarHash, u64) {
    let mut reader = decoder(compression, body);
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    let mut len = 0u64;
    loop {
        let n = reader.read(&mut buf).unwrap_or_else(|e| panic!("not valid {compression}: {e}"));
        if n == 0 {
            return (NarHash(hasher.finalize().into()), len);
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// Bytes of `len` pseudo-random, incompressible data (an xorshift stream from `seed`): a NAR
/// whose compressed form is as large as itself.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
