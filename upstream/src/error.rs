//! Errors of the proxy and its cache area: the few that reach the server (the cache cannot be
//! opened or written), and [`FetchError`], which records who failed and whether a retry may
//! help, but is turned into a miss before any client sees it.

use std::io;
use std::path::PathBuf;

/// A failure of the proxy's own storage; upstream trouble is never an `Error`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cache index (SQLite) failed.
    #[error("cache index {}", path.display())]
    Index {
        /// The index database.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file in the cache directory could not be read or written.
    #[error("cache file {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An upstream URL that does not parse.
    #[error("invalid upstream URL {url:?}")]
    Url {
        /// The URL as configured.
        url: String,
    },
    /// Another process holds the cache directory.
    #[error("cache directory {} is in use by {holder} ({detail}); give each server its own --cache-dir", dir.display())]
    InUse {
        /// The cache directory.
        dir: PathBuf,
        /// Who holds it, as its lock file says.
        holder: String,
        /// What the lock call said.
        detail: String,
    },
    /// The cache directory belongs to a store with another store directory.
    #[error(
        "cache directory {} belongs to a store of {found}, not {expected}; give this store its own --cache-dir",
        dir.display()
    )]
    OtherStore {
        /// The cache directory.
        dir: PathBuf,
        /// The store directory its `nix-cache-info` names.
        found: String,
        /// Ours.
        expected: String,
    },
    /// An upstream's keys are of the other dialect than the proxy's.
    #[error("upstream {url} is given {keys} keys, but this proxy fronts {proxy} caches")]
    TrustMismatch {
        /// The upstream.
        url: String,
        /// The proxy's dialect.
        proxy: formats::Dialect,
        /// The keys' dialect.
        keys: formats::Dialect,
    },
    /// A proxy was given a cache area opened for another store dir or dialect.
    #[error("cache directory {} holds {area}, not this proxy's {proxy}", dir.display())]
    AreaMismatch {
        /// The cache directory.
        dir: PathBuf,
        /// What the area was opened for.
        area: String,
        /// What the proxy serves.
        proxy: String,
    },
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot create the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Why one request to one upstream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// No answer (connect, headers or body) within the upstream's timeout.
    #[error("timed out")]
    Timeout,
    /// The connection failed or broke.
    #[error("connection failed: {0}")]
    Connection(#[source] reqwest::Error),
    /// An HTTP status that is neither success nor a miss.
    #[error("HTTP status {0}")]
    Status(u16),
    /// A body that is too large, not a narinfo, or for another path.
    #[error("bad answer: {0}")]
    Garbage(String),
    /// A narinfo that no trusted key signed and that has no content address.
    #[error("narinfo not signed by a trusted key")]
    Untrusted,
    /// A trusted answer the proxy cannot offer (a Guix narinfo whose every URL is in a
    /// compression subserve cannot verify): a miss, not the upstream's fault.
    #[error("unusable narinfo: {0}")]
    Unusable(String),
    /// The downloaded NAR does not match the narinfo.
    #[error("verification failed: {0}")]
    Verify(String),
    /// Our side failed (disk full, cache index); not the upstream's fault.
    #[error("local failure: {0}")]
    Local(String),
}

/// The causes an upstream failure is classed by, in logs and metrics.
pub const FAILURE_CAUSES: [&str; 8] = ["refused", "dns", "tls", "connection", "timeout", "status", "garbage", "verify"];

impl FetchError {
    /// The class of the failure: `refused` (nothing listens), `dns` (the name does not
    /// resolve), `tls` (the handshake or certificate failed), `connection` (another broken or
    /// reset connection), `timeout`, `status` (an HTTP error status), `garbage` (an unreadable
    /// or oversized answer), `verify` (a NAR that does not match its narinfo); `local` and
    /// `trust` for failures that are not the upstream's (see [`FetchError::is_upstream_fault`]).
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            FetchError::Timeout => "timeout",
            FetchError::Status(_) => "status",
            FetchError::Garbage(_) => "garbage",
            FetchError::Verify(_) => "verify",
            FetchError::Untrusted | FetchError::Unusable(_) => "trust",
            FetchError::Local(_) => "local",
            FetchError::Connection(e) => {
                // reqwest says little by its own kinds: read the chain of sources.
                let mut chain = String::new();
                let mut source: Option<&dyn std::error::Error> = Some(e);
                while let Some(err) = source {
                    if let Some(io) = err.downcast_ref::<std::io::Error>() {
                        if io.kind() == std::io::ErrorKind::ConnectionRefused {
                            return "refused";
                        }
                    }
                    chain.push_str(&err.to_string().to_ascii_lowercase());
                    chain.push(' ');
                    source = err.source();
                }
                if chain.contains("dns error") || chain.contains("failed to lookup address") {
                    "dns"
                } else if chain.contains("tls") || chain.contains("certificate") || chain.contains("handshake") {
                    "tls"
                } else if chain.contains("connection refused") {
                    "refused"
                } else {
                    "connection"
                }
            }
        }
    }

    /// Whether this failure counts against the upstream's health (the circuit breaker).
    /// A bad signature, an unusable answer or a local failure says nothing about whether the
    /// upstream is up.
    pub(crate) fn is_upstream_fault(&self) -> bool {
        !matches!(self, FetchError::Untrusted | FetchError::Unusable(_) | FetchError::Local(_))
    }
}

impl FetchError {
    /// Whether asking again may give another answer: a timeout, a failed or broken connection
    /// (a truncated body is one), a 5xx, 408 or 429. Garbage, a bad signature or another
    /// status would come back the same.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            FetchError::Timeout | FetchError::Connection(_) => true,
            FetchError::Status(status) => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            FetchError::Timeout
        } else {
            FetchError::Connection(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_are_classed_by_cause() {
        let client = reqwest::Client::new();
        // Port 1 on loopback: nothing listens there.
        let refused = client.get("http://127.0.0.1:1/x.narinfo").send().await.unwrap_err();
        assert_eq!(FetchError::from(refused).cause(), "refused");
        assert_eq!(FetchError::Timeout.cause(), "timeout");
        assert_eq!(FetchError::Status(502).cause(), "status");
        assert_eq!(FetchError::Verify("NarHash".into()).cause(), "verify");
        for cause in
            [FetchError::Timeout, FetchError::Status(500), FetchError::Garbage(String::new())].map(|e| e.cause())
        {
            assert!(FAILURE_CAUSES.contains(&cause), "{cause}");
        }
    }
}
