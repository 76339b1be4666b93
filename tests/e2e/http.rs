//! HTTP-level checks against the real binary: headers Nix depends on, `Range`, HEAD, and a
//! table of hostile URLs that must get a 4xx while the server keeps serving.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::fixture;
use crate::harness::{scratch, Server};

/// A parsed response: status, headers (lower-cased names), body.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Header lines as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the body ended as HTTP says a whole body ends: `Content-Length` bytes, or the
    /// last chunk. A server that aborts a stream leaves this false.
    pub complete: bool,
}

impl Reply {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `target` (raw bytes, so it can be any garbage) with `extra` header lines and reads
/// the whole response on a `Connection: close` socket.
pub fn request(addr: SocketAddr, method: &str, target: &[u8], extra: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(target);
    req.extend_from_slice(format!(" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n").as_bytes());
    s.write_all(&req).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse(&raw, method == "HEAD")
}

/// GET `path` (a plain ASCII path).
pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path.as_bytes(), "")
}

fn parse(raw: &[u8], head: bool) -> Reply {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("complete response head");
    let head_text = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head_text.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let length = headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.parse::<usize>().unwrap());
    let (body, complete) = if head {
        (Vec::new(), true)
    } else if chunked {
        dechunk(rest)
    } else {
        (rest.to_vec(), length.is_none_or(|l| l == rest.len()))
    };
    Reply { status, headers, body, complete }
}

/// Decodes a chunked body; the flag says whether the terminating zero-size chunk arrived.
fn dechunk(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else { return (out, false) };
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return (out, true);
        }
        if data.len() < size + 2 {
            out.extend_from_slice(&data[..size.min(data.len())]);
            return (out, false);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A server on the fixture store with a state directory of its own (`name`), so that tests
/// running in parallel never share a generated key.
fn server(name: &str) -> Server {
    let fx = fixture::get();
    let dir = scratch(name);
    Server::start(&["--store-root", &fx.store_arg(), "--state-dir", dir.join("state").to_str().unwrap()])
}

fn hash_part(path: &str) -> &str {
    &path["/nix/store/".len()..][..32]
}

#[test]
fn cache_info_narinfo_and_head_headers() {
    let fx = fixture::get();
    let srv = server("http-cache_info_narinfo_and_head_headers");
    let info = get(srv.addr, "/nix-cache-info");
    assert_eq!(info.status, 200);
    assert_eq!(String::from_utf8(info.body).unwrap(), "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n");

    let path = format!("/{}.narinfo", hash_part(&fx.top));
    let got = get(srv.addr, &path);
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("text/x-nix-narinfo"));
    assert_eq!(got.header("content-length").unwrap().parse::<usize>().unwrap(), got.body.len());
    let head = request(srv.addr, "HEAD", path.as_bytes(), "");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), got.header("content-length"));

    // A miss is a 404 with a Content-Length, for HEAD as for GET.
    let miss = get(srv.addr, "/00000000000000000000000000000000.narinfo");
    assert_eq!(miss.status, 404);
    assert_eq!(miss.header("content-length").unwrap().parse::<usize>().unwrap(), miss.body.len());
    assert_eq!(request(srv.addr, "HEAD", b"/00000000000000000000000000000000.narinfo", "").status, 404);

    // The generated key was announced and is kept in the state directory.
    assert!(srv.log.lock().unwrap().contains("generated one"));
}

#[test]
fn range_requests_on_the_bare_nar() {
    let fx = fixture::get();
    let srv = server("http-range_requests_on_the_bare_nar");
    let narinfo = get(srv.addr, &format!("/{}.narinfo", hash_part(&fx.big)));
    let info = formats::NarInfo::parse(std::str::from_utf8(&narinfo.body).unwrap()).unwrap();
    let url = format!("/{}", info.url);
    let size = info.nar_size;

    let head = request(srv.addr, "HEAD", url.as_bytes(), "");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("accept-ranges"), Some("bytes"));
    assert_eq!(head.header("content-length"), Some(size.to_string().as_str()));
    assert_eq!(head.header("content-encoding"), None);

    let tail = request(srv.addr, "GET", url.as_bytes(), &format!("Range: bytes={}-\r\n", size - 1000));
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body.len(), 1000);
    assert_eq!(tail.header("content-range"), Some(format!("bytes {}-{}/{size}", size - 1000, size - 1).as_str()));
    let middle = request(srv.addr, "GET", url.as_bytes(), "Range: bytes=100-199\r\n");
    assert_eq!(middle.status, 206);
    assert_eq!(middle.body.len(), 100);
    // The NAR of a single file: 96 bytes of framing, then the contents, `seq` output
    // "1\n2\n3\n…", so byte 100 is the start of "3\n".
    assert_eq!(&middle.body[..4], b"3\n4\n");
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
}

#[test]
fn hostile_urls_get_4xx_and_the_server_keeps_serving() {
    let fx = fixture::get();
    let srv = server("http-hostile_urls_get_4xx_and_the_server_keeps_serving");
    let h = hash_part(&fx.top);
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
    // Still serving after all that.
    assert_eq!(get(srv.addr, &format!("/{h}.narinfo")).status, 200);
    assert!(!srv.log.lock().unwrap().contains("panicked"));
}

#[test]
fn listing_matches_the_nar() {
    let fx = fixture::get();
    let srv = server("http-listing_matches_the_nar");
    let odd = fx.closure.iter().find(|p| p.ends_with("-odd-files")).unwrap();
    let reply = get(srv.addr, &format!("/{}.ls", hash_part(odd)));
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
    let narinfo = get(srv.addr, &format!("/{}.narinfo", hash_part(odd)));
    let info = formats::NarInfo::parse(std::str::from_utf8(&narinfo.body).unwrap()).unwrap();
    let nar = get(srv.addr, &format!("/{}", info.url)).body;
    let a = &entries["a"];
    let off = a["narOffset"].as_u64().unwrap() as usize;
    assert_eq!(&nar[off..off + a["size"].as_u64().unwrap() as usize], b"lower\n");
}

#[test]
fn build_logs_are_served_decompressed() {
    let fx = fixture::get();
    let srv = server("http-build_logs_are_served_decompressed");
    let drv = fx.top_drv.trim_start_matches("/nix/store/");
    let reply = get(srv.addr, &format!("/log/{drv}"));
    assert_eq!(reply.status, 200);
    assert!(String::from_utf8_lossy(&reply.body).contains("subserve-fixture-log: building top"));
    assert_eq!(reply.header("content-encoding"), None);
    assert_eq!(get(srv.addr, "/log/00000000000000000000000000000000-none.drv").status, 404);
}

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
