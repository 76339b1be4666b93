//! The acceptance test of a compute node: the real Nix client substitutes the fixture closure
//! from subserve into a fresh chroot store, with signatures required, once per compression.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use test_support::keys::keygen;
use test_support::relay::Relay;

use crate::fixture::{self, Fixture};
use crate::harness::{scratch, Server};
use crate::node::client;

/// Substitutes the closure of `top` through `url` into a fresh store and checks the result
/// path by path against the fixture; prints the figures.
fn substitute_and_verify(fx: &Fixture, dir: &Path, srv: &Server, url: &str, public: &str, label: &str) {
    let env = client(dir, url, public);
    let dst = dir.join("dst").display().to_string();
    let start = Instant::now();
    env.run("nix-store", &["--store", &dst, "--realise", &fx.top]);
    let secs = start.elapsed().as_secs_f64();

    let mut got: Vec<String> =
        env.run("nix-store", &["--store", &dst, "-qR", &fx.top]).lines().map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, fx.closure, "substituted closure differs from the fixture's");
    let mut bytes = 0u64;
    for path in &fx.closure {
        for query in ["--hash", "--size", "--deriver"] {
            let want = fx.env.run("nix-store", &["--store", &fx.store_arg(), "-q", query, path]);
            let have = env.run("nix-store", &["--store", &dst, "-q", query, path]);
            assert_eq!(have, want, "{path} {query}");
        }
        bytes +=
            fx.env.run("nix-store", &["--store", &fx.store_arg(), "-q", "--size", path]).trim().parse::<u64>().unwrap();
    }
    // Re-hash every file that arrived, as `nix-store --verify` does for a suspicious store.
    env.run("nix-store", &["--store", &dst, "--verify", "--check-contents"]);
    let references = fx.env.run("nix-store", &["--store", &fx.store_arg(), "-q", "--references", &fx.top]);
    assert_eq!(env.run("nix-store", &["--store", &dst, "-q", "--references", &fx.top]), references);
    let rss = srv.peak_rss_mib();
    eprintln!(
        "e2e substitution [{label}]: {} paths, {:.1} MiB of NAR in {secs:.2} s ({:.0} MiB/s), server peak RSS {rss:.1} MiB",
        fx.closure.len(),
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / (1 << 20) as f64 / secs
    );
    // NARs are streamed: a 256 MiB path must not make the server hold it.
    assert!(rss < 96.0, "server peak RSS {rss:.1} MiB while streaming a 256 MiB NAR");
}

fn serve(fx: &Fixture, dir: &Path, secret: &str, compression: &str) -> Server {
    let state = dir.join("state").display().to_string();
    Server::start(&[
        "--store-root",
        &fx.store_arg(),
        "--sign-key-file",
        secret,
        "--compression",
        compression,
        "--state-dir",
        &state,
    ])
}

/// Uncompressed, through a relay that breaks the connection in the middle of the 256 MiB
/// NAR: Nix must resume with `Range` and still import a correct closure.
#[test]
fn substitutes_closure_uncompressed_resuming_a_broken_download() {
    let fx = fixture::get();
    let dir = scratch("subst-none");
    let (secret, public) = keygen(&dir, "subserve-test-1");
    let srv = serve(fx, &dir, &secret, "none");
    let relay = Relay::start(srv.addr, 64 << 20);
    substitute_and_verify(fx, &dir, &srv, &relay.url(), &public, "none, one broken connection");
    assert!(relay.cut.load(Ordering::SeqCst), "the relay never broke a download");
    assert!(relay.saw_range.load(Ordering::SeqCst), "Nix did not resume with a Range request");
    assert!(relay.saw_206.load(Ordering::SeqCst), "subserve did not answer the Range with 206");
}

#[test]
fn substitutes_closure_zstd() {
    let fx = fixture::get();
    let dir = scratch("subst-zstd");
    let (secret, public) = keygen(&dir, "subserve-test-1");
    let srv = serve(fx, &dir, &secret, "zstd");
    substitute_and_verify(fx, &dir, &srv, &srv.url(), &public, "zstd");
}

#[test]
fn substitutes_closure_xz() {
    let fx = fixture::get();
    let dir = scratch("subst-xz");
    let (secret, public) = keygen(&dir, "subserve-test-1");
    let srv = serve(fx, &dir, &secret, "xz");
    substitute_and_verify(fx, &dir, &srv, &srv.url(), &public, "xz");
}

/// A client that trusts another key refuses our input-addressed paths, but still accepts a
/// content-addressed one, which it can check by itself.
#[test]
fn wrong_trusted_key_is_refused() {
    let fx = fixture::get();
    let dir = scratch("subst-wrong-key");
    let (secret, _) = keygen(&dir, "subserve-test-1");
    let (_, other_public) = keygen(&dir, "someone-else-1");
    let srv = serve(fx, &dir, &secret, "none");
    let env = client(&dir, &srv.url(), &other_public);
    let dst = dir.join("dst").display().to_string();
    let out = env.cmd("nix-store").args(["--store", &dst, "--realise", &fx.top]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a path signed by an untrusted key was accepted:\n{stderr}");
    assert!(stderr.contains("is not signed by any of the keys"), "unexpected failure:\n{stderr}");
    let valid = env.cmd("nix-store").args(["--store", &dst, "--check-validity", &fx.top]).output().unwrap();
    assert!(!valid.status.success(), "{} became valid", fx.top);

    env.run("nix-store", &["--store", &dst, "--realise", &fx.busybox]);
}

/// `nix path-info`, `nix store ls` and `nix log` pointed straight at the cache.
#[test]
fn nix_commands_against_the_cache() {
    let fx = fixture::get();
    let dir = scratch("nix-commands");
    let (secret, public) = keygen(&dir, "subserve-test-1");
    let srv = serve(fx, &dir, &secret, "zstd");
    let env = client(&dir, &srv.url(), &public);
    let store = format!("{}?trusted=0", srv.url());

    let info = env.run("nix", &["path-info", "--json", "--store", &store, &fx.top]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let info = &info[0];
    let want_hash = fx.env.run("nix-store", &["--store", &fx.store_arg(), "-q", "--hash", &fx.top]);
    assert_eq!(info["path"], fx.top.as_str());
    let nar_hash = |s: &str| formats::NarHash::parse(s).unwrap();
    assert_eq!(nar_hash(info["narHash"].as_str().unwrap()), nar_hash(want_hash.trim()));
    assert!(info["signatures"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().starts_with("subserve-test-1:")));
    assert_eq!(info["deriver"], fx.top_drv.as_str());

    let odd = fx.closure.iter().find(|p| p.ends_with("-odd-files")).unwrap();
    let ls = env.run("nix", &["store", "ls", "--store", &store, "-lR", odd]);
    for needle in ["bin/script", "relative-link -> bin/script", "héllo wörld ☃", "d29/file", "empty-dir"] {
        assert!(ls.contains(needle), "{needle:?} missing from:\n{ls}");
    }
    let cat = env.run("nix", &["store", "cat", "--store", &store, &format!("{odd}/a")]);
    assert_eq!(cat, "lower\n");

    let log = env.run("nix", &["log", "--store", &store, &fx.top]);
    assert!(log.contains("subserve-fixture-log: building top"), "{log}");
}
