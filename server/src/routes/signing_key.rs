//! `GET /signing-key.pub`: the Guix public key narinfos are signed with, in the exact form
//! `guix archive --authorize` takes, as guix publish serves it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::state::AppState;

pub(super) async fn get(State(state): State<Arc<AppState>>) -> Result<Response, AppError> {
    let key = state.signer.guix_key().ok_or(AppError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], key.public_sexp()).into_response())
}
