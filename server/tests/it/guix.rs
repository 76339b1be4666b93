//! The Guix dialect's HTTP in process, over a fake Guix store (schema 7): HEAD answers like
//! GET, `/file/<name>/sha256/<hash>` serves a flat fixed-output file, and a thousand
//! pipelined narinfo requests on one connection (as `guix substitute` sends them) are answered
//! in order. What needs Guix's own tools (libgcrypt) is in `tests/e2e/guix.rs`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use formats::NarHash;
use test_support::http::{get, request};
use test_support::{basename, hash_part, spawn_server, FakeStore, TestServer};

/// A Guix store with a few files and a flat fixed-output file, served at `/`.
struct Guix {
    _store: FakeStore,
    paths: Vec<String>,
    fixed: String,
    _state: tempfile::TempDir,
    srv: TestServer,
}

const FIXED: &[u8] = b"fixed-output\n";

fn serve() -> Guix {
    let store = FakeStore::guix();
    let mut paths: Vec<String> =
        (0..5).map(|i| store.add_file(&format!("file-{i}"), format!("{i}\n").as_bytes())).collect();
    let fixed = store.add_fixed_output("fixed-output.txt", FIXED);
    paths.push(fixed.clone());
    let state = tempfile::tempdir().unwrap();
    let srv =
        spawn_server(&format!("state-dir = {:?}\ndialect = \"guix\"\n{}upstream = []\n", state.path(), store.config()));
    Guix { _store: store, paths, fixed, _state: state, srv }
}

#[test]
fn head_answers_like_get() {
    let guix = serve();
    for path in &guix.paths {
        let url = format!("/{}.narinfo", hash_part(path));
        let (g, h) = (get(guix.srv.addr, &url), request(guix.srv.addr, "HEAD", url.as_bytes(), ""));
        assert_eq!(g.status, 200);
        assert_eq!((g.status, g.header("content-length")), (h.status, h.header("content-length")), "{path}");
        assert_eq!(g.header("cache-control"), h.header("cache-control"));
        assert!(h.body.is_empty());
    }
    let key = (get(guix.srv.addr, "/signing-key.pub"), request(guix.srv.addr, "HEAD", b"/signing-key.pub", ""));
    assert_eq!((key.0.status, key.0.header("content-length")), (key.1.status, key.1.header("content-length")));
}

#[test]
fn file_route_serves_fixed_output_contents() {
    let guix = serve();
    let addr = guix.srv.addr;
    let hash = NarHash::digest(FIXED).to_nix32();
    let name = &basename(&guix.fixed)[33..];
    assert_eq!(name, "fixed-output.txt");
    let reply = get(addr, &format!("/file/{name}/sha256/{hash}"));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, FIXED);
    assert_eq!(reply.header("content-length"), Some(FIXED.len().to_string().as_str()));
    assert_eq!(get(addr, &format!("/file/other-name/sha256/{hash}")).status, 404);
    assert_eq!(get(addr, &format!("/file/{name}/sha256/{}", "0".repeat(52))).status, 404);
    assert_eq!(get(addr, &format!("/file/{name}/sha256/nothex")).status, 400);
    assert_eq!(get(addr, &format!("/file/{name}/sha1/{hash}")).status, 404);
}

#[test]
fn a_thousand_pipelined_narinfo_requests_are_answered_in_order() {
    let guix = serve();
    let hits: Vec<&str> = guix.paths.iter().map(|p| hash_part(p)).collect();
    let mut expected = Vec::new();
    let mut requests = String::new();
    for i in 0..1000 {
        let (hash, status) =
            if i % 3 == 0 { (format!("{:032}", i), 404) } else { (hits[i % hits.len()].to_owned(), 200) };
        requests.push_str(&format!("GET /{hash}.narinfo HTTP/1.1\r\nHost: localhost\r\nUser-Agent: GNU Guile\r\n\r\n"));
        expected.push((hash, status));
    }
    let stream = TcpStream::connect(guix.srv.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let writer = {
        let mut w = stream.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(requests.as_bytes()).unwrap())
    };
    let mut reader = BufReader::new(stream);
    for (i, (hash, status)) in expected.iter().enumerate() {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let got: u16 = line.split(' ').nth(1).unwrap_or_else(|| panic!("response {i}: {line:?}")).parse().unwrap();
        assert_eq!(got, *status, "response {i} for {hash}");
        let mut length = None;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header == "\r\n" {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = Some(v.trim().parse::<usize>().unwrap());
            }
        }
        let mut body = vec![0u8; length.expect("every answer has a Content-Length")];
        reader.read_exact(&mut body).unwrap();
        if *status == 200 {
            assert!(String::from_utf8(body).unwrap().contains(hash.as_str()), "response {i} is for another path");
        }
    }
    writer.join().unwrap();
}
