//! The fault matrix: for each way an upstream can fail, the client sees "absent" or an aborted
//! transfer, nothing corrupt is cached, and the next request after the fault clears works.

use std::sync::atomic::Ordering;
use std::time::Duration;

use formats::{Compression, NarHash, NarInfo};
use signing::SecretKey;
use upstream::{Lookup, NarSource};

use test_support::compression::noise;
use test_support::fake_upstream::{make_item, read_all, Behaviour, Fake, Item};

const H: &str = "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb";

async fn one(len: usize, c: Compression) -> Fake {
    let key = SecretKey::generate("upstream-1").unwrap();
    let item = make_item(&key, H, "thing", noise(7, len), c);
    Fake::start(vec![item], key).await
}

fn nar_hash(item: &Item) -> NarHash {
    NarHash::digest(&item.nar)
}

/// Nothing but complete, verified entries in the cache directory.
fn assert_nothing_corrupt_cached(dir: &std::path::Path) {
    assert_eq!(std::fs::read_dir(dir.join("nar")).unwrap().count(), 0, "a NAR file was cached");
    assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0, "a temp file was left");
    let narinfos = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".narinfo"));
    assert_eq!(narinfos.count(), 0, "a narinfo file was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narinfo_faults_become_absent_and_recover() {
    for fault in
        [Behaviour::Status(500), Behaviour::Status(503), Behaviour::Hang, Behaviour::Stall, Behaviour::Truncate]
    {
        let fake = one(1000, Compression::Xz).await;
        let item = fake.items[0].clone();
        let dir = tempfile::tempdir().unwrap();
        let proxy = fake.proxy(dir.path(), 1 << 30);
        fake.set_narinfo(&item, fault);
        assert!(proxy.narinfo(&item.hash, None).await.found().is_none(), "{fault:?}");
        assert!(proxy.stats().upstream_errors.load(Ordering::Relaxed) >= 1, "{fault:?} not counted");
        assert_nothing_corrupt_cached(dir.path());
        // Upstream errors are not cached as misses: once the fault clears, the path is there.
        fake.set_narinfo(&item, Behaviour::Normal);
        assert!(proxy.narinfo(&item.hash, None).await.found().is_some(), "{fault:?}: no recovery");
    }
}

/// A dead upstream is asked again within the request, until its breaker opens; once it has
/// been down for longer than the patience, requests no longer wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_dead_upstream_is_unavailable_and_then_skipped() {
    // Bind and drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let proxy = upstream::Proxy::open(upstream::ProxyConfig {
        dialect: formats::Dialect::Nix,
        upstreams: vec![upstream::UpstreamConfig {
            url: format!("http://127.0.0.1:{port}"),
            trust: upstream::Trust::Nix(vec![SecretKey::generate("k-1").unwrap().to_public()]),
            priority: 0,
            timeout: Duration::from_millis(500),
        }],
        cache_dir: dir.path().to_path_buf(),
        max_size: 1 << 30,
        negative_ttl: Duration::from_secs(60),
        store_dir: "/nix/store".into(),
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
        let hash = formats::StorePathHash::parse(&format!("{:032}", i)).unwrap();
        assert_eq!(proxy.narinfo(&hash, None).await, Lookup::Unavailable);
    }
    // The first request tries three times, which opens the breaker; the other nine cost nothing.
    assert_eq!(proxy.stats().narinfo_fetches.load(Ordering::Relaxed), 3);
    assert_eq!(proxy.stats().narinfo_retries.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_oversized_and_mislabelled_narinfos_are_absent() {
    let key = SecretKey::generate("upstream-1").unwrap();
    let other = SecretKey::generate("upstream-1").unwrap();
    // Signed by a key with the right name but the wrong secret.
    let untrusted = make_item(&other, H, "untrusted", noise(1, 100), Compression::Xz);
    // A narinfo far beyond any real one.
    let mut huge = make_item(&key, "1b8m03r63zqhnjf7l5wnldhh7c134ap5", "huge", noise(2, 100), Compression::Xz);
    huge.narinfo.push_str(&format!("Junk: {}\n", "x".repeat(1 << 20)));
    // A narinfo answering for another path than the one asked.
    let mut other_path = make_item(&key, "i9pmrzmpshapij2kin22pff6fc2adavx", "p", noise(3, 100), Compression::Xz);
    other_path.narinfo =
        make_item(&key, "7h6zklgbgjmqnkxpa7v7pqkvhwqjpjvs", "q", noise(3, 100), Compression::Xz).narinfo;
    // Garbage.
    let mut garbage = make_item(&key, "2b8m03r63zqhnjf7l5wnldhh7c134ap5", "g", noise(4, 100), Compression::Xz);
    garbage.narinfo = "<html>Bad Gateway</html>".into();
    // A compression we could not verify.
    let mut brotli = make_item(&key, "3b8m03r63zqhnjf7l5wnldhh7c134ap5", "b", noise(5, 100), Compression::Xz);
    brotli.narinfo = brotli.narinfo.replace("Compression: xz", "Compression: br");
    let items = vec![untrusted, huge, other_path, garbage, brotli];
    let fake = Fake::start(items.clone(), key).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = fake.proxy(dir.path(), 1 << 30);
    for item in &items {
        assert!(proxy.narinfo(&item.hash, None).await.found().is_none(), "{}", item.hash);
    }
    assert_eq!(proxy.stats().untrusted.load(Ordering::Relaxed), 1);
    assert_nothing_corrupt_cached(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_addressed_narinfos_need_no_signature() {
    let key = SecretKey::generate("upstream-1").unwrap();
    let mut item = make_item(&key, H, "source.tar", noise(1, 100), Compression::Xz);
    let mut info = NarInfo::parse(&item.narinfo).unwrap();
    info.sigs.clear();
    info.references.clear();
    info.ca = Some(format!("fixed:r:{}", info.nar_hash));
    item.narinfo = info.render();
    let fake = Fake::start(vec![item.clone()], SecretKey::generate("someone-else-1").unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = fake.proxy(dir.path(), 1 << 30);
    assert!(proxy.narinfo(&item.hash, None).await.found().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nar_faults_abort_the_transfer_cache_nothing_and_recover() {
    let faults = [
        Behaviour::Status(500),
        Behaviour::Status(404),
        Behaviour::Hang,
        Behaviour::Stall,
        Behaviour::Truncate,
        Behaviour::FlipByte,
    ];
    for compression in [Compression::Xz, Compression::None] {
        for fault in faults {
            let fake = one(500_000, compression).await;
            let item = fake.items[0].clone();
            let dir = tempfile::tempdir().unwrap();
            let proxy = fake.proxy(dir.path(), 1 << 30);
            proxy.narinfo(&item.hash, None).await.found().unwrap();
            fake.set_nar(&item, fault);
            match proxy.nar(&item.hash, &nar_hash(&item), compression, None).await {
                None => {}
                Some(source @ NarSource::Stream(_)) => {
                    assert!(read_all(source).await.is_err(), "{compression} {fault:?}: clean end of a bad download");
                }
                Some(NarSource::File { .. }) => panic!("{compression} {fault:?}: served a cached file"),
            }
            assert_nothing_corrupt_cached(dir.path());
            if fault == Behaviour::FlipByte {
                assert_eq!(proxy.stats().nar_verify_failures.load(Ordering::Relaxed), 1);
            }
            fake.set_nar(&item, Behaviour::Normal);
            let good =
                read_all(proxy.nar(&item.hash, &nar_hash(&item), compression, None).await.unwrap()).await.unwrap();
            assert_eq!(good, item.file.to_vec(), "{compression} {fault:?}: no recovery");
        }
    }
}

/// A NAR that decompresses to far more than its NarSize is cut off at NarSize.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_is_refused() {
    let key = SecretKey::generate("upstream-1").unwrap();
    let small = noise(1, 1000);
    let mut item = make_item(&key, H, "bomb", small.clone(), Compression::Zstd);
    // Keep the narinfo (NarSize 1000, signed) but serve 256 MiB of zeros, zstd-compressed.
    let bomb = zstd::encode_all(&vec![0u8; 256 << 20][..], 19).unwrap();
    let mut info = NarInfo::parse(&item.narinfo).unwrap();
    info.file_hash = None;
    info.file_size = None;
    item.narinfo = info.render();
    item.file = bomb.into();
    let fake = Fake::start(vec![item.clone()], key).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = fake.proxy(dir.path(), 1 << 30);
    proxy.narinfo(&item.hash, None).await.found().unwrap();
    let source = proxy.nar(&item.hash, &NarHash::digest(&small), Compression::Zstd, None).await.unwrap();
    assert!(read_all(source).await.is_err());
    assert_nothing_corrupt_cached(dir.path());
    assert_eq!(proxy.stats().nar_verify_failures.load(Ordering::Relaxed), 1);
}
