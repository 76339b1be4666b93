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

/// `--log-format json` writes every line as one JSON object, the request lines with their
/// fields; the text format has no colour codes when stderr is not a terminal.
#[test]
fn log_lines_are_json_objects_or_plain_text() {
    let dir = scratch("log-format");
    let wait_for = |srv: &Server, what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !srv.log.lock().unwrap().contains(what) {
            assert!(std::time::Instant::now() < deadline, "no {what} in:\n{}", srv.log.lock().unwrap());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let json = Server::on_fixture(&dir.join("json"), &["--log-format", "json"]);
    assert_eq!(get(json.addr, "/nix-cache-info").status, 200);
    wait_for(&json, "/nix-cache-info");
    let log = json.log.lock().unwrap().clone();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(lines.iter().all(|l| l["level"].is_string() && l["fields"]["message"].is_string()), "{log}");
    let request = lines.iter().find(|l| l["fields"]["path"] == "/nix-cache-info").expect("the request line");
    assert_eq!(
        (request["fields"]["message"].as_str(), request["fields"]["status"].as_u64()),
        (Some("request"), Some(200))
    );

    // Without the harness's NO_COLOR (empty is unset): stderr being a pipe must be enough.
    let root = fixture::get().store_arg();
    let state = dir.join("text").join("state");
    let text = Server::start_with_env(
        &["--store-root", root.as_str(), "--state-dir", state.to_str().unwrap()],
        &[("NO_COLOR", "")],
    );
    assert_eq!(get(text.addr, "/nix-cache-info").status, 200);
    wait_for(&text, "/nix-cache-info");
    let log = text.log.lock().unwrap().clone();
    assert!(log.contains("status=200") && !log.contains('\x1b'), "{log}");
}
