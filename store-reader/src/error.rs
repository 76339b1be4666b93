//! The one error type of the store reader: what went wrong, and on which path.

use std::io;
use std::path::PathBuf;

/// Why a store object could not be read, serialised or listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem call on `path` failed; a `NotFound` source means the object disappeared
    /// (mid-walk, if it was seen before).
    #[error("cannot read {}", path.display())]
    Io {
        /// The file, directory or symlink being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A socket, FIFO or device node, which a NAR cannot represent.
    #[error("{} has an unsupported file type ({kind})", path.display())]
    UnsupportedFileType {
        /// The offending filesystem object.
        path: PathBuf,
        /// What it is: `socket`, `fifo`, `block device`, `character device` or `unknown`.
        kind: &'static str,
    },
    /// A regular file's size changed between the `stat` whose size went into the NAR and the
    /// reading of its contents; the NAR written so far is unusable.
    #[error("{} changed while being read: expected {expected} bytes, found {actual}", path.display())]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// Its size when it was stat'ed.
        expected: u64,
        /// Its size as observed later: the bytes it yielded before the end of file when it
        /// shrank, its new `fstat` size when it grew (at least `expected + 1`).
        actual: u64,
    },
    /// The store directory does not exist or is not a directory.
    #[error("store directory {} does not exist", path.display())]
    NoStoreDir {
        /// The physical store directory.
        path: PathBuf,
    },
    /// The store database file does not exist.
    #[error("store database {} does not exist", path.display())]
    NoDb {
        /// The database path.
        path: PathBuf,
    },
    /// The file opens but has no `ValidPaths` table.
    #[error("{} is not a Nix or Guix store database (no ValidPaths table)", path.display())]
    NotAStoreDb {
        /// The database path.
        path: PathBuf,
    },
    /// SQLite failed.
    #[error("cannot query store database {}", path.display())]
    Db {
        /// The database path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// A `ValidPaths` row that does not parse (a path outside the store dir, a bad hash).
    #[error("store database row for {path:?} is corrupt: {what}")]
    CorruptRow {
        /// The row's `path` column.
        path: String,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The DB stayed locked by a writer past the busy timeout, and no recent lookup of the
    /// path could answer instead.
    #[error("store database {} is locked by a writer", path.display())]
    Busy {
        /// The database path.
        path: PathBuf,
    },
    /// The output writer failed (e.g. the client went away).
    #[error("cannot write the nar")]
    Write(#[source] io::Error),
}

impl Error {
    /// An [`Error::Io`] on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
