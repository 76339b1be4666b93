//! The fault matrix, in both dialects: for each way an upstream can fail, the client sees
//! "absent" or an aborted transfer, nothing corrupt is cached, and the next request after the
//! fault clears works.

use std::sync::atomic::Ordering;
use std::time::Duration;

use formats::{Compression, StorePathHash};
use upstream::{Lookup, NarSource, Proxy, ProxyConfig, UpstreamConfig};

use test_support::compression::noise;
use test_support::dialected::Dialected;
use test_support::fake_upstream::{proxy_for, read_all, Behaviour, Fake, Item, UpstreamKey as _};

use crate::{all_at_once, assert_nothing_cached, one};

const H: &str = "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb";

over_dialects!(
    narinfo_faults_become_absent_and_recover,
    a_long_dead_upstream_is_unavailable_and_then_skipped,
    untrusted_oversized_mislabelled_and_garbage_narinfos_are_absent,
    nar_faults_abort_the_transfer_cache_nothing_and_recover,
    a_decompression_bomb_is_refused,
);

/// Each fault with a fake and a proxy of its own, all at once (most wait on a timeout).
async fn narinfo_faults_become_absent_and_recover<D: Dialected>() {
    let faults =
        [Behaviour::Status(500), Behaviour::Status(503), Behaviour::Hang, Behaviour::Stall, Behaviour::Truncate];
    let mut cases = Vec::new();
    for fault in faults {
        cases.push((fault, one::<D>(1000, Compression::Zstd).await));
    }
    all_at_once(cases.into_iter().map(|(fault, fake)| async move {
        let item = fake.items[0].clone();
        let dir = tempfile::tempdir().unwrap();
        let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
        fake.set_narinfo(&item, fault);
        assert!(D::narinfo(&proxy, &item.hash, None).await.found().is_none(), "{fault:?}");
        assert!(proxy.stats().upstream_errors.load(Ordering::Relaxed) >= 1, "{fault:?} not counted");
        assert_nothing_cached(dir.path());
        // Upstream errors are not cached as misses: once the fault clears, the path is there.
        fake.set_narinfo(&item, Behaviour::Normal);
        assert!(D::narinfo(&proxy, &item.hash, None).await.found().is_some(), "{fault:?}: no recovery");
    }))
    .await;
}

/// A dead upstream is asked again within the request, until its breaker opens; once it has
/// been down for longer than the patience, requests no longer wait for it.
async fn a_long_dead_upstream_is_unavailable_and_then_skipped<D: Dialected>() {
    // Bind and drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::open(ProxyConfig {
        dialect: D::DIALECT,
        upstreams: vec![UpstreamConfig {
            url: format!("http://127.0.0.1:{port}"),
            trust: D::generate().trust(),
            priority: 0,
            timeout: Duration::from_millis(500),
        }],
        cache_dir: dir.path().to_path_buf(),
        max_size: 1 << 30,
        negative_ttl: Duration::from_secs(60),
        store_dir: D::STORE_DIR.into(),
        stall_timeout: Duration::from_millis(500),
        breaker_cool_down: Duration::from_secs(60),
        retry_budget: Duration::from_secs(10),
        // As if the upstream had been down for long already.
        outage_patience: Duration::ZERO,
        max_narinfo_fetches: 256,
        max_narinfo_fetches_per_client: 32,
    })
    .unwrap();
    for i in 0..10 {
        let hash = StorePathHash::parse(&format!("{:032}", i)).unwrap();
        assert_eq!(D::narinfo(&proxy, &hash, None).await, Lookup::Unavailable);
    }
    // The first request tries three times, which opens the breaker; the other nine cost nothing.
    assert_eq!(proxy.stats().narinfo_fetches.load(Ordering::Relaxed), 3);
    assert_eq!(proxy.stats().narinfo_retries.load(Ordering::Relaxed), 2);
}

/// A narinfo the proxy must refuse, and whether it counts as untrusted.
struct Bad {
    what: &'static str,
    item: Item,
    untrusted: bool,
}

/// Each one with a proxy of its own: three bad answers in a row would open the breaker.
async fn untrusted_oversized_mislabelled_and_garbage_narinfos_are_absent<D: Dialected>() {
    let key = D::generate();
    let item = |i: u8, signer: &D| signer.item(&hash(i), "p", noise(i.into(), 1000), Compression::Zstd);
    let bad = |what, item, untrusted| Bad { what, item, untrusted };
    let mut cases = vec![
        // Signed by a key this upstream is not trusted for (for Nix, with the right name).
        bad("a stranger's", item(1, &D::generate()), true),
    ];
    // Signed, but the signed text was changed afterwards.
    let mut tampered = item(2, &key);
    tampered.narinfo = tampered.narinfo.replacen("NarSize: 1000", "NarSize: 1001", 1);
    cases.push(bad("tampered", tampered, true));
    // No signature at all.
    let mut unsigned = item(3, &key);
    let signature = format!("{}:", D::SIGNATURE_FIELD);
    unsigned.narinfo =
        unsigned.narinfo.lines().filter(|l| !l.starts_with(&signature)).map(|l| format!("{l}\n")).collect();
    cases.push(bad("unsigned", unsigned, true));
    // Correctly signed, but for another path than the one asked.
    let mut other_path = item(4, &key);
    other_path.narinfo = item(5, &key).narinfo;
    cases.push(bad("another path's", other_path, false));
    // Correctly signed, but not under the store dir.
    let other_store = D::Other::STORE_DIR;
    let elsewhere = key.item_in(other_store, &hash(6), "p", noise(6, 1000), Compression::Zstd);
    cases.push(bad("another store's", elsewhere, false));
    // The other dialect's narinfo, signed for it.
    let foreign = D::Other::generate().item_in(D::STORE_DIR, &hash(7), "p", noise(7, 1000), Compression::Zstd);
    cases.push(bad("the other dialect's", foreign, true));
    // Far beyond any real narinfo.
    let mut huge = item(8, &key);
    huge.narinfo.push_str(&format!("Junk: {}\n", "x".repeat(1 << 20)));
    cases.push(bad("huge", huge, false));
    // Not a narinfo.
    let mut html = item(9, &key);
    html.narinfo = "<html>Bad Gateway</html>\n".into();
    cases.push(bad("garbage", html, false));

    let fake = Fake::start(cases.iter().map(|c| c.item.clone()).collect(), key).await;
    for Bad { what, item, untrusted } in &cases {
        let dir = tempfile::tempdir().unwrap();
        let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
        assert!(D::narinfo(&proxy, &item.hash, None).await.found().is_none(), "{what}");
        assert_eq!(fake.narinfo_requests(item), 1, "{what}");
        assert_eq!(proxy.stats().untrusted.load(Ordering::Relaxed), u64::from(*untrusted), "{what}");
        assert_nothing_cached(dir.path());
    }
}

/// The `i`th of a family of valid hash parts.
fn hash(i: u8) -> String {
    format!("{}{}", "0123456789abcdfghijklmnpqrsvwxyz".as_bytes()[usize::from(i)] as char, &H[1..])
}

/// Each fault in each compression, with a fake and a proxy of its own, all at once (many wait
/// on a timeout).
async fn nar_faults_abort_the_transfer_cache_nothing_and_recover<D: Dialected>() {
    let faults = [
        Behaviour::Status(500),
        Behaviour::Status(503),
        Behaviour::Status(404),
        Behaviour::Hang,
        Behaviour::Stall,
        Behaviour::Truncate,
        Behaviour::FlipByte,
    ];
    // The items first (compressing them takes a while), then the cases.
    let mut cases = Vec::new();
    for compression in [Compression::Xz, Compression::Zstd, Compression::Gzip, Compression::None] {
        let key = D::generate();
        let item = key.item(H, "thing", noise(7, 500_000), compression);
        for fault in faults {
            cases.push((compression, fault, Fake::start(vec![item.clone()], key.clone()).await));
        }
    }
    all_at_once(cases.into_iter().map(|(compression, fault, fake)| async move {
        let item = fake.items[0].clone();
        let dir = tempfile::tempdir().unwrap();
        let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
        D::narinfo(&proxy, &item.hash, None)
            .await
            .found()
            .unwrap_or_else(|| panic!("{compression} {fault:?}: no narinfo"));
        fake.set_nar(&item, fault);
        match D::nar(&proxy, &item, compression).await {
            None => {}
            Some(source @ NarSource::Stream(_)) => {
                assert!(read_all(source).await.is_err(), "{compression} {fault:?}: clean end of a bad download");
            }
            Some(NarSource::File { .. }) => panic!("{compression} {fault:?}: served a cached file"),
        }
        assert_nothing_cached(dir.path());
        if fault == Behaviour::FlipByte {
            assert_eq!(proxy.stats().nar_verify_failures.load(Ordering::Relaxed), 1, "{compression} {fault:?}");
        }
        fake.set_nar(&item, Behaviour::Normal);
        let good =
            D::nar(&proxy, &item, compression).await.unwrap_or_else(|| panic!("{compression} {fault:?}: no NAR"));
        let good = read_all(good).await.unwrap();
        assert_eq!(good, item.file.to_vec(), "{compression} {fault:?}: no recovery");
        let cached = D::nar(&proxy, &item, compression).await;
        assert!(matches!(cached, Some(NarSource::File { .. })), "{compression} {fault:?}: not cached after recovery");
    }))
    .await;
}

/// A NAR that decompresses to far more than its NarSize is cut off at NarSize.
async fn a_decompression_bomb_is_refused<D: Dialected>() {
    let key = D::generate();
    let mut item = key.item(H, "bomb", noise(1, 1000), Compression::Zstd);
    // Keep the signed narinfo (NarSize 1000) without FileHash and FileSize (neither is
    // signed); serve 256 MiB of zeros.
    item.narinfo = item
        .narinfo
        .lines()
        .filter(|l| !l.starts_with("FileSize:") && !l.starts_with("FileHash:"))
        .map(|l| format!("{l}\n"))
        .collect();
    item.file = zstd::encode_all(&vec![0u8; 256 << 20][..], 19).unwrap().into();
    let fake = Fake::start(vec![item.clone()], key).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    let info = D::narinfo(&proxy, &item.hash, None).await.found().unwrap();
    assert_eq!(D::summary(&info).offers[0].file_size, None);
    assert!(read_all(D::nar(&proxy, &item, Compression::Zstd).await.unwrap()).await.is_err());
    assert_nothing_cached(dir.path());
    assert_eq!(proxy.stats().nar_verify_failures.load(Ordering::Relaxed), 1);
}
