//! A store served by a user who cannot write its DB's directory (as under systemd's
//! `DynamicUser=`, or from a read-only mount): subserve starts even when no other process has
//! the DB open, the real Nix client substitutes from it, and a path registered afterwards by
//! a writer is served at once.

use std::os::unix::fs::chown;
use std::path::Path;

use test_support::keys::keygen;

use crate::harness::{scratch, NixEnv, Server};
use crate::node::client;

/// `nobody`'s user and group ids on Debian.
const NOBODY: u32 = 65534;

fn add(env: &NixEnv, root: &Path, dir: &Path, name: &str, contents: &str) -> String {
    let file = dir.join(name);
    std::fs::write(&file, contents).unwrap();
    env.run("nix-store", &["--store", root.to_str().unwrap(), "--add", file.to_str().unwrap()]).trim().to_owned()
}

#[test]
fn a_non_root_server_reads_a_db_nobody_has_open_and_sees_later_writes() {
    crate::harness::require_nix();
    let dir = scratch("readonly");
    let root = dir.join("root");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let writer = NixEnv::new(&dir.join("writer"), "");
    let first = add(&writer, &root, &src, "first.txt", "served by nobody\n");
    let db_dir = root.join("nix/var/nix/db");
    // The writer has exited: SQLite removed the WAL with its last connection.
    assert!(!db_dir.join("db.sqlite-wal").exists() && !db_dir.join("db.sqlite-shm").exists());

    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    let (secret, public) = keygen(&dir, "readonly-1");
    chown(&secret, Some(NOBODY), Some(NOBODY)).unwrap();
    let srv = Server::start_as_nobody(&[
        "--store-root",
        root.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--sign-key-file",
        &secret,
    ]);
    assert!(srv.log.lock().unwrap().contains("immutable"), "{}", srv.log.lock().unwrap());

    let node = dir.join("node");
    let env = client(&node, &srv.url(), &public);
    let dst = node.join("dst").display().to_string();
    env.run("nix-store", &["--store", &dst, "--realise", &first]);
    env.run("nix-store", &["--store", &dst, "--verify", "--check-contents"]);

    // A path registered now, while subserve runs, is served at once.
    let later = add(&writer, &root, &src, "later.txt", "registered later\n");
    env.run("nix-store", &["--store", &dst, "--realise", &later]);
    let got = std::fs::read_to_string(Path::new(&dst).join(&later[1..])).unwrap();
    assert_eq!(got, "registered later\n");
    let log = srv.log.lock().unwrap();
    assert!(!log.contains("ERROR"), "{log}");
}
