//! `GET /nix-cache-info`: the first thing every Nix client asks, before any narinfo.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::state::AppState;

/// MIME type Nix uses for `nix-cache-info`.
pub(crate) const MIME_CACHE_INFO: &str = "text/x-nix-cache-info";

/// `StoreDir` must equal the client's store dir or the cache is ignored; `WantMassQuery: 1`
/// lets `nix-env -qas` and friends use us.
pub(super) async fn get(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let body =
        format!("StoreDir: {}\nWantMassQuery: 1\nPriority: {}\n", state.store.store_dir(), state.settings.priority);
    ([(header::CONTENT_TYPE, MIME_CACHE_INFO)], body)
}
