//! subserve's HTTP server: serves a Nix store as a signed binary cache.
//!
//! [`router`] builds the axum router over one [`AppState`] per served store; [`run`] serves it on a bound
//! listener until a shutdown future resolves. The `subserve` binary only parses its input
//! ([`cli`], [`settings`]) and calls these.

pub mod access;
pub mod admission;
pub mod audit_report;
pub mod audit_trail;
pub mod bake;
pub mod cli;
pub mod compression;
pub mod conn;
mod cpu;
mod direct;
pub mod error;
pub mod metrics;
mod narinfo;
pub mod narinfo_cache;
pub mod process;
pub mod range;
mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod stats;
pub mod status_page;
mod stream;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

pub use conn::{ClientAddr, ConnLimits, Listener};
pub use error::AppError;
pub use process::Process;
pub use routes::{router, router_with, ListingCache};
pub use state::AppState;
pub use stats::Stats;

/// Serves `stores` on `listeners` (over TLS on TCP when `tls` is given) until `shutdown`
/// resolves, then lets in-flight responses finish for up to the shutdown timeout of `limits`
/// (see [`conn`]).
pub async fn run(
    listeners: Vec<Listener>,
    stores: Vec<Arc<AppState>>,
    limits: ConnLimits,
    tls: Option<tls::Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    conn::serve(listeners, router(&stores), limits, tls, shutdown).await
}

/// [`run`] over the router last sent to `routers` (see [`conn::serve_reloadable`]).
pub async fn run_reloadable(
    listeners: Vec<Listener>,
    routers: tokio::sync::watch::Receiver<axum::Router>,
    limits: ConnLimits,
    tls: Option<tls::Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    conn::serve_reloadable(listeners, routers, limits, tls, shutdown).await
}
