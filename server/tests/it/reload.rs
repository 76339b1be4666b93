//! SIGHUP's reload of upstreams (`startup::reload_states`, as the binary applies it): new
//! upstreams serve from the next request on, over the same cache area, and misses remembered
//! under the old ones are forgotten; a change of the cache area itself waits for a restart.

use formats::Compression;
use signing::SecretKey;
use test_support::compression::noise;
use test_support::fake_upstream::{make_item, Fake};
use test_support::http::get;
use test_support::{spawn_server, FakeStore};

const WANTED: &str = "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb";
const OTHER: &str = "1b8m03r63zqhnjf7l5wnldhh7c134ap5";

#[test]
fn new_upstreams_serve_at_once_and_old_misses_are_forgotten() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = SecretKey::generate("upstream-1").unwrap();
    let lacking =
        rt.block_on(Fake::start(vec![make_item(&key, OTHER, "other", noise(1, 5000), Compression::Zstd)], key.clone()));
    let having = rt
        .block_on(Fake::start(vec![make_item(&key, WANTED, "wanted", noise(2, 5000), Compression::Zstd)], key.clone()));
    let store = FakeStore::nix();
    let state = tempfile::tempdir().unwrap();
    let config = |upstreams: &[&Fake], max_size: &str| {
        let tables: String = upstreams
            .iter()
            .map(|f| format!("[[upstream]]\nurl = {:?}\nkeys = [{:?}]\n", f.url(), key.to_public().to_string()))
            .collect();
        format!(
            "state-dir = {:?}\n{}cache-max-size = {max_size:?}\nnegative-ttl = 3600\n{tables}",
            state.path(),
            store.config()
        )
    };
    let mut srv = spawn_server(&config(&[&lacking], "1G"));
    let narinfo = format!("/{WANTED}.narinfo");
    assert_eq!(get(srv.addr, &narinfo).status, 404, "the first upstream lacks it");
    assert_eq!(get(srv.addr, &format!("/{OTHER}.narinfo")).status, 200);

    let changes = srv.reload(&config(&[&lacking, &having], "1G")).unwrap();
    assert_eq!(changes, ["upstreams of the store at /"]);
    // The miss was remembered for an hour; the new upstream is asked at once.
    let found = get(srv.addr, &narinfo);
    assert_eq!(found.status, 200, "{}", String::from_utf8_lossy(&found.body));
    assert_eq!(having.narinfo_requests(&having.items[0]), 1);
    let url = String::from_utf8(found.body).unwrap().lines().find_map(|l| l.strip_prefix("URL: ")).unwrap().to_owned();
    let nar = get(srv.addr, &format!("/{url}"));
    assert_eq!(nar.status, 200);
    assert_eq!(nar.body, having.items[0].file.to_vec());
    // What the old proxy cached is still served from the shared cache area.
    assert_eq!(get(srv.addr, &format!("/{OTHER}.narinfo")).status, 200);
    assert_eq!(lacking.narinfo_requests(&lacking.items[0]), 1);

    // The cache area's size is fixed until a restart; the configuration in force stays.
    let refused = srv.reload(&config(&[&having], "2G")).unwrap_err();
    assert!(refused.contains("the cache of the store at / changed: restart subserve to apply it"), "{refused}");
    assert_eq!(get(srv.addr, &format!("/{OTHER}.narinfo")).status, 200);
}

/// The publishing policy changes on SIGHUP: a path served a moment ago answers as absent at
/// once (the narinfo cache is not consulted for it), and is served again when signed.
#[test]
fn the_publishing_policy_changes_on_reload() {
    let store = FakeStore::nix();
    let path = store.add_file("private-build", b"not for the cluster\n");
    let farm = SecretKey::generate("farm-1").unwrap();
    let state = tempfile::tempdir().unwrap();
    let config = |extra: &str| format!("state-dir = {:?}\n{}upstream = []\n{extra}", state.path(), store.config());
    let mut srv = spawn_server(&config(""));
    let url = format!("/{}.narinfo", test_support::hash_part(&path));
    let reply = get(srv.addr, &url);
    assert_eq!(reply.status, 200);
    let info = formats::NarInfo::parse(std::str::from_utf8(&reply.body).unwrap()).unwrap();
    let signed = format!("publish = \"signed\"\npublish-trusted-keys = [{:?}]\n", farm.to_public().to_string());
    let changes = srv.reload(&config(&signed)).unwrap();
    assert!(changes.iter().any(|c| c.contains("the publishing policy")), "{changes:?}");
    assert_eq!(get(srv.addr, &url).status, 404, "unsigned: now absent");
    store.set_sigs(&path, &[farm.sign(&info.fingerprint("/nix/store"))]);
    srv.reload(&config(&format!("{signed}priority = 31\n"))).unwrap();
    assert_eq!(get(srv.addr, &url).status, 200, "signed by the farm: served");
}
