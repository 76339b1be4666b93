//! The Guix flavour against a fake Guix build farm: narinfos signed as guix publish signs them
//! (`GuixSecretKey::sign_narinfo` over the text before `Signature:`), NARs in guix publish's
//! URL layout, and the same fault matrix as the Nix flavour.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use formats::guix::signed_part as signed_text;
use formats::guix::{GuixNarInfo, GuixUrl};
use formats::{Compression, NarHash, StorePathHash};
use signing::{GuixSecretKey, SecretKey};
use upstream::{NarSource, Proxy};

use test_support::compression::{compress, noise};
use test_support::fake_upstream::{
    make_item, proxy_config, proxy_for, proxy_with_stall, read_all, Behaviour, Fake, Item,
};

const STORE: &str = "/gnu/store";
const H1: &str = "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb";
const H2: &str = "1b8m03r63zqhnjf7l5wnldhh7c134ap5";
const H3: &str = "i9pmrzmpshapij2kin22pff6fc2adavx";

/// The `i`th of a family of valid hash parts.
fn hash(i: usize) -> String {
    format!("{}{}", "0123456789abcdfghijklmnpqrsvwxyz".as_bytes()[i] as char, &H3[1..])
}

/// What guix publish signs for `<hash>-<name>` with the NAR `nar`, referring to itself.
fn standard_signed(hash: &str, name: &str, nar: &[u8]) -> String {
    format!(
        "StorePath: {STORE}/{hash}-{name}\nNarHash: {}\nNarSize: {}\nReferences: {hash}-{name}\n",
        NarHash::digest(nar),
        nar.len()
    )
}

/// The proxy's order of preference among the groups a farm offers.
const PREFERENCE: [&str; 5] = ["zstd", "gzip", "xz", "bzip2", "none"];

/// A Guix path offered in the `groups` compressions (lzip too, though no one can fetch it:
/// the fake serves only the NAR file the proxy should choose), its narinfo signed with `key`.
fn guix_item(key: &GuixSecretKey, hash: &str, name: &str, nar: Vec<u8>, groups: &[&str]) -> Item {
    let signed = standard_signed(hash, name, &nar);
    guix_item_signed(key, hash, name, nar, groups, signed)
}

/// Like [`guix_item`], with `signed` as the text above `Signature:`.
fn guix_item_signed(
    key: &GuixSecretKey,
    hash: &str,
    name: &str,
    nar: Vec<u8>,
    groups: &[&str],
    signed: String,
) -> Item {
    let basename = format!("{hash}-{name}");
    let signature = key.sign_narinfo("farm.example.org", &signed).unwrap();
    let mut narinfo = format!("{signed}Signature: {signature}\n");
    let mut files = Vec::new();
    for &group in groups {
        let (url, file): (String, Bytes) = match group.parse::<Compression>() {
            Ok(Compression::None) => (format!("nar/{basename}"), nar.clone().into()),
            Ok(c) => (format!("nar/{group}/{basename}"), compress(c, &nar).into()),
            Err(_) => (format!("nar/{group}/{basename}"), Bytes::from_static(b"not a NAR subserve can read")),
        };
        narinfo.push_str(&format!("URL: {url}\nCompression: {group}\nFileSize: {}\n", file.len()));
        files.push((group, url, file));
    }
    let rank = |g: &str| PREFERENCE.iter().position(|p| *p == g).unwrap_or(PREFERENCE.len());
    let (_, nar_url, file) = files.into_iter().min_by_key(|(g, _, _)| rank(g)).expect("at least one group");
    Item { hash: StorePathHash::parse(hash).unwrap(), narinfo, nar_url, file, nar: nar.into() }
}

/// The compression of the group an item's fake serves.
fn compression_of(item: &Item) -> Compression {
    let rest = item.nar_url.strip_prefix("nar/").unwrap();
    rest.split_once('/').map_or(Compression::None, |(c, _)| c.parse().unwrap())
}

async fn one(len: usize, group: &str) -> Fake<GuixSecretKey> {
    let key = GuixSecretKey::generate().unwrap();
    let item = guix_item(&key, H1, "thing", noise(7, len), &[group]);
    Fake::start(vec![item], key).await
}

/// Nothing but complete, verified entries in the cache directory.
fn assert_nothing_cached(dir: &std::path::Path) {
    let nars = walk(&dir.join("nar"));
    assert!(nars.is_empty(), "NAR files were cached: {nars:?}");
    assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0, "a temp file was left");
    let narinfos = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".narinfo"));
    assert_eq!(narinfos.count(), 0, "a narinfo file was written");
}

/// Every file under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_verifies_caches_and_serves_from_cache() {
    let key = GuixSecretKey::generate().unwrap();
    let items = vec![
        guix_item(&key, H1, "zstd-only", noise(1, 300_000), &["zstd"]),
        guix_item(&key, H2, "gzip-only", noise(2, 200_000), &["gzip"]),
        guix_item(&key, H3, "bare", noise(3, 1000), &["none"]),
        // guix publish's order is the order of its -C options: zstd is still preferred.
        guix_item(&key, &hash(4), "both", noise(4, 100_000), &["gzip", "zstd"]),
    ];
    let fake = Fake::start(items, key).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    let subserve = GuixSecretKey::generate().unwrap();
    for item in &fake.items {
        let p = proxy.guix_narinfo(&item.hash, None).await.found().expect("narinfo");
        let compression = compression_of(item);
        assert_eq!(p.signed, signed_text(&item.narinfo).unwrap(), "the signed text changed");
        assert_eq!(p.store_path.hash(), &item.hash);
        assert_eq!((p.nar_hash, p.nar_size), (NarHash::digest(&item.nar), item.nar.len() as u64));
        assert_eq!(p.references, std::slice::from_ref(&p.store_path));
        let offered = GuixUrl {
            url: item.nar_url.clone(),
            compression: compression.into(),
            file_size: Some(item.file.len() as u64),
        };
        assert_eq!(p.urls, [offered]);
        // Re-signed by subserve over the same bytes, it verifies for a node that trusts only
        // subserve; with the upstream's signature, for a node that trusts the farm.
        let ours = p.render(&subserve.sign_narinfo("subserve", &p.signed).unwrap());
        verify_narinfo(&ours, &[subserve.to_public()]).unwrap();
        assert!(verify_narinfo(&ours, &[fake.key.to_public()]).is_err());
        verify_narinfo(&p.render(&p.upstream_signature), &[fake.key.to_public()]).unwrap();
        assert_eq!(GuixNarInfo::parse(&ours).unwrap().urls, p.urls, "the served text reads as Guix reads it");

        let first = read_all(proxy.guix_nar(&item.hash, compression, None).await.unwrap()).await.unwrap();
        assert_eq!(first, item.file.to_vec());
        match proxy.guix_nar(&item.hash, compression, None).await.unwrap() {
            NarSource::File { size, .. } => assert_eq!(size, item.file.len() as u64),
            NarSource::Stream(_) => panic!("second request was not served from the cache"),
        }
        assert_eq!(fake.nar_requests(item), 1);
        // The cache directory holds the narinfo with the upstream's signature, and the NAR
        // where its URL says.
        let on_disk = std::fs::read_to_string(dir.path().join(format!("{}.narinfo", item.hash))).unwrap();
        assert_eq!(on_disk, p.render(&p.upstream_signature));
        assert!(dir.path().join(&p.urls[0].url).is_file());
        // Another compression than the one offered is not served.
        let other = if compression == Compression::Gzip { Compression::Zstd } else { Compression::Gzip };
        assert!(proxy.guix_nar(&item.hash, other, None).await.is_none());
    }
    // From the index from now on, identical.
    for item in &fake.items {
        let again = proxy.guix_narinfo(&item.hash, None).await.found().unwrap();
        assert_eq!(again.signed, signed_text(&item.narinfo).unwrap());
        assert_eq!(fake.narinfo_requests(item), 1);
    }
    assert_eq!(proxy.stats().narinfo_hits.load(Ordering::Relaxed), 4);
    // The Nix half of the interface answers nothing, and asks no upstream.
    let item = &fake.items[0];
    assert!(proxy.narinfo(&item.hash, None).await.found().is_none());
    assert!(proxy.nar(&item.hash, &NarHash::digest(&item.nar), Compression::Zstd, None).await.is_none());
    assert_eq!(fake.shared.total.load(Ordering::SeqCst), 8);
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
    let mut item = guix_item_signed(&key, H1, "odd-1.0", nar, &["lzip", "zstd"], signed.clone());
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
    let bytes = read_all(proxy.guix_nar(&item.hash, Compression::Zstd, None).await.unwrap()).await.unwrap();
    assert_eq!(bytes, item.file.to_vec());
    let on_disk = std::fs::read_to_string(dir.path().join(format!("{H1}.narinfo"))).unwrap();
    assert!(on_disk.starts_with(&signed), "{on_disk}");
    // Read back from the index, it is the same.
    drop(proxy);
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    assert_eq!(proxy.guix_narinfo(&item.hash, None).await.found().unwrap(), p);
    assert_eq!(fake.narinfo_requests(&item), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lzip_only_is_absent_and_lzip_beside_zstd_offers_zstd() {
    let key = GuixSecretKey::generate().unwrap();
    let items = vec![
        guix_item(&key, H1, "lzip-only", noise(1, 10_000), &["lzip"]),
        guix_item(&key, H2, "unknown", noise(2, 10_000), &["lzip", "br", "lz4"]),
        guix_item(&key, H3, "both", noise(3, 10_000), &["lzip", "zstd"]),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_mislabelled_and_garbage_narinfos_are_absent() {
    let key = GuixSecretKey::generate().unwrap();
    let stranger = GuixSecretKey::generate().unwrap();
    let item = |i: usize, signer: &GuixSecretKey| guix_item(signer, &hash(i), "p", noise(i as u64, 1000), &["zstd"]);
    // Signed by a key this upstream is not trusted for.
    let untrusted = item(1, &stranger);
    // Signed, but the signed text was changed afterwards.
    let mut tampered = item(2, &key);
    tampered.narinfo = tampered.narinfo.replacen("NarSize: 1000", "NarSize: 1001", 1);
    // No signature at all.
    let mut unsigned = item(3, &key);
    unsigned.narinfo =
        unsigned.narinfo.lines().filter(|l| !l.starts_with("Signature:")).map(|l| format!("{l}\n")).collect();
    // Correctly signed, but for another path than the one asked.
    let mut other_path = item(4, &key);
    other_path.narinfo = item(5, &key).narinfo;
    // Correctly signed, but not under the store dir.
    let mut nix_store = item(6, &key);
    let signed = standard_signed(&hash(6), "p", &nix_store.nar).replace(STORE, "/nix/store");
    nix_store.narinfo = guix_item_signed(&key, &hash(6), "p", nix_store.nar.to_vec(), &["zstd"], signed).narinfo;
    // References only after the signature: not covered by it.
    let mut late_refs = item(7, &key);
    let signed = standard_signed(&hash(7), "p", &late_refs.nar).replace(&format!("References: {}-p\n", hash(7)), "");
    late_refs.narinfo = guix_item_signed(&key, &hash(7), "p", late_refs.nar.to_vec(), &["zstd"], signed).narinfo;
    late_refs.narinfo.push_str(&format!("References: {}-p\n", hash(7)));
    // Not a narinfo.
    let mut html = item(8, &key);
    html.narinfo = "<html>Bad Gateway</html>\n".into();
    // A Nix narinfo, signed for Nix.
    let mut nix = item(9, &key);
    nix.narinfo = make_item(&SecretKey::generate("k-1").unwrap(), &hash(9), "p", noise(9, 10), Compression::Zstd)
        .narinfo
        .replace("/nix/store", STORE);
    let items = vec![untrusted, tampered, unsigned, other_path, nix_store, late_refs, html, nix];
    let fake = Fake::start(items.clone(), key).await;
    let mut untrusted = 0;
    for item in &items {
        // A proxy each: three garbage answers in a row would open the breaker.
        let dir = tempfile::tempdir().unwrap();
        let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
        assert!(proxy.guix_narinfo(&item.hash, None).await.found().is_none(), "{}", item.hash);
        assert_eq!(fake.narinfo_requests(item), 1, "{}", item.hash);
        untrusted += proxy.stats().untrusted.load(Ordering::Relaxed);
        assert_nothing_cached(dir.path());
    }
    // The stranger's, the tampered one, the unsigned one and the Nix one (no `Signature:`).
    assert_eq!(untrusted, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narinfo_faults_become_absent_and_recover() {
    for fault in
        [Behaviour::Status(500), Behaviour::Status(503), Behaviour::Hang, Behaviour::Stall, Behaviour::Truncate]
    {
        let fake = one(1000, "zstd").await;
        let item = fake.items[0].clone();
        let dir = tempfile::tempdir().unwrap();
        let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
        fake.set_narinfo(&item, fault);
        assert!(proxy.guix_narinfo(&item.hash, None).await.found().is_none(), "{fault:?}");
        assert!(proxy.stats().upstream_errors.load(Ordering::Relaxed) >= 1, "{fault:?} not counted");
        assert_nothing_cached(dir.path());
        fake.set_narinfo(&item, Behaviour::Normal);
        assert!(proxy.guix_narinfo(&item.hash, None).await.found().is_some(), "{fault:?}: no recovery");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nar_faults_abort_the_transfer_cache_nothing_and_recover() {
    let faults = [
        Behaviour::Status(500),
        Behaviour::Status(503),
        Behaviour::Status(404),
        Behaviour::Hang,
        Behaviour::Stall,
        Behaviour::Truncate,
        Behaviour::FlipByte,
    ];
    for group in ["zstd", "gzip", "none"] {
        for fault in faults {
            let fake = one(500_000, group).await;
            let item = fake.items[0].clone();
            let compression = compression_of(&item);
            let dir = tempfile::tempdir().unwrap();
            let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
            proxy.guix_narinfo(&item.hash, None).await.found().unwrap();
            fake.set_nar(&item, fault);
            match proxy.guix_nar(&item.hash, compression, None).await {
                None => {}
                Some(source @ NarSource::Stream(_)) => {
                    assert!(read_all(source).await.is_err(), "{group} {fault:?}: clean end of a bad download");
                }
                Some(NarSource::File { .. }) => panic!("{group} {fault:?}: served a cached file"),
            }
            assert_nothing_cached(dir.path());
            if fault == Behaviour::FlipByte {
                assert_eq!(proxy.stats().nar_verify_failures.load(Ordering::Relaxed), 1, "{group}");
            }
            fake.set_nar(&item, Behaviour::Normal);
            let good = read_all(proxy.guix_nar(&item.hash, compression, None).await.unwrap()).await.unwrap();
            assert_eq!(good, item.file.to_vec(), "{group} {fault:?}: no recovery");
            assert!(matches!(proxy.guix_nar(&item.hash, compression, None).await, Some(NarSource::File { .. })));
        }
    }
}

/// FileSize is outside the signature: a wrong one costs the download, never the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_file_size_aborts_the_download() {
    let key = GuixSecretKey::generate().unwrap();
    let mut item = guix_item(&key, H1, "sized", noise(1, 100_000), &["zstd"]);
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

/// A NAR that decompresses to far more than its NarSize is cut off at NarSize.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_is_refused() {
    let key = GuixSecretKey::generate().unwrap();
    let mut item = guix_item(&key, H1, "bomb", noise(1, 1000), &["zstd"]);
    // Keep the signed narinfo (NarSize 1000) without FileSize; serve 64 MiB of zeros.
    item.narinfo = item.narinfo.lines().filter(|l| !l.starts_with("FileSize:")).map(|l| format!("{l}\n")).collect();
    item.file = zstd::encode_all(&vec![0u8; 64 << 20][..], 19).unwrap().into();
    let fake = Fake::start(vec![item.clone()], key).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    assert_eq!(proxy.guix_narinfo(&item.hash, None).await.found().unwrap().urls[0].file_size, None);
    assert!(read_all(proxy.guix_nar(&item.hash, Compression::Zstd, None).await.unwrap()).await.is_err());
    assert_nothing_cached(dir.path());
    assert_eq!(proxy.stats().nar_verify_failures.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_share_one_narinfo_request_and_one_download() {
    let key = GuixSecretKey::generate().unwrap();
    let item = guix_item(&key, H1, "big", noise(1, 1 << 20), &["zstd"]);
    let fake = Fake::start(vec![item.clone()], key).await;
    fake.set_nar(&item, Behaviour::Gated);
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_with_stall(&[&fake], dir.path(), 1 << 30, Duration::from_secs(120));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (p, h) = (proxy.clone(), item.hash.clone());
            tokio::spawn(async move { p.guix_narinfo(&h, None).await.found() })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_some());
    }
    assert_eq!(fake.narinfo_requests(&item), 1);
    // The fake holds the body back until released: every client joins the one download.
    let mut streams = Vec::new();
    for _ in 0..10 {
        match proxy.guix_nar(&item.hash, Compression::Zstd, None).await.unwrap() {
            source @ NarSource::Stream(_) => streams.push(source),
            NarSource::File { .. } => panic!("served from cache before the download finished"),
        }
    }
    fake.release();
    for source in streams {
        assert_eq!(read_all(source).await.unwrap(), item.file.to_vec());
    }
    assert_eq!(fake.nar_requests(&item), 1);
    assert_eq!(proxy.stats().nar_fetches.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_and_restart_after_a_crash() {
    let key = GuixSecretKey::generate().unwrap();
    let items: Vec<Item> =
        (0..6).map(|i| guix_item(&key, &hash(i), "p", noise(i as u64 + 1, 100_000), &["none"])).collect();
    let fake = Fake::start(items, key).await;
    let dir = tempfile::tempdir().unwrap();
    let limit = 250_000;
    {
        let proxy = proxy_for(&[&fake], dir.path(), limit);
        for item in &fake.items {
            proxy.guix_narinfo(&item.hash, None).await.found().unwrap();
            read_all(proxy.guix_nar(&item.hash, Compression::None, None).await.unwrap()).await.unwrap();
            assert!(matches!(proxy.guix_nar(&item.hash, Compression::None, None).await, Some(NarSource::File { .. })));
            let used: u64 = walk(&dir.path().join("nar")).iter().map(|p| p.metadata().unwrap().len()).sum();
            assert!(used <= limit, "cache holds {used} bytes, limit {limit}");
        }
        assert!(proxy.cache().evictions() >= 4);
    }
    // Every narinfo file on disk has its NAR beside it; the evicted ones are gone.
    let kept: Vec<&Item> =
        fake.items.iter().filter(|i| dir.path().join(format!("{}.narinfo", i.hash)).exists()).collect();
    assert_eq!(kept.len(), 2);
    for item in &kept {
        assert!(dir.path().join(&item.nar_url).is_file());
    }
    // What a kill -9 can leave: a partial download, NARs no entry names (in nar/ and in a
    // compression subdirectory), an entry whose NAR is gone.
    std::fs::write(dir.path().join("tmp/partial.123"), b"half").unwrap();
    std::fs::write(dir.path().join("nar/zstd/orphan"), b"orphan").unwrap();
    std::fs::write(dir.path().join(format!("nar/{H1}-orphan")), b"orphan").unwrap();
    let (intact, lost) = (kept[0], kept[1]);
    std::fs::remove_file(dir.path().join(&lost.nar_url)).unwrap();

    let proxy = proxy_for(&[&fake], dir.path(), 1 << 30);
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert!(!dir.path().join("nar/zstd/orphan").exists());
    assert!(!dir.path().join(format!("nar/{H1}-orphan")).exists());
    assert!(!dir.path().join(format!("{}.narinfo", lost.hash)).exists());
    assert!(matches!(proxy.guix_nar(&intact.hash, Compression::None, None).await, Some(NarSource::File { .. })));
    proxy.guix_narinfo(&lost.hash, None).await.found().unwrap();
    let bytes = read_all(proxy.guix_nar(&lost.hash, Compression::None, None).await.unwrap()).await.unwrap();
    assert_eq!(bytes, lost.file.to_vec());
    assert_eq!(fake.nar_requests(lost), 2);
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
    let item = guix_item(&key, H1, "guix-thing", noise(2, 10_000), &["zstd"]);
    let fake = Fake::start(vec![item.clone()], key).await;
    // The Nix proxy's last background task may still hold the directory for a moment.
    let config = proxy_config(&[&fake], dir.path(), 1 << 30, Duration::from_secs(60));
    let mut err = Proxy::open(config.clone()).unwrap_err();
    for _ in 0..1000 {
        if !err.to_string().contains("in use") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        err = Proxy::open(config.clone()).unwrap_err();
    }
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

/// Checks a narinfo's signature as `guix substitute` does: what it covers, then the signature.
fn verify_narinfo(text: &str, acl: &[signing::GuixPublicKey]) -> Result<(), String> {
    let signed = formats::guix::signed(text).map_err(|e| e.to_string())?;
    signing::guix::verify(&signed.signature, signed.text, acl).map_err(|e| e.to_string())
}
