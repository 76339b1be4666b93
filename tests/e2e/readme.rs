//! The README's "Serving a cluster" commands, run as written (paths under a temp dir, the
//! loopback address for the listen address): the keys land where it says, with the modes it
//! says, and a node configured with the lines `keygen` printed substitutes from the server.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use crate::fixture;
use crate::harness::{check, scratch, NixEnv, Server, SUBSERVE};

/// The shell commands of the first `sh` block of the README section `heading`, with
/// continuation lines joined.
fn readme_commands(heading: &str) -> Vec<String> {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find(heading).unwrap_or_else(|| panic!("README has no {heading:?}"))..];
    let block = &section[section.find("```sh\n").expect("an sh block") + 6..];
    let block = &block[..block.find("```").expect("the block ends")];
    block.replace("\\\n", " ").lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

#[test]
fn the_readme_cluster_commands_work_as_written() {
    let fx = fixture::get();
    let dir = scratch("readme-cluster");
    let etc = dir.join("etc/subserve");
    let commands = readme_commands("## Serving a cluster");
    assert_eq!(commands.len(), 2, "{commands:?}");
    let args = |command: &str| -> Vec<String> {
        let command = command.replace("/etc/subserve", etc.to_str().unwrap());
        let mut words = command.split_whitespace().map(str::to_owned);
        assert_eq!(words.next().as_deref(), Some("subserve"), "{command}");
        words.collect()
    };

    let keygen = args(&commands[0]);
    assert_eq!(keygen[0], "keygen");
    let out = Command::new(SUBSERVE).args(&keygen).output().unwrap();
    check("subserve keygen (README)", &[], &out);
    assert_eq!(std::fs::metadata(&etc).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(etc.join("key.sec")).unwrap().permissions().mode() & 0o777, 0o600);
    let printed = String::from_utf8(out.stdout).unwrap();
    let trusted = printed.lines().find(|l| l.starts_with("trusted-public-keys = ")).expect("printed key line");
    assert!(printed.contains("substituters = http://head:5000"), "{printed}");

    // serve, as written but for the listen address (tests stay on loopback) and the store
    // (the fixture is a chroot store: the README's `--store-root`).
    let mut serve = args(&commands[1]);
    assert_eq!(serve.remove(0), "serve");
    let listen = serve.iter().position(|a| a == "--listen").expect("the README gives --listen");
    assert_eq!(serve[listen + 1], "0.0.0.0:5000", "nodes must be able to reach it");
    serve.drain(listen..listen + 2);
    let (state, root) = (dir.join("state"), fx.store_arg());
    let mut all: Vec<&str> = serve.iter().map(String::as_str).collect();
    all.extend(["--store-root", &root, "--state-dir", state.to_str().unwrap()]);
    let srv = Server::start(&all);

    let node = NixEnv::new(
        &dir.join("node"),
        &format!("substituters = {}\n{trusted}\nrequire-sigs = true\nfallback = false", srv.url()),
    );
    let dst = dir.join("node/dst").display().to_string();
    node.run("nix-store", &["--store", &dst, "--realise", &fx.top]);
    node.run("nix-store", &["--store", &dst, "--verify", "--check-contents"]);
}
