//! `GET /<hash>.ls`: the JSON listing of a path's NAR, for tools that browse a cache without
//! downloading NARs (the Nix client itself never asks for it).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::state::AppState;

pub(super) async fn get(State(state): State<Arc<AppState>>, hash: &str) -> Result<Response, AppError> {
    let info = super::lookup(&state, hash).await?;
    let root = state.store.real_path(&info.path);
    let listing = tokio::task::spawn_blocking(move || store_reader::listing::list(&root)).await??;
    let body = serde_json::to_string(&listing).expect("a listing always serialises");
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
