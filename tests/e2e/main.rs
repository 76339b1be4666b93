//! End-to-end tests: the real `subserve` binary against the real Nix client (Debian's
//! `nix-bin`), on a fixture store built by real `nix-build` into a chroot store.
//!
//! Nothing here is mocked. A missing `nix-store` fails the tests with the command that
//! installs it; they never skip. Network traffic stays on 127.0.0.1.

// Items are `pub` for the modules of this test binary; nothing is exported.
#![allow(unreachable_pub)]

mod audit_trail;
mod bake;
mod cli;
mod deploy;
mod fixture;
mod guix;
mod guix_proxy;
mod harness;
mod hostile;
mod http;
mod nar_equality;
mod node;
mod proxy;
mod readme;
mod readonly;
mod service;
mod side_by_side;
mod status_page;
mod substitute;
