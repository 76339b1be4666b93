//! `GET /file/<name>/sha256/<nix32>`: the contents of a flat fixed-output store item, by name
//! and content hash, for Guix's content-addressed download fallback (`guix download`, origins
//! whose upstream URL died).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use formats::store_path::fixed_output_path;
use formats::NarHash;

use super::Slots;
use crate::compression::Compression;
use crate::error::AppError;
use crate::state::AppState;
use crate::stream::file_body;

pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    Path((name, hash)): Path<(String, String)>,
    slots: Slots,
    method: Method,
) -> Result<Response, AppError> {
    let content = NarHash::from_nix32(&hash).map_err(|_| AppError::BadRequest("invalid sha256 hash"))?;
    let path = fixed_output_path(state.store.store_dir(), &name, &content)
        .map_err(|_| AppError::BadRequest("invalid file name"))?;
    let info = super::lookup(&state, path.hash()).await?;
    if info.path != path {
        return Err(AppError::NotFound);
    }
    let real = state.store.real_path(&info.path);
    let meta = tokio::fs::symlink_metadata(&real).await.map_err(|_| AppError::NotFound)?;
    if !meta.is_file() {
        // A recursive (directory) item: its NAR is served under /nar, not here.
        return Err(AppError::NotFound);
    }
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_LENGTH, meta.len().to_string()),
    ];
    if method == Method::HEAD {
        return Ok(headers.into_response());
    }
    let permit = slots.admit(Compression::None).await?;
    Ok((headers, file_body(real, 0, meta.len(), permit, slots.direct)).into_response())
}
