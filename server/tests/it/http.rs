//! HTTP semantics of the server in process, over a fake store: the headers Nix depends on,
//! HEAD, `Cache-Control` of hits and misses, `Range` (206, 416), `.ls` listings, build logs,
//! and a table of hostile URLs that must get a 4xx while the server keeps serving.

use formats::NarInfo;
use test_support::http::{get, request};
use test_support::{hash_part, spawn_server};

use crate::store::{config, narinfo, sample};

#[test]
fn cache_info_narinfo_and_head_headers() {
    let sample = sample();
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&config(&sample.store, state.path(), ""));
    let info = get(srv.addr, "/nix-cache-info");
    assert_eq!(info.status, 200);
    assert_eq!(String::from_utf8(info.body).unwrap(), "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n");

    let path = format!("/{}.narinfo", hash_part(&sample.top));
    let got = get(srv.addr, &path);
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("text/x-nix-narinfo"));
    assert_eq!(got.header("content-length").unwrap().parse::<usize>().unwrap(), got.body.len());
    let head = request(srv.addr, "HEAD", path.as_bytes(), "");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), got.header("content-length"));
    assert_eq!(head.header("content-type"), got.header("content-type"));

    // A miss is a 404 with a Content-Length, for HEAD as for GET.
    let miss = get(srv.addr, "/00000000000000000000000000000000.narinfo");
    assert_eq!(miss.status, 404);
    assert_eq!(miss.header("content-length").unwrap().parse::<usize>().unwrap(), miss.body.len());
    assert_eq!(request(srv.addr, "HEAD", b"/00000000000000000000000000000000.narinfo", "").status, 404);

    // No key configured: one was generated into the state directory, and it signs.
    let public = signing::read_public_key_file(&state.path().join("signing-key.pub")).unwrap();
    let info = NarInfo::parse(std::str::from_utf8(&got.body).unwrap()).unwrap();
    assert!(signing::verify_any(&[public], &info.fingerprint("/nix/store"), &info.sigs));
}

/// Guix clients keep narinfo answers for their `max-age` (Nix ignores it): hits for the
/// narinfo TTL, misses for the negative TTL, as configured.
#[test]
fn narinfo_hits_and_misses_carry_their_cache_control() {
    let sample = sample();
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&config(&sample.store, state.path(), "narinfo-ttl = 1234\nnegative-ttl = 56\n"));
    let hit = get(srv.addr, &format!("/{}.narinfo", hash_part(&sample.top)));
    assert_eq!((hit.status, hit.header("cache-control")), (200, Some("max-age=1234")));
    let miss = get(srv.addr, "/00000000000000000000000000000000.narinfo");
    assert_eq!((miss.status, miss.header("cache-control")), (404, Some("max-age=56")));
    // The same from the narinfo cache, the second time.
    let hit = get(srv.addr, &format!("/{}.narinfo", hash_part(&sample.top)));
    assert_eq!((hit.status, hit.header("cache-control")), (200, Some("max-age=1234")));
    let miss = get(srv.addr, "/00000000000000000000000000000000.narinfo");
    assert_eq!((miss.status, miss.header("cache-control")), (404, Some("max-age=56")));
}

#[test]
fn range_requests_on_the_bare_nar() {
    let sample = sample();
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&config(&sample.store, state.path(), ""));
    let info = narinfo(&srv, &sample.big);
    // The bare NAR's URL, whichever compression the narinfo names.
    let url = format!("/{}", info.url.trim_end_matches(".zst"));
    assert!(url.ends_with(".nar"), "{url}");
    let size = info.nar_size;

    let head = request(srv.addr, "HEAD", url.as_bytes(), "");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("accept-ranges"), Some("bytes"));
    assert_eq!(head.header("content-length"), Some(size.to_string().as_str()));
    assert_eq!(head.header("content-encoding"), None);

    let whole = get(srv.addr, &url);
    assert!(whole.complete && whole.body.len() as u64 == size);
    let tail = request(srv.addr, "GET", url.as_bytes(), &format!("Range: bytes={}-\r\n", size - 1000));
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, &whole.body[size as usize - 1000..]);
    assert_eq!(tail.header("content-range"), Some(format!("bytes {}-{}/{size}", size - 1000, size - 1).as_str()));
    let middle = request(srv.addr, "GET", url.as_bytes(), "Range: bytes=100-199\r\n");
    assert_eq!(middle.status, 206);
    assert_eq!(middle.body.len(), 100);
    // The NAR of a single file: 96 bytes of framing, then the contents, `seq` output
    // "1\n2\n3\n…", so byte 100 is the start of "3\n".
    assert_eq!(&middle.body[..4], b"3\n4\n");
    assert_eq!(middle.body, &whole.body[100..200]);
    let past = request(srv.addr, "GET", url.as_bytes(), &format!("Range: bytes={size}-\r\n"));
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some(format!("bytes */{size}").as_str()));

    // A NAR compressed on the fly has no length: its HEAD says none either (not 0).
    let zst = url.replace(".nar", ".nar.zst");
    let head = request(srv.addr, "HEAD", zst.as_bytes(), "");
    let get = request(srv.addr, "GET", zst.as_bytes(), "");
    assert_eq!((head.status, get.status), (200, 200));
    assert_eq!(head.header("content-length"), None, "{:?}", head.headers);
    assert_eq!(head.header("content-length"), get.header("content-length"));
    assert!(!get.body.is_empty() && get.complete);
    assert_eq!(test_support::compression::decompress(formats::Compression::Zstd, &get.body), whole.body);
}

#[test]
fn hostile_urls_get_4xx_and_the_server_keeps_serving() {
    let sample = sample();
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&config(&sample.store, state.path(), ""));
    let h = hash_part(&sample.top);
    let long = "a".repeat(10_000);
    let table: Vec<Vec<u8>> = vec![
        b"/../../../../etc/passwd".to_vec(),
        b"/nar/../../etc/passwd".to_vec(),
        b"/nar/%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_vec(),
        b"/log/../../../../etc/passwd".to_vec(),
        b"/log/%2e%2e%2fetc%2fpasswd".to_vec(),
        b"/log/passwd".to_vec(),
        format!("/log/{h}-../../etc").into_bytes(),
        format!("/{h}.narinfo/extra").into_bytes(),
        format!("/{h}.NARINFO").into_bytes(),
        format!("/{h}.nar").into_bytes(),
        format!("/{h}").into_bytes(),
        format!("/{}.narinfo", &h[..31]).into_bytes(),
        format!("/{}e.narinfo", &h[..31]).into_bytes(),
        format!("/{}.narinfo", h.to_uppercase()).into_bytes(),
        b"/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo".to_vec(),
        format!("/{long}.narinfo").into_bytes(),
        format!("/nar/{long}.nar").into_bytes(),
        format!("/nar/{h}-{long}.nar").into_bytes(),
        format!("/nar/{h}-0000000000000000000000000000000000000000000000000000.nar").into_bytes(),
        format!("/nar/{h}-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.nar").into_bytes(),
        format!("/nar/{h}.nar.gz").into_bytes(),
        b"/nar/".to_vec(),
        b"/nar/\xff\xfe.nar".to_vec(),
        b"/\xc3\x28.narinfo".to_vec(),
        b"/%ff%fe.narinfo".to_vec(),
        b"/log/%ff%fe".to_vec(),
        b"/%00.narinfo".to_vec(),
        format!("/{h}.ls/..").into_bytes(),
        b"//etc/passwd".to_vec(),
        b"/nix-cache-info/../../etc/passwd".to_vec(),
    ];
    for target in &table {
        let reply = request(srv.addr, "GET", target, "");
        let shown = String::from_utf8_lossy(target);
        assert!((400..500).contains(&reply.status), "{shown:.200} gave {}", reply.status);
        assert!(!String::from_utf8_lossy(&reply.body).contains("root:"), "{shown:.200} leaked a file");
    }
    // Still serving after all that: no handler panicked (a panic would have been a 500 above,
    // or ended the connection without a response).
    assert_eq!(get(srv.addr, &format!("/{h}.narinfo")).status, 200);
}

#[test]
fn listing_matches_the_nar() {
    let sample = sample();
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&config(&sample.store, state.path(), ""));
    let reply = get(srv.addr, &format!("/{}.ls", hash_part(&sample.odd)));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let ls: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(ls["version"], 1);
    let entries = &ls["root"]["entries"];
    assert_eq!(entries["bin"]["entries"]["script"]["executable"], true);
    assert_eq!(entries["relative-link"]["target"], "bin/script");
    assert_eq!(entries["empty-file"]["size"], 0);
    assert_eq!(entries["héllo wörld ☃"]["type"], "regular");

    // narOffset points at the file's contents inside the served NAR.
    let info = narinfo(&srv, &sample.odd);
    let nar = get(srv.addr, &format!("/{}", info.url)).body;
    let a = &entries["a"];
    let off = a["narOffset"].as_u64().unwrap() as usize;
    assert_eq!(&nar[off..off + a["size"].as_u64().unwrap() as usize], b"lower\n");
    // The second answer (from the listing cache) is the same.
    assert_eq!(get(srv.addr, &format!("/{}.ls", hash_part(&sample.odd))).body, reply.body);
    // No listing of a path that is not valid.
    assert_eq!(get(srv.addr, "/7h6zklgbgjmqnkxpa7v7pqkvhwqjpjvs.ls").status, 404);
}

#[test]
fn build_logs_are_served_decompressed() {
    let sample = sample();
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&config(&sample.store, state.path(), ""));
    let drv = test_support::basename(&sample.top_drv);
    let reply = get(srv.addr, &format!("/log/{drv}"));
    assert_eq!(reply.status, 200);
    assert_eq!(String::from_utf8_lossy(&reply.body), "subserve-fixture-log: building top\n");
    assert_eq!(reply.header("content-encoding"), None);
    assert_eq!(get(srv.addr, "/log/00000000000000000000000000000000-none.drv").status, 404);
}

/// Files in the store dir without a row in `ValidPaths` (a build in progress, a GC victim)
/// are not served.
#[test]
fn unregistered_files_are_absent() {
    let sample = sample();
    sample.store.add_unregistered("7h6zklgbgjmqnkxpa7v7pqkvhwqjpjvs-ghost", b"not registered\n");
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&config(&sample.store, state.path(), ""));
    assert_eq!(get(srv.addr, "/7h6zklgbgjmqnkxpa7v7pqkvhwqjpjvs.narinfo").status, 404);
    assert_eq!(get(srv.addr, "/7h6zklgbgjmqnkxpa7v7pqkvhwqjpjvs.ls").status, 404);
    // While the registered paths are.
    for path in sample.closure() {
        assert_eq!(narinfo(&srv, &path).store_path, path);
    }
}

/// A valid path whose file shrank after it was registered aborts the stream in every
/// compression, and a range of it, instead of ending as a clean, short 200; each abort is
/// counted, and the server keeps serving.
#[test]
fn a_file_that_changed_aborts_the_stream() {
    let store = test_support::FakeStore::nix();
    let data: Vec<u8> = (0..1_000_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let path = store.add_file("data.bin", &data);
    let state = tempfile::tempdir().unwrap();
    // On the fly (a bake would freeze the file before it changes; see bake.rs for a bake of a
    // changed file).
    let srv = spawn_server(&config(&store, state.path(), "bake = \"none\"\n"));
    let info = narinfo(&srv, &path);
    let stem = info.url.strip_suffix(".nar").unwrap().to_owned();
    let whole = get(srv.addr, &format!("/{stem}.nar"));
    assert!(whole.complete && whole.body.len() as u64 == info.nar_size);
    assert_eq!(srv.stats().streams.aborted_total, 0);

    // Shrink the registered file behind the server's back.
    std::fs::OpenOptions::new().write(true).open(store.real_path(&path)).unwrap().set_len(3_000_000).unwrap();
    for ext in ["", ".zst", ".xz"] {
        let reply = get(srv.addr, &format!("/{stem}.nar{ext}"));
        assert_eq!(reply.status, 200, "{ext}");
        assert!(!reply.complete, "a shortened file was served as a complete NAR ({ext:?})");
    }
    let range = request(srv.addr, "GET", format!("/{stem}.nar").as_bytes(), "Range: bytes=1000-\r\n");
    assert!(!range.complete, "a shortened file was served as a complete range");
    let stats =
        srv.wait_until("every abort is counted", |s| s.streams.aborted_total + s.compressed_streams.aborted_total == 4);
    assert_eq!((stats.streams.aborted_total, stats.compressed_streams.aborted_total), (2, 2));
    // The server is still fine.
    assert_eq!(get(srv.addr, "/nix-cache-info").status, 200);
}

/// Large files go to the socket with `sendfile` in the middle of responses hyper frames; on a
/// keep-alive connection, one request after another or all pipelined, every response is
/// still exactly what it should be: direct sends (bare NARs with a file of 2 MiB), copied
/// ones (small files, zstd on the fly, chunked) and narinfos, in any order.
#[test]
fn direct_sends_and_copies_interleave_on_one_connection() {
    let sample = sample();
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&config(&sample.store, state.path(), "bake = \"none\"\n"));
    let nar_url = |path: &str| format!("/{}", narinfo(&srv, path).url);
    let (big, odd) = (nar_url(&sample.big), nar_url(&sample.odd));
    assert!(big.ends_with(".nar") && odd.ends_with(".nar"), "{big} {odd}");
    let nar_of = |path: &str| {
        let mut nar = Vec::new();
        store_reader::nar::dump(&sample.store.real_path(path), &mut nar).unwrap();
        nar
    };
    let (big_nar, odd_nar) = (nar_of(&sample.big), nar_of(&sample.odd));
    let top_narinfo = format!("/{}.narinfo", hash_part(&sample.top));
    let zst = format!("{big}.zst");
    let requests = [
        ("GET", big.as_str()),
        ("GET", big.as_str()),
        ("GET", top_narinfo.as_str()),
        ("HEAD", big.as_str()),
        ("GET", odd.as_str()),
        ("GET", big.as_str()),
        ("GET", zst.as_str()),
        ("GET", big.as_str()),
        ("GET", "/nix-cache-info"),
    ];
    let before = srv.stats().streams.sendfile_bytes_total;
    for pipelined in [false, true] {
        let replies = test_support::http::keep_alive(srv.addr, &requests, pipelined);
        for ((method, target), reply) in requests.iter().zip(&replies) {
            assert_eq!(reply.status, 200, "{method} {target} (pipelined: {pipelined})");
            let want: &[u8] = match (*method, *target) {
                ("HEAD", _) => b"",
                (_, t) if t == big => &big_nar,
                (_, t) if t == odd => &odd_nar,
                _ => continue,
            };
            assert!(reply.body == want, "{method} {target} (pipelined: {pipelined}): wrong body");
        }
        assert_eq!(test_support::compression::decompress(formats::Compression::Zstd, &replies[6].body), big_nar);
        assert_eq!(replies[8].body, b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n");
    }
    // Each of the 8 whole bare NARs of `big` sent its 2 MiB file directly; nothing else did.
    let file_len = std::fs::metadata(sample.store.real_path(&sample.big)).unwrap().len();
    assert_eq!(srv.stats().streams.sendfile_bytes_total - before, 8 * file_len);
}

/// `--allow`: a client it does not name gets 403 everywhere but `/health`, and is logged and
/// counted; the clients it names, and the admins, are served as usual.
#[test]
fn only_allowed_clients_may_read() {
    use test_support::http::request_from;
    let sample = sample();
    let state = tempfile::tempdir().unwrap();
    let extra = "allow = [\"127.0.0.3\"]\nadmin-allow = [\"127.0.0.1\"]\n";
    let srv = spawn_server(&config(&sample.store, state.path(), extra));
    let from = |last: u8, path: &str| {
        let ip = std::net::IpAddr::from([127, 0, 0, last]);
        request_from(ip, srv.addr, "GET", path.as_bytes(), "").status
    };
    let narinfo = format!("/{}.narinfo", hash_part(&sample.top));
    let nar = format!("/{}", crate::store::narinfo(&srv, &sample.big).url);
    for path in [narinfo.as_str(), nar.as_str(), "/nix-cache-info", "/", "/metrics"] {
        assert_eq!(from(2, path), 403, "{path} for a client --allow does not name");
    }
    assert_eq!(from(2, "/health"), 200);
    for path in [narinfo.as_str(), nar.as_str(), "/nix-cache-info"] {
        assert_eq!(from(3, path), 200, "{path} for an allowed client");
    }
    assert_eq!(from(3, "/metrics"), 403, "allowed to read the cache, not the operator's pages");
    // The admin (127.0.0.1, which fetched the narinfo above) reads everything; the refusals
    // were counted.
    let metrics = String::from_utf8(get(srv.addr, "/metrics").body).unwrap();
    assert!(
        metrics.contains("subserve_http_requests_total{store=\"/\",kind=\"narinfo\",status=\"403\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("subserve_http_requests_total{store=\"/\",kind=\"nar\",status=\"403\"} 1"), "{metrics}");
}

/// `--publish signed`: only paths whose DB signatures include a valid one by a trusted key are
/// served, on every route; the others answer exactly as absent paths do.
#[test]
fn only_signed_paths_are_published_under_publish_signed() {
    use signing::SecretKey;
    let sample = sample();
    let farm = SecretKey::generate("farm-1").unwrap();
    let stranger = SecretKey::generate("stranger-1").unwrap();
    // Fingerprints from a server that publishes everything.
    let state = tempfile::tempdir().unwrap();
    let all = spawn_server(&config(&sample.store, state.path(), ""));
    let fingerprint = |path: &str| narinfo(&all, path).fingerprint("/nix/store");
    let (big_fp, odd_fp, top_fp) = (fingerprint(&sample.big), fingerprint(&sample.odd), fingerprint(&sample.top));
    drop(all);
    // big: signed by the farm; odd: by a stranger only; top: a farm signature of other contents.
    sample.store.set_sigs(&sample.big, &[stranger.sign(&big_fp), farm.sign(&big_fp)]);
    sample.store.set_sigs(&sample.odd, &[stranger.sign(&odd_fp)]);
    sample.store.set_sigs(&sample.top, &[farm.sign(&format!("{top_fp}x"))]);

    let state = tempfile::tempdir().unwrap();
    let extra = format!("publish = \"signed\"\npublish-trusted-keys = [{:?}]\n", farm.to_public().to_string());
    let srv = spawn_server(&config(&sample.store, state.path(), &extra));
    let info = narinfo(&srv, &sample.big);
    assert!(info.sigs.iter().any(|s| s.starts_with("farm-1:")), "the farm's signature is kept: {:?}", info.sigs);
    assert_eq!(get(srv.addr, &format!("/{}", info.url)).status, 200);
    assert_eq!(get(srv.addr, &format!("/{}.ls", hash_part(&sample.big))).status, 200);

    let absent = get(srv.addr, "/00000000000000000000000000000000.narinfo");
    let names = |r: &test_support::http::Reply| {
        let mut h: Vec<_> = r.headers.iter().map(|(n, _)| n.clone()).filter(|n| n != "date").collect();
        h.sort();
        h
    };
    for path in [&sample.odd, &sample.top] {
        let hidden = get(srv.addr, &format!("/{}.narinfo", hash_part(path)));
        assert_eq!((hidden.status, &hidden.body), (404, &absent.body), "{path}");
        assert_eq!(names(&hidden), names(&absent), "{path}: the same headers as an absent path");
        assert_eq!(hidden.header("cache-control"), absent.header("cache-control"));
        assert_eq!(get(srv.addr, &format!("/{}.ls", hash_part(path))).status, 404, "{path}");
    }
    // The NAR of a hidden path, at the URL a publishing server gave out.
    let state = tempfile::tempdir().unwrap();
    let all = spawn_server(&config(&sample.store, state.path(), "bake = \"none\"\n"));
    let odd_url = narinfo(&all, &sample.odd).url;
    assert_eq!(get(srv.addr, &format!("/{odd_url}")).status, 404);
    // The log of a derivation the policy does not publish (derivations are not signed).
    let log = format!("/log/{}", test_support::basename(&sample.top_drv));
    assert_eq!(get(all.addr, &log).status, 200);
    assert_eq!(get(srv.addr, &log).status, 404);
}
