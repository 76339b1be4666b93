//! The NAR compressions subserve produces on the fly, and their encoders. The vocabulary of
//! compression names and extensions is `formats::Compression`; a compression is never sent
//! as a `Content-Encoding` (docs/protocol.md §3.5).

use std::io::{self, Write};
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

pub use formats::Compression;
use zstd::zstd_safe::{CCtx, CParameter, ResetDirective};

/// Largest zstd window (log2 of its bytes) used on the fly: 1 MiB.
///
/// Levels 3–19 would use 2–8 MiB; the window is the bulk of a compression context's memory,
/// allocated per stream. Measured on the 256 MiB benchmark NAR at level 3: window 2^20 against
/// the default 2^21 keeps the output within 0.3% (74.8 against 74.6 MB), compresses at least
/// as fast (178–203 against 164–174 MiB/s, one core), and takes 3.0 MiB rather than 4.1.
/// Levels 1 and 2 already use 2^19 and 2^20. zstd may shrink its hash and chain tables to
/// match a smaller window, never grow them.
///
/// Compression runs single-threaded in each stream (no zstd workers): the server runs many
/// streams at once, and admission control bounds them by the cores (`crate::admission`).
pub const ZSTD_MAX_WINDOW_LOG: u32 = 20;

/// zstd compression contexts of finished streams, kept for the next ones.
///
/// A context allocates its window and tables (3 MiB at level 3) on first use; making a new one
/// per stream, on whichever blocking thread runs it, scatters those allocations over the
/// allocator's per-thread arenas, which keep them after they are freed: 256 streams through
/// a cap of 4 left 70–85 MiB resident where 4 contexts need 12. Reused contexts are allocated
/// once, and a small NAR no longer pays for a fresh context. At most as many are kept as
/// streams can run at once (`crate::admission` caps compressed streams at 64).
static ZSTD_CONTEXTS: Mutex<Vec<CCtx<'static>>> = Mutex::new(Vec::new());
const ZSTD_CONTEXTS_KEPT: usize = 64;

/// A context for a new zstd stream at `level`, with the window bounded by
/// [`ZSTD_MAX_WINDOW_LOG`]. Parameters are set every time: a kept context may come from a
/// store with another level.
fn zstd_context(level: i32) -> io::Result<CCtx<'static>> {
    let kept = ZSTD_CONTEXTS.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let mut context = kept.unwrap_or_else(CCtx::create);
    let zstd_error = |code| io::Error::other(format!("zstd: {}", zstd::zstd_safe::get_error_name(code)));
    // Parameters can only change between frames: end whatever frame a failed stream left.
    context.reset(ResetDirective::SessionOnly).map_err(zstd_error)?;
    context.set_parameter(CParameter::CompressionLevel(level)).map_err(zstd_error)?;
    // 0 is the level's own window, which for levels 1 and 2 is no larger.
    let window_log = if level >= 3 { ZSTD_MAX_WINDOW_LOG } else { 0 };
    context.set_parameter(CParameter::WindowLog(window_log)).map_err(zstd_error)?;
    Ok(context)
}

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

/// Writes what `produce` writes into `out`, compressed with `compression` at the level's own
/// parameters, and hands `out` back once the compressed stream is complete. For files made
/// once and served many times (baking); streams use [`encode_on_the_fly`]. If `produce`
/// fails, the compressed stream is left unfinished, so the client cannot mistake it for a
/// whole NAR.
pub fn encode<W: Write>(
    compression: Compression,
    levels: Levels,
    out: W,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<W> {
    if compression == Compression::Zstd {
        let mut enc = zstd::stream::write::Encoder::new(out, levels.zstd)?;
        produce(&mut enc)?;
        return enc.finish();
    }
    encode_other(compression, levels, out, produce)
}

/// [`encode`] for a response streamed as it is compressed: zstd runs with a window of at most
/// 2^[`ZSTD_MAX_WINDOW_LOG`] and a context reused from earlier streams, so that the memory of
/// each stream is small and allocated once.
pub fn encode_on_the_fly<W: Write>(
    compression: Compression,
    levels: Levels,
    out: W,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<W> {
    if compression != Compression::Zstd {
        return encode_other(compression, levels, out, produce);
    }
    let mut context = zstd_context(levels.zstd)?;
    let mut enc = zstd::stream::write::Encoder::with_context(out, &mut context);
    let result = produce(&mut enc).and_then(|()| enc.finish());
    // Back for reuse, also after a failure: the next user starts a new frame.
    let mut kept = ZSTD_CONTEXTS.lock().unwrap_or_else(PoisonError::into_inner);
    if kept.len() < ZSTD_CONTEXTS_KEPT {
        kept.push(context);
    }
    result
}

/// Everything but zstd, which is the same on the fly and for baking.
fn encode_other<W: Write>(
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
        Compression::Zstd => encode(compression, levels, out, produce),
        Compression::Xz => {
            let mut enc = liblzma::write::XzEncoder::new(out, levels.xz);
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

/// A comma-separated list of compressions, as `--compression zstd,gzip,none` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionList(pub Vec<Compression>);

impl FromStr for CompressionList {
    type Err = formats::compression::UnknownCompression;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',').map(|c| c.trim().parse()).collect::<Result<Vec<_>, _>>().map(CompressionList)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoders_round_trip() {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for (c, on_the_fly) in [Compression::None, Compression::Zstd, Compression::Xz, Compression::Gzip]
            .into_iter()
            .flat_map(|c| [(c, false), (c, true)])
        {
            let produce = |w: &mut dyn Write| w.write_all(&data);
            let out = if on_the_fly {
                encode_on_the_fly(c, Levels::default(), Vec::new(), produce)
            } else {
                encode(c, Levels::default(), Vec::new(), produce)
            }
            .unwrap();
            let back = match c {
                Compression::None => out,
                Compression::Zstd => zstd::decode_all(&out[..]).unwrap(),
                Compression::Xz => {
                    let mut v = Vec::new();
                    io::Read::read_to_end(&mut liblzma::read::XzDecoder::new(&out[..]), &mut v).unwrap();
                    v
                }
                Compression::Gzip => {
                    let mut v = Vec::new();
                    io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&out[..]), &mut v).unwrap();
                    v
                }
                Compression::Bzip2 => unreachable!("not produced on the fly"),
            };
            assert_eq!(back, data, "{c}, on the fly: {on_the_fly}");
        }
    }

    #[test]
    fn zstd_frames_on_the_fly_declare_a_bounded_window() {
        // Over 2 MiB of varied input, so that level 3 would pick its default 2 MiB window.
        let data: Vec<u8> =
            (0..3_000_000u32).flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 7).to_le_bytes()).collect();
        let levels = |zstd| Levels { zstd, ..Levels::default() };
        for level in [1, 3, 9, 19] {
            let out = encode_on_the_fly(Compression::Zstd, levels(level), Vec::new(), |w| w.write_all(&data)).unwrap();
            let window = zstd_window_size(&out);
            assert!(window <= 1 << ZSTD_MAX_WINDOW_LOG, "level {level}: window {window}");
            assert_eq!(zstd::decode_all(&out[..]).unwrap(), data);
        }
        // Baking keeps the level's own, larger window.
        let baked = encode(Compression::Zstd, levels(19), Vec::new(), |w| w.write_all(&data)).unwrap();
        assert!(zstd_window_size(&baked) > 1 << ZSTD_MAX_WINDOW_LOG);
    }

    #[test]
    fn reused_zstd_contexts_take_the_new_level_and_forget_unfinished_frames() {
        let data: Vec<u8> = (0..500_000u32).flat_map(|i| (i % 1000).to_le_bytes()).collect();
        let at = |level| {
            encode_on_the_fly(Compression::Zstd, Levels { zstd: level, ..Levels::default() }, Vec::new(), |w| {
                w.write_all(&data)
            })
            .unwrap()
        };
        let fresh = at(19);
        for level in [1, 19, 3, 19] {
            let _ =
                encode_on_the_fly(Compression::Zstd, Levels { zstd: level, ..Levels::default() }, Vec::new(), |w| {
                    w.write_all(&data[..1000])?;
                    Err(io::Error::other("abandoned mid-frame"))
                });
            let out = at(level);
            assert_eq!(zstd::decode_all(&out[..]).unwrap(), data, "level {level}");
            if level == 19 {
                assert_eq!(out, fresh, "same output whatever the context did before");
            }
        }
    }

    /// The window size a zstd frame header declares (RFC 8878 §3.1.1.1), for a frame whose
    /// size is unknown (as in streaming), so the Window_Descriptor byte is present.
    fn zstd_window_size(frame: &[u8]) -> u64 {
        assert_eq!(frame[..4], [0x28, 0xb5, 0x2f, 0xfd]);
        let descriptor = frame[4];
        assert_eq!(descriptor & 0x20, 0, "single-segment frames have no window descriptor");
        let wd = frame[5];
        let (exponent, mantissa) = (u64::from(wd >> 3), u64::from(wd & 7));
        let base = 1u64 << (10 + exponent);
        base + base / 8 * mantissa
    }

    #[test]
    fn failed_producer_leaves_stream_unfinished() {
        for c in [Compression::Zstd, Compression::Xz] {
            let produce = |w: &mut dyn Write| {
                w.write_all(b"partial")?;
                Err(io::Error::other("file vanished"))
            };
            assert!(encode(c, Levels::default(), Vec::new(), produce).is_err());
            assert!(encode_on_the_fly(c, Levels::default(), Vec::new(), produce).is_err());
        }
    }
}
