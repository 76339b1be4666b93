//! Admission control in process, watched through the server's counters: with every
//! compressed-stream slot held by a client that stopped reading, further NAR requests queue
//! (and are served once slots free up) while narinfo requests are answered at once; a request
//! that waits past the queue timeout gets 503 with `Retry-After`.

use std::net::SocketAddr;
use std::time::Duration;

use formats::{Compression, NarInfo};
use test_support::compression::{nar_hash_of, noise};
use test_support::http::{get, open};
use test_support::server::Options;
use test_support::{hash_part, spawn_server, spawn_server_with, FakeStore};

use crate::store::{config, narinfo};

/// A store with one large incompressible file (its zstd stream is far larger than what the
/// socket buffers and the stream's chunks hold, so a reader that stops reading stalls its
/// producer, which keeps its slot) and `small` small ones.
fn store(small: usize) -> (FakeStore, String, Vec<String>) {
    let store = FakeStore::nix();
    let big = store.add_file("big-noise", &noise(1, 24 << 20));
    let small = (0..small).map(|i| store.add_file(&format!("small-{i}"), &noise(i as u64 + 2, 1000))).collect();
    (store, big, small)
}

fn zstd_url(path: &str, info: &NarInfo) -> String {
    format!("/nar/{}-{}.nar.zst", hash_part(path), info.nar_hash.to_nix32())
}

/// Downloads the zstd NAR of `path` and checks it against its narinfo.
fn download_and_check(addr: SocketAddr, path: &str, info: &NarInfo) {
    let url = zstd_url(path, info);
    let reply = open(addr, &url);
    assert_eq!(reply.status, 200, "{url}");
    assert_eq!(nar_hash_of(Compression::Zstd, reply.body), (info.nar_hash, info.nar_size), "{url}");
}

#[test]
fn nar_streams_over_the_cap_queue_and_narinfos_are_never_stuck_behind_them() {
    let cap = 3;
    let (store, big_path, small) = store(cap + 4);
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&config(
        &store,
        state.path(),
        // Every client here is 127.0.0.1: let it hold the whole cap.
        "compression = \"zstd\"\nmax-compressed-streams = 3\nmax-compressed-streams-per-client = 3\n",
    ));
    assert_eq!(srv.stores[0].admission.compressed.cap(), cap);

    // Fill every compressed slot with a client that reads the head and then nothing.
    let big = narinfo(&srv, &big_path);
    let held: Vec<_> = (0..cap)
        .map(|_| {
            let reply = open(srv.addr, &zstd_url(&big_path, &big));
            assert_eq!(reply.status, 200);
            reply.body
        })
        .collect();
    assert_eq!(srv.stats().compressed_streams.in_use, cap);

    // More clients than the cap, for small NARs: every one of them queues.
    let queued: Vec<_> = small
        .iter()
        .map(|path| {
            let (addr, path, info) = (srv.addr, path.clone(), narinfo(&srv, path));
            std::thread::spawn(move || download_and_check(addr, &path, &info))
        })
        .collect();
    srv.wait_until("every small NAR request waits", |s| s.compressed_streams.waiting == small.len());

    // With the cap full and requests queued, narinfos (hits and misses) are still answered.
    for path in small.iter().chain([&big_path]) {
        assert_eq!(narinfo(&srv, path).store_path, *path);
    }
    assert_eq!(get(srv.addr, "/00000000000000000000000000000000.narinfo").status, 404);
    assert_eq!(srv.stats().compressed_streams.waiting, small.len(), "a narinfo took a slot");

    // Every held stream completes correctly once read, and so does every queued one.
    let readers: Vec<_> = held
        .into_iter()
        .map(|body| {
            let want = (big.nar_hash, big.nar_size);
            std::thread::spawn(move || assert_eq!(nar_hash_of(Compression::Zstd, body), want))
        })
        .collect();
    for t in readers.into_iter().chain(queued) {
        t.join().unwrap();
    }
    let stats = srv.wait_until("every stream is done", |s| s.compressed_streams.in_use == 0);
    assert_eq!(stats.compressed_streams.waiting, 0);
    assert_eq!(stats.compressed_streams.queued_total, small.len() as u64);
    assert_eq!(stats.compressed_streams.rejected_total, 0);
    // Nothing went through the uncompressed cap.
    assert_eq!(stats.streams.queued_total, 0);
}

/// Past the queue timeout a request gets 503 with `Retry-After` (Nix retries it; a 404 would
/// read as absent), and once the slot is free the same request is served.
#[test]
fn a_request_that_waits_past_the_queue_timeout_gets_503_and_retry_after() {
    let (store, big_path, small) = store(1);
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server_with(
        &config(&store, state.path(), "compression = \"zstd\"\nmax-compressed-streams = 1\n"),
        Options { queue_timeout: Duration::from_millis(300) },
    );
    let big = narinfo(&srv, &big_path);
    let held = open(srv.addr, &zstd_url(&big_path, &big));
    assert_eq!(held.status, 200);

    let info = narinfo(&srv, &small[0]);
    let refused = get(srv.addr, &zstd_url(&small[0], &info));
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("10"));
    let stats = srv.stats().compressed_streams;
    assert_eq!((stats.in_use, stats.waiting, stats.queued_total, stats.rejected_total), (1, 0, 1, 1));
    // HEAD produces no body: it takes no slot, and is answered while the cap is full.
    let head = test_support::http::request(srv.addr, "HEAD", zstd_url(&small[0], &info).as_bytes(), "");
    assert_eq!(head.status, 200);

    // The client that held the slot leaves: its slot frees up, and the request is served.
    drop(held);
    srv.wait_until("the held slot is released", |s| s.compressed_streams.in_use == 0);
    download_and_check(srv.addr, &small[0], &info);
    assert_eq!(srv.stats().compressed_streams.rejected_total, 1);
}
