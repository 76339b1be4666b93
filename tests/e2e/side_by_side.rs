//! One process, two ecosystems: a Nix store under `/nix/` and a Guix store under `/guix/`,
//! configured by `[[store]]` tables in one TOML file. The real Nix client substitutes from the
//! Nix half, libgcrypt accepts every narinfo of the Guix half, and neither half answers for
//! the other's paths.

use formats::guix::GuixNarInfo;
use formats::NarHash;

use test_support::hash_part;
use test_support::http::get;
use test_support::keys::{guix_keygen, keygen};

use crate::fixture;
use crate::harness::{scratch, Server, SUBSERVE};
use crate::node::{assert_libgcrypt_accepts_all, substitute_fixture_closure};

#[test]
fn nix_and_guix_stores_are_served_side_by_side() {
    let (nix, guix) = (fixture::get(), fixture::guix());
    let dir = scratch("side-by-side");
    let (nix_secret, nix_public) = keygen(&dir, "side-1");
    let (guix_secret, guix_public) = guix_keygen(&dir, "guix");
    let guix_secret = guix_secret.display().to_string();
    let config = dir.join("subserve.toml");
    std::fs::write(
        &config,
        format!(
            "state-dir = \"{state}\"\n\n\
             [[store]]\nprefix = \"/nix\"\nstore-root = \"{nix_root}\"\ncompression = \"zstd\"\nbake = \"none\"\n\
             sign-key-files = [\"{nix_secret}\"]\nupstream = []\n\n\
             [[store]]\nprefix = \"/guix\"\nstore-dir = \"/gnu/store\"\nstore-root = \"{guix_root}\"\n\
             sign-key-files = [\"{guix_secret}\"]\nupstream = []\nbake = \"none\"\n",
            state = dir.join("state").display(),
            nix_root = nix.root.display(),
            guix_root = guix.root.display(),
        ),
    )
    .unwrap();
    let srv = Server::start_config(&config);

    // The index says where each store is; the root serves no cache.
    let index = String::from_utf8(get(srv.addr, "/").body).unwrap();
    assert!(index.contains("/nix/\tnix clients, store /nix/store"), "{index}");
    assert!(index.contains("/guix/\tguix clients, store /gnu/store"), "{index}");
    assert_eq!(get(srv.addr, "/nix-cache-info").status, 404);
    let info = String::from_utf8(get(srv.addr, "/nix/nix-cache-info").body).unwrap();
    assert!(info.starts_with("StoreDir: /nix/store\n"), "{info}");
    let info = String::from_utf8(get(srv.addr, "/guix/nix-cache-info").body).unwrap();
    assert!(info.starts_with("StoreDir: /gnu/store\n"), "{info}");

    // Each half answers for its own store only.
    let nix_hash = &nix.top["/nix/store/".len()..][..32];
    let guix_hash = hash_part(&guix.odd);
    assert_eq!(get(srv.addr, &format!("/nix/{nix_hash}.narinfo")).status, 200);
    assert_eq!(get(srv.addr, &format!("/guix/{nix_hash}.narinfo")).status, 404);
    assert_eq!(get(srv.addr, &format!("/nix/{guix_hash}.narinfo")).status, 404);
    assert_eq!(get(srv.addr, &format!("/{nix_hash}.narinfo")).status, 404);

    // Guix half: libgcrypt accepts every narinfo with the configured key, and the offered
    // URLs (relative, resolved against the /guix cache URL as guix substitute does) work.
    assert_eq!(get(srv.addr, "/guix/signing-key.pub").body, std::fs::read(&guix_public).unwrap());
    assert_libgcrypt_accepts_all(&srv, "/guix", &dir, &guix_public);
    let text = String::from_utf8(get(srv.addr, &format!("/guix/{guix_hash}.narinfo")).body).unwrap();
    let narinfo = GuixNarInfo::parse(&text).unwrap();
    let none = narinfo.urls.iter().find(|u| u.compression == "none").expect("a none group");
    let nar = get(srv.addr, &format!("/guix/{}", none.url));
    assert_eq!(nar.status, 200);
    assert_eq!(NarHash::digest(&nar.body), narinfo.nar_hash);

    // Nix half: the real client substitutes the whole closure with signatures required.
    substitute_fixture_closure(nix, &dir, &format!("{}/nix", srv.url()), &nix_public);
}

/// A per-store flag next to `[[store]]` tables is refused in one line that says where the
/// setting belongs.
#[test]
fn store_flags_are_refused_next_to_store_tables() {
    let dir = scratch("side-by-side-flags");
    let config = dir.join("subserve.toml");
    std::fs::write(&config, "[[store]]\nprefix = \"/nix\"\nupstream = []\n").unwrap();
    let out = std::process::Command::new(SUBSERVE)
        .args(["serve", "--listen", "127.0.0.1:0", "--config", config.to_str().unwrap(), "--priority", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--priority") && stderr.contains("each table"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
