//! A file that is read while it is written: one producer (an upstream download, a bake)
//! appends to a temp file of the cache area and announces its length; any number of clients
//! stream it from any offset as the bytes land, each with its own handle.
//!
//! A client's stream ends cleanly only once the producer declares the file complete (verified
//! and committed); if the producer fails or is dropped first, every stream ends with an error,
//! even when its range was already sent. A client never sees a clean end of a body that failed.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::sync::watch;

/// Where a growing file stands, as seen by the clients streaming it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Progress {
    /// This many bytes are in the temp file.
    Running(u64),
    /// Verified and committed: the file now lives at its final path with this size.
    Done(u64),
    /// Failed; the temp file is gone or going.
    Failed,
}

/// A file being written: what clients subscribe to.
#[derive(Debug)]
pub struct Growing {
    temp: PathBuf,
    progress: watch::Receiver<Progress>,
}

/// The producer's handle on a [`Growing`] file: it announces each new length, then the end.
/// Clones announce for the same file (a writer thread and the task that awaits it); once
/// every clone is dropped without [`Grower::done`], the file counts as failed.
#[derive(Debug, Clone)]
pub struct Grower {
    progress: watch::Sender<Progress>,
}

impl Growing {
    /// A file about to grow at `temp` (which the producer creates before anyone subscribes),
    /// and the handle that grows it.
    pub fn start(temp: PathBuf) -> (Growing, Grower) {
        let (tx, rx) = watch::channel(Progress::Running(0));
        (Growing { temp, progress: rx }, Grower { progress: tx })
    }

    /// The temp file being written.
    pub fn temp(&self) -> &Path {
        &self.temp
    }

    /// Whether the producer failed (or gave up).
    pub fn failed(&self) -> bool {
        *self.progress.borrow() == Progress::Failed
    }
}

impl Grower {
    /// The file now holds `len` bytes, flushed to it.
    pub fn grew(&self, len: u64) {
        self.progress.send_replace(Progress::Running(len));
    }

    /// The file is complete, `size` bytes, verified and committed (it may have moved from the
    /// temp path: clients keep reading through their own handles).
    pub fn done(self, size: u64) {
        self.progress.send_replace(Progress::Done(size));
    }

    /// The producer failed; every client's stream ends with an error.
    pub fn fail(self) {
        self.progress.send_replace(Progress::Failed);
    }
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

    /// A stream for a client that arrived as the producer failed.
    pub fn failed(size: Option<u64>) -> Self {
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
                        let err = io::Error::new(io::ErrorKind::UnexpectedEof, "the file is shorter than its FileSize");
                        return Some((Err(err), (file, rx, pos, true)));
                    }
                    return None;
                }
                // Nothing new to send (or the range is sent): wait for more bytes, or the verdict.
                if rx.changed().await.is_err() {
                    let err = io::Error::other("the file's producer was abandoned");
                    return Some((Err(err), (file, rx, pos, true)));
                }
            }
        });
        Box::pin(stream)
    }
}

fn failure() -> io::Error {
    io::Error::other("the file failed verification or its producer was cut")
}

impl Growing {
    /// A view of the file for one client; `size` is the file size the narinfo promises, if
    /// any. Fails if the temp file is gone (the producer just ended).
    pub async fn subscribe(&self, size: Option<u64>) -> io::Result<NarStream> {
        let file = tokio::fs::File::open(&self.temp).await?;
        Ok(NarStream { size, source: Source::Following { file, progress: self.progress.clone() } })
    }
}

async fn read_exact_at(file: &mut tokio::fs::File, pos: u64, buf: &mut [u8]) -> io::Result<()> {
    file.seek(io::SeekFrom::Start(pos)).await?;
    file.read_exact(buf).await.map(drop)
}
