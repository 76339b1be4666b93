//! The proxy's normal life, in both dialects: fetch, verify, cache, serve from cache; one
//! upstream fetch however many clients; negative caching; eviction; recovery after a crash; a
//! cache area shared with a baker.

use std::sync::atomic::Ordering;
use std::time::Duration;

use formats::{Compression, NarHash, StorePathHash};
use futures_util::StreamExt as _;
use upstream::{CacheArea, CacheConfig, NarSource, Proxy, ProxyConfig};

use test_support::compression::noise;
use test_support::dialected::{Dialected, Offer, Summary};
use test_support::fake_upstream::{
    config_for, proxy_for, proxy_with_stall, read_all, Behaviour, Fake, Item, UpstreamKey as _,
};

use crate::{download_committed, released, walk};

const H1: &str = "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb";
const H2: &str = "1b8m03r63zqhnjf7l5wnldhh7c134ap5";
const H3: &str = "i9pmrzmpshapij2kin22pff6fc2adavx";
const H4: &str = "7h6zklgbgjmqnkxpa7v7pqkvhwqjpjvs";

/// A fake serving, for the `i`th of `items`, the path `<hash>-p<i>` of `len` bytes in `c`.
async fn fake_with<D: Dialected>(items: &[(&str, usize, Compression)]) -> Fake<D> {
    let key = D::generate();
    let items = items
        .iter()
        .enumerate()
        .map(|(i, (h, len, c))| key.item(h, &format!("p{i}"), noise(i as u64 + 1, *len), *c))
        .collect();
    Fake::start(items, key).await
}

over_dialects!(
    fetches_verifies_caches_and_serves_from_cache,
    fifty_clients_one_download_first_bytes_before_the_end,
    concurrent_narinfo_requests_share_one_upstream_request,
    misses_are_remembered,
    the_first_upstream_with_the_path_wins,
    eviction_keeps_the_cache_under_its_limit_and_narinfos_leave_with_their_nars,
    restart_after_a_crash_drops_partial_files_and_dangling_entries,
    a_nar_whose_narinfo_entry_is_gone_is_fetched_again,
    a_proxy_shares_the_cache_area_it_is_given,
);

async fn fetches_verifies_caches_and_serves_from_cache<D: Dialected>() {
    let spec = [
        (H1, 300_000, Compression::Xz),
        (H2, 200_000, Compression::Zstd),
        (H3, 1000, Compression::None),
        (H4, 100_000, Compression::Gzip),
    ];
    let fake = fake_with::<D>(&spec).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    let mut infos = Vec::new();
    for (i, (item, (_, _, compression))) in fake.items.iter().zip(spec).enumerate() {
        let info = D::narinfo(&proxy, &item.hash, None).await.found().expect("narinfo");
        let store_path = format!("{}-p{i}", item.hash);
        let offered = Offer {
            url: D::nar_url(item, compression),
            compression: compression.into(),
            file_size: Some(item.file.len() as u64),
        };
        let expected = Summary {
            store_path: store_path.clone(),
            nar_hash: NarHash::digest(&item.nar),
            nar_size: item.nar.len() as u64,
            references: vec![store_path],
            offers: vec![offered],
        };
        assert_eq!(D::summary(&info), expected);
        // The upstream's signature is kept and still verifies: nothing it covers changed.
        assert!(D::upstream_signature_verifies(&info, &fake.key), "{compression}");

        let first = download_committed(&proxy, &fake, item, compression).await;
        assert!(first == item.file, "{compression}: other bytes than the upstream's");
        // Now from disk, as a file with a size, without asking upstream again.
        match D::nar(&proxy, item, compression).await.unwrap() {
            NarSource::File { size, .. } => assert_eq!(size, item.file.len() as u64),
            NarSource::Stream(_) => panic!("{compression}: second request was not served from the cache"),
        }
        assert_eq!(fake.nar_requests(item), 1, "{compression}");
        // The cache directory is a plain binary cache an nginx could serve: the narinfo with
        // the upstream's signature, and the NAR where its URL says.
        let on_disk = std::fs::read_to_string(dir.path().join(format!("{}.narinfo", item.hash))).unwrap();
        assert_eq!(on_disk, D::stored_text(&info));
        assert!(dir.path().join(D::nar_url(item, compression)).is_file(), "{compression}");
        // Another compression than the one offered is not served.
        let other = if compression == Compression::Zstd { Compression::Gzip } else { Compression::Zstd };
        assert!(D::nar(&proxy, item, other).await.is_none(), "{compression}: served as {other}");
        infos.push(info);
    }
    // From the index from now on, identical.
    for (item, info) in fake.items.iter().zip(&infos) {
        assert_eq!(&D::narinfo(&proxy, &item.hash, None).await.found().unwrap(), info);
        assert_eq!(fake.narinfo_requests(item), 1);
    }
    assert_eq!(proxy.stats().narinfo_hits.load(Ordering::Relaxed), spec.len() as u64);
    // The other dialect's half of the interface answers nothing, and asks no upstream.
    for item in &fake.items {
        assert!(D::Other::narinfo(&proxy, &item.hash, None).await.found().is_none());
        assert!(D::Other::nar(&proxy, item, Compression::Zstd).await.is_none());
    }
    assert_eq!(fake.total(), 2 * spec.len());
}

async fn fifty_clients_one_download_first_bytes_before_the_end<D: Dialected>() {
    let fake = fake_with::<D>(&[(H1, 8 << 20, Compression::Zstd)]).await;
    let item = fake.items[0].clone();
    fake.set_nar(&item, Behaviour::Gated);
    let dir = tempfile::tempdir().unwrap();
    // The fake holds the body back until all 50 clients have their first bytes.
    let proxy = proxy_with_stall(&[&fake], dir.path(), 1 << 30, Duration::from_secs(120));
    let info = D::narinfo(&proxy, &item.hash, None).await.found().unwrap();
    assert_eq!(D::summary(&info).offers[0].compression.as_str(), "zstd");
    let mut streams = Vec::new();
    for _ in 0..50 {
        match D::nar(&proxy, &item, Compression::Zstd).await.unwrap() {
            NarSource::Stream(s) => streams.push(s.into_stream()),
            NarSource::File { .. } => panic!("served from cache before the download finished"),
        }
    }
    // Every client gets the first bytes while the upstream still holds back the rest.
    let mut firsts = Vec::new();
    for s in &mut streams {
        let first = s.next().await.unwrap().unwrap();
        assert!(!first.is_empty());
        assert_eq!(&first[..], &item.file[..first.len()]);
        firsts.push(first);
    }
    fake.release();
    let clients: Vec<_> = streams
        .into_iter()
        .zip(firsts)
        .map(|(mut s, first)| {
            tokio::spawn(async move {
                let mut all = first.to_vec();
                while let Some(chunk) = s.next().await {
                    all.extend_from_slice(&chunk.unwrap());
                }
                all
            })
        })
        .collect();
    for client in clients {
        assert!(client.await.unwrap() == item.file, "a client got other bytes than the upstream's");
    }
    assert_eq!(fake.nar_requests(&item), 1, "the upstream saw more than one download");
    assert_eq!(proxy.stats().nar_fetches.load(Ordering::Relaxed), 1);
}

async fn concurrent_narinfo_requests_share_one_upstream_request<D: Dialected>() {
    let fake = fake_with::<D>(&[(H1, 1000, Compression::Xz)]).await;
    let item = fake.items[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (p, h) = (proxy.clone(), item.hash.clone());
            tokio::spawn(async move { D::narinfo(&p, &h, None).await.found() })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_some());
    }
    assert_eq!(fake.narinfo_requests(&item), 1);
}

async fn misses_are_remembered<D: Dialected>() {
    let fake = fake_with::<D>(&[(H1, 1000, Compression::Xz)]).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    let absent = StorePathHash::parse("00000000000000000000000000000000").unwrap();
    for _ in 0..100 {
        assert!(D::narinfo(&proxy, &absent, None).await.found().is_none());
    }
    assert_eq!(fake.requests("00000000000000000000000000000000.narinfo"), 1);
}

async fn the_first_upstream_with_the_path_wins<D: Dialected>() {
    let a = fake_with::<D>(&[(H1, 1000, Compression::Xz)]).await;
    let b = fake_with::<D>(&[(H1, 1000, Compression::Xz), (H2, 1000, Compression::Zstd)]).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&a, &b], dir.path(), 1 << 30);
    D::narinfo(&proxy, &a.items[0].hash, None).await.found().unwrap();
    assert_eq!((a.narinfo_requests(&a.items[0]), b.narinfo_requests(&b.items[0])), (1, 0));
    let item = &b.items[1];
    let info = D::narinfo(&proxy, &item.hash, None).await.found().unwrap();
    assert!(D::upstream_signature_verifies(&info, &b.key));
    let bytes = read_all(D::nar(&proxy, item, Compression::Zstd).await.unwrap()).await.unwrap();
    assert!(bytes == item.file, "other bytes than the upstream's");
}

/// The `i`th of a family of hash parts.
fn hash(i: usize) -> String {
    format!("{i}{}", &H1[1..])
}

async fn eviction_keeps_the_cache_under_its_limit_and_narinfos_leave_with_their_nars<D: Dialected>() {
    let hashes: Vec<String> = (0..8).map(hash).collect();
    let spec: Vec<(&str, usize, Compression)> =
        hashes.iter().map(|h| (h.as_str(), 100_000, Compression::None)).collect();
    let fake = fake_with::<D>(&spec).await;
    let dir = tempfile::tempdir().unwrap();
    let limit = 350_000;
    let proxy = proxy_for(&[&fake], dir.path(), limit);
    for item in &fake.items {
        D::narinfo(&proxy, &item.hash, None).await.found().unwrap();
        download_committed(&proxy, &fake, item, Compression::None).await;
        assert_cached::<D>(&proxy, item).await;
        let used: u64 = walk(&dir.path().join("nar")).iter().map(|p| p.metadata().unwrap().len()).sum();
        assert!(used <= limit, "cache holds {used} bytes, limit {limit}");
    }
    assert!(proxy.cache().evictions() >= 4);
    // Every narinfo file on disk has its NAR beside it, where its URL says; the evicted ones
    // are gone.
    let mut kept = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(hash) = name.strip_suffix(".narinfo") {
            let item = fake.items.iter().find(|i| i.hash.to_string() == hash).expect("a narinfo of the fake's");
            let url = D::nar_url(item, Compression::None);
            let text = std::fs::read_to_string(dir.path().join(&name)).unwrap();
            assert!(text.contains(&format!("\nURL: {url}\n")), "{hash}: not its URL: {text}");
            assert!(dir.path().join(&url).is_file(), "{hash}: narinfo without its NAR");
            kept += 1;
        }
    }
    assert_eq!(kept, 3, "what fits the limit");
    // The oldest entry is gone and comes back from upstream when asked again.
    let first = &fake.items[0];
    assert!(!dir.path().join(format!("{}.narinfo", first.hash)).exists());
    D::narinfo(&proxy, &first.hash, None).await.found().unwrap();
    read_all(D::nar(&proxy, first, Compression::None).await.unwrap()).await.unwrap();
    assert_eq!(fake.nar_requests(first), 2);
}

/// A stream that ended cleanly means the entry is committed: the next request is the file.
async fn assert_cached<D: Dialected>(proxy: &Proxy, item: &Item) {
    let source = D::nar(proxy, item, Compression::None).await;
    assert!(matches!(source, Some(NarSource::File { .. })), "{} is not a cached file after its download", item.hash);
}

async fn restart_after_a_crash_drops_partial_files_and_dangling_entries<D: Dialected>() {
    let fake = fake_with::<D>(&[(H1, 100_000, Compression::None), (H2, 100_000, Compression::None)]).await;
    let dir = tempfile::tempdir().unwrap();
    {
        let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
        for item in &fake.items {
            D::narinfo(&proxy, &item.hash, None).await.found().unwrap();
            read_all(D::nar(&proxy, item, Compression::None).await.unwrap()).await.unwrap();
            assert_cached::<D>(&proxy, item).await;
        }
    }
    // What a kill -9 can leave: partial downloads, NARs whose index row is gone or never
    // written (in nar/ and in each of its subdirectories, Guix's nar/<compression>/), an
    // index row whose file is gone.
    let nar = dir.path().join("nar");
    let mut leftovers = vec![dir.path().join("tmp/partial.nar.123"), dir.path().join("tmp/partial.123")];
    leftovers.extend([nar.join("orphan.nar"), nar.join(format!("{H3}-orphan"))]);
    for entry in std::fs::read_dir(&nar).unwrap() {
        let sub = entry.unwrap().path();
        if sub.is_dir() {
            leftovers.push(sub.join("orphan"));
        }
    }
    for file in &leftovers {
        std::fs::write(file, b"orphan").unwrap();
    }
    let lost = &fake.items[1];
    std::fs::remove_file(dir.path().join(D::nar_url(lost, Compression::None))).unwrap();

    released(dir.path()).await;
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    for file in &leftovers {
        assert!(!file.exists(), "{} is left", file.display());
    }
    assert!(!dir.path().join(format!("{}.narinfo", lost.hash)).exists());
    // The intact entry is served from disk; the lost one is fetched again, correctly.
    assert_cached::<D>(&proxy, &fake.items[0]).await;
    D::narinfo(&proxy, &lost.hash, None).await.found().unwrap();
    let bytes = read_all(D::nar(&proxy, lost, Compression::None).await.unwrap()).await.unwrap();
    assert!(bytes == lost.file, "other bytes than the upstream's");
    assert_eq!(fake.nar_requests(lost), 2);
}

/// Narinfo-only entries are pruned after a while; a client holding a NAR URL from such a
/// narinfo still gets the NAR: the proxy fetches and verifies the narinfo again.
async fn a_nar_whose_narinfo_entry_is_gone_is_fetched_again<D: Dialected>() {
    let fake = fake_with::<D>(&[(H1, 100_000, Compression::Zstd)]).await;
    let item = &fake.items[0];
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    D::narinfo(&proxy, &item.hash, None).await.found().expect("narinfo");
    // What pruning does to an entry whose NAR was never fetched.
    let index = rusqlite::Connection::open(dir.path().join("index.sqlite")).unwrap();
    assert_eq!(index.execute("DELETE FROM narinfo WHERE hash = ?1", [item.hash.to_string()]).unwrap(), 1);
    let nar = read_all(D::nar(&proxy, item, Compression::Zstd).await.expect("NAR")).await.unwrap();
    assert!(nar == item.file, "other bytes than the upstream's");
    assert_eq!(fake.narinfo_requests(item), 2, "the narinfo was fetched again");
    // A NAR URL for a hash no upstream has is still absent.
    let unknown = Item { hash: StorePathHash::parse(H2).unwrap(), ..item.clone() };
    assert!(D::nar(&proxy, &unknown, Compression::Zstd).await.is_none());
}

/// The proxy keeps its entries in the cache area it is given, as the server shares one area
/// between its proxy and its baker: one size limit over both, and one eviction order. An
/// area opened for the other dialect, or an upstream with keys of the other, is refused.
async fn a_proxy_shares_the_cache_area_it_is_given<D: Dialected>() {
    let fake = fake_with::<D>(&[(H1, 1000, Compression::None)]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig { max_size: 1500, ..config_for(&[&fake], dir.path()) };
    let other = CacheConfig { dialect: D::Other::DIALECT, ..config.cache() };
    let err = Proxy::with_cache(config.clone(), CacheArea::open(other).unwrap()).unwrap_err();
    assert!(matches!(err, upstream::Error::AreaMismatch { .. }), "{err}");
    // Nor can a proxy be given an upstream it would check with the other dialect's keys.
    let mut mixed = config.clone();
    mixed.upstreams[0].trust = D::Other::generate().trust();
    let err = Proxy::open(mixed).unwrap_err();
    assert!(matches!(err, upstream::Error::TrustMismatch { .. }), "{err}");
    let expected = format!("is given {} keys, but this proxy fronts {} caches", D::Other::DIALECT, D::DIALECT);
    assert!(err.to_string().contains(&expected), "{err}");

    let area = CacheArea::open(config.cache()).unwrap();
    let proxy = Proxy::with_cache(config, area.clone()).unwrap();
    let item = &fake.items[0];
    let info = D::narinfo(&proxy, &item.hash, None).await.found().unwrap();
    download_committed(&proxy, &fake, item, Compression::None).await;
    let nar = dir.path().join(&D::summary(&info).offers[0].url);
    assert!(nar.is_file());
    // A bake that overflows the shared limit evicts the proxied NAR, the older entry.
    let temp = area.temp_file("bake");
    std::fs::write(&temp, [7; 1000]).unwrap();
    let digest = NarHash::digest(&[7; 1000]);
    let baked = area.commit_baked(&NarHash::digest(b"local"), Compression::Zstd, &temp, 1000, digest).unwrap();
    assert_eq!(proxy.cache().evictions(), 1);
    assert!(!nar.exists());
    assert!(!dir.path().join(format!("{}.narinfo", item.hash)).exists());
    assert!(baked.path.is_file());
}
