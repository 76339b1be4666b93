//! What only the Nix dialect does: content-addressed narinfos need no signature, a NAR URL
//! names its NarHash (another one is not served), and a compression no one can verify makes
//! a narinfo absent.

use std::sync::atomic::Ordering;

use formats::{Compression, NarHash, NarInfo};
use signing::SecretKey;

use test_support::compression::noise;
use test_support::fake_upstream::{make_item, read_all, Fake};

use crate::assert_nothing_cached;

const H: &str = "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb";

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

/// A Nix NAR URL names the NarHash; the proxy serves a URL only with the NarHash it knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nar_url_with_another_nar_hash_is_not_served() {
    let key = SecretKey::generate("upstream-1").unwrap();
    let item = make_item(&key, H, "thing", noise(1, 1000), Compression::Xz);
    let fake = Fake::start(vec![item.clone()], key).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = fake.proxy(dir.path(), 1 << 30);
    proxy.narinfo(&item.hash, None).await.found().unwrap();
    let other = NarHash::digest(b"other");
    assert!(proxy.nar(&item.hash, &other, Compression::Xz, None).await.is_none());
    assert_eq!(fake.nar_requests(&item), 0, "a download for a URL that names another NarHash");
    // Nor once the NAR is cached.
    let nar = proxy.nar(&item.hash, &NarHash::digest(&item.nar), Compression::Xz, None).await.unwrap();
    assert_eq!(read_all(nar).await.unwrap(), item.file.to_vec());
    assert!(proxy.nar(&item.hash, &other, Compression::Xz, None).await.is_none());
    assert_eq!(fake.nar_requests(&item), 1);
}

/// A narinfo in a compression the proxy could not verify (brotli) is absent; not a trust
/// failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compression_no_one_can_verify_is_absent() {
    let key = SecretKey::generate("upstream-1").unwrap();
    let mut brotli = make_item(&key, H, "b", noise(5, 100), Compression::Xz);
    brotli.narinfo = brotli.narinfo.replace("Compression: xz", "Compression: br");
    let fake = Fake::start(vec![brotli.clone()], key).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = fake.proxy(dir.path(), 1 << 30);
    assert!(proxy.narinfo(&brotli.hash, None).await.found().is_none());
    assert_eq!(proxy.stats().untrusted.load(Ordering::Relaxed), 0);
    assert_nothing_cached(dir.path());
}

/// A proxy reconfigured for new upstreams (SIGHUP) counts on: overall, and per upstream for
/// the URLs it keeps; a new upstream starts at zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconfigured_proxy_counts_on() {
    let key = SecretKey::generate("upstream-1").unwrap();
    let item = make_item(&key, H, "thing", noise(1, 1000), Compression::Xz);
    let fake = Fake::start(vec![item.clone()], key).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = fake.proxy(dir.path(), 1 << 30);
    proxy.narinfo(&item.hash, None).await.found().unwrap();
    let nar = proxy.nar(&item.hash, &NarHash::digest(&item.nar), Compression::Xz, None).await.unwrap();
    read_all(nar).await.unwrap();
    let before = proxy.upstream_stats();
    assert_eq!(before.len(), 1);
    assert_eq!((before[0].narinfo_fetches, before[0].nar_fetches), (1, 1));
    assert_eq!(before[0].nar_bytes, item.file.len() as u64);

    let mut config = test_support::fake_upstream::config_for(&[&fake], dir.path());
    let mut dead = config.upstreams[0].clone();
    dead.url = "http://127.0.0.1:1".into();
    dead.priority += 1;
    config.upstreams.push(dead);
    let again = proxy.reconfigured(config).unwrap();
    let after = again.upstream_stats();
    assert_eq!(after[0], before[0], "the kept upstream counts on");
    assert_eq!((after[1].narinfo_fetches, after[1].nar_fetches, after[1].nar_bytes), (0, 0, 0));
    assert_eq!(again.stats().nar_fetches.load(Ordering::Relaxed), 1, "the proxy's own counters too");
}
