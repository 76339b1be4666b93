//! The pull-through proxy with real parts: upstream binary caches written by real
//! `nix copy --to file://…` (xz and zstd, signed), served by a static file server on
//! 127.0.0.1, and the real Nix client substituting through subserve — then again with the
//! upstreams gone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use test_support::http::get;
use test_support::keys::keygen;
use test_support::relay::Relay;

use crate::fixture;
use crate::harness::{scratch, NixEnv, Server, StaticServer};
use crate::node::client;

fn closure_of(env: &NixEnv, root: &Path, path: &str) -> Vec<String> {
    let mut v: Vec<String> =
        env.run("nix-store", &["--store", root.to_str().unwrap(), "-qR", path]).lines().map(str::to_owned).collect();
    v.sort();
    v
}

#[test]
fn proxies_nix_copy_caches_and_serves_them_after_the_upstreams_are_gone() {
    let fx = fixture::get();
    let dir = scratch("proxy-nix-copy");
    let (up_sec, up_pub) = keygen(&dir, "upstream-1");
    let (our_sec, our_pub) = keygen(&dir, "subserve-1");
    let from = format!("local?root={}", fx.store_arg());
    let lib = fx.closure.iter().find(|p| p.ends_with("-lib-14")).unwrap().clone();
    let odd = fx.closure.iter().find(|p| p.ends_with("-odd-files")).unwrap().clone();
    let (xz_dir, zstd_dir) = (dir.join("upstream-xz"), dir.join("upstream-zstd"));
    for (cache, compression, path) in [(&xz_dir, "xz", &lib), (&zstd_dir, "zstd", &odd)] {
        let to = format!("file://{}?compression={compression}&secret-key={up_sec}", cache.display());
        fx.env.run("nix", &["copy", "--from", &from, "--to", &to, path]);
    }
    let mut xz_up = StaticServer::start(&xz_dir);
    let mut zstd_up = StaticServer::start(&zstd_dir);

    // subserve's own store holds one path of that closure: the busybox, added the same way.
    let local = dir.join("local");
    let busybox_src = fx.root.parent().unwrap().join("busybox");
    let local_busybox =
        fx.env.run("nix-store", &["--store", local.to_str().unwrap(), "--add", busybox_src.to_str().unwrap()]);
    assert_eq!(local_busybox.trim(), fx.busybox);
    let cache = dir.join("cache");
    let srv = Server::start(&[
        "--store-root",
        local.to_str().unwrap(),
        "--sign-key-file",
        &our_sec,
        "--upstream",
        &xz_up.url,
        "--upstream",
        &zstd_up.url,
        "--upstream-key",
        &up_pub,
        "--cache-dir",
        cache.to_str().unwrap(),
        "--state-dir",
        dir.join("state").to_str().unwrap(),
    ]);

    // A node that trusts only subserve's key.
    let want: Vec<String> = {
        let mut v = closure_of(&fx.env, &fx.root, &lib);
        v.extend(closure_of(&fx.env, &fx.root, &odd));
        v.sort();
        v.dedup();
        v
    };
    let first = client(&dir.join("node-1"), &srv.url(), &our_pub);
    let dst1 = dir.join("dst-1");
    first.run("nix-store", &["--store", dst1.to_str().unwrap(), "--realise", &lib, &odd]);
    let mut got = closure_of(&first, &dst1, &lib);
    got.extend(closure_of(&first, &dst1, &odd));
    got.sort();
    got.dedup();
    assert_eq!(got, want);
    first.run("nix-store", &["--store", dst1.to_str().unwrap(), "--verify", "--check-contents"]);

    // The local store won for the busybox: its narinfo is ours, and no upstream was asked.
    let hash = &fx.busybox["/nix/store/".len()..][..32];
    let narinfo = String::from_utf8(get(srv.addr, &format!("/{hash}.narinfo")).body).unwrap();
    assert!(narinfo.contains("Compression: none\n"), "{narinfo}");
    assert_eq!(xz_up.gets(&format!("/{hash}.narinfo")) + zstd_up.gets(&format!("/{hash}.narinfo")), 0);
    // Every NAR went over the upstream link exactly once.
    for up in [&xz_up, &zstd_up] {
        let nars = up.nar_gets();
        assert!(!nars.is_empty());
        for nar in &nars {
            assert_eq!(up.gets(nar), 1, "{nar} fetched more than once");
        }
    }

    // The upstreams go away; a second node, trusting only the upstream's key, is served from
    // subserve's cache.
    xz_up.stop();
    zstd_up.stop();
    let second = client(&dir.join("node-2"), &srv.url(), &up_pub);
    let dst2 = dir.join("dst-2");
    second.run("nix-store", &["--store", dst2.to_str().unwrap(), "--realise", &lib, &odd]);
    second.run("nix-store", &["--store", dst2.to_str().unwrap(), "--verify", "--check-contents"]);

    // The cache directory is itself a binary cache the real client can use.
    let third = client(&dir.join("node-3"), &format!("file://{}", cache.display()), &up_pub);
    let dst3 = dir.join("dst-3");
    third.run("nix-store", &["--store", dst3.to_str().unwrap(), "--realise", &odd]);
}

/// With its upstream unreachable subserve still starts, and a path it cannot get is a 404,
/// never a 5xx (which would abort the client's whole build).
#[test]
fn an_unreachable_upstream_is_a_404() {
    let fx = fixture::get();
    let dir = scratch("proxy-unreachable");
    let (_, up_pub) = keygen(&dir, "upstream-1");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cache: PathBuf = dir.join("cache");
    let srv = Server::start(&[
        "--store-root",
        &fx.store_arg(),
        "--upstream",
        &format!("http://127.0.0.1:{port}"),
        "--upstream-key",
        &up_pub,
        "--cache-dir",
        cache.to_str().unwrap(),
        "--state-dir",
        dir.join("state").to_str().unwrap(),
    ]);
    for i in 0..5 {
        let reply = get(srv.addr, &format!("/{:032}.narinfo", i));
        assert_eq!(reply.status, 404);
    }
    let reply = get(srv.addr, &format!("/nar/{:032}-{}.nar.xz", 7, "0".repeat(52)));
    assert_eq!(reply.status, 404);
    // Local paths are unaffected.
    assert_eq!(get(srv.addr, &format!("/{}.narinfo", &fx.top["/nix/store/".len()..][..32])).status, 200);
}

/// Builds a zstd upstream holding the fixture's 256 MiB path, serves it, and starts subserve
/// (empty local store) in front of it. Returns (upstream, subserve, NAR URL path, FileHash).
fn big_behind_proxy(dir: &Path) -> (StaticServer, Server, String, formats::NarHash, Vec<String>) {
    let fx = fixture::get();
    let (up_sec, up_pub) = keygen(dir, "upstream-1");
    let up_dir = dir.join("upstream");
    let to = format!("file://{}?compression=zstd&secret-key={up_sec}", up_dir.display());
    fx.env.run("nix", &["copy", "--from", &format!("local?root={}", fx.store_arg()), "--to", &to, &fx.big]);
    let up = StaticServer::start(&up_dir);
    let local = dir.join("local");
    fx.env.run("nix-store", &["--store", local.to_str().unwrap(), "--init"]);
    let args: Vec<String> = [
        "--store-root",
        local.to_str().unwrap(),
        "--upstream",
        &up.url,
        "--upstream-key",
        &up_pub,
        "--cache-dir",
        dir.join("cache").to_str().unwrap(),
        "--state-dir",
        dir.join("state").to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let srv = Server::start(&arg_refs);
    let hash = &fx.big["/nix/store/".len()..][..32];
    let reply = get(srv.addr, &format!("/{hash}.narinfo"));
    assert_eq!(reply.status, 200);
    let info = formats::NarInfo::parse(std::str::from_utf8(&reply.body).unwrap()).unwrap();
    assert_eq!(info.compression, "zstd");
    (up, srv, format!("/{}", info.url), info.file_hash.expect("nix copy writes FileHash"), args)
}

/// What one `curl` download gave: the sha256 of the body (streamed, never held in memory),
/// and curl's time to first byte and total time in seconds.
struct Fetched {
    sha256: String,
    first_byte: f64,
    total: f64,
}

fn curl_fetch(url: &str) -> Option<Fetched> {
    let script = format!(
        "set -o pipefail; curl -sf -w '%{{stderr}}%{{time_starttransfer}} %{{time_total}}' '{url}' | sha256sum"
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("curl and sha256sum are needed: apt-get install curl coreutils");
    if !out.status.success() {
        return None;
    }
    let times = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut times = times.split_whitespace().map(|t| t.parse::<f64>().unwrap());
    Some(Fetched {
        sha256: String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned(),
        first_byte: times.next().unwrap(),
        total: times.next().unwrap(),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// 50 nodes ask at once for the same cold 256 MiB NAR: one upstream download, identical and
/// verified bytes for everyone.
#[test]
fn fifty_concurrent_clients_cause_one_upstream_download() {
    let dir = scratch("proxy-fifty");
    let (up, srv, nar_url, file_hash, _) = big_behind_proxy(&dir);
    let url = format!("{}{nar_url}", srv.url());
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || curl_fetch(&url))
        })
        .collect();
    let want = file_hash.to_base16();
    let (mut first_bytes, mut totals) = (Vec::new(), Vec::new());
    for h in handles {
        let got = h.join().unwrap();
        let sha = got.as_ref().map(|f| f.sha256.as_str());
        assert_eq!(sha, Some(want.as_str()), "a client got other bytes or an error:\n{}", srv.log.lock().unwrap());
        let got = got.unwrap();
        first_bytes.push(got.first_byte);
        totals.push(got.total);
    }
    eprintln!(
        "proxy, 50 concurrent clients on a cold 256 MiB NAR (zstd file): median time to first byte {:.3} s, \
         median total {:.3} s, slowest {:.3} s",
        median(first_bytes),
        median(totals.clone()),
        totals.iter().copied().fold(0.0, f64::max)
    );
    let upstream_path = up.nar_gets();
    assert_eq!(upstream_path.len(), 1, "upstream NAR requests: {upstream_path:?}");
    // Now it is a cached file: Content-Length and Range work.
    let head = test_support::http::request(srv.addr, "HEAD", nar_url.as_bytes(), "");
    assert_eq!(head.header("accept-ranges"), Some("bytes"));
    let size: u64 = head.header("content-length").unwrap().parse().unwrap();
    let tail = test_support::http::request(srv.addr, "GET", nar_url.as_bytes(), "Range: bytes=-100\r\n");
    assert_eq!(tail.status, 206);
    assert_eq!(tail.header("content-range"), Some(format!("bytes {}-{}/{size}", size - 100, size - 1).as_str()));
    assert_eq!(tail.body.len(), 100);
    let hit = curl_fetch(&url).unwrap();
    assert_eq!(hit.sha256, want);
    eprintln!("proxy cache hit: the {size}-byte NAR file in {:.3} s", hit.total);
}

/// subserve is killed with SIGKILL in the middle of a proxied download; after a restart the
/// cache holds no partial file, and the real client substitutes the path correctly.
#[test]
fn kill_9_during_a_download_leaves_a_clean_cache() {
    let dir = scratch("proxy-kill-9");
    let (_up, mut srv, nar_url, _, args) = big_behind_proxy(&dir);
    // Start a download and kill the server as soon as the first bytes arrive.
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    std::io::Write::write_all(&mut s, format!("GET {nar_url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap();
    assert!(n > 0);
    srv.kill_9();
    let leftovers = |sub: &str| std::fs::read_dir(dir.join("cache").join(sub)).map(|d| d.count()).unwrap_or(0);
    eprintln!("after kill -9: tmp/ holds {} file(s), nar/ holds {}", leftovers("tmp"), leftovers("nar"));

    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let srv = Server::start(&arg_refs);
    assert_eq!(leftovers("tmp"), 0, "a partial download survived the restart");
    for entry in std::fs::read_dir(dir.join("cache/nar")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Any NAR still there is complete: its name carries its NarHash, which `--verify` checks below.
        assert!(name.ends_with(".nar.zst"), "{name}");
    }
    let fx = fixture::get();
    let public = std::fs::read_to_string(dir.join("upstream-1.pub")).unwrap();
    let node = client(&dir.join("node"), &srv.url(), public.trim());
    let dst = dir.join("dst");
    node.run("nix-store", &["--store", dst.to_str().unwrap(), "--realise", &fx.big]);
    node.run("nix-store", &["--store", dst.to_str().unwrap(), "--verify", "--check-contents"]);
}

/// Copies `path`'s closure into a zstd binary cache at `dir/upstream` signed by a new upstream
/// key, and starts subserve (with an empty store) in front of `upstream_url(static server)`.
/// Returns (upstream, subserve, upstream's public key).
fn behind_proxy(
    dir: &Path,
    path: &str,
    upstream_url: impl FnOnce(&StaticServer) -> String,
) -> (StaticServer, Server, String) {
    let fx = fixture::get();
    let (up_sec, up_pub) = keygen(dir, "upstream-1");
    let up_dir = dir.join("upstream");
    let to = format!("file://{}?compression=zstd&secret-key={up_sec}", up_dir.display());
    fx.env.run("nix", &["copy", "--from", &format!("local?root={}", fx.store_arg()), "--to", &to, path]);
    let up = StaticServer::start(&up_dir);
    let local = dir.join("local");
    fx.env.run("nix-store", &["--store", local.to_str().unwrap(), "--init"]);
    let srv = Server::start(&[
        "--store-root",
        local.to_str().unwrap(),
        "--upstream",
        &upstream_url(&up),
        "--upstream-key",
        &up_pub,
        "--cache-dir",
        dir.join("cache").to_str().unwrap(),
        "--state-dir",
        dir.join("state").to_str().unwrap(),
    ]);
    (up, srv, up_pub)
}

/// The upstream is gone for 20 s while a node keeps asking (and gets 404s that say "for now",
/// never a 5xx). The moment it is back, a fresh node with Nix's default settings substitutes
/// the whole closure at its first try: no breaker keeps answering 404 for paths the upstream
/// has, and nothing asked during the outage was remembered as absent.
#[test]
fn after_a_20_s_upstream_outage_a_fresh_node_substitutes_everything_at_once() {
    let fx = fixture::get();
    let dir = scratch("proxy-outage");
    let lib = fx.closure.iter().find(|p| p.ends_with("-lib-14")).unwrap().clone();
    let (mut up, srv, up_pub) = behind_proxy(&dir, &lib, |up| up.url.clone());
    let port: u16 = up.url.rsplit(':').next().unwrap().parse().unwrap();
    let want = closure_of(&fx.env, &fx.root, &lib);
    let hashes: Vec<&str> = want.iter().map(|p| &p["/nix/store/".len()..][..32]).collect();

    // The outage: connections refused for 20 s, while a node asks for the closure's paths.
    let outage = Duration::from_secs(20);
    up.stop();
    let start = Instant::now();
    let mut asked = 0;
    // Each answer may take the retry budget (5 s): stop asking in time to end the outage on time.
    while start.elapsed() + Duration::from_secs(7) < outage {
        let reply = get(srv.addr, &format!("/{}.narinfo", hashes[asked % hashes.len()]));
        assert_eq!(reply.status, 404, "during the outage");
        assert_eq!(reply.header("cache-control"), Some("max-age=5"), "not a 404 for now");
        asked += 1;
    }
    assert!(srv.log.lock().unwrap().contains("upstream failing repeatedly"), "the breaker never opened");
    // The outage lasts its 20 s whatever the requests took.
    std::thread::sleep(outage.saturating_sub(start.elapsed()));
    let _up = StaticServer::start_on(&dir.join("upstream"), port);

    let node = client(&dir.join("node"), &srv.url(), &up_pub);
    let dst = dir.join("dst");
    let started = Instant::now();
    node.run("nix-store", &["--store", dst.to_str().unwrap(), "--realise", &lib]);
    eprintln!(
        "after a {} s outage ({asked} narinfo requests answered 404 during it), a fresh node \
         substituted {} paths in {:.2} s",
        outage.as_secs(),
        want.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(closure_of(&node, &dst, &lib), want);
    node.run("nix-store", &["--store", dst.to_str().unwrap(), "--verify", "--check-contents"]);
}

/// The upstream breaks the first transfer of a proxied 256 MiB NAR half-way: the download
/// fails and subserve aborts the node's stream. Having been told `Content-Length` and
/// `Accept-Ranges`, the node resumes with a `Range`, which subserve serves from a fresh
/// download as the bytes arrive; the path arrives whole, with the right NarHash.
#[test]
fn a_proxied_nar_cut_by_the_upstream_is_resumed_by_the_node() {
    let fx = fixture::get();
    let dir = scratch("proxy-resume");
    let hash = &fx.big["/nix/store/".len()..][..32];
    let relay = Arc::new(Mutex::new(None));
    let (up, srv, up_pub) = behind_proxy(&dir, &fx.big, |up| {
        // subserve reaches the upstream through a relay that breaks the first long response
        // half-way through the NAR file.
        let narinfo = std::fs::read_to_string(dir.join("upstream").join(format!("{hash}.narinfo"))).unwrap();
        let file_size = formats::NarInfo::parse(&narinfo).unwrap().file_size.expect("nix copy writes FileSize");
        let addr = up.url.trim_start_matches("http://").parse().unwrap();
        let r = Relay::start(addr, file_size / 2);
        let url = r.url();
        *relay.lock().unwrap() = Some(r);
        url
    });
    let relay = relay.lock().unwrap().take().unwrap();

    let node = client(&dir.join("node"), &srv.url(), &up_pub);
    let dst = dir.join("dst");
    let started = Instant::now();
    node.run("nix-store", &["--store", dst.to_str().unwrap(), "--realise", &fx.big]);
    let secs = started.elapsed().as_secs_f64();
    node.run("nix-store", &["--store", dst.to_str().unwrap(), "--verify", "--check-contents"]);
    let nar_hash = |env: &NixEnv, store: &str| env.run("nix-store", &["--store", store, "-q", "--hash", &fx.big]);
    assert_eq!(nar_hash(&node, dst.to_str().unwrap()), nar_hash(&fx.env, &fx.store_arg()));

    assert!(relay.cut.load(Ordering::SeqCst), "the upstream transfer was never cut");
    let upstream_gets = up.nar_gets();
    assert_eq!(upstream_gets.len(), 2, "upstream NAR requests: {upstream_gets:?}");
    let log = srv.log.lock().unwrap().clone();
    let nar_requests: Vec<&str> = log.lines().filter(|l| l.contains(" request ") && l.contains("path=/nar/")).collect();
    assert!(
        nar_requests.iter().any(|l| l.contains("status=206")),
        "the node did not resume with a Range: {nar_requests:#?}"
    );
    eprintln!("proxied 256 MiB NAR cut by the upstream half-way, resumed by the node: {secs:.2} s in all");
}
