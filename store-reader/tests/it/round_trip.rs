//! Random trees on disk: `dump` parses back to the same tree and equals the parser crate's own
//! serialisation, `nar_size` and `list` agree with it, and every `dump_range` is a slice of it.

use proptest::prelude::*;
use store_reader::listing::list;
use store_reader::nar::{dump, dump_range, nar_size};

use crate::tree::{listing_of_nar, materialise, tree};

use formats::nar::Node;

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn dump_parses_back_to_the_tree(node in tree()) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        materialise(&node, &root);
        let mut nar = Vec::new();
        let written = dump(&root, &mut nar).unwrap();
        prop_assert_eq!(written, nar.len() as u64);
        prop_assert_eq!(&Node::parse(&nar[..]).unwrap(), &node);
        prop_assert!(nar == node.to_nar(), "dump differs from Node::to_nar");
        prop_assert_eq!(nar_size(&root).unwrap(), written);
        prop_assert_eq!(list(&root).unwrap(), listing_of_nar(&nar));
    }

    #[test]
    fn ranges_are_slices_of_the_dump(node in tree(), cuts in prop::collection::vec((any::<u64>(), any::<u64>()), 1..12)) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        materialise(&node, &root);
        let nar = node.to_nar();
        let len = nar.len() as u64;
        for (a, b) in cuts {
            // Mostly inside the NAR, sometimes past its end.
            let (a, b) = (a % (len + 16), b % (len + 16));
            let (start, end) = (a.min(b), a.max(b));
            let mut out = Vec::new();
            let written = dump_range(&root, start, end, &mut out).unwrap();
            let expected = &nar[(start.min(len) as usize)..(end.min(len) as usize)];
            prop_assert_eq!(written, out.len() as u64);
            prop_assert!(out == expected, "range {}..{} of {}", start, end, len);
        }
    }
}

#[test]
fn empty_and_inverted_ranges_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    assert_eq!(dump_range(dir.path(), 10, 10, &mut out).unwrap(), 0);
    assert_eq!(dump_range(dir.path(), 11, 10, &mut out).unwrap(), 0);
    assert_eq!(dump_range(dir.path(), 1000, 2000, &mut out).unwrap(), 0);
    assert!(out.is_empty());
}
