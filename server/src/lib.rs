//! subserve's HTTP server: serves a Nix store as a signed binary cache.
//!
//! [`router`] builds the axum router over one [`AppState`] per served store; [`run`] serves it on a bound
//! listener until a shutdown future resolves. The `subserve` binary only parses its input
//! ([`cli`], [`settings`]) and calls these.

pub mod admission;
pub mod bake;
pub mod cli;
pub mod compression;
pub mod dialect;
pub mod error;
pub mod narinfo_cache;
pub mod range;
mod routes;
pub mod settings;
pub mod startup;
pub mod state;
mod stream;

use std::future::Future;
use std::sync::Arc;

use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;

pub use error::AppError;
pub use routes::router;
pub use state::AppState;

/// The peer address of a request's connection, put in the request's extensions by the
/// connection layer; the proxy caps upstream lookups per client IP address with it.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Serves `stores` on `listener` until `shutdown` resolves, then lets in-flight requests finish.
///
/// Accepted sockets get `TCP_NODELAY`: with Nagle on, every keep-alive narinfo request
/// waits ~40 ms for a delayed ACK.
pub async fn run(
    listener: TcpListener,
    stores: Vec<Arc<AppState>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router(&stores)).with_graceful_shutdown(shutdown).await
}
