//! What only the Guix dialect does, against a fake Guix build farm: the signed text is kept
//! byte for byte for subserve to sign again, a farm offers several URL groups (lzip among them,
//! which no one here can verify) and the proxy picks one, FileSize and references outside the
//! signature are not trusted, and a cache directory of another store is refused.

use std::sync::atomic::Ordering;
use std::time::Duration;

use formats::guix::signed_part as signed_text;
use formats::guix::{GuixNarInfo, GuixUrl};
use formats::{Compression, NarHash};
use signing::{GuixSecretKey, SecretKey};
use upstream::{NarSource, Proxy};

use test_support::compression::noise;
use test_support::fake_upstream::{
    guix_signed_part, make_guix_item, make_guix_item_signed, make_item, proxy_config, proxy_for, read_all,
    verify_guix_narinfo as verify_narinfo, Fake,
};

use crate::{assert_nothing_cached, download_committed, released};

const STORE: &str = "/gnu/store";
const H1: &str = "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb";
const H2: &str = "1b8m03r63zqhnjf7l5wnldhh7c134ap5";
const H3: &str = "i9pmrzmpshapij2kin22pff6fc2adavx";

/// The `i`th of a family of valid hash parts.
fn hash(i: usize) -> String {
    format!("{}{}", "0123456789abcdfghijklmnpqrsvwxyz".as_bytes()[i] as char, &H3[1..])
}

/// The narinfo the proxy gives is the farm's signed text: signed again by subserve over the
/// same bytes, it verifies for a node that trusts only subserve. Of several groups, zstd is
/// offered whatever the farm's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farms_signed_text_is_kept_for_subserve_to_sign() {
    let key = GuixSecretKey::generate().unwrap();
    let items = vec![
        make_guix_item(&key, H1, "zstd-only", noise(1, 300_000), &["zstd"]),
        make_guix_item(&key, H2, "gzip-only", noise(2, 200_000), &["gzip"]),
        make_guix_item(&key, H3, "bare", noise(3, 1000), &["none"]),
        // guix publish's order is the order of its -C options: zstd is still preferred.
        make_guix_item(&key, &hash(4), "both", noise(4, 100_000), &["gzip", "zstd"]),
    ];
    let fake = Fake::start(items, key).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    let subserve = GuixSecretKey::generate().unwrap();
    for item in &fake.items {
        let p = proxy.guix_narinfo(&item.hash, None).await.found().expect("narinfo");
        assert_eq!(p.signed, signed_text(&item.narinfo).unwrap(), "the signed text changed");
        // Re-signed by subserve over the same bytes, it verifies for a node that trusts only
        // subserve; with the upstream's signature, for a node that trusts the farm.
        let ours = p.render(&subserve.sign_narinfo("subserve", &p.signed).unwrap());
        verify_narinfo(&ours, &[subserve.to_public()]).unwrap();
        assert!(verify_narinfo(&ours, &[fake.key.to_public()]).is_err());
        verify_narinfo(&p.render(&p.upstream_signature), &[fake.key.to_public()]).unwrap();
        assert_eq!(GuixNarInfo::parse(&ours).unwrap().urls, p.urls, "the served text reads as Guix reads it");
        let again = proxy.guix_narinfo(&item.hash, None).await.found().unwrap();
        assert_eq!(again.signed, signed_text(&item.narinfo).unwrap());
    }
    let both = &fake.items[3];
    let p = proxy.guix_narinfo(&both.hash, None).await.found().unwrap();
    let zstd = GuixUrl {
        url: format!("nar/zstd/{}-both", hash(4)),
        compression: Compression::Zstd.into(),
        file_size: Some(both.file.len() as u64),
    };
    assert_eq!(p.urls, [zstd]);
    assert_eq!(both.nar_url, p.urls[0].url, "the fake serves the zstd file");
    let bytes = download_committed(&proxy, &fake, both, Compression::Zstd).await;
    assert_eq!(bytes, both.file.to_vec());
    match proxy.guix_nar(&both.hash, Compression::Zstd, None).await.unwrap() {
        NarSource::File { size, .. } => assert_eq!(size, both.file.len() as u64),
        NarSource::Stream(_) => panic!("second request was not served from the cache"),
    }
    assert_eq!(fake.nar_requests(both), 1);
    let on_disk = std::fs::read_to_string(dir.path().join(format!("{}.narinfo", both.hash))).unwrap();
    assert_eq!(on_disk, p.render(&p.upstream_signature));
    assert!(dir.path().join(&p.urls[0].url).is_file());
    // The farm's other group is not offered, nor served.
    assert!(proxy.guix_nar(&both.hash, Compression::Gzip, None).await.is_none());
    assert_eq!(fake.requests(&format!("nar/gzip/{}-both", hash(4))), 0);
}

/// Fields in any order, comments, continuation lines, fields Guix does not know: all covered
/// by the signature, so all kept exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signed_text_is_kept_byte_for_byte_whatever_it_holds() {
    let key = GuixSecretKey::generate().unwrap();
    let nar = noise(5, 50_000);
    let signed = format!(
        "NarHash: {}\nSystem: x86_64-linux\n# built on a Tuesday\nNarSize: {}\nStorePath: {STORE}/{H1}-odd-1.0\n\
         X-Extra:   spaced  value \nReferences: {H1}-odd-1.0\n+ {H2}-dep-2.0\nDeriver: {H3}-odd-1.0.drv\n",
        NarHash::digest(&nar),
        nar.len()
    );
    let mut item = make_guix_item_signed(&key, H1, "odd-1.0", nar, &["lzip", "zstd"], signed.clone());
    // Fields after the signature are not covered and not kept.
    item.narinfo.push_str("System: mips64el-linux\nNarSize: 1\n");
    let fake = Fake::start(vec![item.clone()], key).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    let p = proxy.guix_narinfo(&item.hash, None).await.found().unwrap();
    assert_eq!(p.signed, signed);
    assert_eq!(p.store_path.to_string(), format!("{H1}-odd-1.0"));
    assert_eq!(p.nar_size, item.nar.len() as u64, "NarSize is read from the signed text");
    let refs: Vec<String> = p.references.iter().map(ToString::to_string).collect();
    assert_eq!(refs, [format!("{H1}-odd-1.0"), format!("{H2}-dep-2.0")]);
    assert_eq!(p.deriver.as_ref().map(ToString::to_string), Some(format!("{H3}-odd-1.0.drv")));
    assert_eq!(p.urls[0].url, format!("nar/zstd/{H1}-odd-1.0"));
    let subserve = GuixSecretKey::generate().unwrap();
    verify_narinfo(&p.render(&subserve.sign_narinfo("subserve", &p.signed).unwrap()), &[subserve.to_public()]).unwrap();
    let bytes = download_committed(&proxy, &fake, &item, Compression::Zstd).await;
    assert_eq!(bytes, item.file.to_vec());
    let on_disk = std::fs::read_to_string(dir.path().join(format!("{H1}.narinfo"))).unwrap();
    assert!(on_disk.starts_with(&signed), "{on_disk}");
    // Read back from the index, it is the same.
    drop(proxy);
    released(dir.path()).await;
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    assert_eq!(proxy.guix_narinfo(&item.hash, None).await.found().unwrap(), p);
    assert_eq!(fake.narinfo_requests(&item), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lzip_only_is_absent_and_lzip_beside_zstd_offers_zstd() {
    let key = GuixSecretKey::generate().unwrap();
    let items = vec![
        make_guix_item(&key, H1, "lzip-only", noise(1, 10_000), &["lzip"]),
        make_guix_item(&key, H2, "unknown", noise(2, 10_000), &["lzip", "br", "lz4"]),
        make_guix_item(&key, H3, "both", noise(3, 10_000), &["lzip", "zstd"]),
    ];
    let fake = Fake::start(items, key).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    for item in &fake.items[..2] {
        assert!(proxy.guix_narinfo(&item.hash, None).await.found().is_none(), "{}", item.hash);
        // A healthy upstream without a usable group is a miss, remembered as one.
        assert!(proxy.guix_narinfo(&item.hash, None).await.found().is_none());
        assert_eq!(fake.narinfo_requests(item), 1);
    }
    assert_eq!(proxy.stats().upstream_errors.load(Ordering::Relaxed), 0, "an unusable narinfo is no upstream fault");
    assert_eq!(proxy.stats().negative_hits.load(Ordering::Relaxed), 2);
    let both = &fake.items[2];
    let p = proxy.guix_narinfo(&both.hash, None).await.found().unwrap();
    assert_eq!(p.urls.len(), 1);
    assert_eq!((p.urls[0].url.as_str(), p.urls[0].compression.as_str()), (both.nar_url.as_str(), "zstd"));
    assert!(p.urls[0].url.starts_with("nar/zstd/"));
    let bytes = read_all(proxy.guix_nar(&both.hash, Compression::Zstd, None).await.unwrap()).await.unwrap();
    assert_eq!(bytes, both.file.to_vec());
    assert_eq!(fake.requests(&format!("nar/lzip/{H3}-both")), 0);
}

/// References only after the signature are not covered by it: the narinfo is absent, and
/// not for want of a trusted signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_after_the_signature_are_not_trusted() {
    let key = GuixSecretKey::generate().unwrap();
    let nar = noise(7, 1000);
    let signed = guix_signed_part(STORE, &hash(7), "p", &nar).replace(&format!("References: {}-p\n", hash(7)), "");
    let mut late_refs = make_guix_item_signed(&key, &hash(7), "p", nar, &["zstd"], signed);
    late_refs.narinfo.push_str(&format!("References: {}-p\n", hash(7)));
    let fake = Fake::start(vec![late_refs.clone()], key).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    assert!(proxy.guix_narinfo(&late_refs.hash, None).await.found().is_none());
    assert_eq!(fake.narinfo_requests(&late_refs), 1);
    assert_eq!(proxy.stats().untrusted.load(Ordering::Relaxed), 0);
    assert_nothing_cached(dir.path());
}

/// FileSize is outside the signature: a wrong one costs the download, never the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_file_size_aborts_the_download() {
    let key = GuixSecretKey::generate().unwrap();
    let mut item = make_guix_item(&key, H1, "sized", noise(1, 100_000), &["zstd"]);
    let size = item.file.len();
    item.narinfo = item.narinfo.replacen(&format!("FileSize: {size}"), &format!("FileSize: {}", size - 1), 1);
    let fake = Fake::start(vec![item.clone()], key).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    assert_eq!(proxy.guix_narinfo(&item.hash, None).await.found().unwrap().urls[0].file_size, Some(size as u64 - 1));
    assert!(read_all(proxy.guix_nar(&item.hash, Compression::Zstd, None).await.unwrap()).await.is_err());
    assert_eq!(proxy.stats().nar_verify_failures.load(Ordering::Relaxed), 1);
    assert_nothing_cached(dir.path());
}

/// A cache directory belongs to one store: a Guix proxy opened on a Nix proxy's cache is
/// refused, and the Nix cache is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stores_cache_directory_is_refused_and_left_alone() {
    let nix_key = SecretKey::generate("upstream-1").unwrap();
    let nix_item = make_item(&nix_key, H1, "nix-thing", noise(1, 10_000), Compression::Zstd);
    let nix_fake = Fake::start(vec![nix_item.clone()], nix_key).await;
    let dir = tempfile::tempdir().unwrap();
    let nar_hash = NarHash::digest(&nix_item.nar);
    let info = {
        let nix_proxy = nix_fake.proxy(dir.path(), 1 << 30);
        let info = nix_proxy.narinfo(&nix_item.hash, None).await.found().unwrap();
        read_all(nix_proxy.nar(&nix_item.hash, &nar_hash, Compression::Zstd, None).await.unwrap()).await.unwrap();
        info
    };
    let key = GuixSecretKey::generate().unwrap();
    let item = make_guix_item(&key, H1, "guix-thing", noise(2, 10_000), &["zstd"]);
    let fake = Fake::start(vec![item.clone()], key).await;
    released(dir.path()).await;
    let config = proxy_config(&[&fake], dir.path(), 1 << 30, Duration::from_secs(60));
    let err = Proxy::open(config).unwrap_err();
    assert!(err.to_string().contains("belongs to a store of /nix/store, not /gnu/store"), "{err}");
    // Nothing of the Nix cache was touched.
    assert!(dir.path().join(format!("{H1}.narinfo")).is_file());
    assert!(dir.path().join(&info.url).is_file());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("nix-cache-info")).unwrap().lines().next(),
        Some("StoreDir: /nix/store")
    );
    // The Nix proxy opens it again, its entries intact.
    let nix_proxy = nix_fake.proxy(dir.path(), 1 << 30);
    assert!(nix_proxy.guix_narinfo(&nix_item.hash, None).await.found().is_none());
    assert_eq!(nix_proxy.narinfo(&nix_item.hash, None).await.found().unwrap(), info);
    assert_eq!(nix_fake.shared.total.load(Ordering::SeqCst), 2, "served from the cache");
}
