//! The one error type of the HTTP layer, and the only place that maps failures to status codes.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Why a request could not be answered with what it asked for.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The path is not (or no longer) in the store, or the URL names nothing we serve.
    #[error("not found")]
    NotFound,
    /// The path is not here now: the proxy could not get an answer from its upstreams within
    /// its retry budget, or the request was over a cap. A 404 like [`AppError::NotFound`]
    /// (a 5xx would fail the client's build), but one that may change soon.
    #[error("not found for now: upstream unavailable")]
    NotFoundForNow,
    /// The client may not see this (an admin page from an address not allowed).
    #[error("forbidden")]
    Forbidden,
    /// The URL is malformed: a bad hash, a bad name, a bad extension.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A `Range` that starts beyond the end of the NAR.
    #[error("range not satisfiable for size {size}")]
    RangeNotSatisfiable {
        /// Size of the whole resource.
        size: u64,
    },
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] store_reader::Error),
    /// A narinfo could not be signed.
    #[error("cannot sign: {0}")]
    Signing(#[from] signing::Error),
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// `/health` found a store whose DB does not answer; the reason is the body, for the load
    /// balancer's or the operator's eyes.
    #[error("unhealthy: {0}")]
    Unhealthy(String),
    /// Too many NAR bodies in flight, and none finished within the queue timeout
    /// (`crate::admission`). Clients retry a 503.
    #[error("overloaded: retry after {} s", retry_after.as_secs())]
    Overloaded {
        /// Sent as `Retry-After`.
        retry_after: std::time::Duration,
    },
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::NotFound | AppError::NotFoundForNow => StatusCode::NOT_FOUND,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Forbidden => StatusCode::FORBIDDEN,
            AppError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            // Storage trouble is "not here" to a client: a 5xx fails a Nix build after its
            // retries, a 404 lets it try its next substituter. The log says what it was.
            AppError::Store(_) => StatusCode::NOT_FOUND,
            AppError::Task(_) | AppError::Signing(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Overloaded { .. } | AppError::Unhealthy(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let body = match &self {
            AppError::BadRequest(why) => format!("{why}\n"),
            AppError::Unhealthy(why) => format!("unhealthy: {why}\n"),
            _ => format!("{}\n", status.canonical_reason().unwrap_or("error")),
        };
        let mut response = (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
        // The cause goes to the request's log line (`routes::log_request`), not to a line of
        // its own. Overload is logged (as a warning) by the limiter; it is not a failure of ours.
        if matches!(self, AppError::Store(_))
            || status.is_server_error() && !matches!(self, AppError::Overloaded { .. } | AppError::Unhealthy(_))
        {
            response.extensions_mut().insert(Failure(chain(&self)));
        }
        if let AppError::RangeNotSatisfiable { size } = self {
            if let Ok(v) = format!("bytes */{size}").parse() {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        if matches!(self, AppError::Unhealthy(_)) {
            response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
        }
        if let AppError::Overloaded { retry_after } = self {
            response.headers_mut().insert(header::RETRY_AFTER, retry_after.as_secs().into());
        }
        response
    }
}

/// The cause of a failed request, which its log line carries: storage trouble, or a failure
/// of ours that made a 5xx.
#[derive(Debug, Clone)]
pub struct Failure(pub String);

/// `error` and its sources, `: `-separated: the cause is what an operator needs
/// ("cannot read /nix/store/…: Too many open files").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
