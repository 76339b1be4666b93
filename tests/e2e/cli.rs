//! The `subserve` command line as an operator meets it: keygen output, start-up errors as
//! one clear line, configuration precedence, graceful shutdown.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use test_support::http::get;

use crate::fixture;
use crate::harness::{scratch, Server, SUBSERVE};

#[test]
fn keygen_writes_private_key_and_prints_client_config() {
    let dir = scratch("cli-keygen");
    let (sec, public) = (dir.join("k.sec"), dir.join("k.pub"));
    let run = || {
        Command::new(SUBSERVE)
            .args(["keygen", "--name", "head.example-1", "--url", "http://head:5000", "--secret-out"])
            .arg(&sec)
            .arg("--public-out")
            .arg(&public)
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let pub_text = std::fs::read_to_string(&public).unwrap();
    assert!(pub_text.starts_with("head.example-1:"));
    assert!(stdout.contains("substituters = http://head:5000\n"), "{stdout}");
    assert!(stdout.contains(&format!("trusted-public-keys = {}", pub_text.trim())), "{stdout}");
    assert_eq!(std::fs::metadata(&sec).unwrap().permissions().mode() & 0o777, 0o600);
    let secret_text = std::fs::read_to_string(&sec).unwrap();
    assert!(!stdout.contains(secret_text.split(':').nth(1).unwrap()));

    // Never overwrites an existing key.
    let again = run();
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&sec).unwrap(), secret_text);
}

fn serve_fails(args: &[&str]) -> String {
    let out = Command::new(SUBSERVE)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--upstream", "none"])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve {args:?} started");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{stderr}");
    errors[0].to_owned()
}

#[test]
fn startup_errors_are_one_clear_line() {
    let fx = fixture::get();
    let dir = scratch("cli-errors");
    let state = dir.join("state").display().to_string();
    let root = fx.store_arg();

    let line =
        serve_fails(&["--store-dir", "/nix/store", "--real-store-dir", "/nonexistent/store", "--state-dir", &state]);
    assert!(line.contains("/nonexistent/store"), "{line}");

    let line = serve_fails(&["--store-root", &root, "--db", "/nonexistent/db.sqlite", "--state-dir", &state]);
    assert!(line.contains("/nonexistent/db.sqlite"), "{line}");

    let loose = dir.join("loose.sec");
    let out = Command::new(SUBSERVE)
        .args(["keygen", "--name", "k-1", "--secret-out"])
        .arg(&loose)
        .arg("--public-out")
        .arg(dir.join("loose.pub"))
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let line = serve_fails(&["--store-root", &root, "--sign-key-file", loose.to_str().unwrap(), "--state-dir", &state]);
    assert!(line.contains("chmod 600"), "{line}");

    let bad_toml = dir.join("bad.toml");
    std::fs::write(&bad_toml, "listen = \"127.0.0.1:0\"\nno-such-key = 1\n").unwrap();
    let line = serve_fails(&["--config", bad_toml.to_str().unwrap()]);
    assert!(line.contains("no-such-key"), "{line}");

    let out = Command::new(SUBSERVE).args(["serve", "--compression", "rar"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rar"));
}

/// flag > SUBSERVE_* > config file, observed through `/nix-cache-info`; SIGTERM exits 0.
#[test]
fn config_precedence_and_graceful_shutdown() {
    let fx = fixture::get();
    let dir = scratch("cli-config");
    let config = dir.join("subserve.toml");
    std::fs::write(
        &config,
        format!("store-root = \"{}\"\nstate-dir = \"{}\"\npriority = 7\n", fx.store_arg(), dir.join("state").display()),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let priority = |srv: &Server| {
        let body = String::from_utf8(get(srv.addr, "/nix-cache-info").body).unwrap();
        body.lines().find_map(|l| l.strip_prefix("Priority: ")).unwrap().to_owned()
    };
    let srv = Server::start(&["--config", cfg]);
    assert_eq!(priority(&srv), "7");
    drop(srv);
    let srv = Server::start_with_env(&["--config", cfg], &[("SUBSERVE_PRIORITY", "8")]);
    assert_eq!(priority(&srv), "8");
    drop(srv);
    let mut srv = Server::start_with_env(&["--config", cfg, "--priority", "9"], &[("SUBSERVE_PRIORITY", "8")]);
    assert_eq!(priority(&srv), "9");
    let status = srv.stop();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(srv.log.lock().unwrap().contains("shutting down"));
}
