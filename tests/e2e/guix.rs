//! Serving a Guix-layout store (`/gnu/store`, made by real Nix in a chroot) to Guix clients:
//! the Guix narinfo dialect and its traps checked against `nix-store`, every offered NAR URL,
//! the same answers from a schema-7 (Guix) database, and libgcrypt accepting every narinfo.
//! HEAD, `/file/…`, pipelining and log encodings are tested in process (`server/tests/it`).

use std::process::Output;
use std::time::Duration;

use formats::guix::GuixNarInfo;
use formats::nar::Node;
use formats::{Compression, NarHash};
use test_support::compression::decompress;
use test_support::gcrypt::gcrypt;
use test_support::hash_part;
use test_support::http::get;

use crate::fixture;
use crate::harness::{scratch, Server};
use crate::node::assert_libgcrypt_accepts_all;

fn serve(name: &str, extra: &[&str]) -> Server {
    let fx = fixture::guix();
    let dir = scratch(name);
    let mut args = vec!["--store-root", fx.root.to_str().unwrap(), "--store-dir", "/gnu/store"];
    let state = dir.join("state").display().to_string();
    args.extend(["--state-dir", &state]);
    args.extend(extra);
    Server::start(&args)
}

#[test]
fn narinfos_follow_the_guix_dialect_and_avoid_its_traps() {
    let fx = fixture::guix();
    let srv = serve("guix-narinfo", &[]);
    assert!(srv.log.lock().unwrap().contains("dialect=guix"), "a /gnu/store store is served to Guix clients");
    let info = String::from_utf8(get(srv.addr, "/nix-cache-info").body).unwrap();
    assert!(info.starts_with("StoreDir: /gnu/store\n"), "{info}");
    for path in &fx.closure {
        let reply = get(srv.addr, &format!("/{}.narinfo", hash_part(path)));
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some("application/x-nix-narinfo"));
        assert_eq!(reply.header("cache-control"), Some("max-age=86400"));
        assert_eq!(reply.header("content-length").unwrap().parse::<usize>().unwrap(), reply.body.len());
        let text = String::from_utf8(reply.body).unwrap();
        // The traps of docs/protocol.md §9, as regression checks.
        assert!(!text.contains('\r'), "CR in {text}");
        assert!(!text.contains("\n\n") && text.ends_with('\n'), "blank line or no final newline in {text}");
        for line in text.lines() {
            assert!(!line.ends_with(' ') || line == "References: ", "trailing space in {line:?}");
        }
        assert!(text.lines().any(|l| l.starts_with("References:")), "References missing");
        let narinfo = GuixNarInfo::parse(&text).unwrap();
        assert_eq!(narinfo.render(), text);
        assert_eq!(&narinfo.store_path, path);
        assert!(narinfo.references.iter().all(|r| !r.contains('/')), "full paths in References");
        let sizes = narinfo.urls.iter().filter(|u| u.file_size.is_some()).count();
        assert!(sizes == 0 || sizes == narinfo.urls.len(), "FileSize on some URLs only");
        let compressions: Vec<&str> = narinfo.urls.iter().map(|u| u.compression.as_str()).collect();
        assert_eq!(compressions, ["zstd", "gzip", "none"]);
        let nar_hash = fx.env.run("nix-store", &["--store", &fx.store_uri(), "-q", "--hash", path]);
        assert_eq!(narinfo.nar_hash, NarHash::parse(nar_hash.trim()).unwrap());
    }
    let miss = get(srv.addr, "/00000000000000000000000000000000.narinfo");
    assert_eq!(miss.status, 404);
    assert_eq!(miss.header("cache-control"), Some("max-age=300"));
    assert_eq!(miss.header("content-length").unwrap().parse::<usize>().unwrap(), miss.body.len());
}

/// Guix clients never check NarSize and never re-serialise, but the daemon records what it is
/// given: every URL must yield exactly the canonical NAR.
#[test]
fn every_offered_url_yields_the_canonical_nar() {
    let fx = fixture::guix();
    let srv = serve("guix-nars", &["--compression", "zstd,gzip,xz,none"]);
    for path in &fx.closure {
        let text = String::from_utf8(get(srv.addr, &format!("/{}.narinfo", hash_part(path))).body).unwrap();
        let narinfo = GuixNarInfo::parse(&text).unwrap();
        assert_eq!(narinfo.urls.len(), 4);
        for url in &narinfo.urls {
            let reply = get(srv.addr, &format!("/{}", url.url));
            assert_eq!(reply.status, 200, "{}", url.url);
            assert_eq!(reply.header("content-encoding"), None);
            let nar = decompress(url.compression.known().unwrap(), &reply.body);
            assert_eq!(nar.len() as u64, narinfo.nar_size, "{}", url.url);
            assert_eq!(NarHash::digest(&nar), narinfo.nar_hash, "{}", url.url);
            assert_eq!(Node::parse(&nar[..]).unwrap().to_nar(), nar, "{}: not canonical", url.url);
        }
    }
    // The same basename with another name, or an unknown compression, is not served.
    let odd = hash_part(&fx.odd);
    assert_eq!(get(srv.addr, &format!("/nar/zstd/{odd}-other-name")).status, 404);
    assert_eq!(get(srv.addr, &format!("/nar/lzip/{}", &fx.odd[11..])).status, 404);
    assert_eq!(get(srv.addr, &format!("/nar/zstd/{odd}")).status, 400);
}

/// `guix substitute` writes up to 1000 narinfo GETs back to back on one connection and reads
/// the answers in order.
/// The same store behind Guix's own schema 7 (no `ultimate`, `sigs`, `ca`) gives the same
/// narinfos.
#[test]
fn a_schema_7_database_serves_the_same_narinfos() {
    let fx = fixture::guix();
    let dir = scratch("guix-schema-7");
    let db = dir.join("db.sqlite");
    std::fs::copy(fx.root.join("var/guix/db/db.sqlite"), &db).unwrap();
    for suffix in ["-wal", "-shm"] {
        let wal = fx.root.join(format!("var/guix/db/db.sqlite{suffix}"));
        if wal.exists() {
            std::fs::copy(&wal, dir.join(format!("db.sqlite{suffix}"))).unwrap();
        }
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "ALTER TABLE ValidPaths DROP COLUMN ultimate; ALTER TABLE ValidPaths DROP COLUMN sigs;
         ALTER TABLE ValidPaths DROP COLUMN ca;
         CREATE TABLE IF NOT EXISTS FailedPaths (path text primary key not null, time integer not null);",
    )
    .unwrap();
    drop(conn);
    let nix = serve("guix-schema-10", &[]);
    let seven = serve("guix-schema-7-server", &["--db", db.to_str().unwrap()]);
    for path in &fx.closure {
        let url = format!("/{}.narinfo", hash_part(path));
        let (a, b) = (get(nix.addr, &url), get(seven.addr, &url));
        // Each server generated its own key: compare everything but the signature.
        let unsigned = |body: &[u8]| {
            let text = String::from_utf8(body.to_vec()).unwrap();
            text.lines().filter(|l| !l.starts_with("Signature:")).collect::<Vec<_>>().join("\n")
        };
        assert_eq!((a.status, unsigned(&a.body)), (b.status, unsigned(&b.body)), "{path}");
    }
}

#[test]
fn libgcrypt_accepts_the_narinfos_signed_with_a_generated_key() {
    let dir = scratch("guix-libgcrypt-generated");
    let srv = serve("guix-libgcrypt-generated-server", &[]);
    let public = get(srv.addr, "/signing-key.pub");
    assert_eq!(public.status, 200);
    let text = String::from_utf8(public.body).unwrap();
    assert!(text.starts_with("(public-key \n (ecc \n  (curve Ed25519)\n"), "{text}");
    let public_file = dir.join("signing-key.pub");
    std::fs::write(&public_file, &text).unwrap();
    assert_libgcrypt_accepts_all(&srv, "", &dir, &public_file);
}

/// An operator replacing guix publish points subserve at the existing key: every node keeps
/// trusting it.
#[test]
fn a_key_made_by_libgcrypt_signs_for_subserve() {
    let dir = scratch("guix-libgcrypt-key");
    let (secret, public) = (dir.join("signing-key.sec"), dir.join("signing-key.pub"));
    gcrypt(&[std::path::Path::new("genkey"), &secret, &public]);
    let mut perms = std::fs::metadata(&secret).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&secret, perms).unwrap();
    let srv = serve("guix-libgcrypt-key-server", &["--sign-key-file", secret.to_str().unwrap()]);
    assert_eq!(get(srv.addr, "/signing-key.pub").body, std::fs::read(&public).unwrap());
    assert_libgcrypt_accepts_all(&srv, "", &dir, &public);
}

#[test]
fn a_nix_key_cannot_sign_a_guix_store() {
    let fx = fixture::guix();
    let dir = scratch("guix-wrong-key");
    let (secret, _) = test_support::keys::keygen(&dir, "nix-1");
    let out = std::process::Command::new(crate::harness::SUBSERVE)
        .args(["serve", "--listen", "127.0.0.1:0", "--upstream", "none", "--store-dir", "/gnu/store", "--store-root"])
        .arg(&fx.root)
        .args(["--sign-key-file", &secret])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is a Nix key"), "{stderr}");
}

/// Runs `subserve keygen --format guix` into `dir/<name>.sec` and `.pub`; returns the two
/// files and the command's output.
fn keygen_cli(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, Output) {
    let (secret, public) = (dir.join(format!("{name}.sec")), dir.join(format!("{name}.pub")));
    let out = std::process::Command::new(crate::harness::SUBSERVE)
        .args(["keygen", "--format", "guix", "--secret-out"])
        .arg(&secret)
        .arg("--public-out")
        .arg(&public)
        .output()
        .unwrap();
    crate::harness::check("subserve keygen --format guix", &[], &out);
    (secret, public, out)
}

#[test]
fn keygen_writes_guix_keys() {
    let dir = scratch("guix-keygen");
    let (secret, public, out) = keygen_cli(&dir, "k");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), std::fs::read_to_string(&public).unwrap());
    assert!(String::from_utf8_lossy(&out.stderr).contains("guix archive --authorize"));
    let key = signing::read_guix_secret_key_file(&secret).unwrap();
    assert_eq!(key.public_sexp(), std::fs::read_to_string(&public).unwrap());
}

/// Baking for Guix clients: once a path's zstd file is baked, its narinfo offers that file
/// and the bare NAR, both with FileSize (Guix needs sizes on all groups or none), libgcrypt
/// still accepts it, and the baked file is served with its size and yields the canonical NAR.
#[test]
fn baked_nars_are_offered_to_guix_with_their_sizes() {
    let fx = fixture::guix();
    let dir = scratch("guix-bake");
    let srv = serve(
        "guix-bake-server",
        &["--bake", "zstd", "--bake-min-size", "0", "--bake-zstd-level", "3", "--bake-delay", "0"],
    );
    for path in &fx.closure {
        let _ = get(srv.addr, &format!("/{}.narinfo", hash_part(path)));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    for path in &fx.closure {
        let narinfo = loop {
            let text = String::from_utf8(get(srv.addr, &format!("/{}.narinfo", hash_part(path))).body).unwrap();
            let narinfo = GuixNarInfo::parse(&text).unwrap();
            if narinfo.urls.first().is_some_and(|u| u.compression == "zstd" && u.file_size.is_some()) {
                break narinfo;
            }
            assert!(std::time::Instant::now() < deadline, "{path} not baked:\n{}", srv.log.lock().unwrap());
            std::thread::sleep(Duration::from_millis(100));
        };
        let groups: Vec<(&str, bool)> =
            narinfo.urls.iter().map(|u| (u.compression.as_str(), u.file_size.is_some())).collect();
        assert_eq!(groups, [("zstd", true), ("none", true)], "{path}");
        assert_eq!(narinfo.urls[1].file_size, Some(narinfo.nar_size));
        let baked = get(srv.addr, &format!("/{}", narinfo.urls[0].url));
        assert_eq!(baked.status, 200);
        assert_eq!(baked.header("content-length").map(|l| l.parse::<u64>().unwrap()), narinfo.urls[0].file_size);
        let nar = decompress(Compression::Zstd, &baked.body);
        assert_eq!((NarHash::digest(&nar), nar.len() as u64), (narinfo.nar_hash, narinfo.nar_size), "{path}");
        assert_eq!(Node::parse(&nar[..]).unwrap().to_nar(), nar, "{path}: not canonical");
    }
    let public = dir.join("signing-key.pub");
    std::fs::write(&public, get(srv.addr, "/signing-key.pub").body).unwrap();
    assert_libgcrypt_accepts_all(&srv, "", &dir, &public);
}
