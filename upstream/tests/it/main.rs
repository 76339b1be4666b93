//! The proxy against an in-process fake upstream on 127.0.0.1 (`test_support::fake_upstream`)
//! that can misbehave in every way the fault matrix asks for. What the two dialects share is
//! written once, over `test_support::dialected::Dialected`, and run for each (`over_dialects!`
//! below); what only one of them does is in `nix.rs` and `guix.rs`.

// Items are `pub` for the modules of this test binary; nothing is exported.
#![allow(unreachable_pub)]

/// Runs each test `async fn name<D: Dialected>()` of the module for both dialects, as the
/// tests `name::nix` and `name::guix`: a failure names the dialect it failed in.
macro_rules! over_dialects {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn nix() {
                super::$name::<signing::SecretKey>().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn guix() {
                super::$name::<signing::GuixSecretKey>().await;
            }
        }
    )+};
}

mod faults;
mod flow;
mod guix;
mod nix;
mod resilience;

use std::future::Future;
use std::path::{Path, PathBuf};

use formats::Compression;
use test_support::compression::noise;
use test_support::dialected::Dialected;
use test_support::fake_upstream::{read_all, Fake, Item};
use upstream::{NarSource, Proxy};

/// A fake serving one path, `0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb-thing`, of `len` bytes in `c`.
pub async fn one<D: Dialected>(len: usize, c: Compression) -> Fake<D> {
    let key = D::generate();
    let item = key.item("0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb", "thing", noise(7, len), c);
    Fake::start(vec![item], key).await
}

/// Downloads `item`'s NAR in `c` through `proxy` (from `fake`) and returns it once the
/// download is committed (the NAR, its narinfo file, its index row, evictions): the fake holds
/// the body until the proxy's client follows the download, whose clean end comes after the
/// commit. A download done before its first client could open it is answered as the file,
/// whose commit may still be under way.
pub async fn download_committed<D: Dialected>(proxy: &Proxy, fake: &Fake<D>, item: &Item, c: Compression) -> Vec<u8> {
    fake.hold_nars();
    let source = D::nar(proxy, item, c).await.unwrap_or_else(|| panic!("{}: no NAR", item.hash));
    assert!(matches!(source, NarSource::Stream(_)), "{}: a held download is served as a file", item.hash);
    fake.release();
    read_all(source).await.unwrap()
}

/// Nothing but complete, verified entries in the cache directory: no NAR file (in `nar/` or
/// any subdirectory), no temp file, no narinfo file.
pub fn assert_nothing_cached(dir: &Path) {
    let nars = walk(&dir.join("nar"));
    assert!(nars.is_empty(), "NAR files were cached: {nars:?}");
    assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0, "a temp file was left");
    let narinfos = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".narinfo"));
    assert_eq!(narinfos.count(), 0, "a narinfo file was written");
}

/// Runs `cases` at once, each in a task of its own (most of a fault matrix waits on timeouts),
/// and fails as the first case, in order, that failed.
pub async fn all_at_once<F: Future<Output = ()> + Send + 'static>(cases: impl IntoIterator<Item = F>) {
    let tasks: Vec<_> = cases.into_iter().map(tokio::spawn).collect();
    for task in tasks {
        match task.await {
            Ok(()) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("{e}"),
        }
    }
}

/// Waits until no cache area holds `dir` any more: the last background task of a dropped
/// proxy (a download finishing its commit) may keep the area, and the lock on its directory,
/// a moment longer.
pub async fn released(dir: &Path) {
    let lock = dir.join("lock");
    tokio::task::spawn_blocking(move || std::fs::File::open(lock).unwrap().lock().unwrap()).await.unwrap();
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
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
