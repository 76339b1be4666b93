//! What subserve's tests share, so that each test file holds tests and nothing else: stores
//! made without Nix ([`store::FakeStore`]), the real server in process on `127.0.0.1:0`
//! ([`server::spawn_server`], with its counters), a misbehaving upstream
//! ([`fake_upstream::Fake`]) and the proxy's two dialects behind one trait for tests of what
//! they share ([`dialected::Dialected`]), a connection-breaking relay ([`relay::Relay`]), a raw
//! HTTP client ([`http`]), and reference compression, keys and libgcrypt.
//!
//! A dev-dependency only: no shipped crate may depend on it (the tidy tests check the
//! dependency graph against `docs/ARCHITECTURE.md`).

pub mod compression;
pub mod dialected;
pub mod fake_upstream;
pub mod gcrypt;
pub mod http;
pub mod keys;
pub mod relay;
pub mod server;
pub mod store;

pub use server::{spawn_server, spawn_server_with, TestServer};
pub use store::FakeStore;

/// The basename of a store path (`<hash>-<name>`), given absolute or already a basename.
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The 32-character hash part of a store path (absolute, in any store dir, or a basename).
pub fn hash_part(path: &str) -> &str {
    let base = basename(path);
    base.get(..32).unwrap_or_else(|| panic!("not a store path: {path}"))
}
