//! What a compute node does against a server: the Nix client configured for it, the fixture
//! closure substituted through it with signatures required, and Guix's libgcrypt accepting
//! every narinfo it serves. Shared by the e2e tests that end with a real client.

use std::path::Path;

use test_support::gcrypt::gcrypt;
use test_support::hash_part;
use test_support::http::get;

use crate::fixture::{self, Fixture};
use crate::harness::{NixEnv, Server};

/// A node's Nix configuration in `dir`: substituting from `url` only, trusting only
/// `trusted`, signatures required, no building instead.
pub fn client(dir: &Path, url: &str, trusted: &str) -> NixEnv {
    NixEnv::new(
        dir,
        &format!("substituters = {url}\ntrusted-public-keys = {trusted}\nrequire-sigs = true\nfallback = false"),
    )
}

/// A fresh node trusting only `public` substitutes the fixture's closure from `url` into
/// `dir/dst` with signatures required, verifies every path's contents, and must end up with
/// exactly the fixture's closure.
pub fn substitute_fixture_closure(fx: &Fixture, dir: &Path, url: &str, public: &str) {
    let env = client(dir, url, public);
    let dst = dir.join("dst").display().to_string();
    env.run("nix-store", &["--store", &dst, "--realise", &fx.top]);
    env.run("nix-store", &["--store", &dst, "--verify", "--check-contents"]);
    let mut got: Vec<String> =
        env.run("nix-store", &["--store", &dst, "-qR", &fx.top]).lines().map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, fx.closure);
}

/// libgcrypt, as `guix substitute` uses it, accepts every narinfo subserve serves, with the key
/// from `/signing-key.pub` in the ACL; `prefix` is where the store is served (`""` or `/guix`).
pub fn assert_libgcrypt_accepts_all(srv: &Server, prefix: &str, dir: &std::path::Path, public: &std::path::Path) {
    let fx = fixture::guix();
    let mut files = Vec::new();
    for (i, path) in fx.closure.iter().enumerate() {
        let reply = get(srv.addr, &format!("{prefix}/{}.narinfo", hash_part(path)));
        assert_eq!(reply.status, 200);
        let file = dir.join(format!("{i}.narinfo"));
        std::fs::write(&file, &reply.body).unwrap();
        files.push(file);
    }
    let mut args = vec![std::path::Path::new("verify"), public];
    args.extend(files.iter().map(|f| f.as_path()));
    let verdicts = gcrypt(&args);
    assert_eq!(verdicts.lines().count(), files.len());
    assert!(verdicts.lines().all(|l| l == "valid"), "libgcrypt said:\n{verdicts}");
}
