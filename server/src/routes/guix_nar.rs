//! guix publish's NAR URLs: `GET /nar/<compression>/<basename>` and `GET /nar/<basename>`.
//!
//! Every compression subserve can produce for Guix clients is served, whatever the narinfo
//! currently offers, so URLs cached by clients stay valid while the path does.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use formats::StorePath;

use crate::compression::Compression;
use crate::dialect::Dialect;
use crate::error::AppError;
use crate::state::AppState;

/// `/nar/<basename>`: the bare NAR, with `Content-Length` and `Range`.
pub(super) async fn get_bare(
    state: State<Arc<AppState>>,
    Path(basename): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    serve(state, Compression::None, &basename, &method, &headers).await
}

/// `/nar/<compression>/<basename>`: the NAR compressed on the fly.
pub(super) async fn get(
    state: State<Arc<AppState>>,
    Path((compression, basename)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let compression: Compression = compression.parse().map_err(|_| AppError::NotFound)?;
    if compression == Compression::None || !Dialect::Guix.can_offer(compression) {
        return Err(AppError::NotFound);
    }
    serve(state, compression, &basename, &method, &headers).await
}

async fn serve(
    State(state): State<Arc<AppState>>,
    compression: Compression,
    basename: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let path = StorePath::from_basename(basename).map_err(|_| AppError::BadRequest("invalid store path name"))?;
    let info = super::lookup(&state, path.hash().as_str()).await?;
    if info.path != path {
        // Same hash part, another name: not the path this URL names.
        return Err(AppError::NotFound);
    }
    let root = state.store.real_path(&info.path);
    super::nar::local(root, info.nar_size, compression, state.levels, method, headers)
}
