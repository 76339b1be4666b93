//! A TCP relay for fault injection between a client and a server: it breaks the first
//! response longer than a given size mid-body, as a flaky network or a restarted proxy would,
//! and notes whether the client then resumed with `Range` and got a `206`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A TCP relay between Nix and subserve (or subserve and its upstream) that breaks the first
/// response longer than `cut_after` bytes, and notes whether a `Range` request and a `206`
/// went through afterwards.
pub struct Relay {
    addr: SocketAddr,
    /// Whether it broke a response.
    pub cut: Arc<AtomicBool>,
    /// Whether a request with a `Range` header went through.
    pub saw_range: Arc<AtomicBool>,
    /// Whether a `206 Partial Content` response went through.
    pub saw_206: Arc<AtomicBool>,
}

impl Relay {
    /// Relays to `upstream` from a new port on 127.0.0.1.
    pub fn start(upstream: SocketAddr, cut_after: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let saw_range = Arc::new(AtomicBool::new(false));
        let saw_206 = Arc::new(AtomicBool::new(false));
        let (c, r, s) = (Arc::clone(&cut), Arc::clone(&saw_range), Arc::clone(&saw_206));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(upstream) else { break };
                let (c, r, s) = (Arc::clone(&c), Arc::clone(&r), Arc::clone(&s));
                let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                // Requests: client -> server, watching for Range headers.
                std::thread::spawn(move || {
                    pump(client2, server2, |data| {
                        if contains(data, b"\r\nRange: bytes=") || contains(data, b"\r\nrange: bytes=") {
                            r.store(true, Ordering::SeqCst);
                        }
                        true
                    })
                });
                // Responses: server -> client, broken once mid-body.
                let sent = AtomicU64::new(0);
                std::thread::spawn(move || {
                    pump(server, client, |data| {
                        if contains(data, b"HTTP/1.1 206") {
                            s.store(true, Ordering::SeqCst);
                        }
                        let total = sent.fetch_add(data.len() as u64, Ordering::SeqCst) + data.len() as u64;
                        total <= cut_after || c.swap(true, Ordering::SeqCst)
                    })
                });
            }
        });
        Self { addr, cut, saw_range, saw_206 }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Copies `from` to `to` while `inspect` returns true; then shuts both sockets down.
fn pump(mut from: TcpStream, mut to: TcpStream, mut inspect: impl FnMut(&[u8]) -> bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !inspect(&buf[..n]) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
