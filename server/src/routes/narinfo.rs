//! `GET /<hash>.narinfo`: the path's metadata in Nix's dialect, signed with our keys.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use formats::narinfo::{fingerprint, MIME_NARINFO};
use formats::NarInfo;
use store_reader::PathInfo;

use crate::compression::Compression;
use crate::error::AppError;
use crate::state::AppState;

pub(super) async fn get(State(state): State<Arc<AppState>>, hash: &str) -> Result<Response, AppError> {
    let info = super::lookup(&state, hash).await?;
    let body = render(&state, &info);
    Ok(([(header::CONTENT_TYPE, MIME_NARINFO)], body).into_response())
}

/// The URL of `info`'s NAR with `compression`: `nar/<store hash>-<nar hash>.nar[.ext]`.
///
/// Both hashes are in the URL so that it stays valid for exactly as long as the path keeps
/// the same contents; a rebuilt path with another NarHash gets a new URL. This is also
/// nix-serve's layout, so URLs cached by clients of nix-serve keep working.
pub(crate) fn nar_url(info: &PathInfo, compression: Compression) -> String {
    format!("nar/{}-{}.nar{}", info.path.hash(), info.nar_hash.to_nix32(), compression.extension())
}

/// Renders the narinfo, keeping the signatures the DB has and adding one per configured key.
pub(crate) fn render(state: &AppState, info: &PathInfo) -> String {
    let store_dir = state.store.store_dir();
    let store_path = info.path.absolute(store_dir);
    let full_refs: Vec<String> = info.references.iter().map(|r| r.absolute(store_dir)).collect();
    let fp = fingerprint(&store_path, &info.nar_hash, info.nar_size, &full_refs);
    let mut sigs = info.sigs.clone();
    sigs.extend(state.keys.iter().map(|k| k.sign(&fp)));
    let uncompressed = state.compression == Compression::None;
    NarInfo {
        store_path,
        url: nar_url(info, state.compression),
        compression: state.compression.name().to_owned(),
        // The bare NAR's file is the NAR itself; compressed sizes are unknown until streamed.
        file_hash: uncompressed.then_some(info.nar_hash),
        file_size: uncompressed.then_some(info.nar_size),
        nar_hash: info.nar_hash,
        nar_size: info.nar_size,
        references: info.references.iter().map(|r| r.basename()).collect(),
        deriver: info.deriver.as_ref().map(|d| d.basename()),
        sigs,
        ca: info.ca.clone(),
    }
    .render()
}
