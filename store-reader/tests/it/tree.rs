//! Random file trees for property tests: a proptest strategy over `formats::nar::Node` limited
//! to what a Linux filesystem can hold, a way to materialise one on disk, and the listing a
//! NAR implies, computed by the parser as an independent check of the writer's offsets.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use formats::nar::{is_valid_name, Event, Node, Parser};
use proptest::prelude::*;
use store_reader::listing::{Listing, ListingNode};

/// Entry names: odd ASCII (spaces, `-`, `.`), case pairs that sort differently as bytes
/// (`B` < `a`), unicode, and arbitrary bytes that are not UTF-8.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => "[a-zA-Z0-9 ._-]{1,8}".prop_map(String::into_bytes),
        1 => prop::sample::select(vec!["a", "B", "b", "A", "a-b", "a.b", "ü", "日本", " ", "-", ".x", "..."])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => "\\PC{1,4}".prop_map(String::into_bytes),
        1 => prop::collection::vec(1..=255u8, 1..6),
    ]
    .prop_filter("a valid file name", |n| is_valid_name(n))
}

/// A file tree: regular files (empty, small, executable or not), symlinks with arbitrary
/// (mostly dangling) targets, nested and empty directories.
pub(crate) fn tree() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        3 => (any::<bool>(), prop::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(executable, contents)| Node::Regular { executable, contents }),
        1 => prop::collection::vec(1..=255u8, 1..40).prop_map(|target| Node::Symlink { target }),
    ];
    leaf.prop_recursive(5, 60, 8, |inner| prop::collection::btree_map(name(), inner, 0..8).prop_map(Node::Directory))
}

/// Creates `node` at `path`. Modes vary beyond the owner-execute bit (which alone decides
/// `executable`) so that a writer looking at the wrong bit is caught.
pub(crate) fn materialise(node: &Node, path: &Path) {
    match node {
        Node::Regular { executable, contents } => {
            fs::write(path, contents).unwrap();
            let odd = contents.len() % 2 == 1;
            let mode = match (executable, odd) {
                (true, false) => 0o755,
                (true, true) => 0o700,
                (false, false) => 0o644,
                (false, true) => 0o655,
            };
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        Node::Symlink { target } => symlink(OsStr::from_bytes(target), path).unwrap(),
        Node::Directory(entries) => {
            fs::create_dir(path).unwrap();
            for (name, child) in entries {
                materialise(child, &path.join(OsStr::from_bytes(name)));
            }
        }
    }
}

/// The listing of a NAR, from the parser's events and offsets (independent of the writer).
pub(crate) fn listing_of_nar(nar: &[u8]) -> Listing {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut parser = Parser::new(nar);
    let mut stack: Vec<(String, BTreeMap<String, ListingNode>)> = Vec::new();
    let mut name = String::new();
    let mut root = None;
    while let Some(event) = parser.next().unwrap() {
        let node = match event {
            Event::Regular { executable, size } => {
                ListingNode::Regular { size, executable, nar_offset: parser.offset() }
            }
            Event::Symlink { target } => ListingNode::Symlink { target: lossy(&target) },
            Event::Directory => {
                stack.push((std::mem::take(&mut name), BTreeMap::new()));
                continue;
            }
            Event::Entry { name: n } => {
                name = lossy(&n);
                continue;
            }
            Event::DirectoryEnd => {
                let (n, entries) = stack.pop().unwrap();
                name = n;
                ListingNode::Directory { entries }
            }
        };
        match stack.last_mut() {
            Some((_, entries)) => {
                entries.entry(std::mem::take(&mut name)).or_insert(node);
            }
            None => root = Some(node),
        }
    }
    parser.finish().unwrap();
    Listing { version: 1, root: root.unwrap() }
}
