//! A store made in a temp dir without Nix: real files, a `db.sqlite` with the real schema of
//! Nix (10) or Guix (7) and rows whose NarHash and NarSize are those of the files' NARs, and
//! a log directory. Enough for everything the server does with a store, in milliseconds.

use std::fs;
use std::path::{Path, PathBuf};

use formats::{nixbase32, NarHash};
use sha2::{Digest, Sha256};

/// Nix's store DB schema 10, as `nix-store` writes it.
pub const NIX_SCHEMA: &str = include_str!("../../store-reader/tests/data/nix-schema-10.sql");

/// Guix's store DB schema 7 (no `ultimate`, `sigs` or `ca` columns).
pub const GUIX_SCHEMA: &str = include_str!("../../store-reader/tests/data/guix-schema-7.sql");

/// Which store's schema and store dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/nix/store`, schema 10.
    Nix,
    /// `/gnu/store`, schema 7.
    Guix,
}

/// A store in a temp dir (removed on drop): `store/` (the real store dir), `db.sqlite`,
/// `logs/`.
pub struct FakeStore {
    dir: tempfile::TempDir,
    kind: Kind,
    db: rusqlite::Connection,
}

impl FakeStore {
    /// An empty Nix store.
    pub fn nix() -> Self {
        Self::new(Kind::Nix)
    }

    /// An empty Guix store.
    pub fn guix() -> Self {
        Self::new(Kind::Guix)
    }

    /// An empty store of `kind`.
    pub fn new(kind: Kind) -> Self {
        let dir = tempfile::Builder::new().prefix("fake-store-").tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("store")).expect("store dir");
        fs::create_dir_all(dir.path().join("logs")).expect("log dir");
        let db = rusqlite::Connection::open(dir.path().join("db.sqlite")).expect("db");
        // As Nix keeps it (use-sqlite-wal, the default).
        db.pragma_update(None, "journal_mode", "wal").expect("wal");
        db.execute_batch(match kind {
            Kind::Nix => NIX_SCHEMA,
            Kind::Guix => GUIX_SCHEMA,
        })
        .expect("schema");
        Self { dir, kind, db }
    }

    /// `/nix/store` or `/gnu/store`.
    pub fn store_dir(&self) -> &'static str {
        match self.kind {
            Kind::Nix => "/nix/store",
            Kind::Guix => "/gnu/store",
        }
    }

    /// The temp dir everything is in.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Where the store's files are.
    pub fn real_store_dir(&self) -> PathBuf {
        self.root().join("store")
    }

    /// The DB file.
    pub fn db_path(&self) -> PathBuf {
        self.root().join("db.sqlite")
    }

    /// The log directory (`<first 2 chars of the drv basename>/<rest>[.bz2|.gz]`).
    pub fn log_dir(&self) -> PathBuf {
        self.root().join("logs")
    }

    /// The files of a store path, by its absolute (logical) path.
    pub fn real_path(&self, path: &str) -> PathBuf {
        self.real_store_dir().join(crate::basename(path))
    }

    /// The configuration keys of this store (`store-dir`, `real-store-dir`, `db`, `log-dir`),
    /// for a config file's top level or a `[[store]]` table.
    pub fn config(&self) -> String {
        format!(
            "store-dir = {:?}\nreal-store-dir = {:?}\ndb = {:?}\nlog-dir = {:?}\n",
            self.store_dir(),
            self.real_store_dir(),
            self.db_path(),
            self.log_dir()
        )
    }

    /// Registers a path `<hash>-<name>` whose files `write` creates at the path it is given
    /// (a file, a directory or a symlink), with `references` (absolute paths); the hash part
    /// is derived from the name and the references, so equal calls give equal paths. Returns
    /// the absolute path.
    pub fn add(&self, name: &str, references: &[&str], write: impl FnOnce(&Path)) -> String {
        let digest = Sha256::digest(format!("{name}\0{}", references.join("\0")));
        let path = format!("{}/{}-{name}", self.store_dir(), nixbase32::encode(&digest[..20]));
        self.register(&path, references, write)
    }

    /// A single regular file with `contents`.
    pub fn add_file(&self, name: &str, contents: &[u8]) -> String {
        self.add(name, &[], |p| fs::write(p, contents).expect("write store file"))
    }

    /// A flat fixed-output file, as a fetcher with `outputHashMode = "flat"` (or `guix
    /// download`) makes it: its path is computed from its name and the sha256 of its contents
    /// (what guix publish's `/file/` route looks up), and Nix rows carry the `CA` field.
    pub fn add_fixed_output(&self, name: &str, contents: &[u8]) -> String {
        let hash = NarHash::digest(contents);
        let path = formats::store_path::fixed_output_path(self.store_dir(), name, &hash).expect("fixed-output path");
        let path = path.absolute(self.store_dir());
        self.register(&path, &[], |p| fs::write(p, contents).expect("write store file"));
        if self.kind == Kind::Nix {
            self.db
                .execute(
                    "UPDATE ValidPaths SET ca = ?1 WHERE path = ?2",
                    [format!("fixed:sha256:{}", hash.to_nix32()), path.clone()],
                )
                .expect("ca");
        }
        path
    }

    /// Files in the store dir without a row: a build in progress, or garbage (never served).
    pub fn add_unregistered(&self, basename: &str, contents: &[u8]) -> String {
        fs::write(self.real_store_dir().join(basename), contents).expect("write unregistered file");
        format!("{}/{basename}", self.store_dir())
    }

    /// Sets the deriver of `path` (an absolute `.drv` path).
    pub fn set_deriver(&self, path: &str, drv: &str) {
        self.db.execute("UPDATE ValidPaths SET deriver = ?1 WHERE path = ?2", [drv, path]).expect("deriver");
    }

    /// Sets the signatures the DB records for `path` (what `nix store sign` or a substitution
    /// leaves there).
    pub fn set_sigs(&self, path: &str, sigs: &[String]) {
        self.db
            .execute("UPDATE ValidPaths SET sigs = ?1 WHERE path = ?2", [sigs.join(" "), path.to_owned()])
            .expect("sigs");
    }

    /// Writes the build log of `drv` (an absolute path or a basename) as Nix (`bzip2`) or
    /// Guix (`gzip`) keep it, or plain (`none`).
    pub fn add_log(&self, drv: &str, text: &str, compression: formats::Compression) {
        let base = crate::basename(drv);
        let dir = self.log_dir().join(&base[..2]);
        fs::create_dir_all(&dir).expect("log dir");
        let name = match compression {
            formats::Compression::None => base[2..].to_owned(),
            formats::Compression::Bzip2 => format!("{}.bz2", &base[2..]),
            formats::Compression::Gzip => format!("{}.gz", &base[2..]),
            other => panic!("logs are never stored as {other}"),
        };
        fs::write(dir.join(name), crate::compression::compress(compression, text.as_bytes())).expect("write log");
    }

    /// The row's NarSize made NULL, as in DBs of old Nix versions (the server computes it).
    pub fn clear_nar_size(&self, path: &str) {
        self.db.execute("UPDATE ValidPaths SET narSize = NULL WHERE path = ?1", [path]).expect("narSize");
    }

    fn register(&self, path: &str, references: &[&str], write: impl FnOnce(&Path)) -> String {
        let real = self.real_path(path);
        write(&real);
        let mut nar = Vec::new();
        let size = store_reader::nar::dump(&real, &mut nar).expect("the written files make a NAR");
        let hash = format!("sha256:{}", NarHash::digest(&nar).to_base16());
        self.db
            .execute(
                "INSERT INTO ValidPaths (path, hash, registrationTime, narSize) VALUES (?1, ?2, 1, ?3)",
                rusqlite::params![path, hash, size],
            )
            .expect("row");
        for reference in references {
            self.db
                .execute(
                    "INSERT INTO Refs SELECT t.id, r.id FROM ValidPaths t, ValidPaths r WHERE t.path = ?1 AND r.path = ?2",
                    [path, reference],
                )
                .expect("reference");
        }
        path.to_owned()
    }
}

impl std::fmt::Debug for FakeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeStore").field("root", &self.root()).field("kind", &self.kind).finish()
    }
}
