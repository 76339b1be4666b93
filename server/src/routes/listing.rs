//! `GET /<hash>.ls`: the JSON listing of a path's NAR, for tools that browse a cache without
//! downloading NARs (`nix store ls`; the Nix client itself never asks for it while
//! substituting).
//!
//! A listing is written as the walk goes, never built whole: a path of 20 000 files costs the
//! same few buffers as any other body, and like a NAR body it takes a stream slot, so a crowd
//! of listing requests queues rather than taking every blocking thread. The finished text of
//! a listing up to [`CACHED_LISTING_MAX`] is kept in a [`ListingCache`] by hash and NarHash
//! (a path rebuilt with other contents gets a new entry): a crowd asking for the same
//! listing costs one walk, and the rest are copies of shared bytes that need no slot.

use std::io::{self, Write};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use formats::{NarHash, StorePathHash};
use quick_cache::sync::Cache;

use super::Slots;
use crate::compression::Compression;
use crate::error::AppError;
use crate::state::AppState;
use crate::stream::admitted_body_from_writer;

/// Largest listing kept in the cache; larger ones are streamed on every request.
pub(super) const CACHED_LISTING_MAX: usize = 4 << 20;
/// Bytes of listings kept, per store.
const CACHE_BYTES: u64 = 32 << 20;

/// Recent listings by hash part and NarHash, bounded in bytes.
#[derive(Debug)]
pub struct ListingCache {
    entries: Cache<(StorePathHash, NarHash), Bytes, ListingWeight>,
}

#[derive(Debug, Clone, Copy)]
struct ListingWeight;

impl quick_cache::Weighter<(StorePathHash, NarHash), Bytes> for ListingWeight {
    fn weight(&self, _key: &(StorePathHash, NarHash), value: &Bytes) -> u64 {
        value.len() as u64 + 64
    }
}

impl Default for ListingCache {
    fn default() -> Self {
        Self { entries: Cache::with_weighter(1024, CACHE_BYTES, ListingWeight) }
    }
}

pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    hash: &StorePathHash,
    slots: &Slots,
    method: &Method,
) -> Result<Response, AppError> {
    let info = super::lookup(&state, hash).await?;
    let headers = [(header::CONTENT_TYPE, store_reader::listing::MIME_LISTING)];
    if method == Method::HEAD {
        return Ok((headers, super::nar::unsized_empty_body()).into_response());
    }
    let key = (info.path.hash().clone(), info.nar_hash);
    if let Some(text) = state.listings.entries.get(&key) {
        return Ok((headers, text).into_response());
    }
    let permit = slots.admit(Compression::None).await?;
    let root = state.store.real_path(&info.path);
    let cache = Arc::clone(&state);
    let body = admitted_body_from_writer(format!("listing of {}", info.path), permit, None, move |mut out| {
        let mut tee = Tee { out: &mut out, copy: Some(Vec::new()) };
        store_reader::listing::write_listing(&root, &mut tee).map_err(io::Error::other)?;
        if let Some(copy) = tee.copy {
            cache.listings.entries.insert(key, Bytes::from(copy));
        }
        Ok(out)
    });
    Ok((headers, body).into_response())
}

/// Passes everything to `out` and keeps a copy while it is at most [`CACHED_LISTING_MAX`].
struct Tee<'a, W> {
    out: &'a mut W,
    copy: Option<Vec<u8>>,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.out.write(data)?;
        if let Some(copy) = &mut self.copy {
            if copy.len() + n > CACHED_LISTING_MAX {
                self.copy = None;
            } else {
                copy.extend_from_slice(&data[..n]);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
