//! Clients that misbehave, against the real binary, measured on its process: crowds of
//! stalled log readers and of listing requests, and more connections than the descriptor limit
//! allows. Each test checks that a well-behaved node is still served, and that the server's
//! threads, memory and answers stay within bounds. (Nodes that stop reading their NAR
//! downloads are tested in process: `server/tests/it/hostile.rs`.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use formats::NarInfo;
use sha2::{Digest, Sha256};
use test_support::hash_part;
use test_support::http::get;

use crate::fixture;
use crate::harness::{scratch, Server};

/// Liveness bound: far above what any of these takes on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// Connects from `source` (any 127.0.0.0/8 address: each one is another node to the server).
fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    // A small receive buffer: a reader that stops reading stalls the server's writes soon.
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
}

/// Sends a GET and reads the status line and headers; returns the status and the reader.
fn open_from(source: [u8; 4], addr: SocketAddr, path: &str) -> (u16, BufReader<TcpStream>) {
    let mut s = connect_from(source, addr);
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).map_or(0, |s| s.parse().unwrap_or(0));
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
    }
    (status, r)
}

/// Starts a request from `source` and returns without reading the answer.
fn request_and_stall(source: [u8; 4], addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = connect_from(source, addr);
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    s
}

fn narinfo(addr: SocketAddr, path: &str) -> NarInfo {
    let reply = get(addr, &format!("/{}.narinfo", hash_part(path)));
    assert_eq!(reply.status, 200, "{path}");
    NarInfo::parse(std::str::from_utf8(&reply.body).unwrap()).unwrap()
}

/// A server on the fixture store with `extra` flags, its state in the scratch dir `name`.
fn fixture_server(name: &str, extra: &[&str]) -> Server {
    Server::on_fixture(&scratch(name), extra)
}

fn waits_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn crowds_of_stalled_log_readers_take_slots_not_threads_and_narinfos_still_answer() {
    let fx = fixture::get();
    let dir = scratch("hostile-logs");
    // A 40 MB build log, under a derivation name of its own.
    let log_dir = dir.join("log");
    let drv = format!("{}-big-log.drv", "1".repeat(32));
    std::fs::create_dir_all(log_dir.join(&drv[..2])).unwrap();
    let line = "a line of a long build log, repeated until the file is forty megabytes long\n";
    std::fs::write(log_dir.join(&drv[..2]).join(&drv[2..]), line.repeat(40_000_000 / line.len())).unwrap();
    let srv = Server::start(&[
        "--store-root",
        &fx.store_arg(),
        "--state-dir",
        dir.join("state").to_str().unwrap(),
        "--log-dir",
        log_dir.to_str().unwrap(),
    ]);
    let threads_before = srv.threads();
    let url = format!("/log/{drv}");
    let stalled: Vec<TcpStream> = (0..600u32)
        .map(|n| request_and_stall([127, 0, 2 + (n / 200) as u8, (n % 200) as u8 + 1], srv.addr, &url))
        .collect();
    waits_until("the log readers queue", || srv.log.lock().unwrap().contains("requests are queueing"));
    // Threads: the capped producers and the runtime's, not one per reader.
    let threads = srv.threads();
    let names = std::fs::read_dir(format!("/proc/{}/task", srv.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .fold(std::collections::BTreeMap::<String, usize>::new(), |mut m, n| {
            *m.entry(n.trim().to_owned()).or_default() += 1;
            m
        });
    // The runtime's blocking pool is capped at what the stream caps need (logged at start).
    let cap: usize = {
        let log = srv.log.lock().unwrap();
        let at = log.find("blocking_threads=").expect("blocking_threads in the log") + "blocking_threads=".len();
        log[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    assert!(cap < 600, "a pool of {cap} is not a bound for 600 readers");
    assert!(threads <= threads_before + cap, "{threads} threads for 600 stalled log readers: {names:?}");
    // narinfos, hits and misses, answer while the readers hold every slot.
    let mut slowest = Duration::ZERO;
    for path in &fx.closure {
        let started = Instant::now();
        assert_eq!(narinfo(srv.addr, path).store_path, *path);
        slowest = slowest.max(started.elapsed());
    }
    assert_eq!(get(srv.addr, "/00000000000000000000000000000000.narinfo").status, 404);
    assert!(slowest < Duration::from_secs(5), "a narinfo took {slowest:?}");
    drop(stalled);
}

#[test]
fn a_thousand_concurrent_listings_of_a_20000_file_path_cost_bounded_memory() {
    let fx = fixture::get();
    let srv = fixture_server("hostile-listings", &[]);
    let tree = fx.closure.iter().find(|p| p.ends_with("-tree-20k")).expect("the fixture's tree");
    let url = format!("/{}.ls", hash_part(tree));
    let want = get(srv.addr, &url);
    assert_eq!(want.status, 200);
    assert!(want.body.len() > 1_000_000, "the listing of 20 000 files is over a megabyte");
    let listing: serde_json::Value = serde_json::from_slice(&want.body).unwrap();
    assert_eq!(listing["root"]["entries"].as_object().unwrap().len(), 100);
    let rss_before = srv.peak_rss_mib();
    let readers: Vec<_> = (0..1000u32)
        .map(|n| {
            let addr = srv.addr;
            let url = url.clone();
            let source = [127, 0, 3 + (n / 250) as u8, (n % 250) as u8 + 1];
            std::thread::spawn(move || {
                let (status, mut body) = open_from(source, addr, &url);
                let mut bytes = Vec::new();
                body.read_to_end(&mut bytes).unwrap();
                (status, Sha256::digest(&bytes))
            })
        })
        .collect();
    let want_hash = Sha256::digest(&want.body);
    for reader in readers {
        let (status, hash) = reader.join().unwrap();
        // 503s are allowed (a client retries them); every 200 is the whole listing.
        assert!(status == 200 || status == 503, "{status}");
        if status == 200 {
            assert_eq!(hash, want_hash);
        }
    }
    let peak = srv.peak_rss_mib();
    assert!(peak < rss_before + 200.0, "peak RSS {peak:.0} MiB (from {rss_before:.0})");
}

#[test]
fn five_thousand_connections_under_a_descriptor_limit_of_1024_get_no_500() {
    let fx = fixture::get();
    let dir = scratch("hostile-descriptors");
    // This process needs 5000 descriptors of its own.
    let ours = subserve::conn::raise_nofile_limit();
    assert!(ours >= 6000, "the test needs a hard descriptor limit of at least 6000, it is {ours}");
    let srv = Server::start_with_nofile(
        &["--store-root", &fx.store_arg(), "--state-dir", dir.join("state").to_str().unwrap()],
        1024,
    );
    assert!(srv.log.lock().unwrap().contains("descriptor_limit=1024"), "{}", srv.log.lock().unwrap());
    let mut idle = Vec::new();
    for n in 0..5000u32 {
        let source = SocketAddr::from(([127, 0, 4 + (n / 250) as u8, (n % 250) as u8 + 1], 0));
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&source.into()).unwrap();
        // Past the server's cap and its backlog a connect can wait; that is not an error.
        if socket.connect_timeout(&srv.addr.into(), Duration::from_millis(200)).is_ok() {
            idle.push(socket);
        }
    }
    // Nodes still get their narinfos, however many idle sockets there are.
    for path in fx.closure.iter().cycle().take(200) {
        let reply = get(srv.addr, &format!("/{}.narinfo", hash_part(path)));
        assert_eq!(reply.status, 200, "{path}");
    }
    drop(idle);
    let log = srv.log.lock().unwrap();
    assert!(!log.contains("ERROR"), "{log}");
    assert!(!log.contains("status=500"), "{log}");
}
