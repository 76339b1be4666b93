//! `GET /nar/<store hash>-<nar hash>.nar[.zst|.xz|.bz2]`: a NAR from the local store, or
//! from the proxy for paths the store lacks.
//!
//! A local bare NAR has an exact `Content-Length` and honours `Range`, so Nix can resume a
//! broken download; compressed ones are encoded on the fly and sent without a length. Every
//! compression is served whatever the narinfo currently advertises, so URLs cached by clients
//! stay valid. Proxied NARs are served in the upstream's compression, from the cache file
//! or straight from the download in progress, with `Content-Length` and `Range` whenever the
//! narinfo gave the file's size.
//!
//! On plain TCP connections, a bare NAR's large files and whole cached or baked files go to
//! the socket with `sendfile` ([`crate::direct`]).

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use formats::{NarFile, NarHash, StorePathHash};
use store_reader::nar::NarSink;
use upstream::{NarSource, NarStream};

use super::extract::NarFileName;
use super::Slots;
use crate::bake::Following;
use crate::compression::{self, Compression, Levels};
use crate::error::AppError;
use crate::metrics::BodySource;
use crate::range::{self, ByteRange};
use crate::state::AppState;
use crate::stream::{admitted_body_from_writer, file_body};
use formats::Dialect;

/// MIME type of NAR bodies, compressed or not (the narinfo says which).
pub(crate) const MIME_NAR: &str = "application/x-nix-nar";

pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    NarFileName(NarFile { hash, nar_hash, compression }): NarFileName,
    slots: Slots,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    match super::lookup(&state, &hash).await {
        // A local path with the URL's NarHash, in a compression we can produce.
        Ok(info) if info.nar_hash == nar_hash && Dialect::Nix.can_offer(compression) => {
            match baked_or_baking(&state, &info, compression).await {
                Some(Following::Baked(baked)) => {
                    let response = file_response(baked.path, baked.file_size, &slots, &method, &headers).await;
                    return sourced(response, BodySource::Baked);
                }
                Some(Following::Writing(bake)) => match bake.subscribe(None).await {
                    Ok(stream) => {
                        let response = download_response(stream, &slots, &method, &headers).await;
                        return sourced(response, BodySource::Baked);
                    }
                    // The bake landed between our look and our open: serve the baked file.
                    Err(_) => {
                        if let Some(baked) = baked_file(&state, &info, compression).await {
                            let response = file_response(baked.path, baked.file_size, &slots, &method, &headers).await;
                            return sourced(response, BodySource::Baked);
                        }
                    }
                },
                None => {}
            }
            let root = state.store.real_path(&info.path);
            let response = local(root, info.nar_size, compression, state.settings.levels, &slots, &method, &headers);
            sourced(response.await, BodySource::OnTheFly)
        }
        // Not here (any more): maybe the proxy handed out this URL.
        Ok(_) | Err(AppError::NotFound) => {
            proxied(&state, &hash, nar_hash, compression, &slots, &method, &headers).await
        }
        Err(e) => Err(e),
    }
}

/// Marks a NAR response with where its body comes from, for the metrics.
fn sourced(response: Result<Response, AppError>, source: BodySource) -> Result<Response, AppError> {
    response.map(|mut r| {
        r.extensions_mut().insert(source);
        r
    })
}

/// The baked file of a local path in `compression`, if one is ready.
pub(super) async fn baked_file(
    state: &Arc<AppState>,
    info: &store_reader::PathInfo,
    compression: Compression,
) -> Option<upstream::Baked> {
    let baker = state.baker.clone().filter(|b| b.compressions().contains(&compression))?;
    let nar_hash = info.nar_hash;
    state.admission.blocking(move || baker.ready(&nar_hash, compression)).await.ok().flatten()
}

/// A local path's file in `compression` from the baker, in one trip to the blocking pool:
/// its baked file, or the bake being written (the one in progress, or one started for this
/// request; see `Baker::follow`). `None` when the path is not baked in that compression (too
/// small, not worth it, baking off): it is produced on the fly.
async fn baked_or_baking(
    state: &Arc<AppState>,
    info: &store_reader::PathInfo,
    compression: Compression,
) -> Option<Following> {
    let baker = state.baker.clone().filter(|b| b.compressions().contains(&compression))?;
    let (nar_hash, nar_size, root) = (info.nar_hash, info.nar_size, state.store.real_path(&info.path));
    state
        .admission
        .blocking(move || {
            if !baker.wants(nar_size) || !baker.worth_baking(&root, &nar_hash, nar_size) {
                return baker.ready(&nar_hash, compression).map(Following::Baked);
            }
            baker.follow(crate::bake::Job { root, nar_hash, nar_size, compression })
        })
        .await
        .ok()
        .flatten()
}

/// A whole file (a baked or proxied NAR) with `Content-Length`, `Accept-Ranges` and `Range`;
/// the body waits for a permit of `admission`.
pub(super) async fn file_response(
    path: PathBuf,
    size: u64,
    slots: &Slots,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let response = Response::builder().header(header::CONTENT_TYPE, MIME_NAR);
    let (response, ByteRange { start, end }) = ranged(response, headers, size)?;
    if method == Method::HEAD {
        return Ok(response.body(Body::empty()).expect("valid response"));
    }
    let permit = slots.admit(Compression::None).await?;
    Ok(response.body(file_body(path, start, end, permit, slots.direct.clone())).expect("valid response"))
}

/// A body with no bytes and no known length, so that hyper announces no `Content-Length`
/// (for HEAD answers whose GET is streamed without one).
pub(super) fn unsized_empty_body() -> Body {
    Body::from_stream(futures_util::stream::empty::<Result<bytes::Bytes, io::Error>>())
}

/// A NAR file streamed as it is written (a proxied download, a bake); the body waits for a
/// permit of `admission` and holds it until it is dropped, and counts its abort there. The
/// writing itself goes on regardless.
///
/// When the narinfo gave the file's size, the response has `Content-Length` and
/// `Accept-Ranges`, and a `Range` is served from the bytes already downloaded, then as they
/// arrive: Nix resumes a broken transfer only from a response that announced both. Either
/// way the body ends cleanly only once the whole file is verified.
pub(super) async fn download_response(
    download: NarStream,
    slots: &Slots,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let response = Response::builder().header(header::CONTENT_TYPE, MIME_NAR);
    let (response, range) = match download.size() {
        Some(size) => {
            let (response, range) = ranged(response, headers, size)?;
            (response, Some(range))
        }
        None => (response, None),
    };
    if method == Method::HEAD {
        return Ok(response.body(unsized_empty_body()).expect("valid response"));
    }
    let permit = slots.admit(Compression::None).await?;
    let stream = match range {
        Some(ByteRange { start, end }) => download.into_range(start, end),
        None => download.into_stream(),
    };
    let stream = futures_util::StreamExt::map(stream, move |item| {
        if item.is_err() {
            permit.count_abort();
        }
        item
    });
    Ok(response.body(Body::from_stream(stream)).expect("valid response"))
}

/// Streams a local store path's NAR, encoded on the fly, or a byte range of the bare NAR.
///
/// The body waits for a permit of `admission` (HEAD requests and refused ranges do not).
pub(super) async fn local(
    root: PathBuf,
    size: u64,
    compression: Compression,
    levels: Levels,
    slots: &Slots,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let response = Response::builder().header(header::CONTENT_TYPE, MIME_NAR);
    if compression != Compression::None {
        if method == Method::HEAD {
            // The same headers as the GET: no length (an empty body would say 0).
            return Ok(response.body(unsized_empty_body()).expect("valid response"));
        }
        let permit = slots.admit(compression).await?;
        let body = admitted_body_from_writer(root.display().to_string(), permit, None, move |out| {
            compression::encode_on_the_fly(compression, levels, out, |w| {
                let mut exact = ExactWriter { inner: w, remaining: size };
                store_reader::nar::dump(&root, &mut exact).map_err(io::Error::other)?;
                exact.finish()
            })
        });
        return Ok(response.body(body).expect("valid response"));
    }
    let (response, ByteRange { start, end }) = ranged(response, headers, size)?;
    if method == Method::HEAD {
        return Ok(response.body(Body::empty()).expect("valid response"));
    }
    let permit = slots.admit(Compression::None).await?;
    let body = admitted_body_from_writer(root.display().to_string(), permit, slots.direct.clone(), move |mut out| {
        let mut exact = ExactWriter { inner: &mut out, remaining: end - start };
        store_reader::nar::dump_range_to(&root, start, end, &mut exact).map_err(io::Error::other)?;
        exact.finish()?;
        Ok(out)
    });
    Ok(response.body(body).expect("valid response"))
}

/// A NAR the proxy knows: a verified file from its cache (with `Range`), or the download in
/// progress, streamed as it arrives.
async fn proxied(
    state: &AppState,
    hash: &StorePathHash,
    nar_hash: NarHash,
    compression: Compression,
    slots: &Slots,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let proxy = state.proxy.as_ref().ok_or(AppError::NotFound)?;
    match proxy.nar(hash, &nar_hash, compression, slots.client).await.ok_or(AppError::NotFound)? {
        NarSource::Stream(download) => {
            sourced(download_response(download, slots, method, headers).await, BodySource::ProxyDownload)
        }
        NarSource::File { path, size } => {
            sourced(file_response(path, size, slots, method, headers).await, BodySource::ProxyCache)
        }
    }
}

/// Adds `Accept-Ranges`, `Content-Length` and, for a `Range` request, `206` and
/// `Content-Range`; returns the byte range to send.
fn ranged(
    mut response: axum::http::response::Builder,
    headers: &HeaderMap,
    size: u64,
) -> Result<(axum::http::response::Builder, ByteRange), AppError> {
    let range = range::parse(headers.get(header::RANGE), size)?;
    let ByteRange { start, end } = range.unwrap_or(ByteRange { start: 0, end: size });
    response = response.header(header::ACCEPT_RANGES, "bytes").header(header::CONTENT_LENGTH, end - start);
    if range.is_some() {
        let content_range = format!("bytes {start}-{}/{size}", end - 1);
        response = response
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, HeaderValue::from_str(&content_range).expect("ascii"));
    }
    Ok((response, ByteRange { start, end }))
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

impl<W: NarSink> NarSink for ExactWriter<W> {
    fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<Option<u64>> {
        if len > self.remaining {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "NAR is longer than the store DB says"));
        }
        let sent = self.inner.send_file(file, offset, len)?;
        self.remaining -= sent.unwrap_or(0);
        Ok(sent)
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
