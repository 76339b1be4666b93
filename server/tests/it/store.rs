//! The store most in-process tests serve: a few paths shaped like the e2e fixture's (a large
//! single file of `seq` output, a tree of odd files, a derivation's output with its build log,
//! a fixed-output file), written by `test_support::FakeStore` in milliseconds.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::Path;

use formats::{Compression, NarInfo};
use test_support::http::get;
use test_support::{hash_part, FakeStore, TestServer};

/// The paths of [`sample`].
pub struct Sample {
    pub store: FakeStore,
    /// A single file of `seq 1 N` output, about 2 MiB.
    pub big: String,
    /// A directory of odd entries: an executable, symlinks, an empty file, a unicode name.
    pub odd: String,
    /// A flat fixed-output file.
    pub fixed: String,
    /// Refers to all of the above; built by [`Sample::top_drv`], which has a bzip2 log.
    pub top: String,
    /// The derivation that "built" `top`.
    pub top_drv: String,
}

impl Sample {
    /// Every valid path, sorted.
    pub fn closure(&self) -> Vec<String> {
        let mut all = vec![self.big.clone(), self.odd.clone(), self.fixed.clone(), self.top.clone()];
        all.sort();
        all
    }
}

/// A Nix store with the [`Sample`] paths.
pub fn sample() -> Sample {
    let store = FakeStore::nix();
    let seq: String = (1..)
        .map(|i: u32| format!("{i}\n"))
        .take_while({
            let mut len = 0;
            move |line| {
                len += line.len();
                len <= 2 << 20
            }
        })
        .collect();
    let big = store.add_file("big-2MiB", seq.as_bytes());
    let odd = store.add("odd-files", &[], |p| {
        fs::create_dir_all(p.join("bin")).unwrap();
        fs::create_dir_all(p.join("empty-dir")).unwrap();
        fs::write(p.join("bin/script"), "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(p.join("bin/script"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(p.join("empty-file"), "").unwrap();
        symlink("bin/script", p.join("relative-link")).unwrap();
        symlink("does-not-exist", p.join("dangling-link")).unwrap();
        fs::write(p.join("héllo wörld ☃"), "unicode\n").unwrap();
        fs::write(p.join("B"), "upper\n").unwrap();
        fs::write(p.join("a"), "lower\n").unwrap();
    });
    let fixed = store.add_fixed_output("fixed-output.txt", b"fixed-output\n");
    let top_drv = format!("{}/3p2jdn7hy5c4nqwgzrz5ym9xvsdr5ns4-top.drv", store.store_dir());
    let top = store.add("top", &[&big, &odd, &fixed], |p: &Path| {
        fs::create_dir_all(p).unwrap();
        fs::write(p.join("closure"), "big odd fixed\n").unwrap();
    });
    store.set_deriver(&top, &top_drv);
    store.add_log(&top_drv, "subserve-fixture-log: building top\n", Compression::Bzip2);
    Sample { store, big, odd, fixed, top, top_drv }
}

/// A config file serving `store` alone at `/`, its state in `state`, with `extra` keys.
pub fn config(store: &FakeStore, state: &Path, extra: &str) -> String {
    format!("state-dir = {state:?}\n{}upstream = []\n{extra}\n", store.config())
}

/// A config file serving `nix` at `/nix` and `guix` at `/guix`, their state in `state`, with
/// neither upstreams nor baking.
pub fn nix_and_guix_config(nix: &FakeStore, guix: &FakeStore, state: &Path) -> String {
    format!(
        "state-dir = {state:?}\n\
         [[store]]\nprefix = \"/nix\"\n{}upstream = []\nbake = \"none\"\n\
         [[store]]\nprefix = \"/guix\"\ndialect = \"guix\"\n{}upstream = []\nbake = \"none\"\n",
        nix.config(),
        guix.config(),
    )
}

/// The narinfo of `path`, which must be served.
pub fn narinfo(srv: &TestServer, path: &str) -> NarInfo {
    narinfo_at(srv, "", path)
}

/// The narinfo of `path` from the store at `prefix`, which must serve it.
pub fn narinfo_at(srv: &TestServer, prefix: &str, path: &str) -> NarInfo {
    let reply = get(srv.addr, &format!("{prefix}/{}.narinfo", hash_part(path)));
    assert_eq!(reply.status, 200, "{path}");
    NarInfo::parse(std::str::from_utf8(&reply.body).unwrap()).unwrap()
}
