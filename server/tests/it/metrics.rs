//! The store families of `/metrics` (baking, the cache area, the proxy and its upstreams, the
//! stream caps) move when their events happen, and agree with the server's own counters.

use formats::Compression;
use signing::SecretKey;
use test_support::compression::noise;
use test_support::fake_upstream::{make_item, Fake};
use test_support::http::get;
use test_support::spawn_server;

use crate::store::{narinfo, sample};

const PROXIED: &str = "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb";

/// The value of the one series `series` (name and labels, as written) in `text`.
fn value(text: &str, series: &str) -> f64 {
    let line = text.lines().find(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')));
    line.unwrap_or_else(|| panic!("no {series} in:\n{text}")).rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn store_families_move_with_their_events() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = SecretKey::generate("upstream-1").unwrap();
    let item = make_item(&key, PROXIED, "p", noise(3, 40_000), Compression::Zstd);
    // What a killed process leaves: a partial download in the cache area's tmp/.
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(state.path().join("cache/tmp")).unwrap();
    std::fs::write(state.path().join("cache/tmp/partial.nar.zst"), b"half a download").unwrap();
    let fake = rt.block_on(Fake::start(vec![item.clone()], key.clone()));
    let sample = sample();
    let srv = spawn_server(&format!(
        "state-dir = {:?}\n{}bake-min-size = \"0\"\nbake-delay = 0\nbake-zstd-level = 3\n\
         cache-max-size = \"1G\"\n[[upstream]]\nurl = {:?}\nkeys = [{:?}]\n\
         [[upstream]]\nurl = \"http://127.0.0.1:1\"\nkeys = [{:?}]\n",
        state.path(),
        sample.store.config(),
        fake.url(),
        key.to_public().to_string(),
        key.to_public().to_string()
    ));
    let metrics = || {
        let reply = get(srv.addr, "/metrics");
        assert_eq!(reply.status, 200);
        String::from_utf8(reply.body).unwrap()
    };
    let before = metrics();
    assert_eq!(value(&before, "subserve_bakes_completed_total{store=\"/\"}"), 0.0);
    assert_eq!(value(&before, "subserve_cache_bytes{store=\"/\"}"), 0.0);
    assert_eq!(value(&before, "subserve_cache_limit_bytes{store=\"/\"}"), (1u64 << 30) as f64);
    assert_eq!(value(&before, &format!("subserve_upstream_up{{store=\"/\",upstream=\"{}\"}}", fake.url())), 1.0);
    assert_eq!(value(&before, "subserve_nar_streams_in_use{cap=\"plain\"}"), 0.0);

    // A bake, and a proxied narinfo and NAR; the big narinfo twice, the second time from the
    // narinfo cache.
    narinfo(&srv, &sample.big);
    narinfo(&srv, &sample.big);
    let stats = srv.wait_until("the big NAR is baked", |s| s.bakes.completed_total >= 1);
    let proxied = get(srv.addr, &format!("/{PROXIED}.narinfo"));
    assert_eq!(proxied.status, 200);
    let url =
        String::from_utf8(proxied.body).unwrap().lines().find_map(|l| l.strip_prefix("URL: ")).unwrap().to_owned();
    assert_eq!(get(srv.addr, &format!("/{url}")).status, 200);

    // The proxied download's index row may land a moment after its last byte was sent.
    let deadline = std::time::Instant::now() + test_support::server::DEADLINE;
    let after = loop {
        let text = metrics();
        if value(&text, "subserve_cache_files{store=\"/\"}") >= 2.0 {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "a baked file and a proxied one:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let bakes = srv.stats().bakes;
    assert!(value(&after, "subserve_narinfo_cache_hits_total{store=\"/\"}") >= 1.0);
    assert!(
        value(&after, "subserve_narinfo_cache_misses_total{store=\"/\"}") >= 2.0,
        "the big path and the proxied one"
    );
    assert_eq!(value(&after, "subserve_bakes_completed_total{store=\"/\"}"), bakes.completed_total as f64);
    assert_eq!(value(&after, "subserve_bakes_queued_total{store=\"/\"}"), bakes.queued_total as f64);
    assert_eq!(value(&after, "subserve_bakes_written_bytes_total{store=\"/\"}"), bakes.written_bytes_total as f64);
    assert!(bakes.written_bytes_total > 0 && bakes.read_bytes_total > bakes.written_bytes_total);
    assert_eq!(value(&after, "subserve_bakes_running{store=\"/\"}"), 0.0);
    // Every DB lookup and every admitted body is timed: the two narinfo misses at least, and
    // the proxied NAR.
    assert!(value(&after, "subserve_store_db_lookup_seconds_count{store=\"/\"}") >= 2.0);
    assert!(value(&after, "subserve_nar_streams_wait_seconds_count{cap=\"plain\"}") >= 1.0);
    assert!(value(&after, "subserve_nar_streams_wait_seconds_bucket{cap=\"plain\",le=\"+Inf\"}") >= 1.0);
    assert!(stats.bakes.completed_total >= 1);
    assert!(value(&after, "subserve_cache_bytes{store=\"/\"}") > 0.0);
    assert!(value(&after, "subserve_proxy_narinfo_fetches_total{store=\"/\"}") >= 1.0);
    assert_eq!(value(&after, "subserve_proxy_nar_fetches_total{store=\"/\"}"), 1.0);
    assert_eq!(value(&after, "subserve_proxy_nar_verify_failures_total{store=\"/\"}"), 0.0);
    assert_eq!(value(&after, "subserve_nar_streams_rejected_total{cap=\"plain\"}"), 0.0);
    assert_eq!(value(&after, "subserve_proxy_upstream_errors_total{store=\"/\",cause=\"refused\"}"), 0.0);

    // A path no upstream has: the second upstream, where nothing listens, is asked too, and
    // its failure is counted by cause.
    assert_eq!(get(srv.addr, "/1b8m03r63zqhnjf7l5wnldhh7c134ap5.narinfo").status, 404);
    let failed = metrics();
    assert!(value(&failed, "subserve_proxy_upstream_errors_total{store=\"/\",cause=\"refused\"}") >= 1.0);
    assert_eq!(value(&failed, "subserve_proxy_upstream_errors_total{store=\"/\",cause=\"timeout\"}"), 0.0);

    // Per upstream: the fake answered the narinfos and the one NAR; the dead one refused.
    let up = |name: &str, url: &str| format!("subserve_upstream_{name}{{store=\"/\",upstream=\"{url}\"}}");
    let fake_url = fake.url();
    assert_eq!(value(&failed, &up("nar_fetches_total", &fake_url)), 1.0);
    assert_eq!(value(&failed, &up("nar_received_bytes_total", &fake_url)), item.file.len() as f64);
    assert!(value(&failed, &up("narinfo_fetches_total", &fake_url)) >= 2.0);
    assert_eq!(value(&failed, &up("nar_fetches_total", "http://127.0.0.1:1")), 0.0);
    let dead_refused = "subserve_upstream_errors_total{store=\"/\",upstream=\"http://127.0.0.1:1\",cause=\"refused\"}";
    assert!(value(&failed, dead_refused) >= 1.0);
    let fake_refused =
        format!("subserve_upstream_errors_total{{store=\"/\",upstream=\"{fake_url}\",cause=\"refused\"}}");
    assert_eq!(value(&failed, &fake_refused), 0.0);
    // The miss was not clean (an upstream failed), so it is not remembered; this scrape came
    // over one connection at least.
    assert_eq!(value(&failed, "subserve_proxy_negative_entries{store=\"/\"}"), 0.0);
    assert_eq!(value(&failed, "subserve_cache_recovery_cleanups_total{store=\"/\"}"), 1.0, "the partial download");
    assert!(!state.path().join("cache/tmp/partial.nar.zst").exists());
    assert!(value(&failed, "subserve_http_connections_open") >= 1.0);
    // NAR bytes by source: the proxied download, the bake's file or stream.
    assert!(value(&failed, "subserve_nar_response_bytes_total{store=\"/\",source=\"proxy_download\"}") > 0.0);
    assert_eq!(value(&failed, "subserve_nar_responses_total{store=\"/\",source=\"proxy_download\"}"), 1.0);
}
