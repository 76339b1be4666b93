//! Single-flight NAR downloads: however many clients ask for the same uncached NAR at once,
//! one task fetches it from upstream into a temp file, verifying it as it goes, and every
//! client streams the bytes from that file as they land.
//!
//! The download task does not belong to any client, so a client hanging up does not cancel
//! it. A client may start anywhere in the file (a resumed download asks for a range): its
//! stream waits for those bytes to land. A client's stream ends cleanly only once the whole
//! file is verified and committed; a failed verification makes every stream end with an error
//! (an aborted connection).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::sync::watch;

use crate::error::FetchError;
use crate::verify::{Expected, Verifier};

/// Where a download stands, as seen by the clients streaming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    /// This many bytes are in the temp file.
    Running(u64),
    /// Verified and committed: the file now lives at its final path with this size.
    Done(u64),
    /// Failed; the temp file is gone or going.
    Failed,
}

/// One NAR being fetched.
pub(crate) struct Download {
    pub(crate) temp: PathBuf,
    pub(crate) progress: watch::Receiver<Progress>,
}

/// A body stream of NAR file bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Bytes read from the temp file per step.
const READ_CHUNK: usize = 256 * 1024;

/// One client's view of a download in progress: the NAR file's bytes as they land in the temp
/// file, from any offset.
///
/// Whatever range is asked for, its stream ends cleanly only once the whole file is verified
/// and committed; if the download fails, it ends with an error, even when the range's last
/// byte had already been sent. A client never sees a clean end of a body that failed.
pub struct NarStream {
    size: Option<u64>,
    source: Source,
}

enum Source {
    /// Its own handle on the temp file, so the rename at commit does not disturb it.
    Following { file: tokio::fs::File, progress: watch::Receiver<Progress> },
    /// The download failed before this client could open it.
    Failed,
}

impl NarStream {
    /// The file's size when its narinfo promises one (`FileSize`; a Guix group's size): the
    /// body can then be announced with `Content-Length` and served by range. A download of
    /// another size fails verification (it is never written past that size).
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// The whole file, as it arrives.
    pub fn into_stream(self) -> ByteStream {
        self.follow(0, None)
    }

    /// Bytes `start..end` of the file (`end` at most [`NarStream::size`]), waiting for them
    /// as they arrive.
    pub fn into_range(self, start: u64, end: u64) -> ByteStream {
        self.follow(start, Some(end))
    }

    /// A stream for a client that arrived as the download failed.
    pub(crate) fn failed(size: Option<u64>) -> Self {
        Self { size, source: Source::Failed }
    }

    fn follow(self, start: u64, end: Option<u64>) -> ByteStream {
        let (file, rx) = match self.source {
            Source::Following { file, progress } => (file, progress),
            Source::Failed => return Box::pin(futures_util::stream::once(async { Err(failure()) })),
        };
        let state = (file, rx, start, false);
        let stream = futures_util::stream::unfold(state, move |(mut file, mut rx, mut pos, finished)| async move {
            if finished {
                return None;
            }
            loop {
                let progress = rx.borrow_and_update().clone();
                let (available, complete) = match progress {
                    Progress::Running(n) => (n, false),
                    Progress::Done(n) => (n, true),
                    Progress::Failed => return Some((Err(failure()), (file, rx, pos, true))),
                };
                let limit = end.map_or(available, |end| available.min(end));
                if pos < limit {
                    let want = (limit - pos).min(READ_CHUNK as u64) as usize;
                    let mut buf = vec![0u8; want];
                    if let Err(e) = read_exact_at(&mut file, pos, &mut buf).await {
                        return Some((Err(e), (file, rx, pos, true)));
                    }
                    pos += want as u64;
                    return Some((Ok(Bytes::from(buf)), (file, rx, pos, false)));
                }
                if complete {
                    if end.is_some_and(|end| pos < end) {
                        let err = io::Error::new(io::ErrorKind::UnexpectedEof, "download is shorter than its FileSize");
                        return Some((Err(err), (file, rx, pos, true)));
                    }
                    return None;
                }
                // Nothing new to send (or the range is sent): wait for more bytes, or the verdict.
                if rx.changed().await.is_err() {
                    let err = io::Error::other("upstream download was abandoned");
                    return Some((Err(err), (file, rx, pos, true)));
                }
            }
        });
        Box::pin(stream)
    }
}

fn failure() -> io::Error {
    io::Error::other("upstream download failed verification or was cut")
}

impl Download {
    /// A view of the download for one client; `size` is the file size the narinfo promises.
    /// Fails if the temp file is gone (the download just ended).
    pub(crate) async fn subscribe(&self, size: Option<u64>) -> io::Result<NarStream> {
        let file = tokio::fs::File::open(&self.temp).await?;
        Ok(NarStream { size, source: Source::Following { file, progress: self.progress.clone() } })
    }
}

async fn read_exact_at(file: &mut tokio::fs::File, pos: u64, buf: &mut [u8]) -> io::Result<()> {
    file.seek(io::SeekFrom::Start(pos)).await?;
    file.read_exact(buf).await.map(drop)
}

/// Everything the download task needs.
pub(crate) struct Job {
    pub(crate) client: reqwest::Client,
    pub(crate) url: String,
    pub(crate) expected: Expected,
    pub(crate) temp: PathBuf,
    pub(crate) final_path: PathBuf,
    pub(crate) timeout: Duration,
    pub(crate) stall_timeout: Duration,
    /// Runs on the blocking thread once the file is in place, before any client's stream
    /// ends: records the entry, so a client that saw a clean end finds the cache consistent.
    pub(crate) on_commit: Box<dyn FnOnce(u64) + Send + Sync>,
    /// Runs when the download fails, before any client's stream ends with the error.
    pub(crate) on_failure: Box<dyn FnOnce(&FetchError) + Send + Sync>,
}

/// Runs the download: fetch, write and verify in step, fsync, rename into place. Returns the
/// file size; on any failure the temp file is removed.
pub(crate) async fn run(mut job: Job, progress: watch::Sender<Progress>) -> Result<u64, FetchError> {
    let on_commit = std::mem::replace(&mut job.on_commit, Box::new(|_| {}));
    let on_failure = std::mem::replace(&mut job.on_failure, Box::new(|_| {}));
    let result = fetch_verified(&job, &progress, on_commit).await;
    match &result {
        Ok(size) => {
            let _ = progress.send(Progress::Done(*size));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&job.temp);
            on_failure(e);
            let _ = progress.send(Progress::Failed);
        }
    }
    result
}

async fn fetch_verified(
    job: &Job,
    progress: &watch::Sender<Progress>,
    on_commit: Box<dyn FnOnce(u64) + Send + Sync>,
) -> Result<u64, FetchError> {
    let response = crate::fetch::nar(&job.client, &job.url, job.timeout).await?;
    // Writing and verifying run on one blocking thread, fed through a small channel: the
    // decompression is CPU work that must not stall the async runtime.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(8);
    let temp = job.temp.clone();
    let final_path = job.final_path.clone();
    let expected = job.expected;
    let progress_tx = progress.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let size = write_and_verify(&temp, &final_path, expected, rx, &progress_tx)?;
        on_commit(size);
        Ok(size)
    });
    let mut body = response.bytes_stream();
    let received = loop {
        match tokio::time::timeout(job.stall_timeout, body.next()).await {
            Err(_) => break Err(FetchError::Timeout),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(FetchError::from(e)),
            Ok(Some(Ok(chunk))) => {
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

/// The blocking half: appends every chunk to the temp file, announces it, feeds the verifier;
/// at the end checks, fsyncs and renames. The temp and final paths share a directory tree on
/// one filesystem, so the rename is atomic.
fn write_and_verify(
    temp: &Path,
    final_path: &Path,
    expected: Expected,
    rx: std::sync::mpsc::Receiver<Bytes>,
    progress: &watch::Sender<Progress>,
) -> Result<u64, FetchError> {
    let local = |what: &str, e: io::Error| FetchError::Local(format!("{what} {}: {e}", temp.display()));
    let mut file = std::fs::OpenOptions::new().append(true).open(temp).map_err(|e| local("open", e))?;
    let mut verifier = Verifier::new(expected).map_err(|e| local("decoder for", e))?;
    let mut size = 0u64;
    for chunk in rx {
        verifier.update(&chunk).map_err(FetchError::Verify)?;
        file.write_all(&chunk).map_err(|e| local("write", e))?;
        size += chunk.len() as u64;
        progress.send_replace(Progress::Running(size));
    }
    verifier.finish().map_err(FetchError::Verify)?;
    file.sync_all().map_err(|e| local("fsync", e))?;
    std::fs::rename(temp, final_path).map_err(|e| local("rename", e))?;
    if let Some(dir) = final_path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(size)
}
