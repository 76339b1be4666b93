//! Bridges the blocking NAR writer to an HTTP body: a producer thread writes into chunks that
//! a bounded channel carries to the response body.
//!
//! Memory per stream is `BUFFERS * CHUNK`, exactly: the chunks come from a per-stream pool of
//! that many buffers, and a chunk's buffer goes back to the pool only once hyper has written
//! it and dropped it, so the producer waits for the socket rather than allocating. The buffers
//! are allocated once per stream and reused, which also spares the allocator and the kernel a
//! fresh mapping (and its page faults) per chunk.
//!
//! A producer error becomes a body error, which makes hyper abort the connection: a client
//! never sees a clean but short body. The body and the producer share the stream's admission
//! [`Permit`]; it is released once both are gone.
//!
//! On a plain TCP connection, a producer sends large file ranges with `sendfile` instead
//! ([`ChannelWriter::send_file`]); the body takes turns with hyper for it (see [`crate::direct`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::admission::Permit;
use crate::direct::Direct;

/// Size of the chunks handed to hyper. Measured with one client on the 256 MiB NAR, 128 KiB
/// moves it as fast as 256 KiB (medians within 1%) and 6–20% faster than 64 KiB, while 256
/// clients at once peak at 51–54 MiB rather than 77.
const CHUNK: usize = 128 * 1024;
/// Chunk buffers per stream: one being filled, the rest queued or being written to the socket.
const BUFFERS: usize = 4;
/// How often a producer waiting for a free buffer checks that the client is still there (the
/// buffers come back when the client goes, so this is only a safety net).
const WAIT_CHECK: Duration = Duration::from_secs(1);

/// What the producer hands the body.
enum Piece {
    /// Bytes to yield.
    Data(Bytes),
    /// The producer waits to send a file range directly: answer once hyper has flushed.
    Turn(oneshot::Sender<()>),
    /// So many bytes were sent directly: yield as many placeholders.
    Sent(u64),
    /// The producer failed: end the body with this error.
    Failed(io::Error),
}

/// The placeholders yielded for bytes sent directly; the socket discards them unread.
static PLACEHOLDER: [u8; 256 * 1024] = [0; 256 * 1024];

/// The chunk buffers of one stream.
struct Pool {
    free: Mutex<Free>,
    returned: Condvar,
}

struct Free {
    buffers: Vec<Vec<u8>>,
    /// Buffers allocated so far, at most `BUFFERS`.
    allocated: usize,
}

impl Pool {
    fn new() -> Self {
        Self { free: Mutex::new(Free { buffers: Vec::with_capacity(BUFFERS), allocated: 0 }), returned: Condvar::new() }
    }

    /// A `CHUNK`-byte buffer: a free one, a new one while fewer than `BUFFERS` exist, or else
    /// the next to come back from the socket. Fails once `tx`'s receiver is gone.
    fn take(&self, tx: &mpsc::Sender<Piece>) -> io::Result<Vec<u8>> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(buf) = free.buffers.pop() {
                return Ok(buf);
            }
            if free.allocated < BUFFERS {
                free.allocated += 1;
                return Ok(vec![0; CHUNK]);
            }
            if tx.is_closed() {
                return Err(gone());
            }
            free = self.returned.wait_timeout(free, WAIT_CHECK).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn put(&self, buf: Vec<u8>) {
        self.free.lock().unwrap_or_else(PoisonError::into_inner).buffers.push(buf);
        self.returned.notify_one();
    }
}

/// A filled buffer on its way to the socket; dropping it gives the buffer back to the pool.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "client went away")
}

/// A `Write` that sends `CHUNK`-byte chunks to the response body; fails once the client is gone.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Piece>,
    pool: Arc<Pool>,
    /// The buffer being filled (empty when none is taken), and how much of it is.
    buf: Vec<u8>,
    fill: usize,
    /// The socket, where file ranges can be sent to it directly.
    direct: Option<Direct>,
    /// Set when the body is dropped.
    gone: Arc<AtomicBool>,
    /// The stream's permit, where direct sends are counted.
    permit: Arc<Permit>,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<Piece>, direct: Option<Direct>, gone: Arc<AtomicBool>, permit: Arc<Permit>) -> Self {
        Self { tx, pool: Arc::new(Pool::new()), buf: Vec::new(), fill: 0, direct, gone, permit }
    }

    /// Sends bytes `[offset, offset + len)` of `file` straight to the socket after what was
    /// written so far, where the connection allows (see [`crate::direct`]); returns how many
    /// were sent (fewer if the file ends first), or `None` if the bytes must be written.
    pub(crate) fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<Option<u64>> {
        let Some(direct) = self.direct.clone() else {
            return Ok(None);
        };
        if self.fill > 0 {
            self.send()?;
        }
        let (turn, taken) = oneshot::channel();
        self.tx.blocking_send(Piece::Turn(turn)).map_err(|_| gone())?;
        taken.blocking_recv().map_err(|_| gone())?;
        let sent = direct.send_file(file, offset, len, &self.gone)?;
        self.permit.count_sendfile(sent);
        self.tx.blocking_send(Piece::Sent(sent)).map_err(|_| gone())?;
        Ok(Some(sent))
    }

    /// The free part of the current buffer, taking a buffer from the pool if need be.
    fn room(&mut self) -> io::Result<&mut [u8]> {
        if self.buf.is_empty() {
            self.buf = self.pool.take(&self.tx)?;
            self.fill = 0;
        }
        Ok(&mut self.buf[self.fill..])
    }

    /// Counts `n` more bytes of the current buffer as filled, and sends it once it is full.
    fn filled(&mut self, n: usize) -> io::Result<()> {
        self.fill += n;
        if self.fill == CHUNK {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> io::Result<()> {
        let chunk = Chunk { buf: std::mem::take(&mut self.buf), len: self.fill, pool: Arc::clone(&self.pool) };
        self.fill = 0;
        self.tx.blocking_send(Piece::Data(Bytes::from_owner(chunk))).map_err(|_| gone())
    }

    /// Copies `reader` to its end straight into the chunks (no intermediate buffer); returns
    /// how many bytes that was.
    pub(crate) fn copy_from(&mut self, reader: &mut dyn Read) -> io::Result<u64> {
        let mut total = 0;
        loop {
            let n = match reader.read(self.room()?) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += n as u64;
            self.filled(n)?;
        }
    }

    /// Sends what is buffered.
    fn finish(mut self) -> io::Result<()> {
        if self.fill > 0 {
            self.send()?;
        }
        Ok(())
    }
}

impl store_reader::nar::NarSink for ChannelWriter {
    fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<Option<u64>> {
        ChannelWriter::send_file(self, file, offset, len)
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.room()?;
        let n = data.len().min(room.len());
        room[..n].copy_from_slice(&data[..n]);
        self.filled(n)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `produce` on the blocking pool and returns a body streaming what it writes, holding
/// `permit` until both the body and the producer are done.
///
/// `produce` hands the writer back when it is done (after finishing any encoder wrapped around
/// it), and only then is the body ended cleanly; if it returns an error, the body ends with
/// that error and the connection is aborted. If the client goes away, the producer's next
/// write fails and it stops. With `direct`, the producer may send file ranges straight to the
/// socket ([`ChannelWriter::send_file`]).
///
/// `what` names the thing streamed in the warning logged on failure.
pub(crate) fn admitted_body_from_writer<F>(what: String, permit: Permit, direct: Option<Direct>, produce: F) -> Body
where
    F: FnOnce(ChannelWriter) -> io::Result<ChannelWriter> + Send + 'static,
{
    let permit = Arc::new(permit);
    let (tx, rx) = mpsc::channel(BUFFERS);
    let err_tx = tx.clone();
    let producer_permit = Arc::clone(&permit);
    let gone = Arc::new(AtomicBool::new(false));
    let writer = ChannelWriter::new(tx, direct.clone(), Arc::clone(&gone), Arc::clone(&producer_permit));
    tokio::task::spawn_blocking(move || {
        let permit = producer_permit;
        if let Err(e) = produce(writer).and_then(ChannelWriter::finish) {
            // A broken pipe is the client gone, not a body we cut.
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::warn!(%what, error = %e, "aborting response stream");
                permit.count_abort();
            }
            let _ = err_tx.blocking_send(Piece::Failed(e));
        }
    });
    Body::from_stream(Pieces { rx, direct, started: false, turn: None, placeholders: 0, gone, _permit: permit })
}

/// The body side of [`admitted_body_from_writer`].
struct Pieces {
    rx: mpsc::Receiver<Piece>,
    direct: Option<Direct>,
    /// Whether the body has been polled yet.
    started: bool,
    /// The producer waiting for its turn to send directly.
    turn: Option<oneshot::Sender<()>>,
    /// Placeholder bytes still to yield.
    placeholders: u64,
    gone: Arc<AtomicBool>,
    _permit: Arc<Permit>,
}

impl Pieces {
    fn yielded(&self, bytes: Bytes) -> Poll<Option<io::Result<Bytes>>> {
        if let Some(direct) = &self.direct {
            direct.yielded();
        }
        Poll::Ready(Some(Ok(bytes)))
    }
}

impl futures_util::Stream for Pieces {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.started {
            self.started = true;
            // The response's head is in hyper's buffer, not yet on the socket.
            if let Some(direct) = &self.direct {
                direct.yielded();
            }
        }
        loop {
            if self.placeholders > 0 {
                let n = self.placeholders.min(PLACEHOLDER.len() as u64);
                self.placeholders -= n;
                return self.yielded(Bytes::from_static(&PLACEHOLDER[..n as usize]));
            }
            if let Some(turn) = self.turn.take() {
                let direct = self.direct.as_ref().expect("a turn only with a socket");
                if !direct.poll_flushed(cx) {
                    self.turn = Some(turn);
                    return Poll::Pending;
                }
                // A producer that gave up meanwhile sends its error next.
                let _ = turn.send(());
            }
            match ready!(self.rx.poll_recv(cx)) {
                None => return Poll::Ready(None),
                Some(Piece::Data(bytes)) => return self.yielded(bytes),
                Some(Piece::Turn(turn)) => self.turn = Some(turn),
                Some(Piece::Sent(n)) => {
                    self.direct.as_ref().expect("a direct send only with a socket").skip(n);
                    self.placeholders = n;
                }
                Some(Piece::Failed(e)) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::Release);
    }
}

/// A body of bytes `[start, end)` of the file at `path`, sent directly where `direct` allows;
/// a file that turns out shorter ends the body with an error.
pub(crate) fn file_body(
    path: std::path::PathBuf,
    start: u64,
    end: u64,
    permit: Permit,
    direct: Option<Direct>,
) -> Body {
    use std::io::Seek as _;
    admitted_body_from_writer(path.display().to_string(), permit, direct, move |mut out| {
        let mut file = std::fs::File::open(&path)?;
        let len = end - start;
        let copied = match out.send_file(&file, start, len)? {
            Some(sent) => sent,
            None => {
                file.seek(io::SeekFrom::Start(start))?;
                out.copy_from(&mut file.take(len))?
            }
        };
        if copied != len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{} shrank", path.display())));
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::StreamExt as _;
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::admission::Limiter;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn streams_everything_in_chunks_of_at_most_chunk() {
        let limiter = Limiter::new("test", 1, Duration::from_secs(1));
        let want = data(3 * CHUNK + 17);
        let src = want.clone();
        let body =
            admitted_body_from_writer("test".into(), limiter.admit(None).await.unwrap(), None, move |mut out| {
                // Odd-sized writes, to cross chunk boundaries.
                for piece in src.chunks(CHUNK / 3 + 5) {
                    out.write_all(piece)?;
                }
                Ok(out)
            });
        let mut stream = body.into_data_stream();
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= CHUNK);
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn file_body_copies_a_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let contents = data(2 * CHUNK + 1000);
        std::fs::write(&path, &contents).unwrap();
        let limiter = Limiter::new("test", 1, Duration::from_secs(1));
        let body = file_body(path.clone(), 10, contents.len() as u64 - 7, limiter.admit(None).await.unwrap(), None);
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &contents[10..contents.len() - 7]);
        // A range past the end of the file is an error, not a short body.
        let body = file_body(path, 0, contents.len() as u64 + 1, limiter.admit(None).await.unwrap(), None);
        assert!(body.collect().await.is_err());
    }

    #[tokio::test]
    async fn the_permit_is_released_when_the_body_is_dropped_mid_stream() {
        let limiter = Limiter::new("test", 1, Duration::from_secs(3600));
        let body =
            admitted_body_from_writer("endless".into(), limiter.admit(None).await.unwrap(), None, move |mut out| {
                // Endless: only the client going away stops it.
                let block = vec![7u8; CHUNK];
                loop {
                    out.write_all(&block)?;
                }
            });
        let mut stream = body.into_data_stream();
        assert_eq!(stream.next().await.unwrap().unwrap().len(), CHUNK);
        assert_eq!(limiter.available(), 0);
        drop(stream);
        // The producer fails at its next write and stops; then the permit is free again.
        let next = tokio::time::timeout(Duration::from_secs(60), limiter.admit(None)).await;
        assert!(matches!(next, Ok(Ok(_))), "the permit was not released");
    }

    #[test]
    fn a_stream_reuses_its_buffers_and_allocates_at_most_buffers() {
        let pool = Arc::new(Pool::new());
        let (tx, _rx) = mpsc::channel(1);
        let mut taken: Vec<Vec<u8>> = (0..BUFFERS).map(|_| pool.take(&tx).unwrap()).collect();
        let returned = taken.pop().unwrap();
        let returned_at = returned.as_ptr() as usize;
        // All buffers are out: the next taker waits for one to come back, and gets that one.
        let waiter = std::thread::spawn({
            let pool = Arc::clone(&pool);
            move || pool.take(&tx).unwrap()
        });
        pool.put(returned);
        let got = waiter.join().unwrap();
        assert_eq!(got.as_ptr() as usize, returned_at);
        assert_eq!(pool.free.lock().unwrap().allocated, BUFFERS);
    }

    #[test]
    fn a_waiting_producer_gives_up_when_the_client_is_gone() {
        let pool = Pool::new();
        let (tx, rx) = mpsc::channel(1);
        let _taken: Vec<Vec<u8>> = (0..BUFFERS).map(|_| pool.take(&tx).unwrap()).collect();
        drop(rx);
        assert_eq!(pool.take(&tx).unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }
}
