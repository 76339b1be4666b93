//! The proxy's normal life: fetch, verify, cache, serve from cache; one upstream fetch however
//! many clients; negative caching; eviction; recovery after a crash.

use std::sync::Arc;

use formats::{Compression, NarHash, StorePathHash};
use signing::SecretKey;
use upstream::NarSource;

use test_support::compression::noise;
use test_support::fake_upstream::{make_item, proxy_for, read_all, Behaviour, Fake};

const H1: &str = "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb";
const H2: &str = "1b8m03r63zqhnjf7l5wnldhh7c134ap5";
const H3: &str = "i9pmrzmpshapij2kin22pff6fc2adavx";

async fn fake_with(items: &[(&str, usize, Compression)]) -> Fake {
    let key = SecretKey::generate("upstream-1").unwrap();
    let items = items
        .iter()
        .enumerate()
        .map(|(i, (h, len, c))| make_item(&key, h, &format!("p{i}"), noise(i as u64 + 1, *len), *c))
        .collect();
    Fake::start(items, key).await
}

fn nar_hash(item: &test_support::fake_upstream::Item) -> NarHash {
    NarHash::digest(&item.nar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_verifies_caches_and_serves_from_cache() {
    let fake =
        fake_with(&[(H1, 300_000, Compression::Xz), (H2, 200_000, Compression::Zstd), (H3, 1000, Compression::None)])
            .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = fake.proxy(dir.path(), 1 << 30);
    for item in &fake.items {
        let info = proxy.narinfo(&item.hash, None).await.found().expect("narinfo");
        let compression = info.compression.known().unwrap();
        assert_eq!(
            info.url,
            format!("nar/{}", formats::compression::nar_file_name(&item.hash, &nar_hash(item), compression))
        );
        // The upstream's signature is kept and still verifies: nothing it covers changed.
        assert!(signing::verify_any(&[fake.key.to_public()], &info.fingerprint("/nix/store"), &info.sigs));
        let first = read_all(proxy.nar(&item.hash, &nar_hash(item), compression, None).await.unwrap()).await.unwrap();
        assert_eq!(first, item.file.to_vec());
        // Now from disk, as a file with a size, without asking upstream again.
        match proxy.nar(&item.hash, &nar_hash(item), compression, None).await.unwrap() {
            NarSource::File { size, .. } => assert_eq!(size, item.file.len() as u64),
            NarSource::Stream(_) => panic!("second request was not served from the cache"),
        }
        assert_eq!(fake.nar_requests(item), 1);
        // The cache directory is a plain binary cache an nginx could serve.
        let on_disk = std::fs::read_to_string(dir.path().join(format!("{}.narinfo", item.hash))).unwrap();
        assert_eq!(on_disk, info.render());
        assert!(dir.path().join(&info.url).is_file());
    }
    // The narinfos are answered from the index from now on.
    for item in &fake.items {
        proxy.narinfo(&item.hash, None).await.found().unwrap();
        assert_eq!(fake.narinfo_requests(item), 1);
    }
    // A wrong NarHash or compression in the URL is not served.
    let item = &fake.items[0];
    assert!(proxy.nar(&item.hash, &NarHash::digest(b"other"), Compression::Xz, None).await.is_none());
    assert!(proxy.nar(&item.hash, &nar_hash(item), Compression::Zstd, None).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_one_download_first_bytes_before_the_end() {
    let fake = fake_with(&[(H1, 8 << 20, Compression::Zstd)]).await;
    let item = fake.items[0].clone();
    fake.set_nar(&item, Behaviour::Gated);
    let dir = tempfile::tempdir().unwrap();
    // The fake holds the body back until all 50 clients have their first bytes.
    let proxy = test_support::fake_upstream::proxy_with_stall(
        &[&fake],
        dir.path(),
        1 << 30,
        std::time::Duration::from_secs(120),
    );
    let info = proxy.narinfo(&item.hash, None).await.found().unwrap();
    assert_eq!(info.compression.as_str(), "zstd");
    let mut streams = Vec::new();
    for _ in 0..50 {
        match proxy.nar(&item.hash, &nar_hash(&item), Compression::Zstd, None).await.unwrap() {
            NarSource::Stream(s) => streams.push(s.into_stream()),
            NarSource::File { .. } => panic!("served from cache before the download finished"),
        }
    }
    // Every client gets the first bytes while the upstream still holds back the rest.
    use futures_util::StreamExt as _;
    for s in &mut streams {
        let first = s.next().await.unwrap().unwrap();
        assert!(!first.is_empty());
        assert_eq!(&first[..], &item.file[..first.len()]);
    }
    fake.release();
    let handles: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut n = 0usize;
                let mut hasher = Vec::new();
                while let Some(chunk) = s.next().await {
                    let chunk = chunk.unwrap();
                    n += chunk.len();
                    hasher.extend_from_slice(&chunk);
                }
                (n, hasher)
            })
        })
        .collect();
    for h in handles {
        let (_, rest) = h.await.unwrap();
        assert_eq!(&rest[..], &item.file[item.file.len() - rest.len()..]);
    }
    assert_eq!(fake.nar_requests(&item), 1, "the upstream saw more than one download");
    assert_eq!(proxy.stats().nar_fetches.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_narinfo_requests_share_one_upstream_request() {
    let fake = fake_with(&[(H1, 1000, Compression::Xz)]).await;
    let item = fake.items[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let proxy = fake.proxy(dir.path(), 1 << 30);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (p, h) = (proxy.clone(), item.hash.clone());
            tokio::spawn(async move { p.narinfo(&h, None).await.found() })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_some());
    }
    assert_eq!(fake.narinfo_requests(&item), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_are_remembered() {
    let fake = fake_with(&[(H1, 1000, Compression::Xz)]).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = fake.proxy(dir.path(), 1 << 30);
    let absent = StorePathHash::parse("00000000000000000000000000000000").unwrap();
    for _ in 0..100 {
        assert!(proxy.narinfo(&absent, None).await.found().is_none());
    }
    assert_eq!(fake.requests("00000000000000000000000000000000.narinfo"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_upstream_with_the_path_wins() {
    let a = fake_with(&[(H1, 1000, Compression::Xz)]).await;
    let b = fake_with(&[(H1, 1000, Compression::Xz), (H2, 1000, Compression::Zstd)]).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&a, &b], dir.path(), 1 << 30);
    proxy.narinfo(&a.items[0].hash, None).await.found().unwrap();
    assert_eq!((a.narinfo_requests(&a.items[0]), b.narinfo_requests(&b.items[0])), (1, 0));
    let item = &b.items[1];
    let info = proxy.narinfo(&item.hash, None).await.found().unwrap();
    assert!(signing::verify_any(&[b.key.to_public()], &info.fingerprint("/nix/store"), &info.sigs));
    let bytes = read_all(proxy.nar(&item.hash, &nar_hash(item), Compression::Zstd, None).await.unwrap()).await.unwrap();
    assert_eq!(bytes, item.file.to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_the_cache_under_its_limit_and_narinfos_leave_with_their_nars() {
    let hashes: Vec<String> = (0..8).map(|i| format!("{i}{}", &H1[1..])).collect();
    let spec: Vec<(&str, usize, Compression)> =
        hashes.iter().map(|h| (h.as_str(), 100_000, Compression::None)).collect();
    let fake = fake_with(&spec).await;
    let dir = tempfile::tempdir().unwrap();
    let limit = 350_000;
    let proxy = fake.proxy(dir.path(), limit);
    for item in &fake.items {
        proxy.narinfo(&item.hash, None).await.found().unwrap();
        read_all(proxy.nar(&item.hash, &nar_hash(item), Compression::None, None).await.unwrap()).await.unwrap();
        assert_cached(&proxy, item).await;
        let used: u64 =
            std::fs::read_dir(dir.path().join("nar")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert!(used <= limit, "cache holds {used} bytes, limit {limit}");
    }
    // Every narinfo file on disk has its NAR beside it.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(hash) = name.strip_suffix(".narinfo") {
            let text = std::fs::read_to_string(dir.path().join(&name)).unwrap();
            let info = formats::NarInfo::parse(&text).unwrap();
            assert!(dir.path().join(&info.url).is_file(), "{hash}: narinfo without its NAR");
        }
    }
    assert!(proxy.cache().evictions() >= 4);
    // The oldest entry is gone and comes back from upstream when asked again.
    let first = &fake.items[0];
    assert!(!dir.path().join(format!("{}.narinfo", first.hash)).exists());
    proxy.narinfo(&first.hash, None).await.found().unwrap();
    read_all(proxy.nar(&first.hash, &nar_hash(first), Compression::None, None).await.unwrap()).await.unwrap();
    assert_eq!(fake.nar_requests(first), 2);
}

/// A stream that ended cleanly means the entry is committed: the next request is the file.
async fn assert_cached(proxy: &upstream::Proxy, item: &test_support::fake_upstream::Item) {
    let source = proxy.nar(&item.hash, &nar_hash(item), Compression::None, None).await;
    assert!(matches!(source, Some(NarSource::File { .. })), "{} is not a cached file after its download", item.hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_a_crash_drops_partial_files_and_dangling_entries() {
    let fake = fake_with(&[(H1, 100_000, Compression::None), (H2, 100_000, Compression::None)]).await;
    let dir = tempfile::tempdir().unwrap();
    {
        let proxy = fake.proxy(dir.path(), 1 << 30);
        for item in &fake.items {
            proxy.narinfo(&item.hash, None).await.found().unwrap();
            read_all(proxy.nar(&item.hash, &nar_hash(item), Compression::None, None).await.unwrap()).await.unwrap();
            assert_cached(&proxy, item).await;
        }
    }
    // What a kill -9 can leave: a partial download, a NAR whose index row is gone or never
    // written, an index row whose file is gone.
    std::fs::write(dir.path().join("tmp/partial.nar.123"), b"half").unwrap();
    std::fs::write(dir.path().join("nar/orphan.nar"), b"orphan").unwrap();
    let lost = &fake.items[1];
    let info =
        formats::NarInfo::parse(&std::fs::read_to_string(dir.path().join(format!("{}.narinfo", lost.hash))).unwrap())
            .unwrap();
    std::fs::remove_file(dir.path().join(&info.url)).unwrap();

    let proxy = Arc::new(fake.proxy(dir.path(), 1 << 30));
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert!(!dir.path().join("nar/orphan.nar").exists());
    assert!(!dir.path().join(format!("{}.narinfo", lost.hash)).exists());
    // The intact entry is served from disk; the lost one is fetched again, correctly.
    let kept = &fake.items[0];
    assert!(matches!(
        proxy.nar(&kept.hash, &nar_hash(kept), Compression::None, None).await,
        Some(NarSource::File { .. })
    ));
    proxy.narinfo(&lost.hash, None).await.found().unwrap();
    let bytes = read_all(proxy.nar(&lost.hash, &nar_hash(lost), Compression::None, None).await.unwrap()).await.unwrap();
    assert_eq!(bytes, lost.file.to_vec());
}

/// Narinfo-only entries are pruned after a while; a client holding a NAR URL from such a
/// narinfo still gets the NAR: the proxy fetches and verifies the narinfo again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nar_whose_narinfo_entry_is_gone_is_fetched_again() {
    let fake = fake_with(&[(H1, 100_000, Compression::Zstd)]).await;
    let item = &fake.items[0];
    let dir = tempfile::tempdir().unwrap();
    let proxy = fake.proxy(dir.path(), 1 << 30);
    proxy.narinfo(&item.hash, None).await.found().expect("narinfo");
    // What pruning does to an entry whose NAR was never fetched.
    let index = rusqlite::Connection::open(dir.path().join("index.sqlite")).unwrap();
    assert_eq!(index.execute("DELETE FROM narinfo WHERE hash = ?1", [item.hash.to_string()]).unwrap(), 1);
    let nar =
        read_all(proxy.nar(&item.hash, &nar_hash(item), Compression::Zstd, None).await.expect("NAR")).await.unwrap();
    assert_eq!(nar, item.file.to_vec());
    assert_eq!(fake.narinfo_requests(item), 2, "the narinfo was fetched again");
    // A NAR URL for a hash no upstream has is still absent.
    let unknown = StorePathHash::parse(H2).unwrap();
    assert!(proxy.nar(&unknown, &nar_hash(item), Compression::Zstd, None).await.is_none());
}

/// The proxy keeps its entries in the cache area it is given, as the server shares one area
/// between its proxy and its baker: one size limit over both, and one eviction order. An
/// area opened for another dialect, or an upstream with keys of another, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_shares_the_cache_area_it_is_given() {
    let fake = fake_with(&[(H1, 1000, Compression::None)]).await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        upstream::ProxyConfig { max_size: 1500, ..test_support::fake_upstream::config_for(&[&fake], dir.path()) };
    let guix = upstream::CacheConfig { dialect: formats::Dialect::Guix, ..config.cache() };
    let err = upstream::Proxy::with_cache(config.clone(), upstream::CacheArea::open(guix).unwrap()).unwrap_err();
    assert!(matches!(err, upstream::Error::AreaMismatch { .. }), "{err}");
    // Nor can a Nix proxy be given an upstream it would check with Guix keys.
    let mut mixed = config.clone();
    mixed.upstreams[0].trust = upstream::Trust::Guix(vec![signing::GuixSecretKey::generate().unwrap().to_public()]);
    let err = upstream::Proxy::open(mixed).unwrap_err();
    assert!(matches!(err, upstream::Error::TrustMismatch { .. }), "{err}");
    assert!(err.to_string().contains("is given guix keys, but this proxy fronts nix caches"), "{err}");

    let area = upstream::CacheArea::open(config.cache()).unwrap();
    let proxy = upstream::Proxy::with_cache(config, area.clone()).unwrap();
    let item = &fake.items[0];
    let info = proxy.narinfo(&item.hash, None).await.found().unwrap();
    read_all(proxy.nar(&item.hash, &nar_hash(item), Compression::None, None).await.unwrap()).await.unwrap();
    assert!(dir.path().join(&info.url).is_file());
    // A bake that overflows the shared limit evicts the proxied NAR, the older entry.
    let temp = area.temp_file("bake");
    std::fs::write(&temp, [7; 1000]).unwrap();
    let digest = NarHash::digest(&[7; 1000]);
    let baked = area.commit_baked(&NarHash::digest(b"local"), Compression::Zstd, &temp, 1000, digest).unwrap();
    assert_eq!(proxy.cache().evictions(), 1);
    assert!(!dir.path().join(&info.url).exists());
    assert!(!dir.path().join(format!("{}.narinfo", item.hash)).exists());
    assert!(baked.path.is_file());
}
