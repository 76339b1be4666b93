//! Read-only access to a local Nix or Guix store: path metadata from its SQLite database
//! ([`db`]), NAR serialisation of store objects ([`nar`]) and their `.ls` listings
//! ([`listing`]). Knows nothing of HTTP.

pub mod db;
pub mod error;
pub mod listing;
pub mod nar;

pub use db::{PathInfo, Store, StoreConfig, DEFAULT_BUSY_TIMEOUT};
pub use error::Error;
