//! Single-flight NAR downloads: however many clients ask for the same uncached NAR at once,
//! one task fetches it from upstream into a temp file, verifying it as it goes, and every
//! client streams the bytes from that file as they land (a `growing::Growing` file).
//!
//! The download task does not belong to any client, so a client hanging up does not cancel
//! it. A client may start anywhere in the file (a resumed download asks for a range): its
//! stream waits for those bytes to land. A client's stream ends cleanly only once the whole
//! file is verified and committed; a failed verification makes every stream end with an error
//! (an aborted connection).
//!
//! A download commits itself: it holds the cache area and the table of downloads in flight,
//! moves the verified file into place there, and leaves the table when it ends.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use formats::StorePathHash;
use futures_util::StreamExt as _;

use crate::cache::{CacheArea, Entry};
use crate::error::FetchError;
use crate::fetch::Upstream;
use crate::growing::{Grower, Growing};
use crate::verify::{Expected, Verifier};
use crate::Stats;

/// The NAR downloads in flight, by store path hash, and what a download needs to fetch,
/// verify and commit itself into the cache area.
pub(crate) struct Downloads {
    cache: CacheArea,
    client: reqwest::Client,
    /// A download with no new byte for this long is abandoned.
    stall_timeout: Duration,
    stats: Arc<Stats>,
    in_flight: Mutex<HashMap<StorePathHash, Arc<Growing>>>,
}

/// One download's task: which entry, from where, into which temp file.
struct Job {
    /// The store path hash part the entry is indexed by.
    hash: StorePathHash,
    entry: Entry,
    expected: Expected,
    temp: PathBuf,
    /// The upstream it comes from, if still configured: its timeout applies, and its breaker
    /// hears of failures.
    upstream: Option<Arc<Upstream>>,
}

impl Downloads {
    pub(crate) fn new(cache: CacheArea, client: reqwest::Client, stall_timeout: Duration, stats: Arc<Stats>) -> Self {
        Self { cache, client, stall_timeout, stats, in_flight: Mutex::default() }
    }

    /// Joins the download of the NAR of `entry` (indexed by `hash`) in progress, or starts
    /// one from `upstream`. `None` when no temp file can be made.
    pub(crate) fn join_or_start(
        self: &Arc<Self>,
        hash: &StorePathHash,
        entry: Entry,
        expected: Expected,
        upstream: Option<Arc<Upstream>>,
    ) -> Option<Arc<Growing>> {
        let mut flights = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        // A failed download is dropped from the table just after its clients are told; a
        // request arriving in between starts afresh rather than joining the failure.
        if let Some(d) = flights.get(hash).filter(|d| !d.failed()) {
            return Some(Arc::clone(d));
        }
        let temp = self.cache.temp_file(&entry.nar_file);
        if let Err(e) = std::fs::File::create(&temp) {
            tracing::error!(path = %temp.display(), error = %e, "cannot create a download file");
            return None;
        }
        let (download, tx) = Growing::start(temp.clone());
        let download = Arc::new(download);
        flights.insert(hash.clone(), Arc::clone(&download));
        drop(flights);
        self.stats.nar_fetches.fetch_add(1, Ordering::Relaxed);
        if let Some(up) = &upstream {
            up.counters.nar_fetches.fetch_add(1, Ordering::Relaxed);
        }
        let job = Job { hash: hash.clone(), entry, expected, temp, upstream };
        tokio::spawn(Arc::clone(self).run(job, tx));
        Some(download)
    }

    /// Runs a download: fetch, write and verify in step, commit. On failure the temp file is
    /// removed, and the failure is counted and reported before any client hears of it. Then
    /// the download leaves the table.
    async fn run(self: Arc<Self>, job: Job, progress: Grower) {
        match self.fetch_verified(&job, &progress).await {
            Ok(size) => progress.done(size),
            Err(e) => {
                let _ = std::fs::remove_file(&job.temp);
                if matches!(e, FetchError::Verify(_)) {
                    self.stats.nar_verify_failures.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(up) = &job.upstream {
                    up.failed(&self.stats, &job.entry.upstream_url, &e);
                }
                progress.fail();
            }
        }
        let mut flights = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        // Remove this download only: a retry may already have replaced it.
        if flights.get(&job.hash).is_some_and(|d| d.temp() == job.temp) {
            flights.remove(&job.hash);
        }
    }

    /// Fetches the NAR into the temp file, verifying it as it lands, and commits it; returns
    /// its size. The commit happens before any client's stream can end cleanly, so a client
    /// that saw a clean end finds the cache consistent.
    async fn fetch_verified(&self, job: &Job, progress: &Grower) -> Result<u64, FetchError> {
        let timeout = job.upstream.as_ref().map_or(DEFAULT_TIMEOUT, |u| u.config.timeout);
        let response = crate::fetch::nar(&self.client, &job.entry.upstream_url, timeout).await?;
        // Writing and verifying run on one blocking thread, fed through a small channel: the
        // decompression is CPU work that must not stall the async runtime.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(8);
        let (cache, hash, entry, temp) = (self.cache.clone(), job.hash.clone(), job.entry.clone(), job.temp.clone());
        let (expected, progress_tx) = (job.expected, progress.clone());
        let writer = tokio::task::spawn_blocking(move || {
            let size = write_and_verify(&temp, expected, rx, &progress_tx)?;
            cache.commit_nar(&hash, &temp, &entry, size).map_err(|e| local("commit", &temp, e))?;
            Ok(size)
        });
        let mut body = response.bytes_stream();
        let received = loop {
            match tokio::time::timeout(self.stall_timeout, body.next()).await {
                Err(_) => break Err(FetchError::Timeout),
                Ok(None) => break Ok(()),
                Ok(Some(Err(e))) => break Err(FetchError::from(e)),
                Ok(Some(Ok(chunk))) => {
                    if let Some(up) = &job.upstream {
                        up.counters.nar_bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    if tx.send(chunk).is_err() {
                        // The writer stopped early: its result says why.
                        break Ok(());
                    }
                }
            }
        };
        drop(tx);
        let written = writer.await.map_err(|e| FetchError::Local(format!("writer task: {e}")))?;
        received?;
        written
    }
}

/// The timeout of a download whose upstream is no longer configured.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

fn local(what: &str, path: &Path, e: io::Error) -> FetchError {
    FetchError::Local(format!("{what} {}: {e}", path.display()))
}

/// The blocking half: appends every chunk to the temp file, announces it, feeds the verifier;
/// at the end checks and fsyncs it, ready for the commit.
fn write_and_verify(
    temp: &Path,
    expected: Expected,
    rx: std::sync::mpsc::Receiver<Bytes>,
    progress: &Grower,
) -> Result<u64, FetchError> {
    let mut file = std::fs::OpenOptions::new().append(true).open(temp).map_err(|e| local("open", temp, e))?;
    let mut verifier = Verifier::new(expected).map_err(|e| local("decoder for", temp, e))?;
    let mut size = 0u64;
    for chunk in rx {
        verifier.update(&chunk).map_err(FetchError::Verify)?;
        file.write_all(&chunk).map_err(|e| local("write", temp, e))?;
        size += chunk.len() as u64;
        progress.grew(size);
    }
    verifier.finish().map_err(FetchError::Verify)?;
    file.sync_all().map_err(|e| local("fsync", temp, e))?;
    Ok(size)
}
