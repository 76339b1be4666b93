//! Upstream blips must not cost the nodes paths, in either dialect: narinfo trouble is retried
//! within the request, the breaker lets a recovered upstream answer at once, a flood of lookups
//! is capped, and a download in progress can be read from any offset (what a resumed transfer
//! asks for).

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use formats::{Compression, StorePathHash};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt as _;
use upstream::{ByteStream, Lookup, NarSource, NarStream, Proxy, ProxyConfig};

use test_support::dialected::Dialected;
use test_support::fake_upstream::{config_for, proxy_for, proxy_with_stall, Behaviour, Item};

use crate::one;

/// The `i`th of a family of hashes no fake has.
fn missing(i: usize) -> StorePathHash {
    StorePathHash::parse(&format!("{i:032}")).unwrap()
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

over_dialects!(
    a_narinfo_is_retried_within_the_request_after_upstream_500s,
    other_upstreams_are_asked_before_the_failing_one_again,
    after_a_blip_the_breaker_yields_no_404s_for_paths_the_upstream_has,
    a_lookup_that_outlives_an_outage_finds_the_path,
    a_flood_from_one_client_sends_at_most_its_cap_upstream,
    the_global_cap_bounds_upstream_narinfo_fetches,
    a_range_of_a_download_in_progress_is_served_as_it_arrives,
    a_range_ends_cleanly_only_once_the_whole_download_verified,
);

async fn a_narinfo_is_retried_within_the_request_after_upstream_500s<D: Dialected>() {
    for failures in [1, 2] {
        let fake = one::<D>(1000, Compression::Xz).await;
        let item = fake.items[0].clone();
        let dir = tempfile::tempdir().unwrap();
        let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
        fake.set_narinfo(&item, Behaviour::FailFirst(500, failures));
        assert!(matches!(D::narinfo(&proxy, &item.hash, None).await, Lookup::Found(_)), "after {failures} 500s");
        assert_eq!(fake.narinfo_requests(&item), failures + 1);
        assert_eq!(proxy.stats().narinfo_retries.load(Ordering::Relaxed), failures as u64);
        assert_eq!(proxy.stats().upstream_errors.load(Ordering::Relaxed), failures as u64);
    }
}

async fn other_upstreams_are_asked_before_the_failing_one_again<D: Dialected>() {
    let a = one::<D>(1000, Compression::Xz).await;
    let b = one::<D>(1000, Compression::Xz).await;
    a.set_narinfo(&a.items[0], Behaviour::FailFirst(503, 1));
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&a, &b], dir.path(), 1 << 30);
    let info = D::narinfo(&proxy, &b.items[0].hash, None).await.found().expect("narinfo");
    assert!(D::upstream_signature_verifies(&info, &b.key));
    assert_eq!((a.narinfo_requests(&a.items[0]), b.narinfo_requests(&b.items[0])), (1, 1));
    assert_eq!(proxy.stats().narinfo_retries.load(Ordering::Relaxed), 0);
}

/// Enough 500s to open the breaker; the moment the upstream is back, its paths are found, and
/// nothing asked during the blip was remembered as absent.
async fn after_a_blip_the_breaker_yields_no_404s_for_paths_the_upstream_has<D: Dialected>() {
    let fake = one::<D>(1000, Compression::Xz).await;
    let item = fake.items[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    fake.set_all_narinfos(Some(Behaviour::Status(500)));
    let during: Vec<_> = (0..5)
        .map(|i| {
            let p = proxy.clone();
            tokio::spawn(async move { D::narinfo(&p, &missing(i), None).await })
        })
        .collect();
    for lookup in during {
        assert_eq!(lookup.await.unwrap(), Lookup::Unavailable, "trouble is not a clean miss");
    }
    assert_eq!(D::narinfo(&proxy, &item.hash, None).await, Lookup::Unavailable);
    assert!(proxy.stats().upstream_errors.load(Ordering::Relaxed) >= 3, "the breaker did not open");

    fake.set_all_narinfos(None);
    assert!(matches!(D::narinfo(&proxy, &item.hash, None).await, Lookup::Found(_)), "a 404 right after the blip");
    // A path asked for during the blip is asked for again, and only now remembered as absent.
    let asked = fake.requests(&format!("{}.narinfo", missing(0)));
    assert_eq!(D::narinfo(&proxy, &missing(0), None).await, Lookup::Absent);
    assert_eq!(fake.requests(&format!("{}.narinfo", missing(0))), asked + 1);
    assert_eq!(D::narinfo(&proxy, &missing(0), None).await, Lookup::Absent);
    assert_eq!(fake.requests(&format!("{}.narinfo", missing(0))), asked + 1);
}

/// A request that begins during an outage and outlives it gets the path, not a 404.
async fn a_lookup_that_outlives_an_outage_finds_the_path<D: Dialected>() {
    let fake = one::<D>(1000, Compression::Xz).await;
    let item = fake.items[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let config = ProxyConfig { retry_budget: Duration::from_secs(30), ..config_for(&[&fake], dir.path()) };
    let proxy = Proxy::open(config).unwrap();
    fake.set_all_narinfos(Some(Behaviour::Status(502)));
    let lookup = {
        let (p, h) = (proxy.clone(), item.hash.clone());
        tokio::spawn(async move { D::narinfo(&p, &h, None).await })
    };
    // Enough failures for the breaker to open: the rest of the wait is on its probes.
    fake.wait_for_requests(4).await;
    fake.set_all_narinfos(None);
    assert!(matches!(lookup.await.unwrap(), Lookup::Found(_)));
    assert!(proxy.stats().narinfo_retries.load(Ordering::Relaxed) >= 3);
}

/// One client asking for many distinct missing paths at once gets at most its cap's worth of
/// upstream requests; the rest wait in line, then are answered "absent for now" without an
/// upstream request and without being remembered. Another client is not held up.
async fn a_flood_from_one_client_sends_at_most_its_cap_upstream<D: Dialected>() {
    let fake = one::<D>(1000, Compression::Xz).await;
    fake.hold_narinfos();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&[&fake], dir.path());
    config.max_narinfo_fetches_per_client = 4;
    // The held requests must outlast the line's wait.
    config.upstreams[0].timeout = Duration::from_secs(60);
    let proxy = Proxy::open(config).unwrap();
    let mut flood: FuturesUnordered<_> = (0..20)
        .map(|i| {
            let p = proxy.clone();
            tokio::spawn(async move { D::narinfo(&p, &missing(i), ip("10.0.0.1")).await })
        })
        .collect();
    fake.wait_for_requests(4).await;
    let other = {
        let p = proxy.clone();
        tokio::spawn(async move { D::narinfo(&p, &missing(100), ip("10.0.0.2")).await })
    };
    fake.wait_for_requests(5).await;
    // The fake holds the four it got: the other sixteen give up after the retry budget.
    for _ in 0..16 {
        assert_eq!(flood.next().await.unwrap().unwrap(), Lookup::Unavailable);
    }
    assert_eq!(proxy.stats().over_cap.load(Ordering::Relaxed), 16);
    assert_eq!(fake.total(), 5, "requests over the cap reached the upstream");
    assert_eq!(fake.max_narinfos_in_flight(), 5);
    fake.release();
    while let Some(lookup) = flood.next().await {
        assert_eq!(lookup.unwrap(), Lookup::Absent);
    }
    assert_eq!(other.await.unwrap(), Lookup::Absent);
    // Nothing was remembered for the refused ones: asked again, they go upstream.
    let refused = (0..20).find(|&i| fake.requests(&format!("{}.narinfo", missing(i))) == 0).unwrap();
    assert_eq!(D::narinfo(&proxy, &missing(refused), ip("10.0.0.1")).await, Lookup::Absent);
    assert_eq!(fake.requests(&format!("{}.narinfo", missing(refused))), 1);
}

async fn the_global_cap_bounds_upstream_narinfo_fetches<D: Dialected>() {
    let fake = one::<D>(1000, Compression::Xz).await;
    fake.hold_narinfos();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&[&fake], dir.path());
    config.max_narinfo_fetches = 3;
    config.upstreams[0].timeout = Duration::from_secs(60);
    let proxy = Proxy::open(config).unwrap();
    let mut lookups: FuturesUnordered<_> = (0..10)
        .map(|i| {
            let p = proxy.clone();
            tokio::spawn(async move { D::narinfo(&p, &missing(i), ip(&format!("10.0.0.{i}"))).await })
        })
        .collect();
    fake.wait_for_requests(3).await;
    for _ in 0..7 {
        assert_eq!(lookups.next().await.unwrap().unwrap(), Lookup::Unavailable);
    }
    assert_eq!((fake.total(), fake.max_narinfos_in_flight()), (3, 3));
    fake.release();
    while let Some(lookup) = lookups.next().await {
        assert_eq!(lookup.unwrap(), Lookup::Absent);
    }
}

async fn download<D: Dialected>(proxy: &Proxy, item: &Item, c: Compression) -> NarStream {
    D::narinfo(proxy, &item.hash, None).await.found().expect("narinfo");
    match D::nar(proxy, item, c).await {
        Some(NarSource::Stream(download)) => download,
        Some(NarSource::File { .. }) => panic!("served from the cache before a download"),
        None => panic!("no NAR"),
    }
}

async fn collect(mut s: ByteStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// A resumed transfer asks for the rest of a download still in progress: it gets the bytes
/// already written at once, and the others as they arrive.
async fn a_range_of_a_download_in_progress_is_served_as_it_arrives<D: Dialected>() {
    let fake = one::<D>(500_000, Compression::Zstd).await;
    let item = fake.items[0].clone();
    let len = item.file.len() as u64;
    assert!(len > 200_000, "zstd made the NAR too small for this test: {len}");
    fake.set_nar(&item, Behaviour::Gated);
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_with_stall(&[&fake], dir.path(), 1 << 30, Duration::from_secs(120));
    let written = download::<D>(&proxy, &item, Compression::Zstd).await;
    assert_eq!(written.size(), Some(len), "the narinfo's FileSize");
    // The upstream has sent its first 64 KiB and holds back the rest.
    let mut from_1000 = written.into_range(1000, len);
    let first = from_1000.next().await.unwrap().unwrap();
    assert!(!first.is_empty() && first.len() <= 64 * 1024 - 1000);
    assert_eq!(&first[..], &item.file[1000..1000 + first.len()]);
    // Beyond what is written: it waits for the bytes.
    let ahead = tokio::spawn(collect(download::<D>(&proxy, &item, Compression::Zstd).await.into_range(200_000, len)));
    fake.release();
    let rest = collect(from_1000).await.unwrap();
    assert_eq!([&first[..], &rest[..]].concat(), item.file[1000..].to_vec());
    assert_eq!(ahead.await.unwrap().unwrap(), item.file[200_000..].to_vec());
    assert_eq!(fake.nar_requests(&item), 1);
}

/// A range that ends before the bad byte still ends with an error: no client sees a clean end
/// of a body that failed verification.
async fn a_range_ends_cleanly_only_once_the_whole_download_verified<D: Dialected>() {
    for fault in [Behaviour::FlipByte, Behaviour::Truncate] {
        let fake = one::<D>(500_000, Compression::None).await;
        let item = fake.items[0].clone();
        fake.set_nar(&item, fault);
        let dir = tempfile::tempdir().unwrap();
        let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
        let head = download::<D>(&proxy, &item, Compression::None).await;
        assert!(collect(head.into_range(0, 10)).await.is_err(), "{fault:?}: a clean end of the first bytes");
        let tail = download::<D>(&proxy, &item, Compression::None).await;
        assert!(collect(tail.into_range(400_000, 500_000)).await.is_err(), "{fault:?}");
    }
}
