//! Direct sends: a file's contents moved from the page cache to a plain TCP socket with
//! `sendfile`, never copied through user space, in the middle of a response hyper frames.
//!
//! hyper owns the connection and writes a response's head and body from its own buffer; it
//! has no way to take a file. So a body that wants to send a file range takes turns with it:
//!
//! 1. The body waits until hyper has written everything it holds: hyper flushes the socket
//!    ([`DirectTcp`]'s `poll_flush`) only once its buffer is empty, and the body yields
//!    nothing meanwhile, so the flush after the body's last frame means the socket has all of
//!    it ([`Direct::poll_flushed`]).
//! 2. The producer thread `sendfile`s the range to the socket ([`Direct::send_file`]); hyper
//!    writes nothing while the body is waiting for it.
//! 3. The body yields as many placeholder bytes as were sent, so that hyper's count of the
//!    body (its `Content-Length`) stays right, and the socket discards exactly that many
//!    bytes of what hyper writes next ([`Direct::skip`]), which are those placeholders.
//!
//! The producer is a blocking thread, as for every NAR: `sendfile` blocks on reading the file
//! (a store on NFS), which must not stall the runtime's workers. It waits for the socket with
//! `poll`, and gives up after the connection's write timeout without progress, or when the
//! body is dropped. TLS and Unix-socket connections have no `Direct`; their bodies copy.

use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How often a producer waiting for the socket checks that its body is still there.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// The most one `sendfile` call is asked for (Linux sends at most about 2 GiB per call).
const MAX_SEND: u64 = 1 << 30;

/// A plain TCP connection's socket as the connection and the bodies of its responses share it.
#[derive(Clone)]
pub(crate) struct Direct(Arc<Shared>);

struct Shared {
    /// Also kept open by a producer in the middle of a `sendfile`, until it returns.
    socket: Arc<TcpStream>,
    /// hyper has flushed since the body last yielded a frame (see the module docs).
    flushed: AtomicBool,
    /// Bytes of hyper's next writes to discard: placeholders of what was sent directly.
    skip: AtomicU64,
    /// The body waiting for a flush.
    waker: AtomicWaker,
    /// How long a send may wait for the client to accept a byte.
    write_timeout: Duration,
}

impl Direct {
    /// A connection's socket, and the I/O object hyper serves the connection over.
    pub(crate) fn new(socket: TcpStream, write_timeout: Duration) -> (Self, DirectTcp) {
        let shared = Arc::new(Shared {
            socket: Arc::new(socket),
            flushed: AtomicBool::new(false),
            skip: AtomicU64::new(0),
            waker: AtomicWaker::new(),
            write_timeout,
        });
        (Self(Arc::clone(&shared)), DirectTcp(shared))
    }

    /// A response body starts, or yielded a frame: hyper holds bytes not yet on the socket.
    pub(crate) fn yielded(&self) {
        self.0.flushed.store(false, Ordering::Release);
    }

    /// Whether everything the body yielded is on the socket; if not, wakes `cx` when it may be.
    pub(crate) fn poll_flushed(&self, cx: &mut Context<'_>) -> bool {
        self.0.waker.register(cx.waker());
        self.0.flushed.load(Ordering::Acquire)
    }

    /// The body is about to yield `n` placeholder bytes for a range sent directly.
    pub(crate) fn skip(&self, n: u64) {
        self.0.skip.fetch_add(n, Ordering::AcqRel);
    }

    /// Sends bytes `[offset, offset + len)` of `file` to the socket, blocking; returns how
    /// many were sent (fewer only if the file ends first). Fails when the client is gone or
    /// accepts nothing for the write timeout, and when `gone` is set (the body was dropped).
    pub(crate) fn send_file(&self, file: &File, offset: u64, len: u64, gone: &AtomicBool) -> io::Result<u64> {
        let socket = &*self.0.socket;
        let mut at = offset;
        let end = offset + len;
        let mut progress = Instant::now();
        while at < end {
            if gone.load(Ordering::Acquire) {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "response dropped"));
            }
            let count = usize::try_from((end - at).min(MAX_SEND)).unwrap_or(usize::MAX);
            match rustix::fs::sendfile(socket, file, Some(&mut at), count) {
                Ok(0) => break,
                Ok(_) => progress = Instant::now(),
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => {
                    if progress.elapsed() >= self.0.write_timeout {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("the client accepted no byte for {} s", self.0.write_timeout.as_secs()),
                        ));
                    }
                    let slice = Timespec::try_from(WAIT_SLICE).expect("a small duration");
                    match rustix::event::poll(&mut [PollFd::new(socket, PollFlags::OUT)], Some(&slice)) {
                        Ok(_) | Err(Errno::INTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(at - offset)
    }
}

/// The I/O of a plain TCP connection with a [`Direct`]: the socket, less the placeholder
/// bytes of direct sends, and telling the body when hyper has flushed.
pub(crate) struct DirectTcp(Arc<Shared>);

impl DirectTcp {
    /// Discards up to the pending placeholder count of `len` bytes about to be written;
    /// returns how many.
    fn discard(&self, len: usize) -> usize {
        let skip = self.0.skip.load(Ordering::Acquire);
        if skip == 0 || len == 0 {
            return 0;
        }
        let n = skip.min(len as u64);
        self.0.skip.fetch_sub(n, Ordering::AcqRel);
        n as usize
    }
}

impl AsyncRead for DirectTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let socket = &self.0.socket;
        loop {
            ready!(socket.poll_read_ready(cx))?;
            match socket.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl DirectTcp {
    /// A write of `len` bytes by `write`: the pending placeholders are discarded first,
    /// anything else goes to the socket once it is writable.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        len: usize,
        write: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let discarded = self.discard(len);
        if discarded > 0 {
            return Poll::Ready(Ok(discarded));
        }
        self.0.flushed.store(false, Ordering::Release);
        let socket = &self.0.socket;
        loop {
            ready!(socket.poll_write_ready(cx))?;
            match write(socket) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncWrite for DirectTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, data.len(), |socket| socket.try_write(data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, bufs.iter().map(|b| b.len()).sum(), |socket| socket.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes the socket only once its own buffer is empty.
        self.0.flushed.store(true, Ordering::Release);
        self.0.waker.wake();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(rustix::net::shutdown(&*self.0.socket, rustix::net::Shutdown::Write).map_err(io::Error::from))
    }
}
