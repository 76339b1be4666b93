//! `GET /log/<drv basename>`: a build log from the store's log directory, decompressed.
//!
//! Nix keeps logs as `<log dir>/<first 2 chars>/<rest>` plus `.bz2` when compressed. The name
//! is validated as a store path basename before it touches the filesystem, so no URL can
//! reach outside the log directory.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use formats::StorePath;

use crate::error::AppError;
use crate::state::AppState;
use crate::stream::body_from_writer;

pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    Path(drv): Path<String>,
    method: Method,
) -> Result<Response, AppError> {
    let drv = StorePath::from_basename(&drv).map_err(|_| AppError::BadRequest("invalid derivation name"))?;
    let base = drv.basename();
    let dir = state.log_dir.join(&base[..2]);
    let candidates = [(dir.join(&base[2..]), false), (dir.join(format!("{}.bz2", &base[2..])), true)];
    let found = tokio::task::spawn_blocking(move || open_first(candidates)).await?;
    let Some((file, bzip2)) = found else { return Err(AppError::NotFound) };
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if method == Method::HEAD {
        return Ok(headers.into_response());
    }
    let body = body_from_writer(format!("log of {base}"), move |mut out| {
        if bzip2 {
            io::copy(&mut bzip2::read::MultiBzDecoder::new(io::BufReader::new(file)), &mut out)?;
        } else {
            io::copy(&mut io::BufReader::new(file), &mut out)?;
        }
        Ok(out)
    });
    Ok((headers, body).into_response())
}

fn open_first(candidates: [(PathBuf, bool); 2]) -> Option<(File, bool)> {
    candidates.into_iter().find_map(|(path, bz)| {
        let file = File::open(&path).ok()?;
        file.metadata().ok()?.is_file().then_some((file, bz))
    })
}
