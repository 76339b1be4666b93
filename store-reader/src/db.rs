//! Read-only queries against a live Nix (schema 10) or Guix (schema 7) store database.
//!
//! The daemon writes the DB in WAL mode while we read, so connections are opened read-only
//! but never `immutable=1` (that would hide WAL commits), with a long busy timeout, and every
//! lookup is one short read transaction (protocol.md §4.2).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use formats::{NarHash, StorePath, StorePathHash};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::Error;

/// How long one query waits for a lock held by the writing daemon before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept for reuse; more are opened on demand and closed after use.
const POOL_SIZE: usize = 16;

/// Where a store lives: the logical directory its paths are named under, the directory its
/// files physically are in, and its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The store directory as clients see it and narinfos name it (`/nix/store`).
    pub store_dir: String,
    /// Where the files of that store are on this host (an NFS mount, a chroot store's
    /// `<root>/nix/store`); equal to `store_dir` for an ordinary store.
    pub real_store_dir: PathBuf,
    /// The SQLite database (`/nix/var/nix/db/db.sqlite`).
    pub db: PathBuf,
}

/// Everything the DB knows about one valid store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The path itself.
    pub path: StorePath,
    /// sha256 of its NAR serialisation.
    pub nar_hash: NarHash,
    /// Length of its NAR serialisation; computed from the files when the DB row has none.
    pub nar_size: u64,
    /// Paths it refers to, itself included when it does; sorted.
    pub references: Vec<StorePath>,
    /// The derivation that built it, when known (it may no longer be valid).
    pub deriver: Option<StorePath>,
    /// Signatures already recorded (`name:base64`), e.g. from substitution; Nix schema only.
    pub sigs: Vec<String>,
    /// Content address (`fixed:r:sha256:…`, `text:sha256:…`), copied verbatim; Nix schema only.
    pub ca: Option<String>,
    /// Unix time of registration.
    pub registration_time: i64,
}

/// A read-only handle on a store's database and files, shareable across threads.
pub struct Store {
    config: StoreConfig,
    /// Whether `ValidPaths` has Nix's `sigs` and `ca` columns (Guix's schema 7 has neither).
    nix_columns: bool,
    idle: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("config", &self.config).field("nix_columns", &self.nix_columns).finish()
    }
}

impl Store {
    /// Opens the store, checking that the database can be read and has a `ValidPaths` table.
    pub fn open(config: StoreConfig) -> Result<Self, Error> {
        if !config.real_store_dir.is_dir() {
            return Err(Error::NoStoreDir { path: config.real_store_dir.clone() });
        }
        let conn = open_connection(&config.db)?;
        let db_err = |source| Error::Db { path: config.db.clone(), source };
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('ValidPaths')").map_err(db_err)?;
        let columns: Vec<String> =
            stmt.query_map([], |r| r.get(0)).map_err(db_err)?.collect::<Result<_, _>>().map_err(db_err)?;
        drop(stmt);
        if columns.is_empty() {
            return Err(Error::NotAStoreDb { path: config.db.clone() });
        }
        let nix_columns = columns.iter().any(|c| c == "sigs") && columns.iter().any(|c| c == "ca");
        Ok(Self { config, nix_columns, idle: Mutex::new(vec![conn]) })
    }

    /// The logical store directory (`/nix/store`).
    pub fn store_dir(&self) -> &str {
        &self.config.store_dir
    }

    /// The configuration this store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Where the files of `path` physically are.
    pub fn real_path(&self, path: &StorePath) -> PathBuf {
        self.config.real_store_dir.join(path.basename())
    }

    /// Looks a valid path up by its hash part; `None` when no valid path has that hash.
    ///
    /// Blocks on SQLite: call it from a blocking thread.
    pub fn query_by_hash(&self, hash: &StorePathHash) -> Result<Option<PathInfo>, Error> {
        let row = self.with_connection(|conn| self.query_row(conn, hash))?;
        let Some(mut info) = row else { return Ok(None) };
        if info.nar_size == 0 {
            // Legacy rows have a NULL narSize; Nix cannot sign without one, so compute it.
            info.nar_size = crate::nar::nar_size(&self.real_path(&info.path))?;
        }
        Ok(Some(info))
    }

    fn query_row(&self, conn: &Connection, hash: &StorePathHash) -> Result<Option<PathInfo>, Error> {
        let db_err = |source| Error::Db { path: self.config.db.clone(), source };
        let store_dir = &self.config.store_dir;
        let prefix = format!("{store_dir}/{hash}");
        let extra = if self.nix_columns { ", sigs, ca" } else { ", NULL, NULL" };
        let sql = format!(
            "SELECT id, path, hash, registrationTime, deriver, narSize{extra} FROM ValidPaths \
             WHERE path >= ?1 ORDER BY path LIMIT 1"
        );
        // One read transaction covers the row and its references, so they are consistent.
        let tx = conn.unchecked_transaction().map_err(db_err)?;
        type Row = (i64, String, String, i64, Option<String>, Option<i64>, Option<String>, Option<String>);
        let row: Option<Row> = tx
            .prepare_cached(&sql)
            .map_err(db_err)?
            .query_row([&prefix], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
            })
            .optional()
            .map_err(db_err)?;
        // `path >= prefix` finds the next path in sort order when the hash is absent.
        let Some((id, path, nar_hash, registration_time, deriver, nar_size, sigs, ca)) =
            row.filter(|r| r.1.starts_with(&prefix) && r.1.as_bytes().get(prefix.len()) == Some(&b'-'))
        else {
            return Ok(None);
        };
        let refs: Vec<String> = tx
            .prepare_cached("SELECT v.path FROM Refs r JOIN ValidPaths v ON r.reference = v.id WHERE r.referrer = ?1")
            .map_err(db_err)?
            .query_map([id], |r| r.get(0))
            .map_err(db_err)?
            .collect::<Result<_, _>>()
            .map_err(db_err)?;
        tx.finish().map_err(db_err)?;

        let corrupt = |what: &'static str| Error::CorruptRow { path: path.clone(), what };
        let parse_path =
            |p: &str| StorePath::from_absolute(store_dir, p).map_err(|_| corrupt("path outside the store"));
        let mut references = refs.iter().map(|r| parse_path(r)).collect::<Result<Vec<_>, _>>()?;
        references.sort();
        Ok(Some(PathInfo {
            path: parse_path(&path)?,
            nar_hash: NarHash::parse(&nar_hash).map_err(|_| corrupt("bad hash"))?,
            nar_size: nar_size.unwrap_or(0).try_into().map_err(|_| corrupt("negative narSize"))?,
            references,
            // A deriver that does not parse is dropped rather than failing the whole path.
            deriver: deriver.and_then(|d| StorePath::from_absolute(store_dir, &d).ok()),
            sigs: sigs.map(|s| s.split_whitespace().map(str::to_owned).collect()).unwrap_or_default(),
            ca: ca.filter(|c| !c.is_empty()),
            registration_time,
        }))
    }

    /// Runs `f` on a pooled connection, retrying when SQLite reports a transient lock state.
    fn with_connection<T>(&self, f: impl Fn(&Connection) -> Result<T, Error>) -> Result<T, Error> {
        let conn = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => open_connection(&self.config.db)?,
        };
        let mut attempt = 0;
        let result = loop {
            match f(&conn) {
                Err(Error::Db { source, .. }) if is_transient(&source) && attempt < 5 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(20 << attempt));
                }
                other => break other,
            }
        };
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL_SIZE {
            idle.push(conn);
        }
        result
    }
}

fn is_transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, FileLockingProtocolFailed};
    matches!(e.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked | FileLockingProtocolFailed))
}

fn open_connection(db: &Path) -> Result<Connection, Error> {
    let db_err = |source| Error::Db { path: db.to_path_buf(), source };
    if !db.is_file() {
        return Err(Error::NoDb { path: db.to_path_buf() });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags).map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    Ok(conn)
}
