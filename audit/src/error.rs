//! Errors of the audit trail: where the database is, and what SQLite said.

use std::path::PathBuf;

/// Why the audit database could not be opened or queried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be opened or set up.
    #[error("audit database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("audit database query: {source}")]
    Query {
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// There is no audit database where it was looked for.
    #[error("no audit database at {} (is the audit trail on, and is this the server's state dir?)", path.display())]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The writer thread could not be started.
    #[error("starting the audit writer thread: {source}")]
    Thread {
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

impl From<rusqlite::Error> for Error {
    fn from(source: rusqlite::Error) -> Self {
        Error::Query { source }
    }
}
