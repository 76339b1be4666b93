//! Serialising a filesystem object as a NAR (docs/protocol.md §2), byte for byte what
//! `nix-store --dump` writes: whole ([`dump`]), as a byte range ([`dump_range`], for HTTP Range
//! requests) or just its length ([`nar_size`]).
//!
//! This is the server's hot path. One walker visits the object in NAR order and computes every
//! offset from `lstat` metadata alone; a `Visitor` decides what to do with the framing and
//! with each file's contents. The writer copies framing and contents into one reused 256 KiB
//! buffer and hands the output large writes; it opens only the files whose contents overlap
//! the requested range. The listing (`crate::listing`) is another visitor of the same walk.
//!
//! A file's length is written before its contents are read, so a file that changes size in
//! between is an error ([`Error::FileChanged`]), never padded or cut to fit.
//!
//! A [`NarSink`] may take large files' contents as file ranges instead of bytes
//! ([`NarSink::send_file`]), to move them without copying them through user space.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use formats::nar::{self as tok, padding, write_string};
use rustix::fs::{Mode, OFlags};

use crate::Error;

/// Size of the buffer through which framing and file contents are written.
pub const BUFFER_SIZE: usize = 256 * 1024;

/// Framing is handed to the visitor once this much has accumulated (or before a file's
/// contents, or at the end), so that directories of many small entries cost few calls.
const FRAMING_CHUNK: usize = 16 * 1024;

/// Files whose contents in the output are at least this long are offered to
/// [`NarSink::send_file`]; smaller ones are cheaper to copy along with the framing.
pub const SEND_FILE_MIN: u64 = 128 * 1024;

/// Where a NAR goes: bytes through [`Write`], and optionally file contents as ranges of open
/// files, for a destination that can move them without a copy through user space (`sendfile`).
pub trait NarSink: Write {
    /// Sends `len` bytes of `file` from `offset` after everything written so far, and returns
    /// how many it sent: fewer than `len` only where the file ended. `None` (the default)
    /// means the sink cannot; the bytes are then read and written as usual.
    fn send_file(&mut self, _file: &File, _offset: u64, _len: u64) -> io::Result<Option<u64>> {
        Ok(None)
    }
}

/// A [`NarSink`] over a plain writer: every byte through [`Write`].
struct Bytes<'o>(&'o mut dyn Write);

impl Write for Bytes<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl NarSink for Bytes<'_> {}

impl NarSink for Vec<u8> {}

impl<S: NarSink + ?Sized> NarSink for &mut S {
    fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<Option<u64>> {
        (**self).send_file(file, offset, len)
    }
}

/// Writes the NAR of the filesystem object at `root` (not following a symlink at `root`) to
/// `out`, and returns its length.
///
/// Entries are sorted by raw name bytes; a regular file is executable iff its owner-execute bit
/// is set. Sockets, FIFOs and devices are an error, as is any file that changes size or
/// disappears while it is being dumped. On error, whatever was written is not a valid NAR.
pub fn dump(root: &Path, out: &mut dyn Write) -> Result<u64, Error> {
    dump_range(root, 0, u64::MAX, out)
}

/// Writes bytes `[start, end)` of the NAR of `root` to `out`, and returns how many were written
/// (fewer than `end - start` if the NAR ends before `end`; 0 if `start >= end`).
///
/// Every object up to `end` is stat'ed to compute offsets, but only the files whose contents
/// overlap the range are opened, and the walk stops at `end`.
pub fn dump_range(root: &Path, start: u64, end: u64, out: &mut dyn Write) -> Result<u64, Error> {
    dump_range_to(root, start, end, &mut Bytes(out))
}

/// [`dump_range`] into a [`NarSink`], which is offered the contents of files of at least
/// [`SEND_FILE_MIN`] bytes as file ranges.
pub fn dump_range_to(root: &Path, start: u64, end: u64, out: &mut dyn NarSink) -> Result<u64, Error> {
    if start >= end {
        return Ok(0);
    }
    let mut sink = RangeWriter::new(out, start, end);
    walk(root, &mut sink)?;
    sink.finish()
}

/// The length of the NAR of `root`, computed from metadata alone: no file is opened.
pub fn nar_size(root: &Path) -> Result<u64, Error> {
    struct Count;
    impl Visitor for Count {}
    walk(root, &mut Count)
}

/// What the walk reports, in NAR order. Every method has a no-op default.
pub(crate) trait Visitor {
    /// The NAR offset at which the walk may stop: once everything before it has been
    /// reported, the walk ends without reading further directories.
    fn end(&self) -> u64 {
        u64::MAX
    }

    /// Framing bytes (tokens, names, lengths, padding) starting at NAR offset `offset`.
    fn framing(&mut self, _offset: u64, _bytes: &[u8]) -> Result<(), Error> {
        Ok(())
    }

    /// A regular file of `size` bytes (as stat'ed) at `path`, whose contents occupy the NAR
    /// from `offset`. The framing before it has been reported; its contents have not been read.
    fn regular(&mut self, _path: &Path, _executable: bool, _size: u64, _offset: u64) -> Result<(), Error> {
        Ok(())
    }

    /// A symlink and its raw target.
    fn symlink(&mut self, _target: &OsStr) -> Result<(), Error> {
        Ok(())
    }

    /// The start of a directory; its entries follow, each announced by [`Visitor::entry`].
    fn directory(&mut self) -> Result<(), Error> {
        Ok(())
    }

    /// A directory entry, at `path`, whose node comes next; `path` has not been stat'ed yet.
    fn entry(&mut self, _path: &Path, _name: &OsStr) -> Result<(), Error> {
        Ok(())
    }

    /// The end of the innermost directory.
    fn directory_end(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// Walks the object at `root` in NAR order, reporting to `visitor`; returns the NAR offset
/// reached, which is the NAR's length unless the visitor's [`Visitor::end`] stopped the walk.
pub(crate) fn walk(root: &Path, visitor: &mut dyn Visitor) -> Result<u64, Error> {
    let mut w = Walker {
        path: root.to_path_buf(),
        pending: Vec::with_capacity(2 * FRAMING_CHUNK),
        pending_at: 0,
        stack: Vec::new(),
        visitor,
    };
    write_string(&mut w.pending, tok::MAGIC);
    let meta = lstat(&w.path)?;
    w.node(&meta)?;
    while !w.done() {
        let Some(names) = w.stack.last_mut() else {
            break;
        };
        match names.next() {
            Some(name) => {
                for t in [tok::ENTRY, tok::OPEN, tok::NAME, name.as_bytes(), tok::NODE] {
                    write_string(&mut w.pending, t);
                }
                if w.done() {
                    break; // the rest depends on nothing but the name
                }
                w.path.push(&name);
                w.visitor.entry(&w.path, &name)?;
                let meta = lstat(&w.path)?;
                if !w.node(&meta)? {
                    write_string(&mut w.pending, tok::CLOSE); // the entry
                    w.path.pop();
                }
            }
            None => {
                w.stack.pop();
                write_string(&mut w.pending, tok::CLOSE); // the directory node
                w.visitor.directory_end()?;
                if !w.stack.is_empty() {
                    write_string(&mut w.pending, tok::CLOSE); // the entry holding it
                    w.path.pop();
                }
            }
        }
        if w.pending.len() >= FRAMING_CHUNK {
            w.flush()?;
        }
    }
    w.flush()?;
    Ok(w.offset())
}

/// State of one walk.
struct Walker<'v> {
    /// The object being visited.
    path: PathBuf,
    /// Framing not yet reported to the visitor.
    pending: Vec<u8>,
    /// NAR offset of `pending[0]`.
    pending_at: u64,
    /// For each open directory, its remaining entry names in NAR order.
    stack: Vec<std::vec::IntoIter<OsString>>,
    visitor: &'v mut dyn Visitor,
}

impl Walker<'_> {
    fn offset(&self) -> u64 {
        self.pending_at + self.pending.len() as u64
    }

    fn done(&self) -> bool {
        self.offset() >= self.visitor.end()
    }

    fn flush(&mut self) -> Result<(), Error> {
        if !self.pending.is_empty() {
            self.visitor.framing(self.pending_at, &self.pending)?;
            self.pending_at += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }

    /// Serialises the node at `self.path`; a directory is only opened (its entries pushed on
    /// the stack), in which case this returns true.
    fn node(&mut self, meta: &Metadata) -> Result<bool, Error> {
        for t in [tok::OPEN, tok::TYPE] {
            write_string(&mut self.pending, t);
        }
        let kind = meta.file_type();
        if kind.is_file() {
            let executable = meta.mode() & 0o100 != 0;
            write_string(&mut self.pending, tok::REGULAR);
            if executable {
                write_string(&mut self.pending, tok::EXECUTABLE);
                write_string(&mut self.pending, b"");
            }
            write_string(&mut self.pending, tok::CONTENTS);
            let size = meta.len();
            self.pending.extend_from_slice(&size.to_le_bytes());
            self.flush()?;
            self.visitor.regular(&self.path, executable, size, self.pending_at)?;
            self.pending_at += size;
            self.pending.extend_from_slice(&[0; 8][..padding(size)]);
            write_string(&mut self.pending, tok::CLOSE);
            Ok(false)
        } else if kind.is_symlink() {
            let target = fs::read_link(&self.path).map_err(|e| Error::io(&self.path, e))?;
            for t in [tok::SYMLINK, tok::TARGET, target.as_os_str().as_bytes(), tok::CLOSE] {
                write_string(&mut self.pending, t);
            }
            self.visitor.symlink(target.as_os_str())?;
            Ok(false)
        } else if kind.is_dir() {
            write_string(&mut self.pending, tok::DIRECTORY);
            self.visitor.directory()?;
            if !self.done() {
                let names = read_sorted(&self.path)?;
                self.stack.push(names.into_iter());
            }
            Ok(true)
        } else {
            let kind = match () {
                () if kind.is_socket() => "socket",
                () if kind.is_fifo() => "fifo",
                () if kind.is_block_device() => "block device",
                () if kind.is_char_device() => "character device",
                () => "unknown",
            };
            Err(Error::UnsupportedFileType { path: self.path.clone(), kind })
        }
    }
}

fn lstat(path: &Path) -> Result<Metadata, Error> {
    fs::symlink_metadata(path).map_err(|e| Error::io(path, e))
}

/// The entry names of a directory, sorted by raw bytes as the NAR requires.
fn read_sorted(dir: &Path) -> Result<Vec<OsString>, Error> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        names.push(entry.map_err(|e| Error::io(dir, e))?.file_name());
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// The visitor that writes NAR bytes `[start, end)` through one buffer.
struct RangeWriter<'o> {
    out: &'o mut dyn NarSink,
    start: u64,
    end: u64,
    buf: Vec<u8>,
    /// Bytes of `buf` holding output not yet written.
    fill: usize,
    /// Bytes handed to `out` so far.
    written: u64,
}

impl<'o> RangeWriter<'o> {
    fn new(out: &'o mut dyn NarSink, start: u64, end: u64) -> Self {
        Self { out, start, end, buf: vec![0; BUFFER_SIZE], fill: 0, written: 0 }
    }

    fn write_buf(&mut self) -> Result<(), Error> {
        if self.fill > 0 {
            self.out.write_all(&self.buf[..self.fill]).map_err(Error::Write)?;
            self.written += self.fill as u64;
            self.fill = 0;
        }
        Ok(())
    }

    fn put(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        while !bytes.is_empty() {
            if self.fill == self.buf.len() {
                self.write_buf()?;
            }
            let n = bytes.len().min(self.buf.len() - self.fill);
            self.buf[self.fill..self.fill + n].copy_from_slice(&bytes[..n]);
            self.fill += n;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Copies bytes `[skip, skip + take)` of the file at `path`, stat'ed at `size` bytes, into
    /// the output, and checks that the file still has exactly `size` bytes.
    fn copy_file(&mut self, path: &Path, size: u64, skip: u64, take: u64) -> Result<(), Error> {
        let io = |e| Error::io(path, e);
        // O_NOFOLLOW and O_NONBLOCK: if the file was replaced by a symlink or a FIFO since the
        // lstat, fail or read nothing rather than follow it or block.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let mut file = File::from(rustix::fs::open(path, flags, Mode::empty()).map_err(|e| io(e.into()))?);
        let through_eof = skip + take == size;
        if skip > 0 || !through_eof {
            // A partial read cannot see a change of size by itself.
            let actual = file.metadata().map_err(io)?.len();
            if actual != size {
                return Err(Error::FileChanged { path: path.to_path_buf(), expected: size, actual });
            }
        }
        if take >= SEND_FILE_MIN {
            self.write_buf()?; // what precedes the contents goes first
            if let Some(sent) = self.out.send_file(&file, skip, take).map_err(Error::Write)? {
                self.written += sent;
                if sent < take {
                    return Err(Error::FileChanged { path: path.to_path_buf(), expected: size, actual: skip + sent });
                }
                if through_eof {
                    check_eof(&file, path, size)?;
                }
                return Ok(());
            }
        }
        if skip > 0 {
            file.seek(SeekFrom::Start(skip)).map_err(io)?;
        }
        let mut remaining = take;
        while remaining > 0 {
            if self.fill == self.buf.len() {
                self.write_buf()?;
            }
            let room = (self.buf.len() - self.fill).min(usize::try_from(remaining).unwrap_or(usize::MAX));
            match file.read(&mut self.buf[self.fill..self.fill + room]) {
                Ok(0) => {
                    let actual = skip + take - remaining;
                    return Err(Error::FileChanged { path: path.to_path_buf(), expected: size, actual });
                }
                Ok(n) => {
                    self.fill += n;
                    remaining -= n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        if through_eof {
            check_eof(&file, path, size)?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<u64, Error> {
        self.write_buf()?;
        self.out.flush().map_err(Error::Write)?;
        Ok(self.written)
    }
}

/// Fails if `file`, whose first `size` bytes were sent, has more.
fn check_eof(file: &File, path: &Path, size: u64) -> Result<(), Error> {
    let mut probe = [0u8; 1];
    loop {
        match file.read_at(&mut probe, size) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                // Report the size it grew to, if it can still be had.
                let actual = file.metadata().map_or(0, |m| m.len()).max(size + 1);
                return Err(Error::FileChanged { path: path.to_path_buf(), expected: size, actual });
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
}

impl Visitor for RangeWriter<'_> {
    fn end(&self) -> u64 {
        self.end
    }

    fn framing(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Error> {
        let from = self.start.saturating_sub(offset).min(bytes.len() as u64) as usize;
        let to = self.end.saturating_sub(offset).min(bytes.len() as u64) as usize;
        if from < to {
            self.put(&bytes[from..to])?;
        }
        Ok(())
    }

    fn regular(&mut self, path: &Path, _executable: bool, size: u64, offset: u64) -> Result<(), Error> {
        let from = self.start.max(offset);
        let to = self.end.min(offset.saturating_add(size));
        if from < to {
            self.copy_file(path, size, from - offset, to - from)?;
        } else if size == 0 && (self.start..self.end).contains(&offset) {
            // Nothing to copy, but an empty file that grew must still be noticed.
            self.copy_file(path, 0, 0, 0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use formats::nar::Node;
    use formats::NarHash;

    use super::*;

    fn write_file(path: &Path, contents: &[u8], mode: u32) {
        fs::write(path, contents).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The directory example of docs/protocol.md §2.3.
    fn example_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_file(&dir.path().join("a.sh"), b"#!x\n", 0o755);
        symlink("sub/b", dir.path().join("l")).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        write_file(&dir.path().join("sub/b"), b"hi\n", 0o644);
        dir
    }

    fn dump_vec(root: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        let n = dump(root, &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        out
    }

    #[test]
    fn hello_matches_protocol_doc() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hello");
        write_file(&file, b"hello\n", 0o644);
        let nar = dump_vec(&file);
        assert_eq!(nar.len(), 120);
        assert_eq!(NarHash::digest(&nar).to_string(), "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw");
        assert_eq!(nar_size(&file).unwrap(), 120);
        // Only the owner-execute bit counts.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o655)).unwrap();
        assert_eq!(dump_vec(&file).len(), 120);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o500)).unwrap();
        assert_eq!(dump_vec(&file).len(), 120 + 32);
    }

    #[test]
    fn example_directory_round_trips() {
        let dir = example_dir();
        let nar = dump_vec(dir.path());
        assert_eq!(nar_size(dir.path()).unwrap(), nar.len() as u64);
        let Node::Directory(entries) = Node::parse(&nar[..]).unwrap() else { panic!("not a directory") };
        let names: Vec<&[u8]> = entries.keys().map(Vec::as_slice).collect();
        assert_eq!(names, [&b"a.sh"[..], b"l", b"sub"]);
        assert_eq!(entries[&b"a.sh"[..]], Node::Regular { executable: true, contents: b"#!x\n".to_vec() });
        assert_eq!(entries[&b"l"[..]], Node::Symlink { target: b"sub/b".to_vec() });
    }

    #[test]
    fn symlink_root_is_not_followed() {
        let dir = example_dir();
        let nar = dump_vec(&dir.path().join("l"));
        assert_eq!(Node::parse(&nar[..]).unwrap(), Node::Symlink { target: b"sub/b".to_vec() });
    }

    #[test]
    fn large_file_streams_through_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big");
        let contents: Vec<u8> = (0..3 * BUFFER_SIZE as u32 + 5).map(|i| (i % 251) as u8).collect();
        write_file(&file, &contents, 0o644);
        let nar = dump_vec(&file);
        assert_eq!(Node::parse(&nar[..]).unwrap(), Node::Regular { executable: false, contents });
    }

    #[test]
    fn sockets_and_fifos_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        let err = dump(dir.path(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedFileType { kind: "socket", .. }), "{err:?}");
        assert!(err.to_string().ends_with("sock has an unsupported file type (socket)"), "{err}");
        assert!(nar_size(dir.path()).is_err());

        let fifo = tempfile::tempdir().unwrap();
        let made = std::process::Command::new("mkfifo").arg(fifo.path().join("f")).status();
        assert!(made.unwrap().success());
        let err = dump(fifo.path(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedFileType { kind: "fifo", .. }), "{err:?}");
    }

    #[test]
    fn missing_root_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let err = dump(&gone, &mut Vec::new()).unwrap_err();
        assert!(matches!(&err, Error::Io { path, source } if *path == gone && source.kind() == ErrorKind::NotFound));
    }

    /// Runs a range dump through `hook`, which may tamper with the filesystem as the walk goes.
    fn dump_with_hook(root: &Path, start: u64, end: u64, hook: &mut dyn FnMut(Event<'_>)) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let mut sink = Meddler { inner: RangeWriter::new(&mut out, start, end), hook };
        walk(root, &mut sink)?;
        sink.inner.finish()?;
        Ok(out)
    }

    enum Event<'a> {
        Regular(&'a Path),
        Entry(&'a Path),
    }

    struct Meddler<'a, 'o> {
        inner: RangeWriter<'o>,
        hook: &'a mut dyn FnMut(Event<'_>),
    }

    impl Visitor for Meddler<'_, '_> {
        fn end(&self) -> u64 {
            self.inner.end()
        }
        fn framing(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Error> {
            self.inner.framing(offset, bytes)
        }
        fn regular(&mut self, path: &Path, executable: bool, size: u64, offset: u64) -> Result<(), Error> {
            (self.hook)(Event::Regular(path));
            self.inner.regular(path, executable, size, offset)
        }
        fn entry(&mut self, path: &Path, _name: &OsStr) -> Result<(), Error> {
            (self.hook)(Event::Entry(path));
            Ok(())
        }
    }

    fn set_len_on_regular(len: u64) -> impl FnMut(Event<'_>) {
        move |e| {
            if let Event::Regular(p) = e {
                File::options().write(true).open(p).unwrap().set_len(len).unwrap();
            }
        }
    }

    #[test]
    fn truncated_file_is_an_error() {
        let dir = example_dir();
        let err = dump_with_hook(dir.path(), 0, u64::MAX, &mut set_len_on_regular(1)).unwrap_err();
        assert!(
            matches!(&err, Error::FileChanged { path, expected: 4, actual: 1 } if path.ends_with("a.sh")),
            "{err:?}"
        );
    }

    #[test]
    fn grown_file_is_an_error() {
        let dir = example_dir();
        let err = dump_with_hook(dir.path(), 0, u64::MAX, &mut set_len_on_regular(9)).unwrap_err();
        assert!(matches!(&err, Error::FileChanged { expected: 4, actual: 9, .. }), "{err:?}");
        // An empty file that grows is noticed too.
        let file = dir.path().join("empty");
        write_file(&file, b"", 0o644);
        let err = dump_with_hook(&file, 0, u64::MAX, &mut set_len_on_regular(1)).unwrap_err();
        assert!(matches!(&err, Error::FileChanged { expected: 0, actual: 1, .. }), "{err:?}");
    }

    #[test]
    fn partial_read_checks_the_size_too() {
        let dir = example_dir();
        let file = dir.path().join("sub/b");
        // Contents start at 96; read only the middle byte of "hi\n".
        let err = dump_with_hook(&file, 97, 98, &mut set_len_on_regular(10)).unwrap_err();
        assert!(matches!(&err, Error::FileChanged { expected: 3, actual: 10, .. }), "{err:?}");
        assert_eq!(dump_with_hook(&file, 97, 98, &mut |_| ()).unwrap(), b"i");
    }

    #[test]
    fn range_does_not_read_files_before_start() {
        // Truncating every file as the walk reaches it breaks only the files actually read.
        let dir = example_dir();
        let full = dump_vec(dir.path());
        // "a.sh" contents are at 264..268 and "sub/b" at 784..787 (docs/protocol.md §3.1).
        for (start, end, ok) in
            [(268, 784, true), (300, 2000, false), (787, 2000, true), (0, 264, true), (0, 265, false)]
        {
            let dir = example_dir();
            let got = dump_with_hook(dir.path(), start, end, &mut set_len_on_regular(0));
            match got {
                Ok(bytes) => {
                    assert!(ok, "{start}..{end} read a file");
                    assert_eq!(bytes, &full[start as usize..(end as usize).min(full.len())]);
                }
                Err(e) => assert!(!ok && matches!(e, Error::FileChanged { actual: 0, .. }), "{start}..{end}: {e:?}"),
            }
        }
    }

    #[test]
    fn range_stops_walking_at_end() {
        // Deleting "sub" during the walk only matters if the walk gets that far.
        let dir = example_dir();
        let full = dump_vec(dir.path());
        let mut remove_sub = |e: Event<'_>| {
            if let Event::Entry(p) = e {
                if p.ends_with("l") {
                    fs::remove_dir_all(p.with_file_name("sub")).unwrap();
                }
            }
        };
        assert_eq!(dump_with_hook(dir.path(), 0, 500, &mut remove_sub).unwrap(), &full[..500]);
        let dir = example_dir();
        let err = dump_with_hook(dir.path(), 0, 700, &mut remove_sub).unwrap_err();
        assert!(
            matches!(&err, Error::Io { path, source } if path.ends_with("sub") && source.kind() == ErrorKind::NotFound),
            "{err:?}"
        );
    }

    #[test]
    fn vanished_entry_names_the_path() {
        let dir = example_dir();
        let mut remove = |e: Event<'_>| {
            if let Event::Entry(p) = e {
                if p.ends_with("a.sh") {
                    fs::remove_file(p).unwrap();
                }
            }
        };
        let err = dump_with_hook(dir.path(), 0, u64::MAX, &mut remove).unwrap_err();
        assert!(matches!(&err, Error::Io { path, .. } if path.ends_with("a.sh")), "{err:?}");
        assert!(err.to_string().starts_with("cannot read "), "{err}");
    }

    /// A sink that takes file ranges by reading them with `pread`, as `sendfile` would.
    #[derive(Default)]
    struct Sending {
        out: Vec<u8>,
        /// `(offset, len)` of each range taken.
        sent: Vec<(u64, u64)>,
        /// Sets the length of this file before reading.
        resize: Option<(PathBuf, u64)>,
    }

    impl Write for Sending {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.out.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl NarSink for Sending {
        fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<Option<u64>> {
            if let Some((path, len)) = &self.resize {
                File::options().write(true).open(path)?.set_len(*len)?;
            }
            let mut buf = vec![0; len as usize];
            let mut got = 0;
            while got < buf.len() {
                match file.read_at(&mut buf[got..], offset + got as u64)? {
                    0 => break,
                    n => got += n,
                }
            }
            self.out.extend_from_slice(&buf[..got]);
            self.sent.push((offset, len));
            Ok(Some(got as u64))
        }
    }

    fn big_tree() -> tempfile::TempDir {
        let dir = example_dir();
        let contents: Vec<u8> = (0..SEND_FILE_MIN as u32 * 3 + 7).map(|i| (i % 253) as u8).collect();
        write_file(&dir.path().join("big"), &contents, 0o644);
        dir
    }

    #[test]
    fn large_files_go_to_the_sink_as_ranges_and_the_bytes_are_the_same() {
        let dir = big_tree();
        let full = dump_vec(dir.path());
        let mut sink = Sending::default();
        assert_eq!(dump_range_to(dir.path(), 0, u64::MAX, &mut sink).unwrap(), full.len() as u64);
        assert_eq!(sink.out, full);
        assert_eq!(sink.sent, [(0, SEND_FILE_MIN * 3 + 7)], "only the big file is sent as a range");
        // A range starting inside the big file sends the rest of it from there.
        let start = full.len() as u64 - SEND_FILE_MIN * 2;
        let mut sink = Sending::default();
        dump_range_to(dir.path(), start, u64::MAX, &mut sink).unwrap();
        assert_eq!(sink.out, &full[start as usize..]);
        assert_eq!(sink.sent.len(), 1);
        // A range that takes less than SEND_FILE_MIN of it copies.
        let mut sink = Sending::default();
        dump_range_to(dir.path(), 0, 1000, &mut sink).unwrap();
        assert_eq!((sink.out.as_slice(), sink.sent.len()), (&full[..1000], 0));
    }

    #[test]
    fn a_sent_file_that_shrank_or_grew_is_an_error() {
        let dir = big_tree();
        let size = SEND_FILE_MIN * 3 + 7;
        let big = dir.path().join("big");
        let mut sink = Sending { resize: Some((big, size - 1)), ..Sending::default() };
        let err = dump_range_to(dir.path(), 0, u64::MAX, &mut sink).unwrap_err();
        assert!(
            matches!(&err, Error::FileChanged { expected, actual, .. } if *expected == size && *actual == size - 1),
            "{err:?}"
        );
        let dir = big_tree();
        let big = dir.path().join("big");
        let mut sink = Sending { resize: Some((big, size + 1)), ..Sending::default() };
        let err = dump_range_to(dir.path(), 0, u64::MAX, &mut sink).unwrap_err();
        assert!(matches!(&err, Error::FileChanged { actual, .. } if *actual == size + 1), "{err:?}");
    }

    #[test]
    fn write_errors_are_reported() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let dir = example_dir();
        assert!(matches!(dump(dir.path(), &mut Broken), Err(Error::Write(_))));
    }
}
