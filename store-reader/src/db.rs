//! Read-only queries against a live Nix (schema 10) or Guix (schema 7) store database.
//!
//! The daemon writes the DB in WAL mode while we read, so connections are opened read-only
//! but never `immutable=1` (that would hide WAL commits), and every lookup is one short read
//! transaction. A DB in rollback-journal mode locks readers out while the daemon commits: a
//! lookup then waits at most the busy timeout and falls back to a recent answer.
//!
//! A DB in a directory we cannot write (a read-only mount, a non-root user) cannot be opened
//! the usual way while no writer has it open, since SQLite would have to create its `-shm`:
//! then it is read as `immutable=1`, and every lookup checks first whether a writer has
//! appeared or the file has changed (two `stat`s), so answers stay as fresh as the DB.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use formats::{NarHash, StorePath, StorePathHash};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::Error;

/// How long a lookup waits, by default, for a lock held by the writing daemon before it
/// answers from [`Store`]'s recent lookups or fails with [`Error::Busy`].
///
/// In WAL mode (Nix's default) readers never wait for the writer. A DB in rollback-journal
/// mode (some NFS set-ups) locks readers out while the daemon commits; a narinfo should not
/// wait out a long registration.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a lookup's answer may stand in for the DB while it is locked (rollback-journal
/// DBs only: the mode is read from the file's header at open).
const RECENT_TTL: Duration = Duration::from_secs(600);
/// Bytes of recent lookups kept (about 300 bytes and 100 per reference each).
const RECENT_BYTES: u64 = 16 << 20;
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
    pool: Mutex<Pool>,
    /// We cannot create the DB's `-shm` and `-wal` files (a read-only mount, a non-root user):
    /// every lookup first checks whether the files have changed (see [`Pool::refresh`]).
    read_only_dir: bool,
    /// The DB is in rollback-journal mode, where a writer locks readers out: only then are
    /// lookups kept in `recent` (in WAL mode readers never wait, and the copy would be work
    /// on every lookup for nothing).
    rollback_journal: bool,
    busy_timeout: Duration,
    /// The answers of recent lookups, by hash, with when they were read: what a lookup
    /// answers when the DB stays locked past the busy timeout.
    recent: quick_cache::sync::Cache<StorePathHash, (Instant, Option<PathInfo>), RecentWeight>,
    /// Lookups answered from `recent` because the DB was locked.
    stale_answers: AtomicU64,
}

/// Weighs a recent lookup by its approximate size in bytes.
#[derive(Debug, Clone, Copy)]
struct RecentWeight;

impl quick_cache::Weighter<StorePathHash, (Instant, Option<PathInfo>)> for RecentWeight {
    fn weight(&self, _key: &StorePathHash, value: &(Instant, Option<PathInfo>)) -> u64 {
        64 + value.1.as_ref().map_or(0, |info| 300 + 100 * info.references.len() as u64)
    }
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
        let read_only_dir =
            config.db.parent().is_some_and(|dir| rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_err());
        let stamp = Stamp::read(&config.db);
        let conn = open_connection(&config.db, DEFAULT_BUSY_TIMEOUT, read_only_dir && !stamp.has_wal())?;
        let db_err = |source| Error::Db { path: config.db.clone(), source };
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('ValidPaths')").map_err(db_err)?;
        let columns: Vec<String> =
            stmt.query_map([], |r| r.get(0)).map_err(db_err)?.collect::<Result<_, _>>().map_err(db_err)?;
        drop(stmt);
        if columns.is_empty() {
            return Err(Error::NotAStoreDb { path: config.db.clone() });
        }
        let nix_columns = columns.iter().any(|c| c == "sigs") && columns.iter().any(|c| c == "ca");
        let rollback_journal = !is_wal_file(&config.db);
        Ok(Self {
            config,
            nix_columns,
            pool: Mutex::new(Pool { conns: vec![conn], stamp, generation: 0 }),
            read_only_dir,
            rollback_journal,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            recent: quick_cache::sync::Cache::with_weighter((RECENT_BYTES / 400) as usize, RECENT_BYTES, RecentWeight),
            stale_answers: AtomicU64::new(0),
        })
    }

    /// Sets how long a lookup waits for a locked DB (default [`DEFAULT_BUSY_TIMEOUT`]).
    pub fn set_busy_timeout(&mut self, timeout: Duration) {
        self.busy_timeout = timeout;
        // Pooled connections take it too; one that cannot is dropped (a new one will).
        self.pool.get_mut().unwrap_or_else(|e| e.into_inner()).conns.retain(|conn| conn.busy_timeout(timeout).is_ok());
    }

    /// Whether the DB is read through `immutable=1` right now: its directory is read-only to
    /// us and no writer has it open (so it has no `-wal`). A writer that opens it later is
    /// noticed at the next lookup, which then reads the DB as usual.
    pub fn reads_immutable(&self) -> bool {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        self.read_only_dir && !pool.stamp.has_wal()
    }

    /// How many lookups were answered from recent lookups because the DB was locked.
    pub fn stale_answers(&self) -> u64 {
        self.stale_answers.load(Ordering::Relaxed)
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

    /// Whether the DB answers now: one read of its table of valid paths, past every cache
    /// (for health checks). Blocks on SQLite: call it from a blocking thread.
    pub fn check(&self) -> Result<(), Error> {
        self.with_connection(|conn| {
            conn.query_row("SELECT count(*) FROM (SELECT 1 FROM ValidPaths LIMIT 1)", [], |row| row.get::<_, i64>(0))
                .map(drop)
                .map_err(|source| Error::Db { path: self.config.db.clone(), source })
        })
    }

    /// Looks a valid path up by its hash part; `None` when no valid path has that hash.
    ///
    /// Blocks on SQLite: call it from a blocking thread.
    ///
    /// When the DB stays locked past the busy timeout, the answer of a lookup of the same hash
    /// made within the last ten minutes stands in; without one, this fails with
    /// [`Error::Busy`].
    pub fn query_by_hash(&self, hash: &StorePathHash) -> Result<Option<PathInfo>, Error> {
        let row = match self.with_connection(|conn| self.query_row(conn, hash)) {
            Ok(row) => {
                if self.rollback_journal {
                    self.recent.insert(hash.clone(), (Instant::now(), row.clone()));
                }
                row
            }
            Err(Error::Db { source, .. }) if is_transient(&source) => {
                return match self.recent.get(hash) {
                    Some((at, answer)) if at.elapsed() < RECENT_TTL => {
                        self.stale_answers.fetch_add(1, Ordering::Relaxed);
                        Ok(answer)
                    }
                    _ => Err(Error::Busy { path: self.config.db.clone() }),
                };
            }
            Err(e) => return Err(e),
        };
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

    /// Runs `f` on a pooled connection, retrying when SQLite reports a transient lock state
    /// until the busy timeout has passed.
    fn with_connection<T>(&self, f: impl Fn(&Connection) -> Result<T, Error>) -> Result<T, Error> {
        let start = Instant::now();
        let (conn, generation) = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            if self.read_only_dir {
                pool.refresh(&self.config.db);
            }
            let immutable = self.read_only_dir && !pool.stamp.has_wal();
            match pool.conns.pop() {
                Some(conn) => (conn, pool.generation),
                None => (open_connection(&self.config.db, self.busy_timeout, immutable)?, pool.generation),
            }
        };
        let mut attempt = 0;
        let result = loop {
            match f(&conn) {
                // SQLite's own busy handler has waited; a few short retries cover the lock
                // states it does not wait for (a reader meeting a WAL being reset).
                Err(Error::Db { source, .. })
                    if is_transient(&source) && attempt < 5 && start.elapsed() < self.busy_timeout =>
                {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(10 << attempt).min(self.busy_timeout / 4));
                }
                other => break other,
            }
        };
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        // A connection opened before the DB's files changed is not reused.
        if pool.generation == generation && pool.conns.len() < POOL_SIZE {
            pool.conns.push(conn);
        }
        result
    }
}

/// Idle connections kept for reuse, and the state of the DB's files they were opened for.
struct Pool {
    conns: Vec<Connection>,
    stamp: Stamp,
    /// Bumped whenever `stamp` changes; connections of an older generation are dropped.
    generation: u64,
}

impl Pool {
    /// For a DB whose directory we cannot write: drops the pooled connections when the DB's
    /// files have changed since they were opened.
    ///
    /// Without a `-wal` (no writer has the DB open), connections read it as `immutable=1`,
    /// which needs no `-shm`; such a connection trusts the file not to change, so it is
    /// dropped as soon as the file or its `-wal` does. With a `-wal`, connections read it as
    /// usual, with a private copy of the WAL index, and are dropped when the `-wal` is
    /// replaced or removed (a writer closed the DB and a new one opened it).
    fn refresh(&mut self, db: &Path) {
        let now = Stamp::read(db);
        if now != self.stamp {
            self.stamp = now;
            self.generation += 1;
            self.conns.clear();
        }
    }
}

/// What identifies the state of the DB's files: the DB's inode, size and modification time,
/// and the `-wal`'s inode if there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    db: Option<(u64, u64, i64, i64)>,
    wal: Option<u64>,
}

impl Stamp {
    fn read(db: &Path) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        let db_meta = std::fs::metadata(db).ok().map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()));
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Self { db: db_meta, wal: std::fs::metadata(&wal).ok().map(|m| m.ino()) }
    }

    fn has_wal(&self) -> bool {
        self.wal.is_some()
    }
}

fn is_transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked, FileLockingProtocolFailed};
    matches!(e.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked | FileLockingProtocolFailed))
}

/// Opens `db` read-only; `immutable`: without locking or WAL, for a DB no writer has open in
/// a directory we cannot write (see [`Pool::refresh`]).
fn open_connection(db: &Path, busy_timeout: Duration, immutable: bool) -> Result<Connection, Error> {
    let db_err = |source| Error::Db { path: db.to_path_buf(), source };
    if !db.is_file() {
        return Err(Error::NoDb { path: db.to_path_buf() });
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if immutable {
        Connection::open_with_flags(immutable_uri(db), flags | OpenFlags::SQLITE_OPEN_URI)
    } else {
        Connection::open_with_flags(db, flags)
    }
    .map_err(db_err)?;
    conn.busy_timeout(busy_timeout).map_err(db_err)?;
    Ok(conn)
}

/// Whether the SQLite file at `db` is in WAL mode: its header's format versions (bytes 18
/// and 19) are 2. A header that cannot be read counts as not WAL.
fn is_wal_file(db: &Path) -> bool {
    use std::io::Read as _;
    let mut header = [0u8; 20];
    std::fs::File::open(db).and_then(|mut f| f.read_exact(&mut header)).is_ok() && header[18..20] == [2, 2]
}

/// `file:<db>?immutable=1`, with the characters a URI path gives a meaning to escaped.
fn immutable_uri(db: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let mut uri = String::from("file:");
    for &b in db.as_os_str().as_bytes() {
        match b {
            b'%' | b'?' | b'#' => uri.push_str(&format!("%{b:02X}")),
            _ if b.is_ascii() => uri.push(b as char),
            _ => uri.push_str(&format!("%{b:02X}")),
        }
    }
    uri.push_str("?immutable=1");
    uri
}
