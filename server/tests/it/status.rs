//! The status page and who may see what, in process: the page for browsers and the text index
//! for scripts at `/`, `<prefix>/` and `/index.txt`; `--admin-allow` (127.0.0.2 bound as the
//! client plays another host) limiting `/metrics` and the page's lists while the cache stays
//! open; `--trusted-proxy` and `X-Forwarded-For`; and everything from outside escaped.

use std::net::IpAddr;

use test_support::http::{get, request, request_from, Reply};
use test_support::{hash_part, spawn_server, FakeStore, TestServer};

const HTML: &str = "Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n";

fn other_host() -> IpAddr {
    "127.0.0.2".parse().unwrap()
}

fn body(reply: &Reply) -> String {
    String::from_utf8(reply.body.clone()).unwrap()
}

/// One Nix store with one path, served with `extra` config lines; returns the server, the
/// path, and the state dir to keep.
fn serve(extra: &str) -> (TestServer, FakeStore, String, tempfile::TempDir) {
    let store = FakeStore::nix();
    let path = store.add_file("hello-2.12", b"hello\n");
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&format!(
        "state-dir = {:?}\nupstream = []\nbake = \"none\"\n{extra}{}",
        state.path(),
        store.config()
    ));
    (srv, store, path, state)
}

/// Reads `path`'s narinfo and NAR from `from` (or 127.0.0.1) with `extra` headers; returns the
/// NAR's size.
fn fetch(srv: &TestServer, from: Option<IpAddr>, path: &str, extra: &str) -> u64 {
    let send = |target: &str| match from {
        Some(ip) => request_from(ip, srv.addr, "GET", target.as_bytes(), extra),
        None => request(srv.addr, "GET", target.as_bytes(), extra),
    };
    let narinfo = send(&format!("/{}.narinfo", hash_part(path)));
    assert_eq!(narinfo.status, 200);
    let url = body(&narinfo).lines().find_map(|l| l.strip_prefix("URL: ")).unwrap().to_owned();
    let nar = send(&format!("/{url}"));
    assert_eq!(nar.status, 200);
    nar.body.len() as u64
}

#[test]
fn browsers_get_the_page_and_scripts_the_index() {
    let (srv, store, path, _state) = serve("");
    let page = request(srv.addr, "GET", b"/", HTML);
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = body(&page);
    let key = srv.stores[0].signer.nix_keys()[0].to_public().to_string();
    for shown in [
        format!("subserve {}", env!("CARGO_PKG_VERSION")),
        format!("substituters = {}", srv.url()),
        format!("trusted-public-keys = {key}"),
        "Store /nix/store".to_owned(),
        "nix clients".to_owned(),
        "href=\"/metrics\"".to_owned(),
    ] {
        assert!(html.contains(&shown), "{shown:?} missing from:\n{html}");
    }
    assert!(!html.contains("<script"), "no script on the page");

    // Scripts (no Accept, curl's */*) get the text index, at / and at /index.txt.
    for (target, accept) in [("/", ""), ("/", "Accept: */*\r\n"), ("/index.txt", HTML)] {
        let index = request(srv.addr, "GET", target.as_bytes(), accept);
        assert_eq!(index.status, 200);
        assert_eq!(index.header("content-type"), Some("text/plain; charset=utf-8"), "{target} {accept}");
        assert_eq!(body(&index), "subserve: binary caches served here\n\n/\tnix clients, store /nix/store\n");
    }
    // The cache itself is untouched.
    assert_eq!(get(srv.addr, &format!("/{}.narinfo", hash_part(&path))).status, 200);
    drop(store);
}

#[test]
fn each_store_has_its_page_under_its_prefix() {
    let nix = FakeStore::nix();
    let guix = FakeStore::guix();
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&crate::store::nix_and_guix_config(&nix, &guix, state.path()));
    let all = body(&request(srv.addr, "GET", b"/", HTML));
    assert!(all.contains(&format!("substituters = {}/nix", srv.url())), "{all}");
    assert!(all.contains("guix archive --authorize &#60;&#60;&#39;EOF&#39;"), "{all}");
    assert!(all.contains(&format!("guix-daemon --substitute-urls={}/guix", srv.url())), "{all}");
    for target in ["/guix/", "/guix"] {
        let one = request(srv.addr, "GET", target.as_bytes(), HTML);
        assert_eq!(one.status, 200, "{target}");
        let one = body(&one);
        assert!(one.contains("Store /gnu/store at /guix"), "{target}: {one}");
        assert!(!one.contains("/nix/store"), "{target}: only the Guix store: {one}");
    }
    let index = body(&get(srv.addr, "/index.txt"));
    assert!(index.contains("/nix/\tnix clients") && index.contains("/guix/\tguix clients"), "{index}");
    assert_eq!(
        body(&get(srv.addr, "/nix/")),
        "subserve: binary caches served here\n\n/nix/\tnix clients, store /nix/store\n"
    );
}

/// `--admin-allow 127.0.0.1`: 127.0.0.2 is another host. It is served narinfos and NARs, gets
/// the page without its lists, and 403 for /metrics; this host sees the lists, with the other
/// host's download in them.
#[test]
fn admin_allow_limits_metrics_and_the_lists_to_its_addresses() {
    let (srv, _store, path, _state) = serve("admin-allow = [\"127.0.0.1\"]\n");
    let size = fetch(&srv, Some(other_host()), &path, "");
    srv.wait_for_audit(2);

    assert_eq!(request_from(other_host(), srv.addr, "GET", b"/metrics", "").status, 403);
    let page = request_from(other_host(), srv.addr, "GET", b"/", HTML);
    assert_eq!(page.status, 200);
    let html = body(&page);
    assert!(html.contains("shown to admin addresses only"), "{html}");
    assert!(!html.contains("127.0.0.2"), "no client on the page for others: {html}");
    assert!(!html.contains("hello-2.12"), "no path on the page for others: {html}");

    assert_eq!(get(srv.addr, "/metrics").status, 200);
    let html = body(&request(srv.addr, "GET", b"/", HTML));
    assert!(html.contains("<h3>Busiest clients</h3>"), "{html}");
    assert!(html.contains(&format!("<td>127.0.0.2</td><td class=\"n\">1</td><td class=\"n\">{size} B</td>")), "{html}");
    assert!(html.contains(&format!("{}-hello-2.12</td>", hash_part(&path))), "{html}");
}

/// By default the admin is this host: 127.0.0.0/8 (and ::1).
#[test]
fn the_admin_is_this_host_by_default() {
    let (srv, _store, _path, _state) = serve("");
    assert_eq!(request_from(other_host(), srv.addr, "GET", b"/metrics", "").status, 200);
}

/// Behind a trusted proxy (127.0.0.1 here), the client is the address it appended to
/// `X-Forwarded-For`: for the audit trail and for `--admin-allow` alike. From an untrusted
/// peer the header is ignored.
#[test]
fn a_trusted_proxy_names_the_client() {
    let (srv, _store, path, state) = serve("trusted-proxies = [\"127.0.0.1/32\"]\nadmin-allow = [\"127.0.0.1\"]\n");
    let forwarded = "X-Forwarded-For: 6.6.6.6, 192.0.2.7\r\n";
    let size = fetch(&srv, None, &path, forwarded);
    fetch(&srv, Some(other_host()), &path, "X-Forwarded-For: 127.0.0.1\r\n");
    srv.wait_for_audit(4);
    let query = audit::Query::open(&state.path().join("audit.sqlite")).unwrap();
    let mut clients: Vec<(String, u64)> =
        query.who_fetched("hello", None).unwrap().into_iter().map(|n| (n.client, n.bytes)).collect();
    clients.sort();
    assert_eq!(clients, [("127.0.0.2".to_owned(), size), ("192.0.2.7".to_owned(), size)]);
    // The proxied client is not this host, whatever the socket says.
    assert_eq!(request(srv.addr, "GET", b"/metrics", forwarded).status, 403);
    assert_eq!(request(srv.addr, "GET", b"/metrics", "").status, 200);
}

/// Nothing from outside reaches the page raw: a hostile configured URL and upstream URL (with
/// a password, which is never shown), a hostile store path name in the audit trail, a hostile
/// `Host` and `X-Forwarded-For`.
#[test]
fn everything_on_the_page_is_escaped() {
    let store = FakeStore::nix();
    let state = tempfile::tempdir().unwrap();
    let key = "cache.example.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
    let srv = spawn_server(&format!(
        "state-dir = {:?}\nbake = \"none\"\n{}\
         [[upstream]]\nurl = \"http://user:hunter2@127.0.0.1:9/<script>alert('up')</script>\"\nkeys = [\"{key}\"]\n",
        state.path(),
        store.config()
    ));
    let trail = srv.process.audit.as_ref().unwrap();
    trail.log().record(audit::Record {
        at: std::time::SystemTime::now(),
        client: "127.0.0.9".parse().unwrap(),
        store: String::new(),
        kind: audit::Kind::Nar,
        hash: "7rjj86a15146cq1d3qy068lml7n8ykzm".into(),
        name: "<script>alert('path')</script>".into(),
        status: 200,
        bytes: 1,
        duration: std::time::Duration::from_millis(1),
    });
    trail.log().flush();
    let page = request(
        srv.addr,
        "GET",
        b"/",
        &format!("{HTML}Host: <script>alert('host')</script>\r\nX-Forwarded-For: <script>alert('xff')</script>\r\n"),
    );
    assert_eq!(page.status, 200);
    let html = body(&page);
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("alert('"), "{html}");
    assert!(!html.contains("hunter2"), "the upstream's password is not shown: {html}");
    assert!(html.contains("&#60;script&#62;alert(&#39;path&#39;)&#60;/script&#62;"), "{html}");
    assert!(html.contains("http://127.0.0.1:9/&#60;script&#62;alert(&#39;up&#39;)"), "{html}");
    assert!(!html.contains("xff") && !html.contains("host&#39;"), "no request header reflected: {html}");
}
