//! `GET /<hash>.narinfo`: the path's metadata in the store's dialect (Nix or Guix), signed
//! with our keys (composed by `crate::narinfo`), with a `Cache-Control` that Guix clients
//! honour for hits and misses.
//!
//! Local answers, rendered and signed, are kept for a short while in the state's
//! `NarinfoCache`, so a repeated request costs no signature, no DB read and no hop to the
//! blocking pool. Narinfo requests never wait for NAR admission.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use formats::guix::MIME_GUIX_NARINFO;
use formats::narinfo::MIME_NARINFO;
use formats::{Dialect, StorePathHash};
use upstream::Lookup;

use crate::error::AppError;
use crate::narinfo;
use crate::state::AppState;

/// `max-age` of a narinfo 404 that reflects upstream trouble rather than a real miss, so that
/// Guix clients ask again soon. (Nix 2.8 keeps every 404 for its own
/// `narinfo-cache-negative-ttl`, whatever it is told.)
const NOT_FOUND_FOR_NOW_MAX_AGE: u64 = 5;

/// `client` is the requester's IP address, for the proxy's per-client cap.
pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    hash: StorePathHash,
    client: Option<IpAddr>,
) -> Result<Response, AppError> {
    let mime = match state.settings.dialect {
        Dialect::Nix => MIME_NARINFO,
        Dialect::Guix => MIME_GUIX_NARINFO,
    };
    let body = body(&state, &hash, client).await;
    let cache_control = |hit| HeaderValue::from_str(&state.cache_control(hit)).expect("ascii");
    match body {
        Ok(body) => Ok((
            [(header::CONTENT_TYPE, HeaderValue::from_static(mime)), (header::CACHE_CONTROL, cache_control(true))],
            body,
        )
            .into_response()),
        Err(AppError::NotFound) => {
            let mut response = AppError::NotFound.into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, cache_control(false));
            Ok(response)
        }
        Err(AppError::NotFoundForNow) => {
            let mut response = AppError::NotFoundForNow.into_response();
            let max_age = NOT_FOUND_FOR_NOW_MAX_AGE.min(state.settings.negative_ttl.as_secs());
            let value = HeaderValue::from_str(&format!("max-age={max_age}")).expect("ascii");
            response.headers_mut().insert(header::CACHE_CONTROL, value);
            Ok(response)
        }
        Err(e) => Err(e),
    }
}

/// What the proxy found, or the kind of 404 its answer calls for.
pub(super) fn proxied<T>(lookup: Lookup<T>) -> Result<T, AppError> {
    match lookup {
        Lookup::Found(t) => Ok(t),
        Lookup::Absent => Err(AppError::NotFound),
        Lookup::Unavailable => Err(AppError::NotFoundForNow),
    }
}

/// The local store first; on a miss, the proxy (which answers "absent" or "absent for now"
/// for any upstream trouble, so a narinfo is never a 5xx because of an upstream).
async fn body(state: &Arc<AppState>, hash: &StorePathHash, client: Option<IpAddr>) -> Result<Bytes, AppError> {
    if let Some(body) = local_body(state, hash).await? {
        return Ok(body);
    }
    let proxy = state.proxy.as_ref().ok_or(AppError::NotFound)?;
    Ok(match state.settings.dialect {
        Dialect::Nix => narinfo::proxied_nix(state, proxied(proxy.narinfo(hash, client).await)?),
        Dialect::Guix => narinfo::proxied_guix(state, &proxied(proxy.guix_narinfo(hash, client).await)?)?,
    }
    .into())
}

/// The narinfo of a local path in the store's dialect, signed, or `None` if the store lacks
/// the path: from the narinfo cache while its entry is fresh (see `crate::narinfo_cache`),
/// else looked up, rendered and cached.
///
/// A narinfo of a path the baker wants names what is baked (or will be): it is cached with
/// the baker's generation, and lapses as soon as a bake lands or a file leaves the cache.
async fn local_body(state: &Arc<AppState>, hash: &StorePathHash) -> Result<Option<Bytes>, AppError> {
    let generation = state.baker.as_ref().map_or(0, |b| b.generation());
    if let Some(cached) = state.narinfo_cache.get(hash, generation) {
        return Ok(cached);
    }
    let (body, baked_at) = match super::lookup(state, hash).await {
        Ok(info) => {
            let baked_at = state.baker.as_ref().filter(|b| b.wants(info.nar_size)).map(|_| generation);
            (Some(Bytes::from(narinfo::local(state, &info).await?)), baked_at)
        }
        Err(AppError::NotFound) => (None, None),
        Err(e) => return Err(e),
    };
    state.narinfo_cache.insert(hash, body.clone(), baked_at);
    Ok(body)
}
