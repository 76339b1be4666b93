//! The connection layer: accepts connections and serves HTTP/1.1 on them with the timeouts,
//! caps and shutdown behaviour that a server hundreds of nodes depend on needs.
//!
//! axum's own `serve` sets no timer, so a connection that sends nothing, sends its headers a
//! byte a second, or stops reading its response, stays open forever and keeps whatever it
//! holds: a descriptor, a NAR stream slot. Here every connection is bounded in time:
//!
//! - **idle**: a connection waiting for its next request, with not one byte of it received,
//!   is closed after [`ConnLimits::idle_timeout`];
//! - **headers**: once the first byte of a request has arrived, the whole head must follow
//!   within [`ConnLimits::header_timeout`] (slowloris);
//! - **write progress**: a response the client accepts no byte of for
//!   [`ConnLimits::write_timeout`] is cut, which drops its body and frees its stream slot.
//!   A live client on a slow link keeps accepting bytes and never meets it; a client that was
//!   cut resumes with `Range` (Nix does, after a failed transfer).
//!
//! The first two are one hyper timer (hyper starts it whenever it waits for a request head);
//! `HeadTimer` gives it the two deadlines by watching the byte counter of `TimedIo`.
//!
//! The number of open connections is capped at [`ConnLimits::max_connections`], chosen well
//! below the descriptor limit: at the cap, the longest-idle keep-alive connections are closed
//! to make room (as nginx does), and accepting pauses until a connection ends, so the kernel's
//! backlog holds newcomers rather than the process running out of descriptors. An error at
//! accept is logged with its cause and retried after a short pause.
//!
//! Every request carries its peer's address as a [`ClientAddr`] extension (the per-client
//! caps of [`crate::admission`] key on it).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify, Semaphore};
use tower::ServiceExt as _;

use crate::direct::{Direct, DirectTcp};
use crate::tls::Tls;

/// The peer of the connection a request came on, as a request extension. Requests on a Unix
/// socket carry `0.0.0.0:0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl ClientAddr {
    /// The address that per-client caps count by.
    pub fn ip(&self) -> IpAddr {
        self.0.ip()
    }
}

/// The open connections of the server a request came in on (a request extension): what
/// `/metrics` reports.
#[derive(Clone)]
pub struct OpenConnections(Arc<Registry>);

impl OpenConnections {
    /// Connections open now, idle or busy.
    pub fn count(&self) -> usize {
        self.0.open()
    }
}

/// Time limits and the connection cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// How long a connection may wait for the first byte of its next request.
    pub idle_timeout: Duration,
    /// How long a request head may take to arrive once its first byte has.
    pub header_timeout: Duration,
    /// How long a response may go without the client accepting a byte of it.
    pub write_timeout: Duration,
    /// Connections open at once; past it, idle ones are closed and accepting pauses.
    pub max_connections: usize,
    /// How long a graceful shutdown waits for responses in flight before cutting them.
    pub shutdown_timeout: Duration,
}

/// Default of [`ConnLimits::idle_timeout`]: about nginx's keep-alive timeout (75 s). Nix keeps
/// its connections in curl's pool between batches of narinfo requests; curl reconnects when
/// it finds a pooled connection closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`ConnLimits::header_timeout`]: clients send a head in one write; 20 s is for
/// the worst links.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// Default of [`ConnLimits::write_timeout`]: half the admission queue's wait (60 s), so a
/// request queued behind dead clients gets their slots before it gives up, and a tenth of
/// Nix's own stall limit (300 s); a client that accepts nothing for 30 s is not reading.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`ConnLimits::shutdown_timeout`].
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound of the default connection cap; about 16 KiB each in hyper's buffers.
pub const MAX_DEFAULT_CONNECTIONS: usize = 16_384;

impl ConnLimits {
    /// The defaults, with `max_connections` derived from a descriptor limit of `nofile` and
    /// the descriptors `reserved` for streams, the store DB and the caches.
    pub fn with_defaults(nofile: u64, reserved: u64) -> Self {
        Self {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: default_max_connections(nofile, reserved),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}

/// The connection cap for a descriptor limit of `nofile`, of which `reserved` are kept for
/// files, sockets to upstreams and the DB: what is left, within 64 and
/// [`MAX_DEFAULT_CONNECTIONS`].
pub fn default_max_connections(nofile: u64, reserved: u64) -> usize {
    let left = nofile.saturating_sub(reserved);
    usize::try_from(left).unwrap_or(usize::MAX).clamp(64, MAX_DEFAULT_CONNECTIONS)
}

/// Raises the soft limit on open descriptors to the hard limit, and returns the limit now in
/// force (the soft one, if it could not be raised).
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if limit.current == limit.maximum {
        return soft;
    }
    match setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum }) {
        Ok(()) => limit.maximum.unwrap_or(u64::MAX),
        Err(e) => {
            tracing::warn!(error = %e, soft, "could not raise the descriptor limit to the hard limit");
            soft
        }
    }
}

/// A socket to accept connections on.
#[derive(Debug)]
pub enum Listener {
    /// TCP, IPv4 or IPv6.
    Tcp(tokio::net::TcpListener),
    /// A Unix domain socket (behind a reverse proxy on the same host).
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// Where this listener listens, for log lines.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l.local_addr().map_or_else(|e| format!("tcp (unknown: {e})"), |a| a.to_string()),
            Listener::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix socket".into()),
        }
    }

    /// The bound address of a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }

    async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (tcp, peer) = l.accept().await?;
                // With Nagle on, every keep-alive request waits ~40 ms for a delayed ACK.
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                Ok((Stream::Tcp(tcp), peer))
            }
            Listener::Unix(l) => {
                let (unix, _) = l.accept().await?;
                Ok((Stream::Unix(unix), SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)))
            }
        }
    }
}

/// An accepted connection's socket.
enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Serves `app` on every listener until `shutdown` resolves, then closes idle connections,
/// lets responses in flight finish for up to [`ConnLimits::shutdown_timeout`], and returns.
///
/// With `tls`, connections on TCP listeners speak HTTPS (the handshake must finish within the
/// header timeout); Unix sockets stay plain.
pub async fn serve(
    listeners: Vec<Listener>,
    app: Router,
    limits: ConnLimits,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_reloadable(listeners, watch::channel(app).1, limits, tls, shutdown).await
}

/// [`serve`] with the router taken from `apps` for every request: a new router sent there
/// (a reloaded configuration) serves the next request, on every connection, open or new.
pub async fn serve_reloadable(
    listeners: Vec<Listener>,
    app: watch::Receiver<Router>,
    limits: ConnLimits,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let registry = Arc::new(Registry::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(Phase::Serving);
    let mut acceptors = tokio::task::JoinSet::new();
    for listener in listeners {
        acceptors.spawn(accept_loop(
            listener,
            app.clone(),
            limits,
            tls.clone(),
            Arc::clone(&registry),
            stop_rx.clone(),
        ));
    }
    shutdown.await;
    let _ = stop_tx.send(Phase::Stopping);
    acceptors.shutdown().await;
    let open = registry.open();
    if open > 0 {
        tracing::info!(
            connections = open,
            deadline_s = limits.shutdown_timeout.as_secs(),
            "finishing responses in flight"
        );
    }
    if tokio::time::timeout(limits.shutdown_timeout, registry.all_closed()).await.is_err() {
        tracing::warn!(
            connections = registry.open(),
            "shutdown deadline passed: cutting the responses still in flight"
        );
        let _ = stop_tx.send(Phase::Cut);
        // Cut connections end at their next poll; this only waits for them to be dropped.
        let _ = tokio::time::timeout(Duration::from_secs(1), registry.all_closed()).await;
    }
    Ok(())
}

/// Where the server is in its life, as its connections see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// Accept nothing more; finish the responses in flight, close idle connections.
    Stopping,
    /// The shutdown deadline has passed: drop every connection now.
    Cut,
}

/// Accepts connections on one listener until told to stop.
async fn accept_loop(
    listener: Listener,
    app: watch::Receiver<Router>,
    limits: ConnLimits,
    tls: Option<Tls>,
    registry: Arc<Registry>,
    mut stop: watch::Receiver<Phase>,
) {
    let mut last_error_log: Option<Instant> = None;
    loop {
        let slot = tokio::select! {
            slot = registry.slot() => slot,
            _ = stop.wait_for(|p| *p >= Phase::Stopping) => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|p| *p >= Phase::Stopping) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ECONNABORTED…: none is the next client's fault, and
                // retrying at once would spin. Say why, at most once a second.
                if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(error = %e, open = registry.open(), "accepting a connection failed; pausing");
                    last_error_log = Some(Instant::now());
                }
                drop(slot);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let conn = registry.register(slot);
        let tls = tls.as_ref().filter(|_| matches!(stream, Stream::Tcp(_))).map(Tls::acceptor);
        tokio::spawn(serve_connection(stream, peer, app.clone(), limits, tls, conn, stop.clone()));
    }
}

/// Serves one connection to its end, a drain request, or shutdown.
async fn serve_connection(
    stream: Stream,
    peer: SocketAddr,
    app: watch::Receiver<Router>,
    limits: ConnLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    conn: Arc<Conn>,
    mut stop: watch::Receiver<Phase>,
) {
    // A plain TCP socket is shared with the bodies that send files directly (crate::direct).
    let (stream, direct) = match (stream, tls) {
        (Stream::Tcp(tcp), None) => {
            let (direct, io) = Direct::new(tcp, limits.write_timeout);
            (Socket::Direct(io), Some(direct))
        }
        (Stream::Tcp(tcp), Some(acceptor)) => (Socket::Tls(tcp, acceptor), None),
        (Stream::Unix(unix), _) => (Socket::Unix(unix), None),
    };
    let open = OpenConnections(Arc::clone(&conn.registry));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ClientAddr(peer));
        request.extensions_mut().insert(open.clone());
        if let Some(direct) = &direct {
            request.extensions_mut().insert(direct.clone());
        }
        let router = app.borrow().clone();
        router.oneshot(request.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(HeadTimer { conn: Arc::clone(&conn), idle: limits.idle_timeout, header: limits.header_timeout })
        // Any value switches the timer on; `HeadTimer` picks the real deadline.
        .header_read_timeout(limits.idle_timeout);
    let result = match stream {
        Socket::Tls(tcp, acceptor) => {
            // The handshake counts against the header timeout, as the head it precedes does.
            let tcp = TimedIo::new(tcp, Arc::clone(&conn), limits.write_timeout);
            let tls = match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            drive(builder.serve_connection(TokioIo::new(tls), service), &conn, &mut stop).await
        }
        Socket::Direct(tcp) => {
            let io = TokioIo::new(TimedIo::new(tcp, Arc::clone(&conn), limits.write_timeout));
            drive(builder.serve_connection(io, service), &conn, &mut stop).await
        }
        Socket::Unix(unix) => {
            let io = TokioIo::new(TimedIo::new(unix, Arc::clone(&conn), limits.write_timeout));
            drive(builder.serve_connection(io, service), &conn, &mut stop).await
        }
    };
    if let Err(e) = result {
        // A client gone, a timeout: routine; the request log has the rest.
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// A connection's socket, ready for hyper: TLS still to handshake, a plain TCP socket shared
/// with direct sends, or a Unix socket.
enum Socket {
    Tls(tokio::net::TcpStream, tokio_rustls::TlsAcceptor),
    Direct(DirectTcp),
    Unix(tokio::net::UnixStream),
}

/// Polls a connection to completion, switching it to graceful shutdown (finish the response
/// in flight, then close; at once if idle) when drained or when the server stops.
async fn drive<I, S>(
    connection: hyper::server::conn::http1::Connection<I, S>,
    conn: &Conn,
    stop: &mut watch::Receiver<Phase>,
) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(connection);
    let mut cut = stop.clone();
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            _ = conn.drain.notified(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = stop.wait_for(|p| *p >= Phase::Stopping), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = cut.wait_for(|p| *p == Phase::Cut) => return Ok(()),
        }
    }
}

/// The open connections: a slot each, and which of them are idle (the ones to close first
/// when the cap is reached).
struct Registry {
    slots: Arc<Semaphore>,
    cap: usize,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Signalled whenever a connection ends.
    ended: Notify,
    /// Start of the idle clocks ([`Conn::idle_since`] counts milliseconds from here).
    epoch: Instant,
}

impl Registry {
    fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            slots: Arc::new(Semaphore::new(cap)),
            cap,
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            ended: Notify::new(),
            epoch: Instant::now(),
        }
    }

    fn open(&self) -> usize {
        self.cap - self.slots.available_permits()
    }

    /// A slot for the next connection. At the cap, first asks the idle connections that have
    /// waited longest (up to an eighth of the cap) to close, then waits for a slot.
    async fn slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return permit;
        }
        let drained = self.drain_idle((self.cap / 8).max(1));
        tracing::debug!(drained, cap = self.cap, "at the connection cap: closing idle connections");
        Arc::clone(&self.slots).acquire_owned().await.expect("the semaphore is never closed")
    }

    /// Asks up to `n` idle connections, the longest idle first, to close; returns how many.
    fn drain_idle(&self, n: usize) -> usize {
        let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let mut idle: Vec<(u64, &Arc<Conn>)> =
            conns.values().filter_map(|c| c.idle_since().map(|since| (since, c))).collect();
        idle.sort_unstable_by_key(|(since, _)| *since);
        for (_, conn) in idle.iter().take(n) {
            conn.drain.notify_one();
        }
        idle.len().min(n)
    }

    fn register(self: &Arc<Self>, slot: tokio::sync::OwnedSemaphorePermit) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            registry: Arc::clone(self),
            _slot: slot,
            bytes_read: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            drain: Notify::new(),
        });
        self.conns.lock().unwrap_or_else(PoisonError::into_inner).insert(id, Arc::clone(&conn));
        conn
    }

    /// Resolves once no connection is open.
    async fn all_closed(&self) {
        loop {
            let ended = self.ended.notified();
            if self.conns.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
                return;
            }
            ended.await;
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One open connection, as the registry, the timer and the I/O wrapper share it.
struct Conn {
    id: u64,
    registry: Arc<Registry>,
    /// Released, with the connection, when the last reference goes.
    _slot: tokio::sync::OwnedSemaphorePermit,
    /// Bytes read from the client so far.
    bytes_read: AtomicU64,
    /// Waiting for a request and not one byte of it received.
    idle: AtomicBool,
    /// When it last became idle, in the registry's milliseconds.
    idle_since_ms: AtomicU64,
    /// Asks the connection to close once its response in flight is done.
    drain: Notify,
}

impl Conn {
    fn idle_since(&self) -> Option<u64> {
        self.idle.load(Ordering::Acquire).then(|| self.idle_since_ms.load(Ordering::Relaxed))
    }

    fn set_idle(&self, idle: bool) {
        if idle {
            self.idle_since_ms.store(self.registry.now_ms(), Ordering::Relaxed);
        }
        self.idle.store(idle, Ordering::Release);
    }

    /// Called by the connection task when it ends; the registry forgets it.
    fn close(&self) {
        self.registry.conns.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
        self.registry.ended.notify_waiters();
    }
}

/// The socket of one connection: counts bytes read (for [`HeadTimer`]) and fails a write the
/// client has accepted nothing of for `write_timeout`.
struct TimedIo<T> {
    inner: T,
    conn: Arc<Conn>,
    write_timeout: Duration,
    /// Armed while a write is blocked on the client; disarmed by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> TimedIo<T> {
    fn new(inner: T, conn: Arc<Conn>, write_timeout: Duration) -> Self {
        Self { inner, conn, write_timeout, stalled: None }
    }

    /// Turns a write's outcome into the stall clock's: progress disarms it, `Pending` arms it
    /// (once) and fails with `TimedOut` when it runs out.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let write_timeout = self.write_timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(write_timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stalled = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client accepted no byte for {} s", write_timeout.as_secs()),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for TimedIo<T> {
    fn drop(&mut self) {
        self.conn.close();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.conn.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, data);
        this.watch(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, poll)
    }
}

/// hyper's timer for one connection. hyper asks it for a sleep whenever it starts waiting for
/// a request head and drops the sleep once the head is in; the sleep it gets ([`HeadWait`])
/// ends after the idle timeout while no byte has arrived, and after the header timeout
/// counted from the first byte once one has.
struct HeadTimer {
    conn: Arc<Conn>,
    idle: Duration,
    header: Duration,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(PlainSleep(Box::pin(tokio::time::sleep(duration))))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
        // The old wait was dropped after the new one marked the connection idle.
        self.conn.set_idle(true);
    }

    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.conn.set_idle(true);
        Box::pin(HeadWait {
            conn: Arc::clone(&self.conn),
            bytes_at_start: self.conn.bytes_read.load(Ordering::Relaxed),
            header: self.header,
            receiving: false,
            sleep: Box::pin(tokio::time::sleep(self.idle)),
        })
    }
}

/// A plain sleep, for any other timer hyper may ask for.
struct PlainSleep(Pin<Box<tokio::time::Sleep>>);

impl Future for PlainSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for PlainSleep {}

/// The wait for one request head; see [`HeadTimer`].
struct HeadWait {
    conn: Arc<Conn>,
    bytes_at_start: u64,
    header: Duration,
    /// The first byte has arrived: the deadline is the header timeout's.
    receiving: bool,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // hyper polls this right after every read that left the head incomplete, so the first
        // byte is noticed as it arrives.
        if !self.receiving && self.conn.bytes_read.load(Ordering::Relaxed) > self.bytes_at_start {
            self.receiving = true;
            self.conn.set_idle(false);
            let deadline = tokio::time::Instant::now() + self.header;
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl Drop for HeadWait {
    fn drop(&mut self) {
        self.conn.set_idle(false);
    }
}

impl hyper::rt::Sleep for HeadWait {}
