//! Nodes that stop reading, in process, watched through the admission counters: one node's
//! stalled downloads hold at most its share of the slots, and the write timeout frees the slots
//! of many such nodes, so a healthy node is served in full, without a 503. (Crowds measured by
//! the process's threads and descriptors stay in `tests/e2e/hostile.rs`.)

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use formats::NarHash;
use sha2::{Digest, Sha256};
use test_support::compression::noise;
use test_support::{hash_part, spawn_server, FakeStore, TestServer};

use crate::store::{config, narinfo};

/// Connects from `source` (any 127.0.0.0/8 address: each one is another node to the server).
fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    // A small receive buffer: a reader that stops reading stalls the server's writes soon.
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    stream
}

/// Starts a request from `source` and returns without reading the answer.
fn request_and_stall(source: [u8; 4], addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = connect_from(source, addr);
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    s
}

/// Downloads the bare NAR of `path` from `source` and checks its hash and length.
fn fetch_nar_from(source: [u8; 4], srv: &TestServer, path: &str) {
    let info = narinfo(srv, path);
    let url = format!("/nar/{}-{}.nar", hash_part(path), info.nar_hash.to_nix32());
    let mut s = connect_from(source, srv.addr);
    write!(s, "GET {url} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut body = BufReader::new(s);
    let mut line = String::new();
    body.read_line(&mut line).unwrap();
    assert_eq!(line.split(' ').nth(1), Some("200"), "{url}: {line}");
    while line != "\r\n" {
        line.clear();
        assert!(body.read_line(&mut line).unwrap() > 0, "{url}: the head ended early");
    }
    let mut hasher = Sha256::new();
    let n = std::io::copy(&mut body, &mut hasher).unwrap();
    assert_eq!((NarHash(hasher.finalize().into()), n), (info.nar_hash, info.nar_size), "{url}");
}

/// A store with a NAR far larger than what a stalled reader's socket buffers hold, and ten
/// small ones; returns the big one's bare NAR URL too.
fn store() -> (FakeStore, String, Vec<String>) {
    let store = FakeStore::nix();
    let big = store.add_file("big-noise", &noise(1, 16 << 20));
    let small = (0..10).map(|i| store.add_file(&format!("small-{i}"), &noise(i + 2, 5000))).collect();
    (store, big, small)
}

fn bare_url(srv: &TestServer, path: &str) -> String {
    format!("/nar/{}-{}.nar", hash_part(path), narinfo(srv, path).nar_hash.to_nix32())
}

#[test]
fn one_node_that_stops_reading_cannot_starve_the_others() {
    let (store, big, small) = store();
    let state = tempfile::tempdir().unwrap();
    // The write timeout is long here: the per-client share alone must do it.
    let srv = spawn_server(&config(
        &store,
        state.path(),
        "max-streams = 32\nmax-streams-per-client = 8\nwrite-timeout = 600\nshutdown-timeout = 1\n",
    ));
    let big_url = bare_url(&srv, &big);
    // 64 stalled downloads of the big NAR from one node: 8 hold slots, 56 wait.
    let stalled: Vec<TcpStream> = (0..64).map(|_| request_and_stall([127, 0, 0, 1], srv.addr, &big_url)).collect();
    let stats = srv.wait_until("the stalled node queues", |s| s.streams.in_use == 8 && s.streams.waiting == 56);
    assert_eq!(stats.streams.queued_total, 56);
    // Another node's NARs are served at once, in full: it neither waits nor is refused.
    for path in &small {
        fetch_nar_from([127, 0, 0, 2], &srv, path);
    }
    let stats = srv.stats().streams;
    assert_eq!((stats.queued_total, stats.rejected_total), (56, 0), "the other node waited or was refused");
    drop(stalled);
}

#[test]
fn the_write_timeout_frees_the_slots_of_nodes_that_stopped_reading() {
    let (store, big, small) = store();
    let state = tempfile::tempdir().unwrap();
    let srv =
        spawn_server(&config(&store, state.path(), "max-streams = 32\nwrite-timeout = 2\nshutdown-timeout = 1\n"));
    let big_url = bare_url(&srv, &big);
    // 64 nodes each stall one download: every slot is held, 32 wait behind them.
    let stalled: Vec<TcpStream> =
        (0..64u8).map(|n| request_and_stall([127, 0, 1, n + 1], srv.addr, &big_url)).collect();
    srv.wait_until("every slot is held", |s| s.streams.in_use == 32 && s.streams.waiting == 32);
    // A healthy node waits for slots that the write timeout frees, well before its queue
    // timeout (60 s), and gets its NAR in full.
    fetch_nar_from([127, 0, 0, 2], &srv, &small[0]);
    drop(stalled);
    let stats = srv.stats().streams;
    assert_eq!(stats.rejected_total, 0, "a request was answered 503");
    assert!(stats.queued_total > 32, "the healthy node did not wait: {stats:?}");
}
