//! Extractors that parse a request's file name once, at the edge: handlers get typed values
//! (a [`StorePathHash`], a [`NarFile`]) and never a string to parse again.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use formats::nar_file::NarFileError;
use formats::{NarFile, StorePathHash};

use crate::error::AppError;
use crate::state::AppState;

/// The one path segment under a store's root that names a path: `<hash>.narinfo` or
/// `<hash>.ls`. Anything else there is not found; a malformed hash is a bad request.
pub(super) enum TopLevelFile {
    /// `<hash>.narinfo`.
    Narinfo(StorePathHash),
    /// `<hash>.ls`.
    Listing(StorePathHash),
}

impl FromRequestParts<Arc<AppState>> for TopLevelFile {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let Path(file) = Path::<String>::from_request_parts(parts, state).await.map_err(|_| AppError::NotFound)?;
        let (hash, kind): (&str, fn(StorePathHash) -> Self) = if let Some(hash) = file.strip_suffix(".narinfo") {
            (hash, TopLevelFile::Narinfo)
        } else if let Some(hash) = file.strip_suffix(".ls") {
            (hash, TopLevelFile::Listing)
        } else {
            return Err(AppError::NotFound);
        };
        Ok(kind(hash_part(hash)?))
    }
}

/// `nar/<hash>-<narhash>.nar<ext>`'s file name, parsed by [`NarFile`]: a name that is no
/// NAR's is not found, a NAR name with malformed hashes a bad request.
pub(super) struct NarFileName(pub(super) NarFile);

impl FromRequestParts<Arc<AppState>> for NarFileName {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let Path(file) = Path::<String>::from_request_parts(parts, state).await.map_err(|_| AppError::NotFound)?;
        match NarFile::parse(&file) {
            Ok(nar) => Ok(NarFileName(nar)),
            Err(NarFileError::NotANar) => Err(AppError::NotFound),
            Err(NarFileError::Malformed(why)) => Err(AppError::BadRequest(why)),
        }
    }
}

/// A store path hash part taken from a URL.
pub(super) fn hash_part(text: &str) -> Result<StorePathHash, AppError> {
    StorePathHash::parse(text).map_err(|_| AppError::BadRequest("invalid store path hash"))
}
