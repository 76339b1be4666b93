//! The cache index: one SQLite database beside the cached files, recording which narinfos we
//! hold (and whether their NAR is on disk), recent misses, and when each entry was last used.
//!
//! Every operation is one short statement or transaction on one connection; the index is
//! small and its writes are rare next to the bytes they describe.
//!
//! Each row records the flavour (Nix or Guix) it was written by. An index from before
//! flavours existed gains the column on open, its rows counted as Nix; rows of the other
//! flavour than the proxy's are retired on open (a cache directory holds one flavour).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::{Dialect, Error};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS narinfo (
    hash          TEXT PRIMARY KEY NOT NULL,  -- store path hash part
    narinfo       TEXT NOT NULL,              -- as served, without our own signatures
    flavour       TEXT NOT NULL DEFAULT 'nix',-- 'nix' or 'guix': how `narinfo` reads
    nar_file      TEXT NOT NULL,              -- file name under nar/
    upstream_url  TEXT NOT NULL,              -- absolute URL of the NAR upstream
    file_size     INTEGER,                    -- size of nar/<nar_file> once cached
    nar_cached    INTEGER NOT NULL DEFAULT 0, -- 1 once the verified NAR is in nar/
    last_access   INTEGER NOT NULL            -- unix seconds, for LRU eviction
);
CREATE INDEX IF NOT EXISTS narinfo_lru ON narinfo (nar_cached, last_access);
CREATE TABLE IF NOT EXISTS baked (
    nar_hash     TEXT NOT NULL,               -- NarHash of the NAR, nix32
    compression  TEXT NOT NULL,               -- zstd, xz
    file_size    INTEGER NOT NULL,            -- size of baked/<nar_hash>.nar<ext>
    file_hash    TEXT NOT NULL,               -- sha256:<nix32> of that file
    last_access  INTEGER NOT NULL,            -- unix milliseconds, for LRU eviction
    PRIMARY KEY (nar_hash, compression)
);
CREATE INDEX IF NOT EXISTS baked_lru ON baked (last_access);
CREATE TABLE IF NOT EXISTS negative (
    hash    TEXT PRIMARY KEY NOT NULL,
    expires INTEGER NOT NULL,                 -- unix seconds
    flavour TEXT NOT NULL DEFAULT 'nix'
);
";

/// Tables that gained a `flavour` column after their first release.
const FLAVOURED: [&str; 2] = ["narinfo", "negative"];

/// A cached file eviction may remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Victim {
    /// A proxied NAR with its narinfo.
    Proxied { hash: String, nar_file: String, size: u64 },
    /// A baked NAR.
    Baked { nar_hash: String, compression: String, size: u64 },
}

/// One cached narinfo, of the index's flavour.
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
    /// The flavour of every row this index reads or writes.
    flavour: &'static str,
}

impl Index {
    /// Opens (or creates) the index of a `flavour` proxy, adding the `flavour` column to an
    /// index written before it existed.
    pub(crate) fn open(path: &Path, flavour: Dialect) -> Result<Self, Error> {
        let err = |source| Error::Index { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        for table in FLAVOURED {
            let has_flavour: bool = conn
                .query_row("SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = 'flavour'", [table], |r| {
                    r.get(0)
                })
                .map_err(err)?;
            if !has_flavour {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN flavour TEXT NOT NULL DEFAULT 'nix'"))
                    .map_err(err)?;
            }
        }
        Ok(Self { path: path.to_path_buf(), conn: Mutex::new(conn), flavour: flavour.name() })
    }

    /// Deletes the entries and misses another flavour wrote; returns the retired entries'
    /// hashes, whose narinfo files the caller removes (their NARs become files no entry names).
    pub(crate) fn retire_other_flavours(&self) -> Result<Vec<String>, Error> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let hashes = tx
                .prepare("SELECT hash FROM narinfo WHERE flavour != ?1")?
                .query_map([self.flavour], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            tx.execute("DELETE FROM narinfo WHERE flavour != ?1", [self.flavour])?;
            tx.execute("DELETE FROM negative WHERE flavour != ?1", [self.flavour])?;
            tx.commit()?;
            Ok(hashes)
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, Error> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn).map_err(|source| Error::Index { path: self.path.clone(), source })
    }

    pub(crate) fn get(&self, hash: &str) -> Result<Option<Entry>, Error> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT narinfo, nar_file, upstream_url, nar_cached, file_size FROM narinfo
                 WHERE hash = ?1 AND flavour = ?2",
            )?
            .query_row([hash, self.flavour], |r| {
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
                "INSERT INTO narinfo (hash, narinfo, nar_file, upstream_url, last_access, flavour)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (hash) DO UPDATE SET narinfo = ?2, nar_file = ?3, upstream_url = ?4, last_access = ?5,
                 flavour = ?6 WHERE nar_cached = 0",
                params![hash, narinfo, nar_file, upstream_url, now, self.flavour],
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
            c.prepare_cached("SELECT 1 FROM negative WHERE hash = ?1 AND expires > ?2 AND flavour = ?3")?
                .query_row(params![hash, now, self.flavour], |_| Ok(()))
                .optional()
                .map(|r| r.is_some())
        })
    }

    pub(crate) fn put_negative(&self, hash: &str, expires: i64) -> Result<(), Error> {
        self.with(|c| {
            c.prepare_cached("INSERT OR REPLACE INTO negative (hash, expires, flavour) VALUES (?1, ?2, ?3)")?
                .execute(params![hash, expires, self.flavour])
        })
        .map(drop)
    }

    /// How many misses of this flavour are remembered and not yet expired at `now`.
    pub(crate) fn misses_count(&self, now: i64) -> Result<u64, Error> {
        self.with(|c| {
            c.prepare_cached("SELECT count(*) FROM negative WHERE expires > ?1 AND flavour = ?2")?
                .query_row(params![now, self.flavour], |r| r.get::<_, i64>(0))
        })
        .map(|n| n as u64)
    }

    /// Drops every negative entry of this flavour.
    pub(crate) fn clear_negative(&self) -> Result<(), Error> {
        self.with(|c| c.execute("DELETE FROM negative WHERE flavour = ?1", [self.flavour])).map(drop)
    }

    /// Drops expired negative entries.
    pub(crate) fn prune_negative(&self, now: i64) -> Result<(), Error> {
        self.with(|c| c.execute("DELETE FROM negative WHERE expires <= ?1", [now])).map(drop)
    }

    /// Total size of the cached NAR files, proxied and baked.
    pub(crate) fn cached_bytes(&self) -> Result<u64, Error> {
        self.with(|c| {
            c.query_row(
                "SELECT (SELECT COALESCE(SUM(file_size), 0) FROM narinfo WHERE nar_cached = 1)
                      + (SELECT COALESCE(SUM(file_size), 0) FROM baked)",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|s| s as u64)
    }

    /// How many NAR files are cached, proxied and baked.
    pub(crate) fn cached_files_count(&self) -> Result<u64, Error> {
        self.with(|c| {
            c.query_row(
                "SELECT (SELECT count(*) FROM narinfo WHERE nar_cached = 1) + (SELECT count(*) FROM baked)",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n as u64)
    }

    /// Cached files, proxied and baked, least recently used first.
    pub(crate) fn lru(&self, limit: usize) -> Result<Vec<Victim>, Error> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT 0, hash, nar_file, file_size, last_access * 1000 AS t FROM narinfo WHERE nar_cached = 1
                 UNION ALL SELECT 1, nar_hash, compression, file_size, last_access AS t FROM baked
                 ORDER BY t LIMIT ?1",
            )?
            .query_map([limit as i64], |r| {
                let (key, file, size) = (r.get(1)?, r.get(2)?, r.get::<_, i64>(3)? as u64);
                Ok(if r.get::<_, i64>(0)? == 0 {
                    Victim::Proxied { hash: key, nar_file: file, size }
                } else {
                    Victim::Baked { nar_hash: key, compression: file, size }
                })
            })?
            .collect()
        })
    }

    /// A baked file's size and hash, touching it for LRU: (file size, `sha256:<nix32>`).
    pub(crate) fn get_baked(
        &self,
        nar_hash: &str,
        compression: &str,
        now_ms: i64,
    ) -> Result<Option<(u64, String)>, Error> {
        self.with(|c| {
            let found = c
                .prepare_cached("SELECT file_size, file_hash FROM baked WHERE nar_hash = ?1 AND compression = ?2")?
                .query_row([nar_hash, compression], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
                .optional()?;
            if found.is_some() {
                c.prepare_cached("UPDATE baked SET last_access = ?3 WHERE nar_hash = ?1 AND compression = ?2")?
                    .execute(params![nar_hash, compression, now_ms])?;
            }
            Ok(found)
        })
    }

    /// Records a baked file that is in place.
    pub(crate) fn put_baked(
        &self,
        nar_hash: &str,
        compression: &str,
        file_size: u64,
        file_hash: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO baked (nar_hash, compression, file_size, file_hash, last_access)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![nar_hash, compression, file_size as i64, file_hash, now_ms],
            )
        })
        .map(drop)
    }

    pub(crate) fn remove_baked(&self, nar_hash: &str, compression: &str) -> Result<(), Error> {
        self.with(|c| c.execute("DELETE FROM baked WHERE nar_hash = ?1 AND compression = ?2", [nar_hash, compression]))
            .map(drop)
    }

    /// Every baked file: (NarHash nix32, compression).
    pub(crate) fn baked_files(&self) -> Result<Vec<(String, String)>, Error> {
        self.with(|c| {
            c.prepare("SELECT nar_hash, compression FROM baked")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
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

    /// Forgets narinfos whose NAR was never fetched and that nobody asked for since `cutoff`
    /// (unix seconds); returns how many. They hold no file, and would otherwise pile up.
    pub(crate) fn prune_uncached(&self, cutoff: i64) -> Result<usize, Error> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM narinfo WHERE nar_cached = 0 AND last_access < ?1 AND flavour = ?2")?
                .execute(params![cutoff, self.flavour])
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
        let index = Index::open(&dir.path().join("index.sqlite"), Dialect::Nix).unwrap();
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
        let first = |index: &Index| match index.lru(10).unwrap().remove(0) {
            Victim::Proxied { hash, .. } | Victim::Baked { nar_hash: hash, .. } => hash,
        };
        assert_eq!(first(&index), "b");
        index.touch("b", 40).unwrap();
        assert_eq!(first(&index), "a");
        // Baked files count towards the size and take their turn in LRU order (milliseconds).
        index.put_baked("n", "zstd", 250, "sha256:x", 35_000).unwrap();
        assert_eq!(index.cached_bytes().unwrap(), 1750);
        assert_eq!(
            index.lru(10).unwrap()[1],
            Victim::Baked { nar_hash: "n".into(), compression: "zstd".into(), size: 250 }
        );
        assert_eq!(index.get_baked("n", "zstd", 45_000).unwrap(), Some((250, "sha256:x".into())));
        assert_eq!(first(&index), "a");
        assert_eq!(
            index.lru(10).unwrap()[2],
            Victim::Baked { nar_hash: "n".into(), compression: "zstd".into(), size: 250 }
        );
        assert_eq!(index.get_baked("n", "xz", 0).unwrap(), None);
        assert_eq!(index.baked_files().unwrap(), vec![("n".to_owned(), "zstd".to_owned())]);
        index.remove_baked("n", "zstd").unwrap();
        assert_eq!(index.cached_bytes().unwrap(), 1500);
        // A cached entry is not overwritten by a later narinfo from another upstream.
        index.put_narinfo("a", "other", "x", "y", 50).unwrap();
        assert_eq!(index.get("a").unwrap().unwrap().narinfo, "text-a");
        // Narinfo-only entries go once unused for long enough; cached ones never do.
        index.put_narinfo("c", "text-c", "c.nar", "http://u/c.nar", 5).unwrap();
        assert_eq!(index.prune_uncached(6).unwrap(), 1);
        assert_eq!(index.get("c").unwrap(), None);
        assert_eq!(index.prune_uncached(i64::MAX).unwrap(), 0, "entries with their NAR stay");
        index.remove("a").unwrap();
        assert_eq!(index.get("a").unwrap(), None);
        assert_eq!(index.cached_files().unwrap(), vec![("b".to_owned(), "b.nar".to_owned())]);
    }

    /// An index written before the `flavour` column existed still opens, its rows as Nix's;
    /// a Guix proxy opening it retires them.
    #[test]
    fn an_index_from_before_flavours_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE narinfo (hash TEXT PRIMARY KEY NOT NULL, narinfo TEXT NOT NULL,
                     nar_file TEXT NOT NULL, upstream_url TEXT NOT NULL, file_size INTEGER,
                     nar_cached INTEGER NOT NULL DEFAULT 0, last_access INTEGER NOT NULL);
                 CREATE INDEX narinfo_lru ON narinfo (nar_cached, last_access);
                 CREATE TABLE negative (hash TEXT PRIMARY KEY NOT NULL, expires INTEGER NOT NULL);
                 INSERT INTO narinfo VALUES ('a', 'text-a', 'a.nar.xz', 'http://u/a.nar.xz', 7, 1, 10);
                 INSERT INTO negative VALUES ('n', 100);",
            )
            .unwrap();
        }
        let nix = Index::open(&path, Dialect::Nix).unwrap();
        assert_eq!(nix.get("a").unwrap().unwrap().narinfo, "text-a");
        assert!(nix.is_negative("n", 50).unwrap());
        assert_eq!(nix.retire_other_flavours().unwrap(), Vec::<String>::new());
        nix.put_narinfo("b", "text-b", "b.nar", "http://u/b.nar", 20).unwrap();
        drop(nix);

        let guix = Index::open(&path, Dialect::Guix).unwrap();
        assert_eq!(guix.get("a").unwrap(), None, "a Nix row is not a Guix entry");
        assert!(!guix.is_negative("n", 50).unwrap());
        let mut retired = guix.retire_other_flavours().unwrap();
        retired.sort();
        assert_eq!(retired, ["a", "b"]);
        assert_eq!(guix.cached_files().unwrap(), vec![]);
        guix.put_narinfo("g", "text-g", "zstd/g", "http://u/g", 30).unwrap();
        assert_eq!(guix.get("g").unwrap().unwrap().nar_file, "zstd/g");
        drop(guix);
        // Opened again as Nix, the Guix row is retired in turn.
        assert_eq!(Index::open(&path, Dialect::Nix).unwrap().retire_other_flavours().unwrap(), ["g"]);
    }
}
