//! The audit trail end to end: the real Nix client substitutes the fixture closure through the
//! `subserve` binary, and `subserve audit who-fetched` (the built binary, given the server's
//! `--state-dir`) names 127.0.0.1 with the NAR bytes the server sent; `subserve audit` on a
//! missing database or with a bad date is one clear line and a failure.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use test_support::keys::keygen;

use crate::fixture;
use crate::harness::{scratch, Server, SUBSERVE};
use crate::node::substitute_fixture_closure;

/// `subserve audit <args>`.
fn audit(args: &[&str]) -> Output {
    Command::new(SUBSERVE).arg("audit").args(args).env_remove("SUBSERVE_STATE_DIR").output().unwrap()
}

/// The name of a path of the fixture's closure that no other path's name contains (so a
/// name pattern matches it alone), and its NarSize.
fn a_distinct_path(fx: &fixture::Fixture) -> (String, String, u64) {
    let names: Vec<&str> = fx.closure.iter().map(|p| &test_support::basename(p)[33..]).collect();
    let (path, name) = fx
        .closure
        .iter()
        .zip(&names)
        .filter(|(path, _)| **path != fx.big)
        .find(|(_, name)| names.iter().filter(|other| other.contains(**name)).count() == 1)
        .expect("a path whose name is in no other's");
    let size = fx.env.run("nix-store", &["--store", &fx.store_arg(), "-q", "--size", path]);
    (path.clone(), (*name).to_owned(), size.trim().parse().unwrap())
}

#[test]
fn who_fetched_names_the_node_and_the_bytes_after_a_real_substitution() {
    let fx = fixture::get();
    let dir = scratch("audit-who-fetched");
    let (secret, public) = keygen(&dir, "subserve-audit-1");
    let state = dir.join("state");
    let state_arg = state.to_str().unwrap();
    let srv = Server::on_fixture(&dir, &["--sign-key-file", &secret, "--compression", "none"]);
    substitute_fixture_closure(fx, &dir, &srv.url(), &public);

    let (path, name, nar_size) = a_distinct_path(fx);
    // Records are written as soon as each download has ended; poll, never sleep a fixed time.
    let deadline = Instant::now() + Duration::from_secs(60);
    let json = loop {
        let out = audit(&["who-fetched", &name, "--state-dir", state_arg, "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if json.as_array().is_some_and(|a| !a.is_empty()) {
            break json;
        }
        assert!(Instant::now() < deadline, "no audit record of {name} within 60 s:\n{}", srv.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    };
    let nodes = json.as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{json}");
    assert_eq!(nodes[0]["node"], "127.0.0.1", "{json}");
    assert_eq!(nodes[0]["bytes"], nar_size, "the NAR's bytes, as sent uncompressed: {json}");
    assert_eq!(nodes[0]["count"], 1, "{json}");
    assert_eq!(nodes[0]["paths"][0], test_support::basename(&path), "{json}");

    // The table, for people: the same figures, aligned under their headings.
    let out = audit(&["who-fetched", &name, "--state-dir", state_arg]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("node ") && header.contains(" first ") && header.ends_with("bytes  paths"), "{table}");
    let row = lines.next().unwrap();
    assert!(row.starts_with("127.0.0.1 "), "{table}");
    let bytes_end = header.find("bytes").unwrap() + "bytes".len();
    assert_eq!(row[..bytes_end].split_whitespace().last(), Some(nar_size.to_string().as_str()), "{table}");

    // By the whole store path, by the node, and --since: the same download, or none after it.
    let by_path = audit(&["who-fetched", &path, "--state-dir", state_arg, "--json"]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&by_path.stdout).unwrap()[0]["bytes"], nar_size);
    let node = String::from_utf8(audit(&["node", "127.0.0.1", "--state-dir", state_arg]).stdout).unwrap();
    assert_eq!(node.lines().count(), fx.closure.len() + 1, "one line per path substituted:\n{node}");
    let later = audit(&["who-fetched", &name, "--state-dir", state_arg, "--since", "2999-01-01"]);
    assert!(later.status.success());
    assert!(String::from_utf8(later.stdout).unwrap().starts_with("no NAR downloads of paths matching"));
}

#[test]
fn a_missing_database_or_a_bad_date_is_one_clear_line() {
    let dir = scratch("audit-errors");
    let out = audit(&["who-fetched", "glibc", "--state-dir", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("subserve: error: no audit database at "), "{stderr}");
    assert!(stderr.contains(&dir.join("audit.sqlite").display().to_string()), "{stderr}");

    // The state dir comes from the config file as serve reads it.
    let config = dir.join("subserve.toml");
    std::fs::write(&config, format!("state-dir = {:?}\n", dir.join("elsewhere"))).unwrap();
    let out = audit(&["node", "10.0.0.1", "--config", config.to_str().unwrap()]);
    assert!(String::from_utf8(out.stderr).unwrap().contains(&dir.join("elsewhere/audit.sqlite").display().to_string()));

    let out = audit(&["who-fetched", "glibc", "--since", "2024-13-01", "--state-dir", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("\"2024-13-01\" is not a date (YYYY-MM-DD) or an RFC 3339 time"),
        "a bad date is named:\n{stderr}"
    );
    let out = audit(&["node", "not-an-address", "--state-dir", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr).unwrap().contains("not-an-address"));
}
