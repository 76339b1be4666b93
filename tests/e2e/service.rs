//! subserve as an operator runs it as a service: the client configuration it prints, one
//! owner per cache directory, a Unix socket, sockets passed by systemd, and key mistakes
//! named for what they are.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

use test_support::keys::keygen;

use crate::fixture;
use crate::harness::{scratch, Server, SUBSERVE};
use crate::node::client;

/// Runs `subserve serve` on the fixture store with `extra` flags, expecting it to fail;
/// returns its stderr.
fn serve_on_fixture_fails(state: &std::path::Path, extra: &[&str]) -> String {
    let fx = fixture::get();
    let base = ["--listen", "127.0.0.1:0", "--upstream", "none", "--store-root", &fx.store_arg()];
    serve_fails(&[&base[..], &["--state-dir", state.to_str().unwrap()], extra].concat())
}

/// Runs `subserve serve ARGS` expecting it to fail; returns its stderr.
fn serve_fails(args: &[&str]) -> String {
    let out = Command::new(SUBSERVE).arg("serve").args(args).stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success(), "serve {args:?} started");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn serve_prints_the_client_configuration_and_warns_when_nodes_cannot_reach_it() {
    let fx = fixture::get();
    let dir = scratch("service-config");
    let (secret, public) = keygen(&dir, "head-1");
    let mut srv = Server::on_fixture(&dir, &["--sign-key-file", &secret, "--url", "http://head.example:5000"]);
    srv.stop();
    let log = srv.log.lock().unwrap();
    assert!(log.contains("nodes cannot reach http://head.example:5000"), "{log}");
    // The printed lines go to stdout; the harness discards it, so ask again without serving.
    drop(log);
    let mut child = Command::new(SUBSERVE)
        .args(["serve", "--listen", "127.0.0.1:0", "--upstream", "none", "--bake", "none"])
        .args(["--store-root", &fx.store_arg(), "--state-dir", dir.join("state").to_str().unwrap()])
        .args(["--sign-key-file", &secret, "--url", "http://head.example:5000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("trusted-public-keys") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "no client configuration printed: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("substituters = http://head.example:5000\n"), "{text}");
    assert!(text.contains(&format!("trusted-public-keys = {public}")), "{text}");
}

#[test]
fn a_second_server_on_the_same_cache_exits_naming_the_first() {
    let fx = fixture::get();
    let dir = scratch("service-lock");
    let cache = dir.join("cache");
    let state = dir.join("state");
    let args = [
        "--store-root",
        &fx.store_arg(),
        "--state-dir",
        state.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--bake",
        "zstd",
    ];
    let first = Server::start(&args);
    let err = serve_fails(&[&["--listen", "127.0.0.1:0", "--upstream", "none"], &args[..]].concat());
    assert!(err.contains("is in use by process"), "{err}");
    assert!(err.contains(cache.to_str().unwrap()), "{err}");
    assert_eq!(err.lines().filter(|l| l.contains("error")).count(), 1, "{err}");
    drop(first);

    // A cache that belongs to another store directory is refused and left as it is.
    let info = std::fs::read_to_string(cache.join("nix-cache-info")).unwrap();
    let err = serve_fails(&[
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "none",
        "--store-dir",
        "/gnu/store",
        "--real-store-dir",
        &fx.root.join("nix/store").display().to_string(),
        "--db",
        &fx.root.join("nix/var/nix/db/db.sqlite").display().to_string(),
        "--state-dir",
        state.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--bake",
        "zstd",
    ]);
    assert!(err.contains("belongs to a store of /nix/store, not /gnu/store"), "{err}");
    assert_eq!(std::fs::read_to_string(cache.join("nix-cache-info")).unwrap(), info);
}

#[test]
fn serves_on_a_unix_socket() {
    let fx = fixture::get();
    let dir = scratch("service-unix");
    let socket = dir.join("subserve.sock");
    // A stale socket file of an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut child = Command::new(SUBSERVE)
        .args(["serve", "--upstream", "none", "--bake", "none", "--listen"])
        .arg(format!("unix:{}", socket.display()))
        .args(["--store-root", &fx.store_arg(), "--state-dir", dir.join("state").to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reply = String::new();
    for _ in 0..200 {
        if let Ok(mut s) = UnixStream::connect(&socket) {
            s.write_all(b"GET /nix-cache-info HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
            s.read_to_string(&mut reply).unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("StoreDir: /nix/store"), "{reply}");
}

/// `systemd-socket-activate` passes a listening socket as systemd does (`LISTEN_FDS`); the
/// real Nix client substitutes through it.
#[test]
fn serves_the_socket_systemd_passes() {
    let fx = fixture::get();
    let dir = scratch("service-socket-activation");
    let (secret, public) = keygen(&dir, "activated-1");
    // A free port: bound by the activator, never by subserve.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = match Command::new("systemd-socket-activate")
        .args(["--listen", &addr, "--", SUBSERVE, "serve", "--upstream", "none", "--bake", "none"])
        .args(["--store-root", &fx.store_arg(), "--state-dir", dir.join("state").to_str().unwrap()])
        .args(["--sign-key-file", &secret, "--listen", "127.0.0.1:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("cannot run systemd-socket-activate ({e}): install it with `apt-get install systemd`"),
    };
    let env = client(&dir.join("node"), &format!("http://{addr}"), &public);
    let dst = dir.join("node/dst").display().to_string();
    let path = fx.closure.iter().find(|p| p.ends_with("-fixed-output.txt")).expect("fixture path");
    let mut realised = None;
    for _ in 0..100 {
        let out = env.cmd("nix-store").args(["--store", &dst, "--realise", path]).output().unwrap();
        if out.status.success() {
            realised = Some(out);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(realised.is_some(), "the client never substituted through the passed socket");
    env.run("nix-store", &["--store", &dst, "--verify", "--check-contents"]);
}

#[test]
fn keygen_makes_its_directories_private_and_a_public_key_is_named_as_such() {
    let dir = scratch("service-keys");
    let keys = dir.join("etc/subserve");
    let out = Command::new(SUBSERVE)
        .args(["keygen", "--name", "head-1", "--secret-out"])
        .arg(keys.join("key.sec"))
        .arg("--public-out")
        .arg(keys.join("key.pub"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--listen 0.0.0.0:5000"), "{stderr}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o700);

    let err = serve_on_fixture_fails(&dir.join("state"), &["--sign-key-file", keys.join("key.pub").to_str().unwrap()]);
    assert!(err.contains("holds a public key"), "{err}");
    assert!(!err.contains("chmod"), "{err}");
}

/// A self-signed certificate for 127.0.0.1 made by openssl: (certificate, key), key 0600.
fn certificate(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): install it with `apt-get install openssl`"));
    crate::harness::check("openssl req", &[], &out);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (cert, key)
}

/// `curl --cacert CA https://…/nix-cache-info`: whether it verified and got the cache info.
fn curl_https(ca: &std::path::Path, srv: &Server) -> bool {
    let out = Command::new("curl")
        .args(["-sf", "--cacert"])
        .arg(ca)
        .arg(format!("https://{}/nix-cache-info", srv.addr))
        .output()
        .expect("curl");
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("StoreDir: /nix/store")
}

#[test]
fn serves_https_to_the_real_client_and_takes_a_renewed_certificate_on_sighup() {
    let fx = fixture::get();
    let dir = scratch("service-tls");
    let (secret, public) = keygen(&dir, "tls-1");
    let (cert, key) = certificate(&dir, "first");
    let srv = Server::on_fixture(
        &dir,
        &["--sign-key-file", &secret, "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let env = client(&dir.join("node"), &format!("https://{}", srv.addr), &public);
    let dst = dir.join("node/dst").display().to_string();
    let path = fx.closure.iter().find(|p| p.ends_with("-fixed-output.txt")).expect("fixture path");
    let out = env.cmd("nix-store").env("NIX_SSL_CERT_FILE", &cert).args(["--store", &dst, "--realise", path]).output();
    crate::harness::check("nix-store --realise over https", &[], &out.unwrap());
    assert!(curl_https(&cert, &srv));

    // A renewed certificate replaces the files; SIGHUP makes new connections use it.
    let (new_cert, new_key) = certificate(&dir, "renewed");
    let old_cert = dir.join("first-as-issued.crt");
    std::fs::copy(&cert, &old_cert).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let pid = srv.pid().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let started = std::time::Instant::now();
    while !srv.log.lock().unwrap().contains("reloaded the TLS certificate") {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{}", srv.log.lock().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(curl_https(&new_cert, &srv), "the renewed certificate is served");
    assert!(!curl_https(&old_cert, &srv), "the old certificate is still served");

    // An unusable pair on reload keeps the one in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    while !srv.log.lock().unwrap().contains("keeping the TLS certificate in use") {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{}", srv.log.lock().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(curl_https(&new_cert, &srv));

    // A key others can read is refused at start-up.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&new_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = serve_on_fixture_fails(
        &dir.join("state"),
        &["--tls-cert", new_cert.to_str().unwrap(), "--tls-key", new_key.to_str().unwrap()],
    );
    assert!(err.contains("chmod 600"), "{err}");
}

/// Under systemd's `Type=notify`: READY once the sockets are bound, RELOADING then READY on
/// SIGHUP, STOPPING on SIGTERM, each sent to `NOTIFY_SOCKET`.
#[test]
fn tells_systemd_when_it_is_ready_reloading_and_stopping() {
    let dir = scratch("service-notify");
    let socket_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    notify.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let mut srv = Server::start_with_env(
        &["--store-root", &fixture::get().store_arg(), "--state-dir", dir.join("state").to_str().unwrap()],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let next = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a notification within 60 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(next().contains("READY=1"));
    let pid = srv.pid().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    assert!(next().contains("RELOADING=1"));
    assert!(next().contains("READY=1"));
    assert!(srv.stop().success());
    assert!(next().contains("STOPPING=1"));
}

/// SIGHUP re-reads the config file: what changed is served from the next request on, a
/// download in flight finishes untouched, and a broken or restart-only change keeps the
/// configuration in force with one error line.
#[test]
fn sighup_reloads_the_config_file_without_dropping_a_download() {
    let fx = fixture::get();
    let dir = scratch("service-reload");
    let config = dir.join("subserve.toml");
    let write = |extra: &str| {
        let base = format!("store-root = \"{}\"\nstate-dir = \"{}\"\n", fx.store_arg(), dir.join("state").display());
        std::fs::write(&config, format!("{base}{extra}")).unwrap();
    };
    write("priority = 7\ncompression = \"none\"\n");
    let srv = Server::start(&["--config", config.to_str().unwrap()]);
    let info = |srv: &Server| String::from_utf8(test_support::http::get(srv.addr, "/nix-cache-info").body).unwrap();
    let narinfo = |srv: &Server| {
        let hash = &fx.big["/nix/store/".len()..][..32];
        String::from_utf8(test_support::http::get(srv.addr, &format!("/{hash}.narinfo")).body).unwrap()
    };
    assert!(info(&srv).contains("Priority: 7"));
    assert!(narinfo(&srv).contains("Compression: none"));
    // A 256 MiB download, read slowly across the reload.
    let url = narinfo(&srv).lines().find_map(|l| l.strip_prefix("URL: ")).unwrap().to_owned();
    let mut download = std::net::TcpStream::connect(srv.addr).unwrap();
    write!(download, "GET /{url} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut first = vec![0u8; 1 << 20];
    download.read_exact(&mut first).unwrap();

    let pid = srv.pid().to_string();
    let hup_and_wait = |what: &str| {
        let seen = srv.log.lock().unwrap().matches(what).count();
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
        let started = std::time::Instant::now();
        while srv.log.lock().unwrap().matches(what).count() == seen {
            assert!(started.elapsed() < std::time::Duration::from_secs(30), "{}", srv.log.lock().unwrap());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    write("priority = 9\ncompression = \"zstd\"\n");
    hup_and_wait("reloaded the configuration");
    assert!(info(&srv).contains("Priority: 9"));
    assert!(narinfo(&srv).contains("Compression: zstd"));
    assert!(srv.log.lock().unwrap().contains("priority of the store at /"));

    write("priority = 10\nno-such-key = 1\n");
    hup_and_wait("keeping the configuration in force");
    assert!(info(&srv).contains("Priority: 9"));
    write("priority = 10\ndialect = \"guix\"\n");
    hup_and_wait("keeping the configuration in force");
    assert!(srv.log.lock().unwrap().contains("restart subserve to apply it"));
    assert!(info(&srv).contains("Priority: 9"));

    // The download begun before the reloads ends whole: head, then NarSize bytes of NAR.
    let mut rest = Vec::new();
    download.read_to_end(&mut rest).unwrap();
    let all = [first, rest].concat();
    let body = &all[all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let size: usize = narinfo(&srv).lines().find_map(|l| l.strip_prefix("NarSize: ")).unwrap().parse().unwrap();
    assert_eq!(body.len(), size);
}
