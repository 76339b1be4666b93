//! Bridges the blocking NAR writer to an HTTP body: a producer thread writes into a bounded
//! channel, and the response body is the receiving end.
//!
//! Memory per stream is bounded by `CHUNK * CHANNEL_DEPTH`. A producer error becomes a body
//! error, which makes hyper abort the connection: a client never sees a clean but short body.

use std::io::{self, Write};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

/// Size of the chunks handed to hyper.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the producer and the socket.
const CHANNEL_DEPTH: usize = 4;

/// A `Write` that sends fixed-size chunks to the response body; fails once the client is gone.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChannelWriter {
    fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        self.tx.blocking_send(Ok(chunk)).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }

    /// Sends what is buffered.
    fn finish(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.send(chunk)?;
        }
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() && data.len() >= CHUNK {
            // Large writes skip the copy into `buf`.
            self.send(Bytes::copy_from_slice(&data[..CHUNK]))?;
            return Ok(CHUNK);
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            let chunk = self.buf.split().freeze();
            self.buf.reserve(CHUNK);
            self.send(chunk)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `produce` on the blocking pool and returns a body streaming what it writes.
///
/// `produce` hands the writer back when it is done (after finishing any encoder wrapped around
/// it), and only then is the body ended cleanly; if it returns an error, the body ends with
/// that error and the connection is aborted.
///
/// `what` names the thing streamed in the warning logged on failure.
pub(crate) fn body_from_writer<F>(what: String, produce: F) -> Body
where
    F: FnOnce(ChannelWriter) -> io::Result<ChannelWriter> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let err_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter { tx, buf: BytesMut::with_capacity(CHUNK) };
        if let Err(e) = produce(writer).and_then(ChannelWriter::finish) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::warn!(%what, error = %e, "aborting response stream");
            }
            let _ = err_tx.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Body::from_stream(stream)
}

/// A body of bytes `[start, end)` of the file at `path`; a file that turns out shorter ends
/// the body with an error.
pub(crate) fn file_body(path: std::path::PathBuf, start: u64, end: u64) -> Body {
    use std::io::{Read as _, Seek as _};
    body_from_writer(path.display().to_string(), move |mut out| {
        let mut file = std::fs::File::open(&path)?;
        file.seek(io::SeekFrom::Start(start))?;
        let copied = io::copy(&mut file.take(end - start), &mut out)?;
        if copied != end - start {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{} shrank", path.display())));
        }
        Ok(out)
    })
}
