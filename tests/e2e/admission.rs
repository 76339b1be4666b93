//! Admission control against the real binary: with every compressed-stream slot held by a
//! client that stopped reading, further NAR requests queue (and are served once slots free
//! up), while narinfo requests are answered at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use formats::{NarHash, NarInfo};
use sha2::{Digest, Sha256};

use crate::fixture;
use crate::harness::{scratch, Server};
use crate::http::get;

/// Generous: nothing here should take more than a few seconds.
const DEADLINE: Duration = Duration::from_secs(120);

fn hash_part(path: &str) -> &str {
    &path["/nix/store/".len()..][..32]
}

/// Sends an HTTP/1.0 GET (so the body runs to EOF, unchunked) and reads the response head.
/// Returns the status, the `Retry-After` header if any, and the reader at the body.
fn open(addr: SocketAddr, path: &str) -> (u16, Option<u64>, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut retry_after = None;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("retry-after:") {
            retry_after = v.trim().parse().ok();
        }
    }
    (status, retry_after, r)
}

/// The NarHash and length of a zstd-compressed NAR body.
fn zstd_nar_hash(body: impl Read) -> (NarHash, u64) {
    let mut hasher = Sha256::new();
    let mut decoder = zstd::stream::read::Decoder::new(body).unwrap();
    let mut buf = vec![0; 1 << 16];
    let mut len = 0;
    loop {
        let n = decoder.read(&mut buf).unwrap();
        if n == 0 {
            return (NarHash(hasher.finalize().into()), len);
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// Downloads the zstd NAR of `path` and checks it against its narinfo; a 503 is retried as
/// Nix does (after `Retry-After`, capped at 1 s here), up to 5 attempts.
fn download_and_check(addr: SocketAddr, path: &str, info: &NarInfo) {
    let url = format!("/nar/{}-{}.nar.zst", hash_part(path), info.nar_hash.to_nix32());
    for _ in 0..5 {
        let (status, retry_after, body) = open(addr, &url);
        if status == 503 {
            std::thread::sleep(Duration::from_secs(retry_after.unwrap_or(1).min(1)));
            continue;
        }
        assert_eq!(status, 200, "{url}");
        assert_eq!(zstd_nar_hash(body), (info.nar_hash, info.nar_size), "{url}");
        return;
    }
    panic!("{url}: 503 five times");
}

fn narinfo(addr: SocketAddr, path: &str) -> NarInfo {
    let reply = get(addr, &format!("/{}.narinfo", hash_part(path)));
    assert_eq!(reply.status, 200, "{path}");
    NarInfo::parse(std::str::from_utf8(&reply.body).unwrap()).unwrap()
}

#[test]
fn nar_streams_over_the_cap_queue_and_narinfos_are_never_stuck_behind_them() {
    let fx = fixture::get();
    let dir = scratch("admission");
    let srv = Server::start(&[
        "--store-root",
        &fx.store_arg(),
        "--state-dir",
        dir.join("state").to_str().unwrap(),
        "--compression",
        "zstd",
        "--max-compressed-streams",
        "3",
        // Every client here is 127.0.0.1: let it hold the whole cap.
        "--max-compressed-streams-per-client",
        "3",
    ]);
    let cap = 3;
    assert!(srv.log.lock().unwrap().contains("max_compressed_streams=3"), "{}", srv.log.lock().unwrap());

    // Fill every compressed slot with a client that reads the head and then nothing: the
    // big NAR's compressed stream is far larger than what the socket buffers and the
    // stream's chunks hold, so its producer stalls and keeps its slot.
    let big = narinfo(srv.addr, &fx.big);
    let big_url = format!("/nar/{}-{}.nar.zst", hash_part(&fx.big), big.nar_hash.to_nix32());
    let held: Vec<_> = (0..cap)
        .map(|_| {
            let (status, _, body) = open(srv.addr, &big_url);
            assert_eq!(status, 200);
            body
        })
        .collect();

    // More clients than the cap, for small NARs: they queue.
    let small: Vec<(String, NarInfo)> =
        fx.closure.iter().filter(|p| **p != fx.big).take(cap + 4).map(|p| (p.clone(), narinfo(srv.addr, p))).collect();
    assert_eq!(small.len(), cap + 4, "the fixture has enough small paths");
    let queued: Vec<_> = small
        .into_iter()
        .map(|(path, info)| {
            let addr = srv.addr;
            std::thread::spawn(move || download_and_check(addr, &path, &info))
        })
        .collect();
    let start = Instant::now();
    while !srv.log.lock().unwrap().contains("requests are queueing") {
        assert!(start.elapsed() < DEADLINE, "no request queued:\n{}", srv.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }

    // With the cap full and requests queued, narinfos (hits and misses) are still answered.
    for path in &fx.closure {
        assert_eq!(narinfo(srv.addr, path).store_path, *path);
    }
    assert_eq!(get(srv.addr, "/00000000000000000000000000000000.narinfo").status, 404);

    // Every held stream completes correctly once read, and so does every queued one.
    let readers: Vec<_> = held
        .into_iter()
        .map(|body| {
            let want = (big.nar_hash, big.nar_size);
            std::thread::spawn(move || assert_eq!(zstd_nar_hash(body), want))
        })
        .collect();
    for t in readers.into_iter().chain(queued) {
        t.join().unwrap();
    }
    let log = srv.log.lock().unwrap();
    assert!(!log.contains("ERROR"), "{log}");
}
