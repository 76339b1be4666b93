//! In-process tests of the `subserve` library: the real router and connection layer on
//! `127.0.0.1:0`, over stores written by `test_support::FakeStore`, driven by raw sockets;
//! and the repository's own references (`doc_references`). What needs the real Nix client or
//! the binary is in `tests/e2e`.

// Items are `pub` for the modules of this test binary; nothing is exported.
#![allow(unreachable_pub)]

mod admin;
mod admission;
mod audit_trail;
mod bake;
mod conn;
mod doc_references;
mod guix;
mod hostile;
mod http;
mod metrics;
mod reload;
mod routing;
mod status;
mod store;
