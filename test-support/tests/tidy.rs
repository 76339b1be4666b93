//! Tidy checks of the whole repository, cheap enough for every test run: the crate graph is
//! the rule `docs/ARCHITECTURE.md` writes down (parsed from the doc, so the two cannot drift),
//! `test-support` ships in nothing, and every Rust file opens with a `//!` line saying why it
//! exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root (this crate is one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("test-support is inside the repository").to_path_buf()
}

/// Crate name → the workspace crates it depends on.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The ```` ```crate-graph ```` block of ARCHITECTURE.md: one `crate -> dep, dep` line per
/// workspace crate (nothing after `->` for a leaf).
fn documented_graph() -> Graph {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let block = doc
        .split("```crate-graph\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/ARCHITECTURE.md has a ```crate-graph block");
    block
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (name, deps) = line.split_once("->").unwrap_or_else(|| panic!("not `crate -> deps`: {line:?}"));
            let deps = deps.split(',').map(str::trim).filter(|d| !d.is_empty()).map(str::to_owned).collect();
            (name.trim().to_owned(), deps)
        })
        .collect()
}

/// The workspace's packages as `cargo metadata` reports them.
fn metadata() -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["packages"].as_array().expect("packages").clone()
}

/// Every workspace crate's dependencies on workspace crates of `kinds` (`null` is a normal
/// dependency, then `"build"`, `"dev"`).
fn actual_graph(packages: &[serde_json::Value], kinds: &[Option<&str>]) -> Graph {
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| kinds.contains(&d["kind"].as_str()))
                .filter_map(|d| d["name"].as_str())
                .filter(|d| names.contains(d))
                .map(str::to_owned)
                .collect();
            (p["name"].as_str().expect("name").to_owned(), deps)
        })
        .collect()
}

#[test]
fn the_crate_graph_is_the_one_architecture_md_writes_down() {
    let packages = metadata();
    let actual = actual_graph(&packages, &[None, Some("build")]);
    let documented = documented_graph();
    assert_eq!(
        actual, documented,
        "the workspace's dependencies (left) differ from docs/ARCHITECTURE.md's crate-graph (right): \
         change the code, or the rule in the doc with a reason"
    );
}

#[test]
fn test_support_is_only_ever_a_dev_dependency() {
    let packages = metadata();
    let shipped = actual_graph(&packages, &[None, Some("build")]);
    let users: Vec<&String> =
        shipped.iter().filter(|(_, deps)| deps.contains("test-support")).map(|(n, _)| n).collect();
    assert!(users.is_empty(), "test-support must never ship, but these crates depend on it: {users:?}");
    // And the check means something: the crates with integration tests do use it.
    let dev = actual_graph(&packages, &[Some("dev")]);
    for user in ["subserve", "upstream", "signing"] {
        assert!(dev[user].contains("test-support"), "{user} no longer dev-depends on test-support");
    }
}

/// Every `.rs` file under `dir`, skipping build output (`target/` at any depth) and `.git`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let name = entry.file_name();
        if entry.file_type().unwrap().is_dir() {
            if name != "target" && name != ".git" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_doc_comment() {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 100, "found only {} .rs files under {}", files.len(), root.display());
    assert!(files.iter().any(|f| f.starts_with(root.join("fuzz"))), "the fuzz targets are checked too");
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .map(|f| f.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert!(missing.is_empty(), "these files do not open with a `//!` line saying why they exist: {missing:?}");
}
