//! `GET /nar/<store hash>-<nar hash>.nar[.zst|.xz]`: the NAR, streamed from the store's files.
//!
//! The bare NAR has an exact `Content-Length` and honours `Range`, so Nix can resume a broken
//! download. Compressed NARs are encoded on the fly and sent without a length. Every
//! compression is served whatever the narinfo currently advertises, so URLs cached by clients
//! stay valid.

use std::io::{self, Write};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use formats::NarHash;

use crate::compression::{self, Compression};
use crate::error::AppError;
use crate::range::{self, ByteRange};
use crate::state::AppState;
use crate::stream::body_from_writer;

/// MIME type of NAR bodies, compressed or not (the narinfo says which).
pub(crate) const MIME_NAR: &str = "application/x-nix-nar";

pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    Path(file): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (store_hash, nar_hash, compression) = parse_file_name(&file)?;
    let info = super::lookup(&state, store_hash).await?;
    if info.nar_hash != nar_hash {
        // The path was rebuilt with other contents since this URL was handed out.
        return Err(AppError::NotFound);
    }
    let root = state.store.real_path(&info.path);
    let size = info.nar_size;
    let levels = state.levels;
    let mut response = Response::builder().header(header::CONTENT_TYPE, MIME_NAR);
    if compression != Compression::None {
        if method == Method::HEAD {
            return Ok(response.body(Body::empty()).expect("valid response").into_response());
        }
        let body = body_from_writer(root.display().to_string(), move |out| {
            compression::encode(compression, levels, out, |w| {
                let mut exact = ExactWriter { inner: w, remaining: size };
                store_reader::nar::dump(&root, &mut exact).map_err(io::Error::other)?;
                exact.finish()
            })
        });
        return Ok(response.body(body).expect("valid response"));
    }

    let range = range::parse(headers.get(header::RANGE), size)?;
    response = response.header(header::ACCEPT_RANGES, "bytes");
    let ByteRange { start, end } = range.unwrap_or(ByteRange { start: 0, end: size });
    response = response.header(header::CONTENT_LENGTH, end - start);
    if range.is_some() {
        let content_range = format!("bytes {start}-{}/{size}", end - 1);
        response = response
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, HeaderValue::from_str(&content_range).expect("ascii"));
    }
    if method == Method::HEAD {
        return Ok(response.body(Body::empty()).expect("valid response"));
    }
    let body = body_from_writer(root.display().to_string(), move |mut out| {
        let mut exact = ExactWriter { inner: &mut out, remaining: end - start };
        store_reader::nar::dump_range(&root, start, end, &mut exact).map_err(io::Error::other)?;
        exact.finish()?;
        Ok(out)
    });
    Ok(response.body(body).expect("valid response"))
}

/// Splits `<32-char store hash>-<52-char nar hash>.nar<ext>` into its parts.
fn parse_file_name(file: &str) -> Result<(&str, NarHash, Compression), AppError> {
    let bad = AppError::BadRequest("invalid NAR file name");
    let (stem, compression) = Compression::ALL
        .iter()
        .find_map(|&c| file.strip_suffix(c.extension()).and_then(|s| s.strip_suffix(".nar")).map(|s| (s, c)))
        .ok_or(AppError::NotFound)?;
    let (store_hash, nar_hash) = stem.split_once('-').ok_or(bad)?;
    let nar_hash = NarHash::from_nix32(nar_hash).map_err(|_| AppError::BadRequest("invalid NAR hash"))?;
    Ok((store_hash, nar_hash, compression))
}

/// Passes through exactly `remaining` bytes: more is an error at once, fewer at `finish`.
/// It turns a store path that changed since the DB recorded its size into an aborted stream.
struct ExactWriter<W> {
    inner: W,
    remaining: u64,
}

impl<W: Write> ExactWriter<W> {
    fn finish(self) -> io::Result<()> {
        if self.remaining != 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("NAR is {} bytes shorter than the store DB says", self.remaining),
            ));
        }
        Ok(())
    }
}

impl<W: Write> Write for ExactWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.len() as u64 > self.remaining {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "NAR is longer than the store DB says"));
        }
        let n = self.inner.write(data)?;
        self.remaining -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "i9pmrzmpshapij2kin22pff6fc2adavx";
    const N: &str = "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw";

    #[test]
    fn file_names() {
        let name = format!("{H}-{N}.nar.zst");
        let (h, n, c) = parse_file_name(&name).unwrap();
        assert_eq!((h, n.to_nix32().as_str(), c), (H, N, Compression::Zstd));
        assert_eq!(parse_file_name(&format!("{H}-{N}.nar.xz")).unwrap().2, Compression::Xz);
        assert_eq!(parse_file_name(&format!("{H}-{N}.nar")).unwrap().2, Compression::None);
        assert!(matches!(parse_file_name(&format!("{H}-{N}.nar.gz")), Err(AppError::NotFound)));
        assert!(matches!(parse_file_name(&format!("{H}-{N}x.nar")), Err(AppError::BadRequest(_))));
        assert!(matches!(parse_file_name(&format!("{H}{N}.nar")), Err(AppError::BadRequest(_))));
    }

    #[test]
    fn exact_writer_refuses_long_and_short() {
        let mut w = ExactWriter { inner: Vec::new(), remaining: 4 };
        assert!(w.write_all(b"12345").is_err());
        let mut w = ExactWriter { inner: Vec::new(), remaining: 4 };
        w.write_all(b"123").unwrap();
        assert!(w.finish().is_err());
        let mut w = ExactWriter { inner: Vec::new(), remaining: 4 };
        w.write_all(b"1234").unwrap();
        assert!(w.finish().is_ok());
    }
}
