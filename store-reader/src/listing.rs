//! `.ls` listings (docs/protocol.md §3.1): the JSON directory tree of a store object with each
//! file's size and the offset of its contents in the NAR, so that tools can fetch one file
//! with a Range request.
//!
//! The listing comes from the same walk as the NAR writer ([`crate::nar`]), so its offsets are
//! those of the NAR the server sends; no file is opened. Serialised with `serde_json`, it is
//! byte-identical to what Nix 2.8 writes (keys in the order `type`, `size`, `executable`,
//! `narOffset`; `executable` only when true).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::nar::{walk, Visitor};
use crate::Error;

/// MIME type of a listing response.
pub const MIME_LISTING: &str = "application/json";

/// A whole `.ls` document: `{"version":1,"root":<node>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Format version; always 1.
    pub version: u32,
    /// The store object itself.
    pub root: ListingNode,
}

/// One node of a listing. Names and targets that are not UTF-8 are converted lossily.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ListingNode {
    /// A regular file.
    Regular {
        /// Length of the contents in bytes.
        size: u64,
        /// Whether the file is executable; written only when true.
        #[serde(default, skip_serializing_if = "is_false")]
        executable: bool,
        /// Offset of the first content byte in the uncompressed NAR; omitted when 0 (unknown).
        #[serde(rename = "narOffset", default, skip_serializing_if = "is_zero")]
        nar_offset: u64,
    },
    /// A symbolic link.
    Symlink {
        /// The link target.
        target: String,
    },
    /// A directory.
    Directory {
        /// The entries by name.
        entries: BTreeMap<String, ListingNode>,
    },
}

fn is_false(b: &bool) -> bool {
    !b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Lists the filesystem object at `root` (not following a symlink at `root`) from metadata
/// alone.
///
/// Fails like [`crate::nar::nar_size`]: on sockets, FIFOs, devices and objects that vanish.
pub fn list(root: &Path) -> Result<Listing, Error> {
    let mut builder = Builder { stack: Vec::new(), name: String::new(), root: None };
    walk(root, &mut builder)?;
    // The walk reports exactly one root node when it succeeds.
    let root = builder.root.unwrap_or(ListingNode::Directory { entries: BTreeMap::new() });
    Ok(Listing { version: 1, root })
}

/// Writes the `.ls` JSON of the filesystem object at `root` to `out` as the walk goes, in
/// memory bounded by the deepest directory's entry list, whatever the object's size: the
/// same bytes as serialising [`list`]'s result, for names that are UTF-8.
///
/// Entries come in NAR order (byte order of their names), which for UTF-8 names is the
/// order of [`list`]'s sorted map. Names that are not UTF-8 are converted lossily and kept
/// in NAR order; two that convert to the same text are both written.
pub fn write_listing(root: &Path, out: &mut dyn Write) -> Result<(), Error> {
    let mut writer = JsonWriter { out, first: Vec::new(), name: None };
    writer.put(b"{\"version\":1,\"root\":")?;
    walk(root, &mut writer)?;
    writer.put(b"}")
}

/// The visitor that writes the listing as it goes.
struct JsonWriter<'a> {
    out: &'a mut dyn Write,
    /// For each open directory: whether no entry has been written in it yet.
    first: Vec<bool>,
    /// Name of the entry whose node comes next.
    name: Option<String>,
}

impl JsonWriter<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out.write_all(bytes).map_err(Error::Write)
    }

    fn put_string(&mut self, text: &str) -> Result<(), Error> {
        serde_json::to_writer(&mut *self.out, text).map_err(|e| Error::Write(e.into()))
    }

    /// Writes `"name":` (after a comma unless first) for a node inside a directory.
    fn key(&mut self) -> Result<(), Error> {
        let Some(name) = self.name.take() else { return Ok(()) };
        if let Some(first) = self.first.last_mut() {
            let comma = !*first;
            *first = false;
            if comma {
                self.put(b",")?;
            }
        }
        self.put_string(&name)?;
        self.put(b":")
    }
}

impl Visitor for JsonWriter<'_> {
    fn regular(&mut self, _path: &Path, executable: bool, size: u64, offset: u64) -> Result<(), Error> {
        self.key()?;
        let mut node = format!("{{\"type\":\"regular\",\"size\":{size}");
        if executable {
            node.push_str(",\"executable\":true");
        }
        if offset != 0 {
            node.push_str(&format!(",\"narOffset\":{offset}"));
        }
        node.push('}');
        self.put(node.as_bytes())
    }

    fn symlink(&mut self, target: &OsStr) -> Result<(), Error> {
        self.key()?;
        self.put(b"{\"type\":\"symlink\",\"target\":")?;
        self.put_string(&target.to_string_lossy())?;
        self.put(b"}")
    }

    fn directory(&mut self) -> Result<(), Error> {
        self.key()?;
        self.first.push(true);
        self.put(b"{\"type\":\"directory\",\"entries\":{")
    }

    fn entry(&mut self, _path: &Path, name: &OsStr) -> Result<(), Error> {
        self.name = Some(name.to_string_lossy().into_owned());
        Ok(())
    }

    fn directory_end(&mut self) -> Result<(), Error> {
        self.first.pop();
        self.put(b"}}")
    }
}

/// The visitor that assembles the tree.
struct Builder {
    /// Open directories: the name each has in its parent, and its entries so far.
    stack: Vec<(String, BTreeMap<String, ListingNode>)>,
    /// Name of the entry whose node comes next.
    name: String,
    root: Option<ListingNode>,
}

impl Builder {
    fn add(&mut self, node: ListingNode) {
        match self.stack.last_mut() {
            // Two names that only differ in invalid UTF-8 collide after lossy conversion;
            // the first one is kept.
            Some((_, entries)) => {
                entries.entry(std::mem::take(&mut self.name)).or_insert(node);
            }
            None => self.root = Some(node),
        }
    }
}

impl Visitor for Builder {
    fn regular(&mut self, _path: &Path, executable: bool, size: u64, offset: u64) -> Result<(), Error> {
        self.add(ListingNode::Regular { size, executable, nar_offset: offset });
        Ok(())
    }

    fn symlink(&mut self, target: &OsStr) -> Result<(), Error> {
        self.add(ListingNode::Symlink { target: target.to_string_lossy().into_owned() });
        Ok(())
    }

    fn directory(&mut self) -> Result<(), Error> {
        self.stack.push((std::mem::take(&mut self.name), BTreeMap::new()));
        Ok(())
    }

    fn entry(&mut self, _path: &Path, name: &OsStr) -> Result<(), Error> {
        self.name = name.to_string_lossy().into_owned();
        Ok(())
    }

    fn directory_end(&mut self) -> Result<(), Error> {
        if let Some((name, entries)) = self.stack.pop() {
            self.name = name;
            self.add(ListingNode::Directory { entries });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    #[test]
    fn offsets_and_json_match_nix_2_8() {
        // docs/protocol.md §3.1, "Real 2.8 output".
        let dir = tempfile::tempdir().unwrap();
        let hello = dir.path().join("hello");
        fs::write(&hello, b"hello\n").unwrap();
        let json = serde_json::to_string(&list(&hello).unwrap()).unwrap();
        assert_eq!(json, r#"{"version":1,"root":{"type":"regular","size":6,"narOffset":96}}"#);

        let root = dir.path().join("example");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("a.sh"), b"#!x\n").unwrap();
        fs::set_permissions(root.join("a.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("sub/b", root.join("l")).unwrap();
        fs::write(root.join("sub/b"), b"hi\n").unwrap();
        let listing = list(&root).unwrap();
        let json = serde_json::to_string(&listing.root).unwrap();
        assert_eq!(
            json,
            r#"{"type":"directory","entries":{"a.sh":{"type":"regular","size":4,"executable":true,"narOffset":264},"l":{"type":"symlink","target":"sub/b"},"sub":{"type":"directory","entries":{"b":{"type":"regular","size":3,"narOffset":784}}}}}"#
        );
        let back: Listing = serde_json::from_str(&serde_json::to_string(&listing).unwrap()).unwrap();
        assert_eq!(back, listing);
    }

    /// [`write_listing`] writes what serialising [`list`] gives, byte for byte.
    fn assert_streams_the_same(root: &Path) {
        let mut streamed = Vec::new();
        write_listing(root, &mut streamed).unwrap();
        assert_eq!(String::from_utf8(streamed).unwrap(), serde_json::to_string(&list(root).unwrap()).unwrap());
    }

    #[test]
    fn the_streamed_listing_is_the_serialised_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        fs::create_dir_all(root.join("b/c/d")).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        for (i, name) in ["z", "a", "é\"quote\\", "b/c/x", "b/c/d/y", "b/0"].iter().enumerate() {
            fs::write(root.join(name), vec![b'x'; i * 7]).unwrap();
        }
        fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("../z\n", root.join("b/link")).unwrap();
        assert_streams_the_same(&root);
        assert_streams_the_same(&root.join("z"));
        assert_streams_the_same(&root.join("b/link"));
        assert_streams_the_same(&root.join("empty"));
    }

    #[test]
    fn empty_directory_and_symlink_root() {
        let dir = tempfile::tempdir().unwrap();
        let json = serde_json::to_string(&list(dir.path()).unwrap()).unwrap();
        assert_eq!(json, r#"{"version":1,"root":{"type":"directory","entries":{}}}"#);
        let link = dir.path().join("link");
        symlink("/nowhere", &link).unwrap();
        let json = serde_json::to_string(&list(&link).unwrap().root).unwrap();
        assert_eq!(json, r#"{"type":"symlink","target":"/nowhere"}"#);
    }
}
