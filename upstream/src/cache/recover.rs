//! Crash recovery: on open, the cache area's files and its index are brought back in line,
//! whatever state a killed process left them in.
//!
//! The commit order makes this simple: a file reaches its final name only by an atomic
//! rename once complete, and the index records it after that (and forgets it before the file
//! is removed). So a file in `tmp/` is always partial, an index row without its file lost the
//! race with a crash or an operator, and a file without a row was never committed or was
//! being evicted. Entries written by a proxy of the other flavour go too: an area holds one.

use std::collections::HashSet;
use std::path::Path;

use formats::Compression;

use super::baked_file;
use super::index::Index;
use crate::{guix, Error};

/// Clears `tmp/`, drops entries whose file is gone and files no entry names (proxied and
/// baked), and retires entries of the other flavour; returns how many files and entries it
/// removed.
pub(super) fn recover(dir: &Path, index: &Index) -> Result<u64, Error> {
    let mut cleaned = 0;
    for hash in index.retire_other_flavours()? {
        let _ = std::fs::remove_file(dir.join(format!("{hash}.narinfo")));
        cleaned += 1;
    }
    let tmp = dir.join("tmp");
    for entry in std::fs::read_dir(&tmp).map_err(|e| Error::io(&tmp, e))?.flatten() {
        cleaned += u64::from(std::fs::remove_file(entry.path()).is_ok());
    }
    Ok(cleaned + proxied(dir, index)? + baked(dir, index)?)
}

/// Proxied entries: an entry whose NAR is gone goes with its narinfo; NAR files no entry
/// names go, in `nar/` and in the subdirectories Guix entries use (`nar/<compression>/`);
/// other subdirectories are not the area's and are left alone.
fn proxied(dir: &Path, index: &Index) -> Result<u64, Error> {
    let mut cleaned = 0;
    let mut known = HashSet::new();
    for (hash, file) in index.cached_files()? {
        if dir.join("nar").join(&file).is_file() {
            known.insert(file);
        } else {
            index.remove(&hash)?;
            let _ = std::fs::remove_file(dir.join(format!("{hash}.narinfo")));
            cleaned += 1;
        }
    }
    let nar = dir.join("nar");
    for entry in std::fs::read_dir(&nar).map_err(|e| Error::io(&nar, e))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            if !known.contains(&name) {
                cleaned += u64::from(std::fs::remove_file(entry.path()).is_ok());
            }
        } else if guix::nar_subdirectories().any(|s| s == name) {
            let sub = entry.path();
            for file in std::fs::read_dir(&sub).map_err(|e| Error::io(&sub, e))?.flatten() {
                if !known.contains(&format!("{name}/{}", file.file_name().to_string_lossy())) {
                    cleaned += u64::from(std::fs::remove_file(file.path()).is_ok());
                }
            }
        }
    }
    Ok(cleaned)
}

/// Baked files: entries without a file go, files without an entry go.
fn baked(dir: &Path, index: &Index) -> Result<u64, Error> {
    let mut cleaned = 0;
    let mut baked = HashSet::new();
    for (nar_hash, compression) in index.baked_files()? {
        let file = compression.parse::<Compression>().ok().map(|c| dir.join(baked_file(&nar_hash, c)));
        match file {
            Some(file) if file.is_file() => {
                baked.insert(file);
            }
            _ => {
                index.remove_baked(&nar_hash, &compression)?;
                cleaned += 1;
            }
        }
    }
    let baked_dir = dir.join("baked");
    for entry in std::fs::read_dir(&baked_dir).map_err(|e| Error::io(&baked_dir, e))?.flatten() {
        if !baked.contains(&entry.path()) {
            cleaned += u64::from(std::fs::remove_file(entry.path()).is_ok());
        }
    }
    Ok(cleaned)
}
