//! The audit trail: every narinfo answer and NAR download, with its time, client, store path,
//! status, bytes and duration, kept in an SQLite database so that "which nodes fetched this
//! glibc, and when" has an answer (the first question of any security advisory on a cluster).
//!
//! Recording never slows or fails a request: [`AuditLog::record`] hands the record to a
//! bounded queue and returns; one writer thread drains it in batches, one transaction per
//! batch. When the writer falls behind (a stalled disk) and the queue is full, the record is
//! dropped and counted ([`AuditLog::dropped`]), never waited for. The writer also enforces
//! the retention ([`AuditConfig::retention`]) and a size cap ([`AuditConfig::max_bytes`]),
//! deleting the oldest records first.
//!
//! [`Query`] opens the same database read-only for the `subserve audit` subcommand:
//! [`Query::who_fetched`] (which nodes fetched paths matching a name, a store path or a
//! hash) and [`Query::node`] (what one node fetched); the status page's top lists come from
//! [`Query::top_clients`] and [`Query::top_paths`].
//!
//! The schema: `path` holds each distinct store path once (`hash`, `name`; `name` is empty
//! when only the hash is known, as for a narinfo of an absent path), and `fetch` one row per
//! request (`at` in Unix milliseconds, `client`, `store` prefix, `kind`, `path`, `status`,
//! `bytes`, `micros`), indexed by path, by client and by time.

mod error;
mod query;
mod writer;

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

pub use error::Error;
pub use query::{NodeFetches, PathFetches, Query, Top};

/// What was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A narinfo (found or not).
    Narinfo,
    /// A NAR download, whole or a range.
    Nar,
}

impl Kind {
    fn code(self) -> i64 {
        match self {
            Kind::Narinfo => 1,
            Kind::Nar => 2,
        }
    }
}

/// One request, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the request arrived.
    pub at: SystemTime,
    /// The client: the peer, or the client a trusted proxy named.
    pub client: IpAddr,
    /// The store's URL prefix (`""` for a single store at the root).
    pub store: String,
    /// What was asked for.
    pub kind: Kind,
    /// The store path's hash part.
    pub hash: String,
    /// The store path's name, when known (empty for a narinfo of an absent path). Left empty,
    /// it is taken from an earlier record of the same hash (a Nix NAR URL names only the
    /// hash; its narinfo, read first, names the path).
    pub name: String,
    /// The HTTP status answered.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// From the request's arrival to its last byte.
    pub duration: Duration,
}

/// How the audit trail is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Records older than this are deleted.
    pub retention: Duration,
    /// The database is kept under this many bytes, the oldest records deleted first.
    pub max_bytes: u64,
    /// Records waiting for the writer at most; more are dropped and counted.
    pub queue: usize,
}

impl Default for AuditConfig {
    /// 90 days, 1 GiB (about 20 million records), 65 536 records queued (a few MiB; a job
    /// wave of 500 nodes × 100 paths × 2 requests fits four times over).
    fn default() -> Self {
        AuditConfig { retention: Duration::from_secs(90 * 24 * 3600), max_bytes: 1 << 30, queue: 65_536 }
    }
}

/// What the writer thread is sent.
enum Message {
    Record(Record),
    /// Write what is queued, then answer.
    Flush(SyncSender<()>),
}

/// The recording end of the audit trail; cheap to share (`Arc`).
pub struct AuditLog {
    sender: Option<SyncSender<Message>>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("written", &self.written()).field("dropped", &self.dropped()).finish()
    }
}

impl AuditLog {
    /// Opens (creating it if needed) the database at `path` and starts its writer thread.
    pub fn open(path: &Path, config: AuditConfig) -> Result<Self, Error> {
        let conn = writer::open(path)?;
        let (sender, receiver) = mpsc::sync_channel(config.queue.max(1));
        let (written, dropped) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let writer = writer::Writer::new(conn, config, Arc::clone(&written), Arc::clone(&dropped));
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|source| Error::Thread { source })?;
        Ok(AuditLog { sender: Some(sender), dropped, written, writer: Some(writer) })
    }

    /// Queues `record` for the writer; never blocks. A full queue drops it (counted).
    pub fn record(&self, record: Record) {
        let Some(sender) = &self.sender else { return };
        match sender.try_send(Message::Record(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records lost: dropped because the writer fell behind (or stopped), or in a batch it
    /// could not write (a database locked past its busy timeout, a full disk).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written to the database.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Waits until everything queued before this call is written (for shutdown and tests).
    pub fn flush(&self) {
        let Some(sender) = &self.sender else { return };
        let (done, wait) = mpsc::sync_channel(1);
        if sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

impl Drop for AuditLog {
    /// Closes the queue; the writer writes what is left and exits.
    fn drop(&mut self) {
        self.sender = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Unix milliseconds of `time` (0 before the epoch).
fn millis(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The time `millis` Unix milliseconds name.
fn from_millis(millis: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

#[cfg(test)]
mod tests;
