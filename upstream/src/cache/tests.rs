//! The cache area on its own, in a temp dir: commits and lookups of both kinds of entry,
//! the eviction order across them, recovery after a crash, and the refusals on open.

use std::path::Path;

use formats::{Compression, NarHash, StorePathHash};

use super::{CacheArea, CacheConfig};
use crate::{Dialect, Error};

fn config(dir: &Path, max_size: u64) -> CacheConfig {
    CacheConfig { dir: dir.to_path_buf(), max_size, store_dir: "/nix/store".into(), dialect: Dialect::Nix }
}

/// Bakes `data` as if it were the compressed NAR of `nar`: a temp file, then the commit.
fn bake(area: &CacheArea, nar: &[u8], data: &[u8]) -> NarHash {
    let temp = area.temp_file("bake");
    std::fs::write(&temp, data).unwrap();
    let nar_hash = NarHash::digest(nar);
    let baked =
        area.commit_baked(&nar_hash, Compression::Zstd, &temp, data.len() as u64, NarHash::digest(data)).unwrap();
    assert!(!temp.exists(), "the temp file is moved, not copied");
    assert_eq!(std::fs::read(&baked.path).unwrap(), data);
    nar_hash
}

/// Records a proxied entry for `hash` and commits `data` as its downloaded NAR.
fn download(area: &CacheArea, hash: &StorePathHash, data: &[u8]) -> std::path::PathBuf {
    let nar_file = format!("{hash}.nar");
    area.put_narinfo(hash, &format!("StorePath: {hash}\n"), &nar_file, "http://upstream/x.nar").unwrap();
    let entry = area.entry(hash).unwrap().unwrap();
    assert!(!entry.nar_cached);
    let temp = area.temp_file(&nar_file);
    std::fs::write(&temp, data).unwrap();
    area.commit_nar(hash, &temp, &entry, data.len() as u64).unwrap();
    area.nar_path(&nar_file)
}

#[test]
fn a_committed_bake_is_found_by_nar_hash_and_compression_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let area = CacheArea::open(config(dir.path(), 1 << 20)).unwrap();
    let nar_hash = bake(&area, b"the nar", b"compressed");
    let baked = area.baked(&nar_hash, Compression::Zstd).unwrap();
    assert_eq!((baked.file_size, baked.file_hash), (10, NarHash::digest(b"compressed")));
    assert_eq!(baked.path, dir.path().join(format!("baked/{}.nar.zst", nar_hash.to_nix32())));
    assert_eq!(area.baked(&nar_hash, Compression::Xz), None, "another compression is another file");
    assert_eq!(area.baked(&NarHash::digest(b"other"), Compression::Zstd), None);
    drop(area);
    let area = CacheArea::open(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!(area.baked(&nar_hash, Compression::Zstd), Some(baked));
}

#[test]
fn a_committed_download_is_an_entry_with_its_narinfo_beside_its_nar() {
    let dir = tempfile::tempdir().unwrap();
    let area = CacheArea::open(config(dir.path(), 1 << 20)).unwrap();
    let hash = &StorePathHash::parse("0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb").unwrap();
    let path = download(&area, hash, b"nar bytes");
    assert_eq!(path, dir.path().join(format!("nar/{hash}.nar")));
    assert_eq!(std::fs::read(&path).unwrap(), b"nar bytes");
    let entry = area.entry(hash).unwrap().unwrap();
    assert!(entry.nar_cached);
    assert_eq!(entry.file_size, Some(9));
    assert_eq!(std::fs::read_to_string(dir.path().join(format!("{hash}.narinfo"))).unwrap(), entry.narinfo);
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn eviction_takes_the_least_recently_used_first_proxied_or_baked() {
    let dir = tempfile::tempdir().unwrap();
    let area = CacheArea::open(config(dir.path(), 250)).unwrap();
    let index = &area.inner.index;
    let proxied = &StorePathHash::parse("0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb").unwrap();
    let proxied_nar = download(&area, proxied, &[1; 100]);
    let first = bake(&area, b"first", &[2; 100]);
    // The clocks are set by hand: the baked file last used at 1 s, the proxied one at 2 s.
    index.get_baked(&first.to_nix32(), "zstd", 1000).unwrap();
    index.touch(proxied.as_str(), 2).unwrap();
    assert_eq!(area.evictions(), 0, "200 bytes fit in 250");

    // 300 bytes: the least recently used goes, and only it.
    let second = bake(&area, b"second", &[3; 100]);
    assert_eq!(area.evictions(), 1);
    assert_eq!(area.baked(&first, Compression::Zstd), None);
    assert_eq!(std::fs::read_dir(dir.path().join("baked")).unwrap().count(), 1);
    assert!(proxied_nar.is_file());

    // Now the proxied entry is the oldest: it goes with its narinfo.
    index.touch(proxied.as_str(), 0).unwrap();
    bake(&area, b"third", &[4; 100]);
    assert_eq!(area.evictions(), 2);
    assert_eq!(area.entry(proxied).unwrap(), None);
    assert!(!proxied_nar.exists());
    assert!(!dir.path().join(format!("{proxied}.narinfo")).exists());
    assert!(area.baked(&second, Compression::Zstd).is_some());
}

#[test]
fn opening_clears_what_a_crash_left() {
    let dir = tempfile::tempdir().unwrap();
    let area = CacheArea::open(config(dir.path(), 1 << 20)).unwrap();
    let kept = bake(&area, b"kept", b"kept file");
    let lost = bake(&area, b"lost", b"lost file");
    let hash = &StorePathHash::parse("0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb").unwrap();
    let nar = download(&area, hash, b"proxied");
    // A bake and a download cut by the crash, a baked file whose row was never written, a
    // baked file and a proxied NAR that vanished from under their rows.
    std::fs::write(area.temp_file("bake"), b"half a bake").unwrap();
    std::fs::write(area.temp_file("x.nar.xz"), b"half a download").unwrap();
    let orphan = dir.path().join("baked/orphan.nar.zst");
    std::fs::write(&orphan, b"orphan").unwrap();
    std::fs::remove_file(area.baked(&lost, Compression::Zstd).unwrap().path).unwrap();
    std::fs::remove_file(&nar).unwrap();
    drop(area);

    let area = CacheArea::open(config(dir.path(), 1 << 20)).unwrap();
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert!(!orphan.exists());
    assert_eq!(area.baked(&lost, Compression::Zstd), None);
    assert_eq!(area.entry(hash).unwrap(), None);
    assert!(!dir.path().join(format!("{hash}.narinfo")).exists());
    let baked = area.baked(&kept, Compression::Zstd).unwrap();
    assert_eq!(std::fs::read(baked.path).unwrap(), b"kept file");
}

#[test]
fn another_stores_area_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let nar_hash = bake(&CacheArea::open(config(dir.path(), 1 << 20)).unwrap(), b"nix", b"nix file");
    let guix = CacheConfig { store_dir: "/gnu/store".into(), ..config(dir.path(), 1 << 20) };
    let err = CacheArea::open(guix).unwrap_err();
    assert!(matches!(err, Error::OtherStore { .. }), "{err}");
    let area = CacheArea::open(config(dir.path(), 1 << 20)).unwrap();
    assert!(area.baked(&nar_hash, Compression::Zstd).is_some(), "the Nix store's area was not touched");
}

#[test]
fn an_area_has_one_owner_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let area = CacheArea::open(config(dir.path(), 1 << 20)).unwrap();
    let clone = area.clone();
    drop(area);
    let err = CacheArea::open(config(dir.path(), 1 << 20)).unwrap_err();
    assert!(matches!(err, Error::InUse { .. }), "{err}");
    drop(clone);
    CacheArea::open(config(dir.path(), 1 << 20)).unwrap();
}
