//! Baking in process, watched through the bake counters: a narinfo request queues a large
//! NAR for baking and never waits for it; once baked, the narinfo names the file with its
//! size and hash, the file is served with `Content-Length` and `Range`, and the URL handed out
//! before stays valid; small NARs are never baked.

use formats::{Compression, NarHash};
use test_support::compression::decompress;
use test_support::http::{get, request};
use test_support::spawn_server;

use crate::store::{config, narinfo, sample};

#[test]
fn large_nars_are_baked_once_and_then_served_as_files() {
    let sample = sample();
    let state = tempfile::tempdir().unwrap();
    let cache = state.path().join("cache");
    let srv = spawn_server(&config(
        &sample.store,
        state.path(),
        &format!("bake = \"zstd\"\nbake-min-size = \"0\"\nbake-zstd-level = 3\ncache-dir = {cache:?}\n"),
    ));
    let closure = sample.closure();
    let n = closure.len() as u64;

    // Before baking, the configured compression (none) is offered and served on the fly; each
    // of these requests queued a bake, and none waited for it.
    let before: Vec<_> = closure.iter().map(|p| narinfo(&srv, p)).collect();
    assert!(before.iter().all(|i| i.compression == "none" && i.file_hash == Some(i.nar_hash)));
    assert_eq!(srv.stats().bakes.queued_total, n);
    let stats = srv.wait_until("every path is baked", |s| s.bakes.completed_total == n);
    assert_eq!((stats.bakes.pending, stats.bakes.failed_total, stats.bakes.skipped_total), (0, 0, 0));

    for (path, old) in closure.iter().zip(&before) {
        let info = narinfo(&srv, path);
        assert_eq!(info.compression, "zstd", "{path}");
        assert_eq!((info.nar_hash, info.nar_size), (old.nar_hash, old.nar_size));
        assert!(info.url.ends_with(".nar.zst"), "{}", info.url);
        let reply = get(srv.addr, &format!("/{}", info.url));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-length").map(|l| l.parse::<u64>().unwrap()), info.file_size, "{path}");
        assert_eq!(reply.header("accept-ranges"), Some("bytes"));
        assert_eq!(Some(NarHash::digest(&reply.body)), info.file_hash, "{path}");
        let nar = decompress(Compression::Zstd, &reply.body);
        assert_eq!((NarHash::digest(&nar), nar.len() as u64), (info.nar_hash, info.nar_size), "{path}");
        // A Range of the baked file.
        if reply.body.len() > 100 {
            let part = request(srv.addr, "GET", format!("/{}", info.url).as_bytes(), "Range: bytes=10-99\r\n");
            assert_eq!(part.status, 206);
            assert_eq!(part.body, &reply.body[10..100]);
        }
        // The URL handed out before baking is still valid, and still the same NAR.
        assert_ne!(old.url, info.url);
        let reply = get(srv.addr, &format!("/{}", old.url));
        assert_eq!(reply.status, 200, "{}", old.url);
        assert_eq!(NarHash::digest(&reply.body), old.nar_hash);
    }
    // Baked files are content-addressed by NarHash in the cache area.
    let big = narinfo(&srv, &sample.big);
    assert!(cache.join("baked").join(format!("{}.nar.zst", big.nar_hash.to_nix32())).is_file());
    // Asking again bakes nothing twice.
    assert_eq!(srv.stats().bakes.queued_total, n);
    assert_eq!(srv.stats().bakes.completed_total, n);
}

/// Small paths are below the threshold: never queued for baking, and served on the fly.
#[test]
fn small_paths_stay_on_the_fly() {
    let sample = sample();
    let state = tempfile::tempdir().unwrap();
    let cache = state.path().join("cache");
    let srv = spawn_server(&config(
        &sample.store,
        state.path(),
        &format!("bake = \"zstd\"\nbake-min-size = \"1G\"\ncache-dir = {cache:?}\n"),
    ));
    let closure = sample.closure();
    for path in &closure {
        let info = narinfo(&srv, path);
        assert_eq!((info.compression.as_str(), info.file_hash), ("none", Some(info.nar_hash)), "{path}");
        let reply = get(srv.addr, &format!("/{}", info.url));
        assert_eq!((reply.status, NarHash::digest(&reply.body)), (200, info.nar_hash), "{path}");
    }
    // A bake is queued by the narinfo request itself, before its answer: had any path been
    // queued, the counter would say so by now.
    let bakes = srv.stats().bakes;
    assert_eq!(bakes.skipped_total, closure.len() as u64, "the baker was asked about every path");
    assert_eq!((bakes.queued_total, bakes.pending, bakes.completed_total), (0, 0, 0));
    assert!(!cache.join("baked").exists() || std::fs::read_dir(cache.join("baked")).unwrap().next().is_none());
}
