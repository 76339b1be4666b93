//! Equality with the real tool: a fixture holding every kind of file system object is added to
//! a chroot store with `nix-store --add`, and our NAR of the stored copy must equal, byte for
//! byte, `nix-store --dump` of it and the NarHash/NarSize Nix recorded in its database. The
//! listing's offsets and `dump_range` are checked against the real tool's NAR too.
//!
//! Bytes are compared by sha256 and length so that the 256 MiB file is never held in memory.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};
use store_reader::listing::{list, ListingNode};
use store_reader::nar::{dump, dump_range, nar_size, BUFFER_SIZE};

const MIB: usize = 1 << 20;
const BIG_MIB: usize = 256;

/// A writer that hashes and counts what it is given, and hashes chosen slices of it.
struct Hasher {
    all: Sha256,
    len: u64,
    /// `(start, end, hash of bytes [start, end))`
    slices: Vec<(u64, u64, Sha256)>,
}

impl Hasher {
    fn new(ranges: &[(u64, u64)]) -> Self {
        let slices = ranges.iter().map(|&(s, e)| (s, e, Sha256::new())).collect();
        Self { all: Sha256::new(), len: 0, slices }
    }

    fn digest(self) -> ([u8; 32], u64, Vec<[u8; 32]>) {
        let slices = self.slices.into_iter().map(|(_, _, h)| h.finalize().into()).collect();
        (self.all.finalize().into(), self.len, slices)
    }
}

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (from, to) = (self.len, self.len + buf.len() as u64);
        for (start, end, h) in &mut self.slices {
            let (s, e) = ((*start).max(from), (*end).min(to));
            if s < e {
                h.update(&buf[(s - from) as usize..(e - from) as usize]);
            }
        }
        self.all.update(buf);
        self.len = to;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn sha256_of(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn sha256_of_file(path: &Path) -> [u8; 32] {
    let mut h = Sha256::new();
    io::copy(&mut File::open(path).unwrap(), &mut h).unwrap();
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `nix-store` with a private configuration; a missing binary fails the test.
fn nix_store(tmp: &Path, args: &[&OsStr]) -> Command {
    if let Err(e) = Command::new("nix-store").arg("--version").stdout(Stdio::null()).status() {
        panic!("cannot run nix-store ({e}): install it with `apt-get install nix-bin`");
    }
    let mut cmd = Command::new("nix-store");
    cmd.args(args)
        .env("NIX_CONF_DIR", tmp.join("conf"))
        .env("HOME", tmp.join("home"))
        .env("XDG_CACHE_HOME", tmp.join("home/.cache"))
        .env_remove("NIX_REMOTE")
        .stdin(Stdio::null());
    cmd
}

fn write_file(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A 1 MiB pseudo-random block (xorshift), so the big file is cheap to write yet not sparse.
fn random_block() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = Vec::with_capacity(MIB);
    while block.len() < MIB {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        block.extend_from_slice(&x.to_le_bytes());
    }
    block
}

/// Builds the fixture tree at `root`: every file type, odd names, deep nesting, a big file.
fn build_fixture(root: &Path) {
    fs::create_dir(root).unwrap();
    let p = |rel: &str| root.join(rel);
    write_file(&p("hello.txt"), b"hello\n", 0o644);
    write_file(&p("empty"), b"", 0o644);
    write_file(&p("group-exec-only"), b"not executable for Nix\n", 0o655);
    fs::create_dir(p("bin")).unwrap();
    write_file(&p("bin/run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    write_file(&p("bin/owner-only"), b"x", 0o700);
    fs::create_dir(p("empty-dir")).unwrap();
    symlink("hello.txt", p("link")).unwrap();
    symlink("does/not/exist", p("dangling")).unwrap();
    symlink("/etc/passwd", p("absolute")).unwrap();
    symlink("bin", p("dir-link")).unwrap();
    symlink(OsStr::from_bytes(b"target-\xff\xfe"), p("non-utf8-target")).unwrap();
    fs::hard_link(p("hello.txt"), p("hard-link")).unwrap();
    // Names that sort differently as bytes than case-insensitively, and odd characters.
    for name in ["B", "a", "A", "b", "a-b", "a.b", "a b", " lead", ".hidden", "-dash", "ünïcödé", "日本語", "emoji-🦀"]
    {
        write_file(&p(name), name.as_bytes(), 0o644);
    }
    write_file(&p(&"n".repeat(255)), b"longest name", 0o644);
    write_file(&root.join(OsStr::from_bytes(b"non-utf8-\xff\xfe\x80")), b"raw bytes\n", 0o644);
    // Sizes around the padding and the writer's buffer.
    fs::create_dir(p("sizes")).unwrap();
    let block = random_block();
    for n in [1, 7, 8, 9, 15, 16, 17, BUFFER_SIZE - 1, BUFFER_SIZE, BUFFER_SIZE + 1, 2 * BUFFER_SIZE + 3] {
        write_file(&p(&format!("sizes/{n}")), &block[..n], if n % 2 == 0 { 0o755 } else { 0o644 });
    }
    // 50 levels of directories.
    let mut deep = p("deep");
    for level in 0..50 {
        deep.push(format!("d{level}"));
    }
    fs::create_dir_all(&deep).unwrap();
    write_file(&deep.join("bottom"), b"deep\n", 0o644);
    // The big file: the pseudo-random block repeated, each copy stamped with its index.
    let mut big = File::create(p("big.bin")).unwrap();
    let mut block = block;
    for i in 0..BIG_MIB {
        block[..8].copy_from_slice(&(i as u64).to_le_bytes());
        big.write_all(&block).unwrap();
    }
}

/// `(path, size, narOffset)` of every regular file in a listing.
fn regular_files(node: &ListingNode, path: PathBuf, out: &mut Vec<(PathBuf, u64, u64)>) {
    match node {
        ListingNode::Regular { size, nar_offset, .. } => out.push((path, *size, *nar_offset)),
        ListingNode::Symlink { .. } => {}
        ListingNode::Directory { entries } => {
            for (name, child) in entries {
                regular_files(child, path.join(name), out);
            }
        }
    }
}

/// Makes the directories under a path writable again when dropped: the store's copies are
/// read-only, and without this a non-root run could not delete its 512 MiB of fixtures.
struct Writable(PathBuf);

impl Drop for Writable {
    fn drop(&mut self) {
        fn walk(path: &Path) {
            let Ok(meta) = fs::symlink_metadata(path) else {
                return;
            };
            if meta.is_dir() {
                let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o755));
                for entry in fs::read_dir(path).into_iter().flatten().flatten() {
                    walk(&entry.path());
                }
            }
        }
        walk(&self.0);
    }
}

#[test]
fn dump_equals_nix_store_dump_and_db() {
    let tmp = tempfile::tempdir().unwrap();
    let _writable = Writable(tmp.path().to_path_buf());
    let tmp = tmp.path();
    fs::create_dir_all(tmp.join("conf")).unwrap();
    fs::create_dir_all(tmp.join("home")).unwrap();
    fs::write(tmp.join("conf/nix.conf"), "build-users-group =\nsubstituters =\n").unwrap();
    let chroot = tmp.join("store");
    let source = tmp.join("fixture");
    build_fixture(&source);

    let added = nix_store(tmp, &["--store".as_ref(), chroot.as_os_str(), "--add".as_ref(), source.as_os_str()])
        .output()
        .unwrap();
    assert!(added.status.success(), "nix-store --add failed: {}", String::from_utf8_lossy(&added.stderr));
    let store_path = String::from_utf8(added.stdout).unwrap().trim().to_owned();
    let basename = store_path.strip_prefix("/nix/store/").expect("a /nix/store path");
    let physical = chroot.join("nix/store").join(basename);

    // Our NAR of the stored copy.
    let mut ours = Hasher::new(&[]);
    let written = dump(&physical, &mut ours).unwrap();
    let (our_hash, our_len, _) = ours.digest();
    assert_eq!(written, our_len);
    assert!(our_len > (BIG_MIB * MIB) as u64, "the big file is missing");
    assert_eq!(nar_size(&physical).unwrap(), our_len);

    // The ranges to check: every file's contents as the listing places them, and dump_range
    // cuts at the edges of the big file, inside it, and past the end.
    let listing = list(&physical).unwrap();
    let mut files = Vec::new();
    regular_files(&listing.root, PathBuf::new(), &mut files);
    let big = files.iter().find(|(p, ..)| p == Path::new("big.bin")).unwrap().2;
    let big_end = big + (BIG_MIB * MIB) as u64;
    let len = our_len;
    let cuts = [
        (0, 100),
        (big - 50, big + 50),
        (big + 100 * MIB as u64 + 5, big + 101 * MIB as u64 + 8),
        (big_end - 10, big_end + 500),
        (big_end, len),
        (len - 300, len),
        (len - 1, len + 100),
    ];
    let mut ranges: Vec<(u64, u64)> = files.iter().map(|&(_, size, off)| (off, off + size)).collect();
    ranges.extend(cuts.iter().map(|&(s, e)| (s, e.min(len))));

    // The real tool's NAR, streamed through the hasher. (`nix-store --store X --dump` dumps the
    // host path, not the chroot's, so it is given the physical path.)
    let mut child = nix_store(tmp, &["--dump".as_ref(), physical.as_os_str()]).stdout(Stdio::piped()).spawn().unwrap();
    let mut theirs = Hasher::new(&ranges);
    io::copy(&mut child.stdout.take().unwrap(), &mut theirs).unwrap();
    assert!(child.wait().unwrap().success(), "nix-store --dump failed");
    let (their_hash, their_len, slices) = theirs.digest();
    assert_eq!(our_len, their_len, "NAR length differs from nix-store --dump");
    assert_eq!(hex(&our_hash), hex(&their_hash), "NAR differs from nix-store --dump");

    // What Nix recorded when it added the path.
    let db = rusqlite::Connection::open_with_flags(
        chroot.join("nix/var/nix/db/db.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let (hash, size): (String, i64) = db
        .query_row("SELECT hash, narSize FROM ValidPaths WHERE path = ?1", [&store_path], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(hash, format!("sha256:{}", hex(&our_hash)));
    assert_eq!(size as u64, our_len);

    // narOffset points at each file's contents in the real NAR.
    assert!(files.len() > 30, "listing misses files: {files:?}");
    for ((path, _, off), slice) in files.iter().zip(&slices) {
        assert!(*off > 0);
        // The one lossily converted name cannot be opened by its listing name.
        let expected = match path.to_str() {
            Some(p) if p.contains('\u{fffd}') => sha256_of(b"raw bytes\n"),
            _ => sha256_of_file(&physical.join(path)),
        };
        assert_eq!(hex(slice), hex(&expected), "contents of {path:?} at {off}");
    }
    // Every range is the slice of the real NAR.
    for (&(start, end), slice) in cuts.iter().zip(&slices[files.len()..]) {
        let mut out = Hasher::new(&[]);
        let n = dump_range(&physical, start, end, &mut out).unwrap();
        assert_eq!(n, end.min(len) - start, "length of range {start}..{end}");
        assert_eq!(hex(&out.digest().0), hex(slice), "range {start}..{end}");
    }
    // A listing with a non-UTF-8 name converts it lossily.
    let ListingNode::Directory { entries } = &listing.root else { panic!("root is not a directory") };
    assert!(entries.contains_key("non-utf8-\u{fffd}\u{fffd}\u{fffd}"), "{:?}", entries.keys());
    assert_eq!(entries["non-utf8-target"], ListingNode::Symlink { target: "target-\u{fffd}\u{fffd}".into() });
}

#[test]
fn hard_links_and_unreadable_bits_do_not_matter() {
    // Nix records neither: a hard link is a second regular file, and only the owner-execute
    // bit of a mode survives. Checked against a NAR read back rather than the real tool.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    fs::create_dir(&root).unwrap();
    write_file(&root.join("f"), b"data", 0o400);
    fs::hard_link(root.join("f"), root.join("g")).unwrap();
    let mut nar = Vec::new();
    dump(&root, &mut nar).unwrap();
    let mut f = Vec::new();
    File::open(root.join("f")).unwrap().read_to_end(&mut f).unwrap();
    let formats::nar::Node::Directory(entries) = formats::nar::Node::parse(&nar[..]).unwrap() else { panic!() };
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[&b"f"[..]], entries[&b"g"[..]]);
}
