//! The writer thread: batches of records in one transaction each, and the retention and size
//! cap applied every few minutes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::{millis, AuditConfig, Error, Message, Record};

/// Records written per transaction at most: large enough that a job wave costs a few
/// transactions a second, small enough that one stays short.
pub(crate) const BATCH: usize = 1024;

/// After a batch of at least [`BUSY`] records, how long the writer lets the next records
/// gather before it takes them: under load it then writes full batches a few times a second,
/// and the requests queueing records never have to wake it.
const GATHER: Duration = Duration::from_millis(50);

/// A batch at least this big means load (see [`GATHER`]).
const BUSY: usize = 64;

/// How often the retention and the size cap are applied.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(600);

/// Path ids remembered, so that a wave over one closure looks each path up once.
const PATH_IDS: usize = 65_536;

/// The schema, created when missing. `auto_vacuum` must be set before the first table.
const SCHEMA: &str = "
    PRAGMA auto_vacuum = INCREMENTAL;
    CREATE TABLE IF NOT EXISTS path (
        id INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        name TEXT NOT NULL,
        UNIQUE (hash, name)
    );
    CREATE TABLE IF NOT EXISTS fetch (
        at INTEGER NOT NULL,
        client TEXT NOT NULL,
        store TEXT NOT NULL,
        kind INTEGER NOT NULL,
        path INTEGER NOT NULL REFERENCES path (id),
        status INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        micros INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS fetch_by_path ON fetch (path, at);
    CREATE INDEX IF NOT EXISTS fetch_by_client ON fetch (client, at);
    CREATE INDEX IF NOT EXISTS fetch_by_time ON fetch (at);
";

/// Opens (creating) the database for writing, in WAL mode so that queries never wait for
/// the writer.
pub(crate) fn open(path: &Path) -> Result<Connection, Error> {
    let setup = || -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // A crash may lose the last batches, never corrupt the database.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(conn)
    };
    setup().map_err(|source| Error::Open { path: path.to_owned(), source })
}

/// The state of the writer thread.
pub(crate) struct Writer {
    conn: Connection,
    config: AuditConfig,
    written: Arc<AtomicU64>,
    /// Records lost: counted with those the queue had no room for.
    dropped: Arc<AtomicU64>,
    path_ids: HashMap<(String, String), i64>,
}

impl Writer {
    pub(crate) fn new(conn: Connection, config: AuditConfig, written: Arc<AtomicU64>, dropped: Arc<AtomicU64>) -> Self {
        Writer { conn, config, written, dropped, path_ids: HashMap::new() }
    }

    /// Writes what arrives until every sender is gone, then what is left.
    pub(crate) fn run(mut self, receiver: Receiver<Message>) {
        self.maintain(SystemTime::now());
        let mut maintained = Instant::now();
        loop {
            let first = match receiver.recv_timeout(MAINTENANCE_EVERY) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Vec::new();
            let mut flushes = Vec::new();
            for message in first.into_iter().chain(std::iter::from_fn(|| receiver.try_recv().ok())) {
                match message {
                    Message::Record(record) => batch.push(record),
                    Message::Flush(done) => flushes.push(done),
                }
                if batch.len() >= BATCH {
                    break;
                }
            }
            if !batch.is_empty() {
                if let Err(error) = self.write(&batch) {
                    tracing::warn!(records = batch.len(), "audit trail: {error}; these records are lost");
                    self.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
            }
            let busy = batch.len() >= BUSY && flushes.is_empty();
            for done in flushes {
                let _ = done.send(());
            }
            if busy {
                std::thread::sleep(GATHER);
            }
            if maintained.elapsed() >= MAINTENANCE_EVERY {
                self.maintain(SystemTime::now());
                maintained = Instant::now();
            }
        }
    }

    /// Writes `batch` in one transaction.
    pub(crate) fn write(&mut self, batch: &[Record]) -> rusqlite::Result<()> {
        if self.path_ids.len() > PATH_IDS {
            self.path_ids.clear();
        }
        let tx = self.conn.transaction()?;
        for record in batch {
            // A NAR URL of Nix names only the hash: the name is the one an earlier record of
            // that hash (its narinfo, which clients read first) knew.
            let name = match record.name.is_empty() {
                true => tx
                    .prepare_cached("SELECT name FROM path WHERE hash = ?1 AND name <> '' ORDER BY id DESC LIMIT 1")?
                    .query_row(params![record.hash], |row| row.get(0))
                    .optional()?
                    .unwrap_or_default(),
                false => record.name.clone(),
            };
            let key = (record.hash.clone(), name);
            let path = match self.path_ids.get(&key) {
                Some(&id) => id,
                None => {
                    tx.prepare_cached("INSERT INTO path (hash, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?
                        .execute(params![key.0, key.1])?;
                    let id: i64 = tx
                        .prepare_cached("SELECT id FROM path WHERE hash = ?1 AND name = ?2")?
                        .query_row(params![key.0, key.1], |row| row.get(0))?;
                    self.path_ids.insert(key, id);
                    id
                }
            };
            tx.prepare_cached(
                "INSERT INTO fetch (at, client, store, kind, path, status, bytes, micros)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                millis(record.at),
                record.client.to_canonical().to_string(),
                record.store,
                record.kind.code(),
                path,
                record.status,
                i64::try_from(record.bytes).unwrap_or(i64::MAX),
                i64::try_from(record.duration.as_micros()).unwrap_or(i64::MAX),
            ])?;
        }
        tx.commit()?;
        self.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Applies the retention and the size cap; a failure is logged, and retried next time.
    pub(crate) fn maintain(&mut self, now: SystemTime) {
        if let Err(error) = self.expire(now).and_then(|()| self.cap()) {
            tracing::warn!("audit trail maintenance: {error}");
        }
    }

    /// Deletes records older than the retention, and paths no record names any more.
    fn expire(&mut self, now: SystemTime) -> rusqlite::Result<()> {
        let horizon = now.checked_sub(self.config.retention).unwrap_or(SystemTime::UNIX_EPOCH);
        let gone = self.conn.execute("DELETE FROM fetch WHERE at < ?1", [millis(horizon)])?;
        if gone > 0 {
            tracing::info!(records = gone, "audit trail: records past the retention deleted");
            self.forget_unused_paths()?;
        }
        Ok(())
    }

    /// Deletes the oldest tenth of the records until the database is under its cap.
    fn cap(&mut self) -> rusqlite::Result<()> {
        while self.used_bytes()? > self.config.max_bytes {
            let gone = self.conn.execute(
                "DELETE FROM fetch WHERE rowid IN
                   (SELECT rowid FROM fetch ORDER BY at LIMIT max(1, (SELECT count(*) FROM fetch) / 10))",
                [],
            )?;
            self.forget_unused_paths()?;
            self.conn.execute_batch("PRAGMA incremental_vacuum")?;
            tracing::warn!(
                records = gone,
                max_bytes = self.config.max_bytes,
                "audit trail full: oldest records deleted"
            );
            if gone == 0 {
                break;
            }
        }
        Ok(())
    }

    fn forget_unused_paths(&mut self) -> rusqlite::Result<()> {
        self.conn.execute("DELETE FROM path WHERE NOT EXISTS (SELECT 1 FROM fetch WHERE fetch.path = path.id)", [])?;
        self.path_ids.clear();
        Ok(())
    }

    /// Bytes of the database in use (its pages minus the free ones).
    fn used_bytes(&self) -> rusqlite::Result<u64> {
        let pragma = |name: &str| self.conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, i64>(0));
        let used = (pragma("page_count")? - pragma("freelist_count")?) * pragma("page_size")?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    /// The connection, for tests.
    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }
}
