//! The baked cache with the real binary: the real Nix client substitutes from baked files,
//! and from a cold server's bakes as they are written; a baked file evicted while it is being
//! downloaded still completes. How baking is
//! queued, counted and served over HTTP is tested in process (server/tests/it/bake.rs).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use formats::{NarHash, NarInfo};

use test_support::hash_part;
use test_support::http::{get, request};
use test_support::keys::keygen;

use crate::fixture::{self, Fixture};
use crate::harness::{scratch, Server};
use crate::node::substitute_fixture_closure;

fn narinfo(srv: &Server, path: &str) -> NarInfo {
    let reply = get(srv.addr, &format!("/{}.narinfo", hash_part(path)));
    assert_eq!(reply.status, 200, "{path}");
    NarInfo::parse(std::str::from_utf8(&reply.body).unwrap()).unwrap()
}

/// Polls `path`'s narinfo until it advertises a baked file (zstd, which is never offered on
/// the fly in these tests, with a FileHash).
fn wait_baked(srv: &Server, path: &str) -> NarInfo {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let info = narinfo(srv, path);
        if info.compression == "zstd" && info.file_hash.is_some() {
            return info;
        }
        assert!(Instant::now() < deadline, "{path} not baked after 300 s:\n{}", srv.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn serve(fx: &Fixture, dir: &Path, secret: &str, extra: &[&str]) -> Server {
    let state = dir.join("state").display().to_string();
    let mut args = vec!["--store-root", fx.root.to_str().unwrap(), "--state-dir", &state, "--sign-key-file", secret];
    args.extend(extra);
    Server::start(&args)
}

#[test]
fn nix_substitutes_from_baked_files() {
    let fx = fixture::get();
    let dir = scratch("bake-substitute");
    let (secret, public) = keygen(&dir, "bake-1");
    let srv = serve(
        fx,
        &dir,
        &secret,
        &["--bake", "zstd", "--bake-min-size", "0", "--bake-zstd-level", "3", "--bake-delay", "0"],
    );

    // Before baking, the narinfos name the zstd files (or the bare NAR, for what zstd cannot
    // shrink).
    let before: Vec<NarInfo> = fx.closure.iter().map(|p| narinfo(&srv, p)).collect();
    let baked = before.iter().filter(|i| i.compression == "zstd").count();
    assert!(baked > 0 && before.iter().all(|i| i.compression == "zstd" || i.file_hash == Some(i.nar_hash)));
    // Every narinfo request above of a path worth it queued a bake; wait for all of them.
    for (path, old) in fx.closure.iter().zip(&before) {
        if old.compression == "none" {
            continue;
        }
        let info = wait_baked(&srv, path);
        assert_eq!(info.compression, "zstd", "{path}");
        assert_eq!((info.nar_hash, info.nar_size), (old.nar_hash, old.nar_size));
        let reply = get(srv.addr, &format!("/{}", info.url));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-length").map(|l| l.parse::<u64>().unwrap()), info.file_size, "{path}");
        assert_eq!(reply.header("accept-ranges"), Some("bytes"));
        assert_eq!(Some(NarHash::digest(&reply.body)), info.file_hash, "{path}");
        let nar = zstd::decode_all(&reply.body[..]).unwrap();
        assert_eq!((NarHash::digest(&nar), nar.len() as u64), (info.nar_hash, info.nar_size), "{path}");
        // A Range of the baked file.
        if reply.body.len() > 100 {
            let part = request(srv.addr, "GET", format!("/{}", info.url).as_bytes(), "Range: bytes=10-99\r\n");
            assert_eq!(part.status, 206);
            assert_eq!(part.body, &reply.body[10..100]);
        }
        // The URL handed out before baking is still valid, and still the same NAR.
        if old.url != info.url {
            let reply = get(srv.addr, &format!("/{}", old.url));
            assert_eq!(reply.status, 200, "{}", old.url);
            assert_eq!(NarHash::digest(&reply.body), old.nar_hash);
        }
    }
    // That each path is baked exactly once is counted in process (server/tests/it/bake.rs).

    // The real client substitutes the closure from the baked files, signatures required.
    substitute_fixture_closure(fx, &dir, &srv.url(), &public);
    // Nothing was baked twice, and the client got .nar.zst files.
    let log = srv.log.lock().unwrap().clone();
    assert!(log.lines().filter(|l| l.contains("request") && l.contains(".nar.zst")).count() >= baked);
}

/// A server just started, with the defaults' baking (bakes queued by narinfos wait 30 s for
/// a worker): the real client reads narinfos naming zstd files that do not exist yet, and gets
/// each from the one bake started when it first asked, streamed as it is written; each becomes
/// the baked file.
#[test]
fn nix_substitutes_from_a_cold_server_following_its_bakes() {
    let fx = fixture::get();
    let dir = scratch("bake-cold");
    let (secret, public) = keygen(&dir, "bake-2");
    let srv = serve(fx, &dir, &secret, &["--bake", "zstd", "--bake-min-size", "0"]);
    substitute_fixture_closure(fx, &dir, &srv.url(), &public);
    let log = srv.log.lock().unwrap().clone();
    let zstd_requests: Vec<&str> =
        log.lines().filter(|l| l.contains("request") && l.contains(".nar.zst") && l.contains("status=200")).collect();
    assert!(!zstd_requests.is_empty(), "the client fetched no zstd file:\n{log}");
    // Each was the file of a bake the client started: now baked, and named with its size.
    for path in &fx.closure {
        let info = narinfo(&srv, path);
        if info.compression == "zstd" {
            let info = wait_baked(&srv, path);
            let reply = get(srv.addr, &format!("/{}", info.url));
            assert_eq!(Some(NarHash::digest(&reply.body)), info.file_hash, "{path}");
        }
    }
}

/// A baked file evicted while a client downloads it: the download completes with the right
/// bytes (the open file outlives its name), and the path is served on the fly afterwards.
#[test]
fn a_baked_nar_evicted_mid_download_still_completes() {
    let fx = fixture::get();
    let dir = scratch("bake-evict");
    let (secret, _) = keygen(&dir, "bake-3");
    let cache = dir.join("cache").display().to_string();
    let common = [
        "--bake",
        "zstd",
        "--bake-min-size",
        "0",
        "--bake-zstd-level",
        "3",
        "--bake-delay",
        "0",
        "--cache-dir",
        &cache,
    ];
    let tree = fx.closure.iter().find(|p| p.ends_with("-tree-20k")).unwrap();

    // First run: learn the baked size of the big NAR.
    let big_size = {
        let srv = serve(fx, &dir, &secret, &common);
        wait_baked(&srv, &fx.big).file_size.unwrap()
    };
    // Second run: room for the big file alone, so baking the tree evicts it.
    let limit = (big_size + 1000).to_string();
    let srv = serve(fx, &dir, &secret, &[&common[..], &["--cache-max-size", &limit]].concat());
    let big = narinfo(&srv, &fx.big);
    assert_eq!(big.file_size, Some(big_size), "the baked file survives a restart");
    let file = Path::new(&cache).join("baked").join(format!("{}.nar.zst", big.nar_hash.to_nix32()));
    assert!(file.exists(), "baked files are content-addressed by NarHash: {}", file.display());

    // Start downloading it, read a little, and stall.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(s, "GET /{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", big.url).unwrap();
    let mut first = vec![0u8; 64 * 1024];
    s.read_exact(&mut first).unwrap();

    // Baking the tree pushes the cache over its limit: the big file goes.
    let _ = narinfo(&srv, tree);
    let deadline = Instant::now() + Duration::from_secs(120);
    while file.exists() {
        assert!(Instant::now() < deadline, "not evicted:\n{}", srv.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }

    // The stalled download still completes, byte for byte.
    let mut raw = first;
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("content-length: {big_size}")), "{head}");
    let body = &raw[end + 4..];
    assert_eq!(body.len() as u64, big_size);
    assert_eq!(Some(NarHash::digest(body)), big.file_hash);

    // From now on the big NAR is not baked: its narinfo names the bare NAR (its estimated
    // bake hardly fits the cache's limit) or the zstd file to come, without a FileHash.
    let after = narinfo(&srv, &fx.big);
    match after.compression.as_str() {
        "none" => assert_eq!(after.file_hash, Some(after.nar_hash)),
        other => assert_eq!((other, after.file_hash), ("zstd", None)),
    }
    let reply = get(srv.addr, &format!("/{}", big.url));
    assert_eq!(reply.status, 200, "the old URL stays valid");
    assert_eq!(NarHash::digest(&zstd::decode_all(&reply.body[..]).unwrap()), big.nar_hash);
}
