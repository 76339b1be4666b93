//! The connection layer against misbehaving clients: idle and slow-header connections are
//! closed on time, a client that stops reading is cut and its body dropped, the connection
//! cap closes idle connections to make room, and shutdown waits for responses in flight up to
//! its deadline. Each test serves a small router whose handlers report what happened to them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use subserve::{ClientAddr, ConnLimits, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

/// Generous short limits: each test sets the one it exercises.
fn limits() -> ConnLimits {
    ConnLimits {
        idle_timeout: Duration::from_secs(30),
        header_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(30),
        max_connections: 1000,
        shutdown_timeout: Duration::from_secs(30),
    }
}

/// What the test router's handlers report.
#[derive(Default)]
struct Probe {
    /// Endless bodies dropped (by hyper, when their connection ended).
    bodies_dropped: AtomicUsize,
}

struct DropCounter(Arc<Probe>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.bodies_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// `/small`: a short body; `/endless`: 64 KiB chunks forever; `/peer`: the client's address;
/// `/slow`: a 10-chunk body, one chunk every 300 ms.
fn app(probe: Arc<Probe>) -> Router {
    Router::new()
        .route("/small", get(|| async { "hello\n" }))
        .route(
            "/peer",
            get(|axum::Extension(ClientAddr(peer)): axum::Extension<ClientAddr>| async move { peer.ip().to_string() }),
        )
        .route(
            "/endless",
            get(move || {
                let guard = DropCounter(Arc::clone(&probe));
                async move {
                    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                    let stream = futures_util::stream::repeat_with(move || {
                        let _held = &guard;
                        Ok::<_, Infallible>(chunk.clone())
                    });
                    Body::from_stream(stream)
                }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                let stream = futures_util::stream::unfold(0, |i| async move {
                    if i == 10 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Some((Ok::<_, Infallible>(Bytes::from_static(b"0123456789")), i + 1))
                });
                Body::from_stream(stream)
            }),
        )
}

/// A running server and the means to stop it.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
    probe: Arc<Probe>,
}

async fn start(limits: ConnLimits) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let probe = Arc::new(Probe::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(subserve::conn::serve(
        vec![Listener::Tcp(listener)],
        app(Arc::clone(&probe)),
        limits,
        None,
        async {
            let _ = stopped.await;
        },
    ));
    Server { addr, stop: Some(stop), done, probe }
}

/// Reads until the server closes the connection (or resets it); returns what was read.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// One request on a fresh connection; returns the whole response text.
async fn get_once(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned()
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout_and_others_are_served_meanwhile() {
    let server = start(ConnLimits { idle_timeout: Duration::from_secs(1), ..limits() }).await;
    let started = Instant::now();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    // Served at once while the idle one waits.
    assert!(get_once(server.addr, "/small").await.ends_with("hello\n"));
    assert!(read_to_close(&mut idle).await.is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "closed before the idle timeout: {waited:?}");
    assert!(waited < Duration::from_secs(10), "not closed on time: {waited:?}");
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_when_idle_after_its_responses() {
    let server = start(ConnLimits { idle_timeout: Duration::from_secs(1), ..limits() }).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..3 {
        stream.write_all(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("hello\n"));
    }
    let started = Instant::now();
    assert!(read_to_close(&mut stream).await.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_meet_the_header_timeout_not_the_idle_one() {
    let server =
        start(ConnLimits { idle_timeout: Duration::from_secs(60), header_timeout: Duration::from_secs(1), ..limits() })
            .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let head = b"GET /small HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed = false;
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The server answers a timed-out head with nothing, or a 408, then closes.
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
            assert!(
                n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
                "answered a partial head"
            );
            closed = true;
            break;
        }
    }
    assert!(closed, "a head sent over {:?} was accepted", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5), "closed late: {:?}", started.elapsed());
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_and_its_body_dropped() {
    let server = start(ConnLimits { write_timeout: Duration::from_secs(1), ..limits() }).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.addr).await.unwrap();
    stalled.write_all(b"GET /endless HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    // Read a little, then nothing: the socket buffers fill and the server's writes block.
    let mut buf = [0u8; 1024];
    stalled.read_exact(&mut buf).await.unwrap();
    let started = Instant::now();
    while server.probe.bodies_dropped.load(Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "the stalled response was never cut");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A slow but live client, accepting a few bytes every 300 ms, is never cut.
    let reply = get_once(server.addr, "/slow").await;
    assert!(reply.contains("0123456789"), "{reply}");
    assert!(reply.len() > 100);
}

#[tokio::test]
async fn at_the_connection_cap_idle_connections_make_room_for_new_ones() {
    let server = start(ConnLimits { max_connections: 8, ..limits() }).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Give the server a moment to accept them all (it accepts as fast as it can).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    for _ in 0..20 {
        assert!(get_once(server.addr, "/small").await.ends_with("hello\n"));
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // Some of the idle ones were closed for them.
    let mut closed = 0;
    for mut stream in idle {
        if tokio::time::timeout(Duration::from_millis(100), read_to_close(&mut stream)).await.is_ok() {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no idle connection was closed");
}

#[tokio::test]
async fn requests_carry_the_client_address() {
    let server = start(limits()).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.7:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    stream.write_all(b"GET /peer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await.unwrap();
    let reply = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
    assert!(reply.ends_with("127.0.0.7"), "{reply}");
}

#[tokio::test]
async fn shutdown_finishes_responses_in_flight_and_closes_idle_connections() {
    let mut server = start(limits()).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut first = [0u8; 16];
    busy.read_exact(&mut first).await.unwrap();
    server.stop.take().unwrap().send(()).unwrap();
    // The idle one closes at once; the busy one gets its whole body, then the server is done.
    assert!(tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut idle)).await.unwrap().is_empty());
    let rest = String::from_utf8_lossy(&read_to_close(&mut busy).await).into_owned();
    assert_eq!(rest.matches("0123456789").count() + String::from_utf8_lossy(&first).matches("0123456789").count(), 10);
    tokio::time::timeout(Duration::from_secs(10), server.done).await.unwrap().unwrap().unwrap();
    // Nothing listens any more.
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn shutdown_cuts_responses_still_running_at_its_deadline() {
    let mut server = start(ConnLimits { shutdown_timeout: Duration::from_secs(1), ..limits() }).await;
    let mut endless = TcpStream::connect(server.addr).await.unwrap();
    endless.write_all(b"GET /endless HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    endless.read_exact(&mut buf).await.unwrap();
    let started = Instant::now();
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.done).await.unwrap().unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900), "returned before the deadline");
}
