//! The repository's references stay inside the repository: every `docs/protocol.md §N` names
//! a section the document has, no `§` is left without the document it points into, and no
//! committed file points at a path outside the checkout, which only its author's machine has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How code and docs cite the protocol document; what follows is `§N`, then `, §M` or
/// ` and §M` for more sections of it.
const CITATION: &str = "docs/protocol.md §";

/// Paths that exist only on the machine of whoever wrote them.
// Spelled in two halves, so that this file does not name them itself.
const OUTSIDE: [&str; 2] = [concat!("..", "/shared"), concat!("/wo", "rk/")];

/// This file, which has to spell out what it looks for.
const THIS_FILE: &str = "server/tests/it/doc_references.rs";

#[test]
fn every_protocol_citation_names_an_existing_section() {
    let root = repository_root();
    let protocol = std::fs::read_to_string(root.join("docs/protocol.md")).expect("docs/protocol.md exists");
    let sections = sections(&protocol);
    assert!(sections.contains("5.3") && sections.contains("9"), "sections found: {sections:?}");

    let mut bad = Vec::new();
    let mut citations = 0;
    for (path, text) in committed_text_files(&root) {
        if path == THIS_FILE {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let refs = section_refs(line, path == "docs/protocol.md");
            citations += refs.cited.len();
            for section in refs.cited.iter().filter(|s| !sections.contains(*s)) {
                bad.push(format!("{path}:{}: §{section} is not a section of docs/protocol.md", n + 1));
            }
            if refs.unattributed > 0 {
                bad.push(format!(
                    "{path}:{}: a § that names no document (write `{CITATION}N` or `RFC nnnn §N`): {line}",
                    n + 1
                ));
            }
        }
    }
    assert!(bad.is_empty(), "dangling references:\n{}", bad.join("\n"));
    // The code cites the document in about thirty places; none found means the scan is broken.
    assert!(citations >= 20, "only {citations} citations of docs/protocol.md found");
}

#[test]
fn no_committed_file_refers_outside_the_repository() {
    let root = repository_root();
    let mut bad = Vec::new();
    for (path, text) in committed_text_files(&root) {
        if path == THIS_FILE {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            for outside in OUTSIDE.iter().filter(|o| line.contains(*o)) {
                bad.push(format!("{path}:{}: refers to {outside}: {line}", n + 1));
            }
        }
    }
    assert!(bad.is_empty(), "references to paths outside the repository:\n{}", bad.join("\n"));
}

#[test]
fn the_scanner_reads_citations_as_written() {
    let refs = section_refs("see docs/protocol.md §5.3, §5.4 and §9.", false);
    assert_eq!(refs.cited, ["5.3", "5.4", "9"]);
    assert_eq!(refs.unattributed, 0);
    let refs = section_refs("(RFC 8878 §3.1.1.1) and docs/protocol.md §2.3; §3.1 gives", false);
    assert_eq!(refs.cited, ["2.3"]);
    assert_eq!(refs.unattributed, 1, "the bare §3.1 names no document");
    assert_eq!(section_refs("as in §4.2 above", true).cited, ["4.2"]);
    assert_eq!(section_refs("see ../docs/protocol.md §1.2 or protocol.md §1.3", false).unattributed, 2);
    let protocol = "# Title\n\n## 1. Nix\n### 1.2 narinfo\n## 10. More\n```\n## 7 in a code block\n```\n";
    assert_eq!(sections(protocol), BTreeSet::from(["1".to_owned(), "1.2".to_owned(), "10".to_owned()]));
}

/// The section numbers of the document's headings (`## 5. Guix`, `### 5.3 The signature`),
/// fenced code blocks excepted.
fn sections(doc: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut found = BTreeSet::new();
    for line in doc.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let Some(heading) = line.strip_prefix('#').filter(|_| !in_code) else { continue };
        let number = heading.trim_start_matches('#').trim_start().split(' ').next().unwrap_or("");
        let number = number.trim_end_matches('.');
        if !number.is_empty() && number.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
            found.insert(number.to_owned());
        }
    }
    found
}

/// What one line cites.
#[derive(Debug)]
struct SectionRefs {
    /// Section numbers cited in docs/protocol.md, in order.
    cited: Vec<String>,
    /// `§` signs that belong to no citation of docs/protocol.md nor of an RFC.
    unattributed: usize,
}

/// Reads the `§` references of a line. Inside the protocol document itself (`internal`), a
/// bare `§N` is one of its own sections.
fn section_refs(line: &str, internal: bool) -> SectionRefs {
    let mut refs = SectionRefs { cited: Vec::new(), unattributed: 0 };
    let mut rest = line;
    while let Some(at) = rest.find('§') {
        let before = &rest[..at];
        let after = &rest[at + '§'.len_utf8()..];
        let (number, tail) = section_number(after);
        // `docs/protocol.md ` as a path of its own, not the tail of a longer one.
        let cites = before
            .strip_suffix("docs/protocol.md ")
            .is_some_and(|b| !b.ends_with(|c: char| c.is_alphanumeric() || "/._-".contains(c)));
        if cites || internal {
            refs.cited.push(number.to_owned());
            // Further sections of the same chain: `, §M` or ` and §M`.
            let mut tail = tail;
            while let Some(next) = tail.strip_prefix(", §").or_else(|| tail.strip_prefix(" and §")) {
                let (number, t) = section_number(next);
                refs.cited.push(number.to_owned());
                tail = t;
            }
            rest = tail;
        } else {
            let rfc = before.trim_end().rsplit(' ').take(2).collect::<Vec<_>>();
            let is_rfc = rfc.len() == 2 && rfc[1].ends_with("RFC") && rfc[0].bytes().all(|b| b.is_ascii_digit());
            if !is_rfc {
                refs.unattributed += 1;
            }
            rest = tail;
        }
    }
    refs
}

/// Splits `5.3, §5.4` into `5.3` and `, §5.4`; a trailing full stop is not part of the number.
fn section_number(text: &str) -> (&str, &str) {
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let number = text[..end].trim_end_matches('.');
    (number, &text[number.len()..])
}

/// The workspace root: the parent of this package's directory.
fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the server package is inside the workspace").to_owned()
}

/// Every file git tracks, with its text; files that are not UTF-8 are left out.
fn committed_text_files(root: &Path) -> Vec<(String, String)> {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .expect("git runs (Debian package: git)");
    assert!(out.status.success(), "git ls-files failed: {}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8(out.stdout).expect("file names are UTF-8");
    let files: Vec<(String, String)> = listing
        .split('\0')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let bytes = std::fs::read(root.join(p)).ok()?;
            Some((p.to_owned(), String::from_utf8(bytes).ok()?))
        })
        .collect();
    assert!(files.iter().any(|(p, _)| p == "Cargo.toml"), "git listed no files under {}", root.display());
    files
}
