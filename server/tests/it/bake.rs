//! Baking in process, watched through the bake counters: a narinfo request of a large NAR
//! worth baking names the baked compression at once and queues the bake, never waiting for
//! it; a client that asks for the file before it is baked follows one bake as it is written;
//! once baked, the narinfo names the file with its size and hash, and the file is served with
//! `Content-Length` and `Range`; small NARs, and what zstd cannot shrink, are never baked.

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
        &format!(
            "bake = \"zstd\"\nbake-min-size = \"0\"\nbake-zstd-level = 3\nbake-delay = 0\ncache-dir = {cache:?}\n"
        ),
    ));
    let closure = sample.closure();

    // From the first request, a path worth baking is offered in the baked compression, before
    // its file exists (so without FileHash and FileSize), and queued for baking; the tiny
    // ones, which zstd cannot shrink, stay the bare NAR. Nothing waited for a bake.
    let before: Vec<_> = closure.iter().map(|p| narinfo(&srv, p)).collect();
    let (coming, plain): (Vec<_>, Vec<_>) = closure.iter().zip(&before).partition(|(_, i)| i.compression == "zstd");
    assert!(coming.iter().any(|(p, _)| **p == sample.big), "the 2 MiB text is worth baking");
    assert!(coming.iter().all(|(_, i)| i.file_hash.is_none() && i.file_size.is_none() && i.url.ends_with(".nar.zst")));
    assert!(plain.iter().all(|(_, i)| i.compression == "none" && i.file_hash == Some(i.nar_hash)));
    let stats = srv.stats().bakes;
    assert_eq!((stats.queued_total, stats.unprofitable_total), (coming.len() as u64, plain.len() as u64));
    let n = coming.len() as u64;
    let stats = srv.wait_until("every path worth it is baked", |s| s.bakes.completed_total == n);
    assert_eq!((stats.bakes.pending, stats.bakes.failed_total, stats.bakes.skipped_total), (0, 0, 0));

    // Once baked, the narinfo (not kept from before: the bake's landing made it stale) names
    // the same URL, now with the file's size and hash, and the file is served with
    // Content-Length and Range.
    for (path, old) in &coming {
        let info = narinfo(&srv, path);
        assert_eq!(info.compression, "zstd", "{path}");
        assert_eq!((&info.url, info.nar_hash, info.nar_size), (&old.url, old.nar_hash, old.nar_size));
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
        // The bare NAR stays available under its own URL.
        let bare = get(srv.addr, &format!("/{}", info.url.trim_end_matches(".zst")));
        assert_eq!((bare.status, NarHash::digest(&bare.body)), (200, info.nar_hash));
    }
    // Baked files are content-addressed by NarHash in the cache area.
    let big = narinfo(&srv, &sample.big);
    assert!(cache.join("baked").join(format!("{}.nar.zst", big.nar_hash.to_nix32())).is_file());
    // Asking again bakes nothing twice, and samples nothing twice.
    let stats = srv.stats().bakes;
    assert_eq!((stats.queued_total, stats.completed_total, stats.unprofitable_total), (n, n, plain.len() as u64));
    // What was read and written is counted, and nothing is running.
    let after: Vec<_> = coming.iter().map(|(p, _)| narinfo(&srv, p)).collect();
    let read: u64 = after.iter().map(|i| i.nar_size).sum();
    let written: u64 = after.iter().map(|i| i.file_size.unwrap()).sum();
    assert_eq!((stats.read_bytes_total, stats.written_bytes_total, stats.running), (read, written, 0));
}

/// The URL of `path`'s NAR in `ext` (`""` or `".zst"`), from a narinfo of a server that bakes
/// nothing (so that asking queues no bake).
fn nar_url(store: &test_support::FakeStore, path: &str, ext: &str) -> String {
    let state = tempfile::tempdir().unwrap();
    let plain = spawn_server(&config(store, state.path(), "bake = \"none\"\n"));
    let info = narinfo(&plain, path);
    assert_eq!(info.compression, "none");
    format!("/{}{ext}", info.url)
}

/// A client that asks for a file before its bake is done follows one bake, started for it
/// and written once however many clients ask at once; its file becomes the baked one, which
/// the narinfo then names with its size and hash.
#[test]
fn clients_before_the_bake_follow_one_bake_as_it_is_written() {
    let sample = sample();
    let url = nar_url(&sample.store, &sample.big, ".zst");
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&config(&sample.store, state.path(), "bake-min-size = \"0\"\n"));
    let replies: Vec<_> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8).map(|_| s.spawn(|| get(srv.addr, &url))).collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let first = &replies[0];
    assert_eq!(first.status, 200);
    let nar = decompress(Compression::Zstd, &first.body);
    let info = narinfo(&srv, &sample.big);
    assert_eq!((NarHash::digest(&nar), nar.len() as u64), (info.nar_hash, info.nar_size));
    for (i, reply) in replies.iter().enumerate() {
        assert!(
            reply.complete && reply.body == first.body,
            "every client gets the one bake's bytes: client {i}: status {}, complete {}, {} bytes against {}, headers {:?}",
            reply.status,
            reply.complete,
            reply.body.len(),
            first.body.len(),
            reply.headers
        );
    }
    let stats = srv.wait_until("the bake is committed", |s| s.bakes.completed_total == 1);
    assert_eq!((stats.bakes.streamed_total, stats.bakes.failed_total), (1, 0));
    // The followed bake is the baked file: the narinfo names it, and it is served whole.
    let info = narinfo(&srv, &sample.big);
    assert_eq!((info.file_hash, info.file_size), (Some(NarHash::digest(&first.body)), Some(first.body.len() as u64)));
    let again = get(srv.addr, &url);
    assert_eq!(again.header("content-length"), Some(first.body.len().to_string().as_str()));
    assert_eq!(again.body, first.body);
    assert_eq!(srv.stats().bakes.streamed_total, 1);
}

/// A bake of a file that changed behind the store's back fails, and so does every stream
/// that followed it: none ends as a clean 200.
#[test]
fn a_bake_of_a_changed_file_aborts_its_followers() {
    let store = test_support::FakeStore::nix();
    let data: Vec<u8> = (0..1_000_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let path = store.add_file("data.bin", &data);
    let url = nar_url(&store, &path, ".zst");
    std::fs::OpenOptions::new().write(true).open(store.real_path(&path)).unwrap().set_len(3_000_000).unwrap();
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&config(&store, state.path(), ""));
    let reply = get(srv.addr, &url);
    assert_eq!(reply.status, 200);
    assert!(!reply.complete, "a bake of a changed file was served as a complete NAR");
    // The client followed the bake and its stream was cut; or the bake had already failed
    // when it came to follow, and the on-the-fly body was cut.
    let stats = srv.wait_until("the bake failed and one body was cut", |s| {
        s.bakes.failed_total == 1 && s.streams.aborted_total + s.compressed_streams.aborted_total == 1
    });
    assert_eq!(stats.bakes.completed_total, 0);
}

/// A NAR that zstd cannot shrink by a tenth, or that could not fit the cache, is not worth
/// baking: its narinfo names the bare NAR, it is sampled once, and nothing is baked.
#[test]
fn what_baking_cannot_shrink_or_keep_is_served_as_it_is() {
    let store = test_support::FakeStore::nix();
    let random = store.add_file("random.bin", &test_support::compression::noise(7, 3 << 20));
    let text: Vec<u8> = (0..600_000u32).flat_map(|i| format!("{i}\n").into_bytes()).collect();
    let big_text = store.add_file("text.txt", &text);
    let state = tempfile::tempdir().unwrap();
    // The cache holds 256 KiB: the text (4 MiB, a fifth of it compressed) cannot fit.
    let srv = spawn_server(&config(&store, state.path(), "cache-max-size = \"256K\"\n"));
    for path in [&random, &big_text] {
        for _ in 0..3 {
            let info = narinfo(&srv, path);
            assert_eq!((info.compression.as_str(), info.file_hash), ("none", Some(info.nar_hash)), "{path}");
        }
    }
    let bakes = srv.stats().bakes;
    assert_eq!((bakes.unprofitable_total, bakes.queued_total, bakes.streamed_total), (2, 0, 0));
    // Asked for anyway, its zstd file is compressed on the fly, not baked.
    let url = nar_url(&store, &random, ".zst");
    let reply = get(srv.addr, &url);
    assert_eq!((reply.status, reply.header("content-length")), (200, None));
    assert_eq!(srv.stats().bakes.streamed_total, 0);
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
