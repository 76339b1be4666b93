//! The store DB reader against databases written by the real `nix-store` (and one with Guix's
//! schema 7): lookups by hash part, the prefix check, invalid paths, legacy NULL NarSize, and
//! visibility of rows committed after the reader opened the DB.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use formats::{NarHash, StorePath, StorePathHash};
use store_reader::{Store, StoreConfig};

/// A chroot store in a temp dir, written by the real `nix-store`.
struct ChrootStore {
    dir: tempfile::TempDir,
}

impl ChrootStore {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("conf")).unwrap();
        fs::write(dir.path().join("conf/nix.conf"), "build-users-group =\nsubstituters =\n").unwrap();
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn config(&self) -> StoreConfig {
        StoreConfig {
            store_dir: "/nix/store".into(),
            real_store_dir: self.root().join("nix/store"),
            db: self.root().join("nix/var/nix/db/db.sqlite"),
        }
    }

    fn nix_store(&self, args: &[&str]) -> String {
        let out = match Command::new("nix-store")
            .arg("--store")
            .arg(self.root())
            .args(args)
            .env("NIX_CONF_DIR", self.dir.path().join("conf"))
            .env("HOME", self.dir.path())
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .env_remove("NIX_REMOTE")
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => out,
            Err(e) => panic!("cannot run nix-store ({e}): install it with `apt-get install nix-bin`"),
        };
        assert!(out.status.success(), "nix-store {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Adds a file with `contents` named `name`; returns its store path.
    fn add(&self, name: &str, contents: &str) -> StorePath {
        let src = self.dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        let file = src.join(name);
        fs::write(&file, contents).unwrap();
        let path = self.nix_store(&["--add", file.to_str().unwrap()]);
        StorePath::from_absolute("/nix/store", &path).unwrap()
    }
}

#[test]
fn finds_paths_written_by_nix_store() {
    let store = ChrootStore::new();
    let path = store.add("hello.txt", "hello\n");
    let reader = Store::open(store.config()).unwrap();
    let info = reader.query_by_hash(path.hash()).unwrap().expect("path is valid");
    assert_eq!(info.path, path);
    // docs/protocol.md §2.3: the NAR of "hello\n" is 120 bytes with this hash.
    assert_eq!(info.nar_size, 120);
    assert_eq!(info.nar_hash.to_string(), "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw");
    assert_eq!(info.ca.as_deref(), Some("fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw"));
    assert!(info.references.is_empty());
    assert_eq!(info.deriver, None);
    assert_eq!(reader.real_path(&path), store.root().join("nix/store").join(path.basename()));
}

#[test]
fn absent_hash_is_none_even_when_a_later_path_exists() {
    let store = ChrootStore::new();
    let path = store.add("a.txt", "a\n");
    let reader = Store::open(store.config()).unwrap();
    // "000…0" sorts before every real hash, so `path >= prefix` alone would find `path`.
    let zero = StorePathHash::parse("00000000000000000000000000000000").unwrap();
    assert!(path.hash().as_str() > zero.as_str());
    assert_eq!(reader.query_by_hash(&zero).unwrap(), None);
}

#[test]
fn files_on_disk_without_a_db_row_are_not_there() {
    let store = ChrootStore::new();
    store.add("a.txt", "a\n");
    let ghost = StorePath::from_basename("7h6zklgbgjmqnkxpa7v7pqkvhwqjpjvs-ghost").unwrap();
    fs::write(store.root().join("nix/store").join(ghost.basename()), "not registered\n").unwrap();
    let reader = Store::open(store.config()).unwrap();
    assert_eq!(reader.query_by_hash(ghost.hash()).unwrap(), None);
}

#[test]
fn rows_committed_after_opening_are_visible() {
    let store = ChrootStore::new();
    store.add("first.txt", "1\n");
    let reader = Store::open(store.config()).unwrap();
    let later = store.add("later.txt", "2\n");
    assert!(reader.query_by_hash(later.hash()).unwrap().is_some(), "a WAL commit was not seen");
}

#[test]
fn legacy_null_nar_size_is_computed_from_the_files() {
    let store = ChrootStore::new();
    let path = store.add("hello.txt", "hello\n");
    let db = store.config().db;
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE ValidPaths SET narSize = NULL", []).unwrap();
    drop(conn);
    let info = Store::open(store.config()).unwrap().query_by_hash(path.hash()).unwrap().unwrap();
    assert_eq!(info.nar_size, 120);
}

#[test]
fn references_and_signatures_come_from_the_db() {
    let store = ChrootStore::new();
    let dep = store.add("dep.txt", "dep\n");
    let conn = rusqlite::Connection::open(store.config().db).unwrap();
    // Give `dep` a self-reference, a deriver and a signature, as a substituted path has.
    conn.execute_batch(&format!(
        "INSERT INTO Refs (referrer, reference) SELECT id, id FROM ValidPaths WHERE path = '/nix/store/{0}';
         UPDATE ValidPaths SET sigs = 'a-1:c2lnMQ== b-1:c2lnMg==', deriver = '/nix/store/{1}-dep.drv'
         WHERE path = '/nix/store/{0}';",
        dep.basename(),
        "0".repeat(32)
    ))
    .unwrap();
    drop(conn);
    let info = Store::open(store.config()).unwrap().query_by_hash(dep.hash()).unwrap().unwrap();
    assert_eq!(info.references, vec![dep.clone()]);
    assert_eq!(info.sigs, vec!["a-1:c2lnMQ==".to_owned(), "b-1:c2lnMg==".to_owned()]);
    assert_eq!(info.deriver.unwrap().basename(), format!("{}-dep.drv", "0".repeat(32)));
}

/// Guix's schema 7: no `sigs`, `ca` or `ultimate` columns, `/gnu/store` paths.
#[test]
fn reads_a_guix_schema_7_database() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("gnu/store");
    fs::create_dir_all(&store_dir).unwrap();
    let db = dir.path().join("db.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(include_str!("../data/guix-schema-7.sql")).unwrap();
    let hello = "/gnu/store/0000000000000000000000000000000a-hello-2.12";
    let dep = "/gnu/store/1111111111111111111111111111111b-glibc";
    let hash = NarHash::digest(b"x");
    for (id, p) in [(1, dep), (2, hello)] {
        conn.execute(
            "INSERT INTO ValidPaths (id, path, hash, registrationTime, narSize) VALUES (?1, ?2, ?3, 0, 112)",
            rusqlite::params![id, p, format!("sha256:{}", hash.to_base16())],
        )
        .unwrap();
    }
    conn.execute("INSERT INTO Refs (referrer, reference) VALUES (2, 1)", []).unwrap();
    drop(conn);
    let config = StoreConfig { store_dir: "/gnu/store".into(), real_store_dir: store_dir, db };
    let reader = Store::open(config).unwrap();
    let info =
        reader.query_by_hash(&StorePathHash::parse("0000000000000000000000000000000a").unwrap()).unwrap().unwrap();
    assert_eq!(info.path.absolute("/gnu/store"), hello);
    assert_eq!(info.nar_hash, hash);
    assert_eq!(info.references.len(), 1);
    assert!(info.sigs.is_empty() && info.ca.is_none());
}

#[test]
fn open_errors_name_the_missing_thing() {
    let store = ChrootStore::new();
    store.add("a.txt", "a\n");
    let mut config = store.config();
    config.db = Path::new("/nonexistent/db.sqlite").into();
    assert!(Store::open(config).unwrap_err().to_string().contains("/nonexistent/db.sqlite"));
    let mut config = store.config();
    config.real_store_dir = Path::new("/nonexistent/store").into();
    assert!(Store::open(config).unwrap_err().to_string().contains("/nonexistent/store"));
    let mut config = store.config();
    let not_a_db = store.dir.path().join("empty.sqlite");
    rusqlite::Connection::open(&not_a_db).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
    config.db = not_a_db;
    assert!(Store::open(config).unwrap_err().to_string().contains("not a Nix or Guix store database"));
}

/// Some NFS set-ups keep the store DB in rollback-journal mode, where a writer's lock keeps
/// readers out: a lookup waits at most the busy timeout, then the answer of a recent lookup
/// of the same path stands in, and without one the lookup fails as `Busy`, not after minutes.
#[test]
fn a_locked_rollback_journal_db_delays_lookups_briefly_and_recent_answers_stand_in() {
    let store = ChrootStore::new();
    let seen = store.add("seen.txt", "seen\n");
    let unseen = store.add("unseen.txt", "unseen\n");
    let db = store.config().db;
    let journal: String =
        rusqlite::Connection::open(&db).unwrap().query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0)).unwrap();
    assert_eq!(journal, "delete");
    let mut reader = Store::open(store.config()).unwrap();
    reader.set_busy_timeout(std::time::Duration::from_millis(200));
    assert!(reader.query_by_hash(seen.hash()).unwrap().is_some());

    let writer = rusqlite::Connection::open(&db).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = std::time::Instant::now();
    let info = reader.query_by_hash(seen.hash()).unwrap().expect("the recent answer");
    assert_eq!(info.path, seen);
    assert_eq!(reader.stale_answers(), 1);
    let err = reader.query_by_hash(unseen.hash()).unwrap_err();
    assert!(matches!(err, store_reader::Error::Busy { .. }), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "waited {:?}", started.elapsed());

    writer.execute_batch("COMMIT").unwrap();
    assert_eq!(reader.query_by_hash(unseen.hash()).unwrap().unwrap().path, unseen);
    assert_eq!(reader.stale_answers(), 1);
}
