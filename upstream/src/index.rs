//! The cache index: one SQLite database beside the cached files, recording which narinfos we
//! hold (and whether their NAR is on disk), recent misses, and when each entry was last used.
//!
//! Every operation is one short statement or transaction on one connection; the index is
//! small and its writes are rare next to the bytes they describe.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::Error;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS narinfo (
    hash          TEXT PRIMARY KEY NOT NULL,  -- store path hash part
    narinfo       TEXT NOT NULL,              -- as served, without our own signatures
    nar_file      TEXT NOT NULL,              -- file name under nar/
    upstream_url  TEXT NOT NULL,              -- absolute URL of the NAR upstream
    file_size     INTEGER,                    -- size of nar/<nar_file> once cached
    nar_cached    INTEGER NOT NULL DEFAULT 0, -- 1 once the verified NAR is in nar/
    last_access   INTEGER NOT NULL            -- unix seconds, for LRU eviction
);
CREATE INDEX IF NOT EXISTS narinfo_lru ON narinfo (nar_cached, last_access);
CREATE TABLE IF NOT EXISTS negative (
    hash    TEXT PRIMARY KEY NOT NULL,
    expires INTEGER NOT NULL                  -- unix seconds
);
";

/// One cached narinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) narinfo: String,
    pub(crate) nar_file: String,
    pub(crate) upstream_url: String,
    pub(crate) nar_cached: bool,
    pub(crate) file_size: Option<u64>,
}

pub(crate) struct Index {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Index {
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let err = |source| Error::Index { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self { path: path.to_path_buf(), conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, Error> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn).map_err(|source| Error::Index { path: self.path.clone(), source })
    }

    pub(crate) fn get(&self, hash: &str) -> Result<Option<Entry>, Error> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT narinfo, nar_file, upstream_url, nar_cached, file_size FROM narinfo WHERE hash = ?1",
            )?
            .query_row([hash], |r| {
                Ok(Entry {
                    narinfo: r.get(0)?,
                    nar_file: r.get(1)?,
                    upstream_url: r.get(2)?,
                    nar_cached: r.get(3)?,
                    file_size: r.get::<_, Option<i64>>(4)?.map(|s| s as u64),
                })
            })
            .optional()
        })
    }

    pub(crate) fn touch(&self, hash: &str, now: i64) -> Result<(), Error> {
        self.with(|c| {
            c.prepare_cached("UPDATE narinfo SET last_access = ?2 WHERE hash = ?1")?.execute(params![hash, now])
        })
        .map(drop)
    }

    /// Records a verified narinfo whose NAR is not fetched yet; clears a negative entry.
    pub(crate) fn put_narinfo(
        &self,
        hash: &str,
        narinfo: &str,
        nar_file: &str,
        upstream_url: &str,
        now: i64,
    ) -> Result<(), Error> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "INSERT INTO narinfo (hash, narinfo, nar_file, upstream_url, last_access) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (hash) DO UPDATE SET narinfo = ?2, nar_file = ?3, upstream_url = ?4, last_access = ?5
                 WHERE nar_cached = 0",
                params![hash, narinfo, nar_file, upstream_url, now],
            )?;
            tx.execute("DELETE FROM negative WHERE hash = ?1", [hash])?;
            tx.commit()
        })
    }

    /// Marks the NAR of `hash` as present on disk with `file_size` bytes.
    pub(crate) fn set_nar_cached(&self, hash: &str, file_size: u64, now: i64) -> Result<(), Error> {
        self.with(|c| {
            c.execute(
                "UPDATE narinfo SET nar_cached = 1, file_size = ?2, last_access = ?3 WHERE hash = ?1",
                params![hash, file_size as i64, now],
            )
        })
        .map(drop)
    }

    pub(crate) fn is_negative(&self, hash: &str, now: i64) -> Result<bool, Error> {
        self.with(|c| {
            c.prepare_cached("SELECT 1 FROM negative WHERE hash = ?1 AND expires > ?2")?
                .query_row(params![hash, now], |_| Ok(()))
                .optional()
                .map(|r| r.is_some())
        })
    }

    pub(crate) fn put_negative(&self, hash: &str, expires: i64) -> Result<(), Error> {
        self.with(|c| {
            c.prepare_cached("INSERT OR REPLACE INTO negative (hash, expires) VALUES (?1, ?2)")?
                .execute(params![hash, expires])
        })
        .map(drop)
    }

    /// Drops expired negative entries.
    pub(crate) fn prune_negative(&self, now: i64) -> Result<(), Error> {
        self.with(|c| c.execute("DELETE FROM negative WHERE expires <= ?1", [now])).map(drop)
    }

    /// Total size of the cached NAR files.
    pub(crate) fn cached_bytes(&self) -> Result<u64, Error> {
        self.with(|c| {
            c.query_row("SELECT COALESCE(SUM(file_size), 0) FROM narinfo WHERE nar_cached = 1", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|s| s as u64)
    }

    /// Cached entries, least recently used first: (hash, nar file, size).
    pub(crate) fn lru(&self, limit: usize) -> Result<Vec<(String, String, u64)>, Error> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT hash, nar_file, file_size FROM narinfo WHERE nar_cached = 1 ORDER BY last_access LIMIT ?1",
            )?
            .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))?
            .collect()
        })
    }

    /// Every entry whose NAR is recorded as cached: (hash, nar file).
    pub(crate) fn cached_files(&self) -> Result<Vec<(String, String)>, Error> {
        self.with(|c| {
            c.prepare("SELECT hash, nar_file FROM narinfo WHERE nar_cached = 1")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    pub(crate) fn remove(&self, hash: &str) -> Result<(), Error> {
        self.with(|c| c.execute("DELETE FROM narinfo WHERE hash = ?1", [hash])).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_negatives_and_lru() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        assert_eq!(index.get("a").unwrap(), None);
        index.put_negative("a", 100).unwrap();
        assert!(index.is_negative("a", 99).unwrap());
        assert!(!index.is_negative("a", 100).unwrap());
        index.put_narinfo("a", "text-a", "a.nar.xz", "http://u/a.nar.xz", 10).unwrap();
        assert!(!index.is_negative("a", 99).unwrap(), "a positive entry clears the negative one");
        index.put_narinfo("b", "text-b", "b.nar", "http://u/b.nar", 20).unwrap();
        assert_eq!(index.cached_bytes().unwrap(), 0);
        index.set_nar_cached("a", 1000, 30).unwrap();
        index.set_nar_cached("b", 500, 25).unwrap();
        assert_eq!(index.cached_bytes().unwrap(), 1500);
        assert_eq!(index.lru(10).unwrap()[0].0, "b");
        index.touch("b", 40).unwrap();
        assert_eq!(index.lru(10).unwrap()[0].0, "a");
        // A cached entry is not overwritten by a later narinfo from another upstream.
        index.put_narinfo("a", "other", "x", "y", 50).unwrap();
        assert_eq!(index.get("a").unwrap().unwrap().narinfo, "text-a");
        index.remove("a").unwrap();
        assert_eq!(index.get("a").unwrap(), None);
        assert_eq!(index.cached_files().unwrap(), vec![("b".to_owned(), "b.nar".to_owned())]);
    }
}
