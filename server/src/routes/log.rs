//! `GET /log/<drv basename>`: a build log from the store's log directory.
//!
//! Logs are kept as `<log dir>/<first 2 chars>/<rest>`, plain or with `.bz2` (Nix) or `.gz`
//! (Guix). They are sent decompressed as `text/plain`, except `.gz` logs to Guix clients,
//! which get the file as it is with `Content-Encoding: gzip`, as guix publish sends them. The
//! name is validated as a store path basename before it touches the filesystem, so no URL can
//! reach outside the log directory.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use formats::StorePath;

use super::Slots;
use crate::compression::Compression;
use crate::error::AppError;
use crate::state::AppState;
use crate::stream::admitted_body_from_writer;
use formats::Dialect;

/// How a log file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Plain,
    Bzip2,
    Gzip,
}

pub(super) async fn get(
    State(state): State<Arc<AppState>>,
    Path(drv): Path<String>,
    slots: Slots,
    method: Method,
) -> Result<Response, AppError> {
    let drv = StorePath::from_basename(&drv).map_err(|_| AppError::BadRequest("invalid derivation name"))?;
    if state.settings.publish != crate::settings::Publish::All {
        // Under a policy, a log is served only for a derivation the policy publishes.
        let info = super::lookup(&state, drv.hash()).await?;
        if info.path != drv {
            return Err(AppError::NotFound);
        }
    }
    let base = drv.basename();
    let dir = state.settings.log_dir.join(&base[..2]);
    let rest = &base[2..];
    let candidates = [
        (dir.join(rest), Stored::Plain),
        (dir.join(format!("{rest}.bz2")), Stored::Bzip2),
        (dir.join(format!("{rest}.gz")), Stored::Gzip),
    ];
    let found = state.admission.blocking(move || open_first(candidates)).await?;
    let Some((file, stored)) = found else { return Err(AppError::NotFound) };
    let raw_gzip = stored == Stored::Gzip && state.settings.dialect == Dialect::Guix;
    let mut response = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")]).into_response();
    if raw_gzip {
        response.headers_mut().insert(header::CONTENT_ENCODING, header::HeaderValue::from_static("gzip"));
    }
    if method == Method::HEAD {
        // The GET streams without a length; so does its HEAD.
        *response.body_mut() = super::nar::unsized_empty_body();
        return Ok(response);
    }
    // A log body costs what a NAR body does (a blocking thread, buffers): it takes a slot.
    let permit = slots.admit(Compression::None).await?;
    let body = admitted_body_from_writer(format!("log of {base}"), permit, None, move |mut out| {
        let mut input = io::BufReader::new(file);
        match stored {
            Stored::Bzip2 => io::copy(&mut bzip2::read::MultiBzDecoder::new(input), &mut out)?,
            Stored::Gzip if !raw_gzip => io::copy(&mut flate2::read::MultiGzDecoder::new(input), &mut out)?,
            _ => io::copy(&mut input, &mut out)?,
        };
        Ok(out)
    });
    *response.body_mut() = body;
    Ok(response)
}

fn open_first(candidates: [(PathBuf, Stored); 3]) -> Option<(File, Stored)> {
    candidates.into_iter().find_map(|(path, stored)| {
        let file = File::open(&path).ok()?;
        file.metadata().ok()?.is_file().then_some((file, stored))
    })
}
