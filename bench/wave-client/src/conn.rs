//! One keep-alive HTTP/1.1 connection of a node, reopened when the server closed it, and the
//! retry rule of Nix's downloader.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// How often a request is tried, as Nix's `download-attempts` default.
pub(crate) const ATTEMPTS: u32 = 5;

/// What went wrong with one attempt.
#[derive(Debug)]
pub(crate) enum Trouble {
    /// Worth another attempt, as Nix would make one (connection trouble, a cut body, 5xx
    /// other than 501/505/511, 408, 429); the cause names it in the report.
    Transient(String),
    /// Not worth another attempt: a wrong status, a body that fails its check.
    Fatal(String),
}

/// A connection to the cache that a node keeps open between requests.
pub(crate) struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Conn {
    /// A connection to `addr`, opened on first use.
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Conn { addr, sender: None }
    }

    /// Sends `GET path` and returns the response head with its streaming body. A 200 is
    /// returned; any other status is a [`Trouble`].
    pub(crate) async fn get(&mut self, path: &str) -> Result<Response<Incoming>, Trouble> {
        let usable = match self.sender.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.sender = Some(self.connect().await.map_err(|e| Trouble::Transient(format!("connect: {e}")))?);
        }
        let sender = self.sender.as_mut().expect("a sender was just made");
        let request = Request::get(path)
            .header(header::HOST, self.addr.to_string())
            .header(header::USER_AGENT, "job-wave (Nix 2.8 behaviour)")
            .body(Empty::new())
            .map_err(|e| Trouble::Fatal(format!("request for {path}: {e}")))?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                self.sender = None;
                return Err(Trouble::Transient(format!("send: {e}")));
            }
        };
        match response.status() {
            StatusCode::OK => Ok(response),
            status if is_transient(status) => Err(Trouble::Transient(status.as_u16().to_string())),
            status => Err(Trouble::Fatal(format!("{path}: HTTP {status}"))),
        }
    }

    /// Forgets the connection (after a body was cut, it cannot be reused).
    pub(crate) fn reset(&mut self) {
        self.sender = None;
    }

    async fn connect(&self) -> std::io::Result<SendRequest<Empty<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::task::spawn_local(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// The statuses Nix's downloader retries.
fn is_transient(status: StatusCode) -> bool {
    let code = status.as_u16();
    matches!(code, 408 | 429) || (status.is_server_error() && !matches!(code, 501 | 505 | 511))
}

/// Nix's wait before attempt `attempt` (2, 3, …): 250 ms × 2^(attempt − 2 + U(0, 0.5)).
pub(crate) fn backoff(attempt: u32) -> Duration {
    let exponent = f64::from(attempt.saturating_sub(2)) + 0.5 * jitter();
    Duration::from_secs_f64(0.25 * 2_f64.powf(exponent))
}

/// A number in [0, 1) that differs between calls and nodes (the hasher's random keys, fed a
/// counter): jitter, not cryptography.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let bits = RandomState::new().hash_one(CALLS.fetch_add(1, Ordering::Relaxed));
    (bits >> 11) as f64 / (1_u64 << 53) as f64
}
