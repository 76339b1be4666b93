//! One owner per cache directory: the process that opens a cache area holds an exclusive lock
//! on its `lock` file for as long as it runs, and a cache area that belongs to another store
//! is refused, never rewritten.
//!
//! Two processes on one cache directory would each take the other's downloads in progress
//! for crash leftovers and delete them, and evict each other's files; a Guix server started
//! on a Nix server's cache would drop its entries. The lock is `flock`-style, so it is gone
//! when the process is, however it ends: a crashed owner leaves nothing to clean up.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::Path;

use crate::Error;

/// The lock on a cache directory, held until dropped.
#[derive(Debug)]
pub(crate) struct Owner {
    _file: File,
}

impl Owner {
    /// Locks `dir/lock` and writes this process's id into it; fails naming the holder when
    /// another process has it.
    pub(crate) fn lock(dir: &Path) -> Result<Self, Error> {
        let path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if let Err(e) = file.try_lock() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::InUse {
                dir: dir.to_owned(),
                holder: if holder.is_empty() { "another process".into() } else { format!("process {holder}") },
                detail: e.to_string(),
            });
        }
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        file.rewind().map_err(|e| Error::io(&path, e))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
        Ok(Self { _file: file })
    }
}

/// Refuses a cache directory whose `nix-cache-info` names another store directory than
/// `store_dir`: it is another store's cache, and opening it would drop that store's entries.
pub(crate) fn check_store_dir(dir: &Path, store_dir: &str) -> Result<(), Error> {
    let info = dir.join("nix-cache-info");
    let text = match std::fs::read_to_string(&info) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&info, e)),
    };
    let found = text.lines().find_map(|l| l.strip_prefix("StoreDir:")).map(str::trim);
    match found {
        Some(found) if found != store_dir => {
            Err(Error::OtherStore { dir: dir.to_owned(), found: found.to_owned(), expected: store_dir.to_owned() })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_naming_the_first_and_the_lock_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = Owner::lock(dir.path()).unwrap();
        let err = Owner::lock(dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&format!("process {}", std::process::id())), "{message}");
        assert!(message.contains(&dir.path().display().to_string()), "{message}");
        drop(first);
        Owner::lock(dir.path()).unwrap();
    }

    #[test]
    fn another_stores_cache_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        check_store_dir(dir.path(), "/gnu/store").unwrap();
        let info = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 50\n";
        std::fs::write(dir.path().join("nix-cache-info"), info).unwrap();
        check_store_dir(dir.path(), "/nix/store").unwrap();
        let err = check_store_dir(dir.path(), "/gnu/store").unwrap_err().to_string();
        assert!(err.contains("/nix/store") && err.contains("/gnu/store"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.path().join("nix-cache-info")).unwrap(), info);
    }
}
