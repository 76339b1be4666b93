//! The NAR archive format (docs/protocol.md §2): the tokens and string framing shared with the writer
//! in store-reader, and a streaming parser that checks the grammar, so that NARs from elsewhere
//! (an upstream cache, a test) are verified before anyone trusts them.
//!
//! The parser is a pull parser over any [`Read`]: [`Parser::next`] yields one [`Event`] at a
//! time and file contents are read on demand with [`Parser::read_contents`], so memory stays
//! bounded whatever the archive holds. [`Node`] is a value tree built on top of it, for tests.
//!
//! Only the canonical form that `nix-store --dump` writes is accepted: fields in grammar order,
//! zero padding, entries in strictly increasing byte order, names that could be a file name.
//! Every violation is an [`Error::Nar`] with the offset of the offending token; the parser never
//! panics and never allocates more than a bounded amount ahead of the data it has read.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};

use crate::Error;

/// The magic string every NAR starts with.
pub const MAGIC: &[u8] = b"nix-archive-1";
/// Opens a node or a directory entry.
pub const OPEN: &[u8] = b"(";
/// Closes a node or a directory entry.
pub const CLOSE: &[u8] = b")";
/// Precedes the node type.
pub const TYPE: &[u8] = b"type";
/// Node type of a regular file.
pub const REGULAR: &[u8] = b"regular";
/// Marks an executable regular file; always followed by the empty string.
pub const EXECUTABLE: &[u8] = b"executable";
/// Precedes a regular file's contents.
pub const CONTENTS: &[u8] = b"contents";
/// Node type of a symbolic link.
pub const SYMLINK: &[u8] = b"symlink";
/// Precedes a symlink's target.
pub const TARGET: &[u8] = b"target";
/// Node type of a directory.
pub const DIRECTORY: &[u8] = b"directory";
/// Starts a directory entry.
pub const ENTRY: &[u8] = b"entry";
/// Precedes an entry's name.
pub const NAME: &[u8] = b"name";
/// Precedes an entry's node.
pub const NODE: &[u8] = b"node";

/// Longest entry name accepted, in bytes (`NAME_MAX` on Linux; also Nix 2.35's limit).
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target accepted, in bytes (`PATH_MAX - 1` on Linux; also Nix 2.35's limit).
pub const MAX_TARGET_LEN: usize = 4095;
/// Deepest directory nesting accepted. Nix 2.35 refuses 64 and more; older clients accept any
/// depth, so this only bounds the parser's memory (one name per open directory).
pub const MAX_DEPTH: usize = 1024;

/// Longest keyword token (`executable`, `nix-archive-1`); anything longer is not a keyword.
const MAX_KEYWORD_LEN: usize = 16;

/// Number of zero bytes that pad a string of `len` bytes to a multiple of 8.
pub const fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

/// Appends `s` as a NAR string: u64 little-endian length, the bytes, zero padding to 8.
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.extend_from_slice(&[0; 8][..padding(s.len() as u64)]);
}

/// Whether `name` may name a directory entry: non-empty, at most [`MAX_NAME_LEN`] bytes, not
/// `.` or `..`, and free of `/` and NUL.
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != b"."
        && name != b".."
        && !name.iter().any(|&b| b == b'/' || b == 0)
}

/// One step of a NAR, as yielded by [`Parser::next`].
///
/// A directory is [`Event::Directory`], then for each entry an [`Event::Entry`] followed by
/// that entry's node (which may itself be a directory), then [`Event::DirectoryEnd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A regular file; its `size` bytes of contents can be read with [`Parser::read_contents`]
    /// before the next call to [`Parser::next`], which skips whatever was not read.
    Regular {
        /// Whether the file carries the executable marker.
        executable: bool,
        /// Length of the contents in bytes.
        size: u64,
    },
    /// A symbolic link.
    Symlink {
        /// The link target, raw bytes (non-empty, no NUL).
        target: Vec<u8>,
    },
    /// The start of a directory.
    Directory,
    /// A directory entry; the next event is its node.
    Entry {
        /// The entry name, raw bytes (see [`is_valid_name`]).
        name: Vec<u8>,
    },
    /// The end of the innermost open directory.
    DirectoryEnd,
}

/// Where the parser is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing read yet; the magic comes next.
    Start,
    /// A node comes next: the root or an entry's node.
    Node,
    /// Inside a regular file's contents, `remaining` of `size` bytes not yet consumed.
    Contents { remaining: u64, size: u64 },
    /// A node was completed; the enclosing entry closes next, or the archive ends.
    AfterNode,
    /// Inside a directory: an entry or the directory's end comes next.
    InDirectory,
    /// The root node is complete.
    Done,
    /// An error was returned; the input position is no longer meaningful.
    Failed,
}

/// A streaming NAR parser; see the module documentation.
///
/// It issues many small reads, so give it a buffered reader (or a byte slice).
#[derive(Debug)]
pub struct Parser<R> {
    inner: R,
    offset: u64,
    state: State,
    /// The previous entry name of each open directory, innermost last (empty before the first
    /// entry, which sorts below every valid name).
    dirs: Vec<Vec<u8>>,
}

impl<R: Read> Parser<R> {
    /// A parser reading a NAR from the start of `inner`.
    pub fn new(inner: R) -> Self {
        Self { inner, offset: 0, state: State::Start, dirs: Vec::new() }
    }

    /// Number of bytes consumed so far. Right after [`Event::Regular`] this is the offset of
    /// the file's first content byte (the `narOffset` of a `.ls` listing).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next event, or `None` once the root node is complete.
    ///
    /// Does not read past the archive's last token; use [`Parser::finish`] to also require
    /// the end of the input. After an error every further call fails.
    #[allow(clippy::should_implement_trait)] // fallible, so not an `Iterator`
    pub fn next(&mut self) -> Result<Option<Event>, Error> {
        let result = self.step();
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// Reads contents of the current regular file into `buf`; returns 0 at the end of the
    /// contents, or when the last event was not [`Event::Regular`].
    pub fn read_contents(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let State::Contents { remaining, size } = self.state else {
            return Ok(0);
        };
        if remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
        match self.read_some(&mut buf[..want]) {
            Ok(n) => {
                self.state = State::Contents { remaining: remaining - n as u64, size };
                Ok(n)
            }
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
        }
    }

    /// Parses whatever remains of the archive (skipping contents), then requires the end of the
    /// input; returns the archive's length in bytes.
    pub fn finish(mut self) -> Result<u64, Error> {
        while self.next()?.is_some() {}
        let mut probe = [0u8; 1];
        loop {
            match self.inner.read(&mut probe) {
                Ok(0) => return Ok(self.offset),
                Ok(_) => return Err(self.err("trailing data after the archive")),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(self.err("i/o error while reading the archive")),
            }
        }
    }

    /// Gives back the reader, positioned wherever parsing stopped.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn step(&mut self) -> Result<Option<Event>, Error> {
        loop {
            match self.state {
                State::Start => {
                    self.expect(MAGIC, "bad magic: not a nar")?;
                    self.state = State::Node;
                }
                State::Node => return self.node().map(Some),
                State::Contents { remaining, size } => {
                    self.skip(remaining)?;
                    self.read_padding(size)?;
                    self.expect(CLOSE, "expected ) after the contents")?;
                    self.state = State::AfterNode;
                }
                State::AfterNode => {
                    if self.dirs.is_empty() {
                        self.state = State::Done;
                        return Ok(None);
                    }
                    self.expect(CLOSE, "expected ) closing the entry")?;
                    self.state = State::InDirectory;
                }
                State::InDirectory => return self.entry().map(Some),
                State::Done => return Ok(None),
                State::Failed => return Err(self.err("parser used after an error")),
            }
        }
    }

    /// Parses a node up to its first event.
    fn node(&mut self) -> Result<Event, Error> {
        self.expect(OPEN, "expected ( opening a node")?;
        self.expect(TYPE, "expected type")?;
        let at = self.offset;
        let (buf, len) = self.keyword()?;
        match &buf[..len] {
            REGULAR => {
                let at = self.offset;
                let (mut buf, mut len) = self.keyword()?;
                let executable = &buf[..len] == EXECUTABLE;
                if executable {
                    self.expect(b"", "executable marker with a non-empty value")?;
                    (buf, len) = self.keyword()?;
                }
                if &buf[..len] != CONTENTS {
                    return Err(Error::Nar { offset: at, what: "expected contents" });
                }
                let size = self.read_u64()?;
                self.state = State::Contents { remaining: size, size };
                Ok(Event::Regular { executable, size })
            }
            SYMLINK => {
                self.expect(TARGET, "expected target")?;
                let at = self.offset;
                let target = self.read_bounded(MAX_TARGET_LEN, "symlink target too long")?;
                if target.is_empty() || target.contains(&0) {
                    return Err(Error::Nar { offset: at, what: "empty symlink target or NUL in it" });
                }
                self.expect(CLOSE, "expected ) after the symlink target")?;
                self.state = State::AfterNode;
                Ok(Event::Symlink { target })
            }
            DIRECTORY => {
                if self.dirs.len() >= MAX_DEPTH {
                    return Err(Error::Nar { offset: at, what: "directories nested too deeply" });
                }
                self.dirs.push(Vec::new());
                self.state = State::InDirectory;
                Ok(Event::Directory)
            }
            _ => Err(Error::Nar { offset: at, what: "unknown node type" }),
        }
    }

    /// Parses the start of an entry up to its node, or the end of the directory.
    fn entry(&mut self) -> Result<Event, Error> {
        let at = self.offset;
        let (buf, len) = self.keyword()?;
        match &buf[..len] {
            CLOSE => {
                self.dirs.pop();
                self.state = State::AfterNode;
                Ok(Event::DirectoryEnd)
            }
            ENTRY => {
                self.expect(OPEN, "expected ( opening an entry")?;
                self.expect(NAME, "expected name")?;
                let at = self.offset;
                let name = self.read_bounded(MAX_NAME_LEN, "entry name too long")?;
                if !is_valid_name(&name) {
                    return Err(Error::Nar { offset: at, what: "invalid entry name" });
                }
                let prev = self.dirs.last_mut().ok_or(Error::Nar { offset: at, what: "entry outside a directory" })?;
                if name <= *prev {
                    return Err(Error::Nar { offset: at, what: "directory entries not sorted or duplicated" });
                }
                prev.clone_from(&name);
                self.expect(NODE, "expected node")?;
                self.state = State::Node;
                Ok(Event::Entry { name })
            }
            _ => Err(Error::Nar { offset: at, what: "expected entry or ) in a directory" }),
        }
    }

    fn err(&self, what: &'static str) -> Error {
        Error::Nar { offset: self.offset, what }
    }

    /// Reads at least one byte; end of input is an error.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        loop {
            match self.inner.read(buf) {
                Ok(0) => return Err(self.err("unexpected end of archive")),
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(self.err("i/o error while reading the archive")),
            }
        }
    }

    fn fill(&mut self, mut buf: &mut [u8]) -> Result<(), Error> {
        while !buf.is_empty() {
            let n = self.read_some(buf)?;
            buf = &mut buf[n..];
        }
        Ok(())
    }

    fn read_u64(&mut self) -> Result<u64, Error> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_padding(&mut self, len: u64) -> Result<(), Error> {
        let mut pad = [0u8; 8];
        let pad = &mut pad[..padding(len)];
        let at = self.offset;
        self.fill(pad)?;
        if pad.iter().any(|&b| b != 0) {
            return Err(Error::Nar { offset: at, what: "non-zero padding" });
        }
        Ok(())
    }

    /// Reads a string that must be a keyword: at most [`MAX_KEYWORD_LEN`] bytes.
    fn keyword(&mut self) -> Result<([u8; MAX_KEYWORD_LEN], usize), Error> {
        let at = self.offset;
        let len = self.read_u64()?;
        if len > MAX_KEYWORD_LEN as u64 {
            return Err(Error::Nar { offset: at, what: "unexpected token" });
        }
        let mut buf = [0u8; MAX_KEYWORD_LEN];
        self.fill(&mut buf[..len as usize])?;
        self.read_padding(len)?;
        Ok((buf, len as usize))
    }

    fn expect(&mut self, token: &[u8], what: &'static str) -> Result<(), Error> {
        let at = self.offset;
        let (buf, len) = self.keyword()?;
        if &buf[..len] != token {
            return Err(Error::Nar { offset: at, what });
        }
        Ok(())
    }

    /// Reads a string of at most `max` bytes; the bound keeps a forged length from allocating.
    fn read_bounded(&mut self, max: usize, too_long: &'static str) -> Result<Vec<u8>, Error> {
        let at = self.offset;
        let len = self.read_u64()?;
        if len > max as u64 {
            return Err(Error::Nar { offset: at, what: too_long });
        }
        let mut s = vec![0u8; len as usize];
        self.fill(&mut s)?;
        self.read_padding(len)?;
        Ok(s)
    }

    fn skip(&mut self, mut n: u64) -> Result<(), Error> {
        let mut scratch = [0u8; 16 * 1024];
        while n > 0 {
            let want = scratch.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            n -= self.read_some(&mut scratch[..want])? as u64;
        }
        Ok(())
    }
}

/// The entries of a [`Node::Directory`], keyed by raw name.
pub type Entries = BTreeMap<Vec<u8>, Node>;

/// A file system object as a value: what a NAR describes, restored in memory (for tests and
/// small archives; contents are held whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file.
    Regular {
        /// Whether the owner-execute bit is set.
        executable: bool,
        /// The file's bytes.
        contents: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// The raw target.
        target: Vec<u8>,
    },
    /// A directory, entries keyed by raw name (sorted as the NAR sorts them).
    Directory(Entries),
}

impl Node {
    /// Parses a whole NAR, which must be followed by the end of the input, into a tree.
    ///
    /// Contents are read in chunks as they arrive, never pre-allocated from a length field.
    pub fn parse<R: Read>(input: R) -> Result<Node, Error> {
        let mut parser = Parser::new(input);
        // Open directories: the name each has in its parent, and the entries so far.
        let mut stack: Vec<(Vec<u8>, Entries)> = Vec::new();
        let mut name = Vec::new();
        let mut root = None;
        while let Some(event) = parser.next()? {
            let node = match event {
                Event::Regular { executable, size } => {
                    let mut contents = Vec::new();
                    let mut chunk = vec![0u8; size.min(64 * 1024) as usize];
                    loop {
                        let n = parser.read_contents(&mut chunk)?;
                        if n == 0 {
                            break;
                        }
                        contents.extend_from_slice(&chunk[..n]);
                    }
                    Node::Regular { executable, contents }
                }
                Event::Symlink { target } => Node::Symlink { target },
                Event::Directory => {
                    stack.push((std::mem::take(&mut name), BTreeMap::new()));
                    continue;
                }
                Event::Entry { name: n } => {
                    name = n;
                    continue;
                }
                Event::DirectoryEnd => {
                    let Some((n, entries)) = stack.pop() else {
                        break;
                    };
                    name = n;
                    Node::Directory(entries)
                }
            };
            match stack.last_mut() {
                Some((_, entries)) => {
                    entries.insert(std::mem::take(&mut name), node);
                }
                None => root = Some(node),
            }
        }
        parser.finish()?;
        root.ok_or(Error::Nar { offset: 0, what: "archive incomplete" })
    }

    /// Serialises the tree as a NAR, the way `nix-store --dump` would serialise it from disk.
    pub fn to_nar(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_string(&mut out, MAGIC);
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        write_string(out, OPEN);
        write_string(out, TYPE);
        match self {
            Node::Regular { executable, contents } => {
                write_string(out, REGULAR);
                if *executable {
                    write_string(out, EXECUTABLE);
                    write_string(out, b"");
                }
                write_string(out, CONTENTS);
                write_string(out, contents);
            }
            Node::Symlink { target } => {
                write_string(out, SYMLINK);
                write_string(out, TARGET);
                write_string(out, target);
            }
            Node::Directory(entries) => {
                write_string(out, DIRECTORY);
                for (name, node) in entries {
                    write_string(out, ENTRY);
                    write_string(out, OPEN);
                    write_string(out, NAME);
                    write_string(out, name);
                    write_string(out, NODE);
                    node.write(out);
                    write_string(out, CLOSE);
                }
            }
        }
        write_string(out, CLOSE);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::NarHash;

    /// A NAR made of the magic and the given tokens, each framed as a string.
    fn nar_of(tokens: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for t in [MAGIC].iter().chain(tokens) {
            write_string(&mut out, t);
        }
        out
    }

    fn hello() -> Vec<u8> {
        nar_of(&[b"(", b"type", b"regular", b"contents", b"hello\n", b")"])
    }

    /// A directory whose entries, named `names` in that order, are empty regular files.
    fn dir_of(names: &[&[u8]]) -> Vec<u8> {
        let mut t: Vec<&[u8]> = vec![b"(", b"type", b"directory"];
        for n in names {
            t.extend_from_slice(&[b"entry", b"(", b"name", n, b"node", b"(", b"type"]);
            t.extend_from_slice(&[b"regular", b"contents", b"", b")", b")"]);
        }
        t.push(b")");
        nar_of(&t)
    }

    fn file(executable: bool, contents: &[u8]) -> Node {
        Node::Regular { executable, contents: contents.to_vec() }
    }

    fn dir(entries: Vec<(&[u8], Node)>) -> Node {
        Node::Directory(entries.into_iter().map(|(n, node)| (n.to_vec(), node)).collect())
    }

    fn what(nar: &[u8]) -> &'static str {
        match Node::parse(nar) {
            Err(Error::Nar { what, .. }) => what,
            other => panic!("expected a NAR error, got {other:?}"),
        }
    }

    #[test]
    fn hello_matches_protocol_doc() {
        let nar = hello();
        assert_eq!(nar.len(), 120);
        let hash = NarHash::digest(&nar).to_string();
        assert_eq!(hash, "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw");
        let node = Node::parse(&nar[..]).unwrap();
        assert_eq!(node, file(false, b"hello\n"));
        assert_eq!(node.to_nar(), nar);
    }

    #[test]
    fn content_offsets_match_protocol_doc() {
        // The directory example of docs/protocol.md §2.3, contents at 264 and 784 (docs/protocol.md §3.1).
        let sub = dir(vec![(b"b", file(false, b"hi\n"))]);
        let link = Node::Symlink { target: b"sub/b".to_vec() };
        let root = dir(vec![(b"a.sh", file(true, b"#!x\n")), (b"l", link), (b"sub", sub)]);
        let nar = root.to_nar();
        let mut p = Parser::new(&nar[..]);
        let mut offsets = Vec::new();
        while let Some(ev) = p.next().unwrap() {
            if let Event::Regular { .. } = ev {
                offsets.push(p.offset());
            }
        }
        assert_eq!(offsets, [264, 784]);
        assert_eq!(p.finish().unwrap(), nar.len() as u64);
    }

    #[test]
    fn partially_read_contents_are_skipped() {
        let nar = hello();
        let mut p = Parser::new(&nar[..]);
        let first = p.next().unwrap();
        assert_eq!(first, Some(Event::Regular { executable: false, size: 6 }));
        let mut two = [0u8; 2];
        assert_eq!(p.read_contents(&mut two).unwrap(), 2);
        assert_eq!(&two, b"he");
        assert_eq!(p.next().unwrap(), None);
        assert_eq!(p.read_contents(&mut two).unwrap(), 0);
        assert_eq!(p.finish().unwrap(), 120);
    }

    #[test]
    fn malformed_corpus() {
        let mut bad_magic = hello();
        bad_magic[8] = b'N';
        let mut bad_pad = hello();
        bad_pad[0x58 + 8 + 7] = 1; // the last padding byte of the contents
        let mut bad_token_pad = hello();
        bad_token_pad[0x18 + 8 + 3] = 1; // padding of "("
        let mut trailing = hello();
        trailing.push(0);
        let long_target = vec![b'a'; MAX_TARGET_LEN + 1];
        let unsorted = "directory entries not sorted or duplicated";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (bad_magic, "bad magic: not a nar"),
            (b"\x0d\0\0\0\0\0\0\0nix-archive-2\0\0\0".to_vec(), "bad magic: not a nar"),
            (b"\x0d\0\0\0\0\0\0\0nix-archive-1\0\0\x01".to_vec(), "non-zero padding"),
            (bad_pad, "non-zero padding"),
            (bad_token_pad, "non-zero padding"),
            (dir_of(&[b"b", b"a"]), unsorted),
            (dir_of(&[b"a", b"B"]), unsorted),
            (dir_of(&[b"a.b", b"a-b"]), unsorted),
            (dir_of(&[b"a", b"a"]), unsorted),
            (
                nar_of(&[b"(", b"type", b"regular", b"executable", b"1", b"contents", b"", b")"]),
                "executable marker with a non-empty value",
            ),
            (
                nar_of(&[b"(", b"type", b"regular", b"contents", b"", b"executable", b"", b")"]),
                "expected ) after the contents",
            ),
            (nar_of(&[b"(", b"type", b"fifo", b")"]), "unknown node type"),
            (nar_of(&[b"(", b"type", b"symlink", b"target", b"", b")"]), "empty symlink target or NUL in it"),
            (nar_of(&[b"(", b"type", b"symlink", b"target", &long_target, b")"]), "symlink target too long"),
            (nar_of(&[b"(", b"type", b"directory", b"oops"]), "expected entry or ) in a directory"),
            (nar_of(&[b"(", b"type", b"directory", b")", b")"]), "trailing data after the archive"),
            (trailing, "trailing data after the archive"),
        ];
        for (nar, expected) in cases {
            assert_eq!(what(&nar), expected);
        }
        assert_eq!(what(&dir_of(&[&[b'x'; 256]])), "entry name too long");
        for name in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert_eq!(what(&dir_of(&[name])), "invalid entry name", "{name:?}");
        }
        let odd: &[&[u8]] = &[b"B", b"a", b"a-b", b"a.b", &[b'x'; 255], b"\xff"];
        Node::parse(&dir_of(odd)[..]).unwrap();
    }

    #[test]
    fn forged_lengths_do_not_allocate() {
        // A contents length of 2^63 must fail at the end of input, not allocate or panic.
        let mut nar = nar_of(&[b"(", b"type", b"regular", b"contents"]);
        nar.extend_from_slice(&(1u64 << 63).to_le_bytes());
        nar.extend_from_slice(b"abc");
        assert_eq!(what(&nar), "unexpected end of archive");
        let mut nar = nar_of(&[b"(", b"type", b"symlink", b"target"]);
        nar.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(what(&nar), "symlink target too long");
        let mut nar = nar_of(&[]);
        nar.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(what(&nar), "unexpected token");
    }

    #[test]
    fn depth_is_bounded() {
        let mut t: Vec<&[u8]> = Vec::new();
        for _ in 0..=MAX_DEPTH {
            t.extend_from_slice(&[b"(", b"type", b"directory", b"entry", b"(", b"name", b"d"]);
            t.push(b"node");
        }
        assert_eq!(what(&nar_of(&t)), "directories nested too deeply");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let sub = dir(vec![(b"x", Node::Symlink { target: b"../y".to_vec() })]);
        let root = dir(vec![(b"a", file(true, b"abcdefghi")), (b"d", sub), (b"e", dir(vec![]))]);
        let nar = root.to_nar();
        for cut in 0..nar.len() {
            let parsed = Node::parse(&nar[..cut]);
            assert!(matches!(parsed, Err(Error::Nar { .. })), "cut at {cut}");
        }
        assert_eq!(Node::parse(&nar[..]).unwrap(), root);
    }

    #[test]
    fn errors_stick() {
        let mut p = Parser::new(&b"garbage!"[..]);
        assert!(p.next().is_err());
        assert!(p.next().is_err());
    }

    fn name() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 1..12),
            "[a-zA-Z0-9 ._-]{1,10}".prop_map(String::into_bytes),
            Just(b"a".to_vec()),
            Just(b"B".to_vec()),
        ]
        .prop_filter("valid name", |n| is_valid_name(n))
    }

    fn tree() -> impl Strategy<Value = Node> {
        let contents = proptest::collection::vec(any::<u8>(), 0..40);
        let target = proptest::collection::vec(1..=255u8, 1..20);
        let leaf = prop_oneof![
            (any::<bool>(), contents).prop_map(|(x, c)| Node::Regular { executable: x, contents: c }),
            target.prop_map(|target| Node::Symlink { target }),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            proptest::collection::btree_map(name(), inner, 0..6).prop_map(Node::Directory)
        })
    }

    proptest! {
        #[test]
        fn round_trip(node in tree()) {
            let nar = node.to_nar();
            prop_assert_eq!(Node::parse(&nar[..]).unwrap(), node);
        }

        #[test]
        fn garbage_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            node in tree(),
            at in any::<usize>(),
            byte in any::<u8>(),
        ) {
            let _ = Node::parse(&bytes[..]);
            let mut nar = node.to_nar();
            let at = at % nar.len();
            nar[at] = byte;
            let _ = Node::parse(&nar[..]);
        }
    }
}
