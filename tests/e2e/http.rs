//! HTTP-level checks against the real binary where its log or a store made by real Nix is
//! part of the proof: a file changed behind the server's back aborts the stream (and the
//! abort is logged with the path), and every configured key signs (and is announced).
//! The HTTP semantics on their own (headers, HEAD, `Range`, hostile URLs, `.ls`, logs) are
//! tested in process, in `server/tests/it`.

use test_support::hash_part;
use test_support::http::{get, request};

use crate::fixture;
use crate::harness::{scratch, Server};

/// A store path on disk without a row in `ValidPaths` (a build in progress, a GC victim) is
/// not served; a valid path whose file shrank after it was registered aborts the stream in
/// every compression instead of ending as a clean, short 200.
#[test]
fn invalid_paths_are_absent_and_changed_files_abort_the_stream() {
    crate::harness::require_nix();
    let dir = scratch("http-integrity");
    let env = crate::harness::NixEnv::new(&dir, "");
    let root = dir.join("root");
    let src = dir.join("data.bin");
    std::fs::write(&src, (0..1_000_000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let path = env.run("nix-store", &["--store", root.to_str().unwrap(), "--add", src.to_str().unwrap()]);
    let path = path.trim();
    let physical = root.join(path.trim_start_matches('/'));
    let ghost = root.join("nix/store/7h6zklgbgjmqnkxpa7v7pqkvhwqjpjvs-ghost");
    std::fs::write(&ghost, "not registered\n").unwrap();

    let srv =
        Server::start(&["--store-root", root.to_str().unwrap(), "--state-dir", dir.join("state").to_str().unwrap()]);
    assert_eq!(get(srv.addr, "/7h6zklgbgjmqnkxpa7v7pqkvhwqjpjvs.narinfo").status, 404);
    assert_eq!(get(srv.addr, "/7h6zklgbgjmqnkxpa7v7pqkvhwqjpjvs.ls").status, 404);

    let narinfo = get(srv.addr, &format!("/{}.narinfo", hash_part(path)));
    let info = formats::NarInfo::parse(std::str::from_utf8(&narinfo.body).unwrap()).unwrap();
    let stem = info.url.strip_suffix(".nar").unwrap().to_owned();
    let whole = get(srv.addr, &format!("/{stem}.nar"));
    assert!(whole.complete && whole.body.len() as u64 == info.nar_size);

    // Shrink the registered file behind the server's back (as root, the store's 0444 is no obstacle).
    let mut perms = std::fs::metadata(&physical).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&physical, perms).unwrap();
    std::fs::OpenOptions::new().write(true).open(&physical).unwrap().set_len(3_000_000).unwrap();
    for ext in ["", ".zst", ".xz"] {
        let reply = get(srv.addr, &format!("/{stem}.nar{ext}"));
        assert_eq!(reply.status, 200, "{ext}");
        assert!(!reply.complete, "a shortened file was served as a complete NAR ({ext:?})");
    }
    let range = request(srv.addr, "GET", format!("/{stem}.nar").as_bytes(), "Range: bytes=1000-\r\n");
    assert!(!range.complete, "a shortened file was served as a complete range");
    let log = srv.log.lock().unwrap().clone();
    assert!(log.contains("aborting response stream") && log.contains(path.trim_start_matches('/')), "{log}");
    // The server is still fine.
    assert_eq!(get(srv.addr, "/nix-cache-info").status, 200);
}

/// Several `--sign-key-file`s: one `Sig` each, all valid.
#[test]
fn every_configured_key_signs() {
    let fx = fixture::get();
    let dir = scratch("http-two-keys");
    let keys: Vec<signing::SecretKey> =
        ["one-1", "two-1"].iter().map(|n| signing::SecretKey::generate(n).unwrap()).collect();
    let mut args = vec!["--store-root".to_owned(), fx.store_arg()];
    for (i, key) in keys.iter().enumerate() {
        let (sec, public) = (dir.join(format!("{i}.sec")), dir.join(format!("{i}.pub")));
        signing::write_key_pair(key, &sec, &public).unwrap();
        args.extend(["--sign-key-file".to_owned(), sec.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let srv = Server::start(&args);
    let reply = get(srv.addr, &format!("/{}.narinfo", hash_part(&fx.top)));
    let info = formats::NarInfo::parse(std::str::from_utf8(&reply.body).unwrap()).unwrap();
    assert_eq!(info.sigs.len(), 2);
    for key in &keys {
        assert!(signing::verify_any(&[key.to_public()], &info.fingerprint("/nix/store"), &info.sigs));
    }
    let log = srv.log.lock().unwrap();
    assert!(log.contains(&keys[0].to_public().to_string()) && log.contains(&keys[1].to_public().to_string()));
}
