//! guix publish's NAR URLs: `GET /nar/<compression>/<basename>` and `GET /nar/<basename>`.
//!
//! Every compression subserve can produce for Guix clients is served, whatever the narinfo
//! currently offers, so URLs cached by clients stay valid while the path does.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use formats::StorePath;
use upstream::NarSource;

use super::Slots;
use crate::compression::Compression;
use crate::error::AppError;
use crate::state::AppState;
use formats::Dialect;

/// `/nar/<basename>`: the bare NAR, with `Content-Length` and `Range`.
pub(super) async fn get_bare(
    state: State<Arc<AppState>>,
    Path(basename): Path<String>,
    slots: Slots,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    serve(state, Compression::None, &basename, &slots, &method, &headers).await
}

/// `/nar/<compression>/<basename>`: the NAR compressed on the fly (or baked), or a proxied
/// NAR in the compression its narinfo offered.
pub(super) async fn get(
    state: State<Arc<AppState>>,
    Path((compression, basename)): Path<(String, String)>,
    slots: Slots,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let compression: Compression = compression.parse().map_err(|_| AppError::NotFound)?;
    if compression == Compression::None {
        return Err(AppError::NotFound);
    }
    serve(state, compression, &basename, &slots, &method, &headers).await
}

async fn serve(
    State(state): State<Arc<AppState>>,
    compression: Compression,
    basename: &str,
    slots: &Slots,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let path = StorePath::from_basename(basename).map_err(|_| AppError::BadRequest("invalid store path name"))?;
    let info = match super::lookup(&state, path.hash()).await {
        Ok(info) => info,
        Err(AppError::NotFound) => return proxied(&state, &path, compression, slots, method, headers).await,
        Err(e) => return Err(e),
    };
    if info.path != path || !Dialect::Guix.can_offer(compression) {
        // Same hash part, another name: not the path this URL names.
        return Err(AppError::NotFound);
    }
    if let Some(baked) = super::nar::baked_file(&state, &info, compression).await {
        return super::nar::file_response(baked.path, baked.file_size, slots, method, headers).await;
    }
    let root = state.store.real_path(&info.path);
    super::nar::local(root, info.nar_size, compression, state.settings.levels, slots, method, headers).await
}

/// A NAR the Guix proxy offered: only under the name and compression of its narinfo.
async fn proxied(
    state: &AppState,
    path: &StorePath,
    compression: Compression,
    slots: &Slots,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let proxy = state.proxy.as_ref().ok_or(AppError::NotFound)?;
    let known = super::narinfo::proxied(proxy.guix_narinfo(path.hash(), slots.client).await)?;
    if known.store_path != *path {
        return Err(AppError::NotFound);
    }
    match proxy.guix_nar(path.hash(), compression, slots.client).await.ok_or(AppError::NotFound)? {
        NarSource::Stream(download) => super::nar::download_response(download, slots, method, headers).await,
        NarSource::File { path, size } => super::nar::file_response(path, size, slots, method, headers).await,
    }
}
