//! Several stores in one server, each under its `[[store]]` prefix with its own dialect: each
//! answers for its own paths only, the index at `/` names them, and build logs keep the
//! encoding each ecosystem expects (Guix's `.gz` as it is, with `Content-Encoding: gzip`; Nix's
//! `.bz2` decompressed, with none).

use formats::guix::GuixNarInfo;
use formats::{Compression, NarHash};
use test_support::compression::{compress, decompress};
use test_support::http::{get, request};
use test_support::{basename, hash_part, spawn_server, FakeStore, TestServer};

use crate::store::narinfo_at;

struct Stores {
    nix: FakeStore,
    guix: FakeStore,
    nix_path: String,
    guix_path: String,
}

fn stores() -> Stores {
    let nix = FakeStore::nix();
    let guix = FakeStore::guix();
    let nix_path = nix.add_file("hello-nix", b"hello from nix\n");
    let guix_path = guix.add_file("hello-guix", b"hello from guix\n");
    Stores { nix, guix, nix_path, guix_path }
}

fn serve(stores: &Stores, state: &std::path::Path) -> TestServer {
    spawn_server(&format!(
        "state-dir = {state:?}\n\
         [[store]]\nprefix = \"/nix\"\n{}compression = \"zstd\"\nupstream = []\n\
         [[store]]\nprefix = \"/guix\"\ndialect = \"guix\"\n{}compression = \"zstd,none\"\nupstream = []\n",
        stores.nix.config(),
        stores.guix.config(),
    ))
}

#[test]
fn each_store_answers_under_its_prefix_for_its_own_paths() {
    let stores = stores();
    let state = tempfile::tempdir().unwrap();
    let srv = serve(&stores, state.path());

    let index = get(srv.addr, "/");
    assert_eq!(index.status, 200);
    let index = String::from_utf8(index.body).unwrap();
    assert!(index.contains("/nix/\tnix clients, store /nix/store"), "{index}");
    assert!(index.contains("/guix/\tguix clients, store /gnu/store"), "{index}");

    let nix_info = String::from_utf8(get(srv.addr, "/nix/nix-cache-info").body).unwrap();
    assert!(nix_info.starts_with("StoreDir: /nix/store\n"), "{nix_info}");
    let guix_info = String::from_utf8(get(srv.addr, "/guix/nix-cache-info").body).unwrap();
    assert!(guix_info.starts_with("StoreDir: /gnu/store\n"), "{guix_info}");
    assert_eq!(get(srv.addr, "/nix-cache-info").status, 404, "no store at /");
    assert_eq!(get(srv.addr, "/other/nix-cache-info").status, 404);

    // Nix: a Nix narinfo naming a NAR under the same prefix.
    let info = narinfo_at(&srv, "/nix", &stores.nix_path);
    assert_eq!(info.compression, "zstd");
    assert_eq!(info.sigs.len(), 1);
    let nar = get(srv.addr, &format!("/nix/{}", info.url));
    assert_eq!(nar.status, 200);
    assert_eq!(NarHash::digest(&decompress(Compression::Zstd, &nar.body)), info.nar_hash);
    assert_eq!(
        request(srv.addr, "HEAD", format!("/nix/{}.narinfo", hash_part(&stores.nix_path)).as_bytes(), "").status,
        200
    );

    // Guix: a Guix narinfo (one Signature, every offered URL) for the Guix path.
    let reply = get(srv.addr, &format!("/guix/{}.narinfo", hash_part(&stores.guix_path)));
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.body).unwrap();
    let guix = GuixNarInfo::parse(&text).unwrap();
    assert_eq!(guix.store_path, stores.guix_path);
    assert_eq!(text.matches("\nSignature: ").count(), 1, "{text}");
    assert!(text.contains(&format!("URL: nar/zstd/{}\n", basename(&stores.guix_path))), "{text}");
    let nar = get(srv.addr, &format!("/guix/nar/{}", basename(&stores.guix_path)));
    assert_eq!((nar.status, NarHash::digest(&nar.body)), (200, guix.nar_hash));

    // Neither store answers for the other's paths.
    assert_eq!(get(srv.addr, &format!("/guix/{}.narinfo", hash_part(&stores.nix_path))).status, 404);
    assert_eq!(get(srv.addr, &format!("/nix/{}.narinfo", hash_part(&stores.guix_path))).status, 404);
    assert_eq!(get(srv.addr, &format!("/{}.narinfo", hash_part(&stores.nix_path))).status, 404);
    // Nor under the other's URL layout.
    assert_eq!(get(srv.addr, "/nix/signing-key.pub").status, 404);
    assert_eq!(get(srv.addr, "/guix/signing-key.pub").status, 200);
}

#[test]
fn logs_keep_the_encoding_each_dialect_expects() {
    let stores = stores();
    let nix_drv = "3p2jdn7hy5c4nqwgzrz5ym9xvsdr5ns4-hello-nix.drv";
    let guix_drv = "7h6zklgbgjmqnkxpa7v7pqkvhwqjpjvs-guix-style.drv";
    let bz2_drv = "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb-nix-style.drv";
    stores.nix.add_log(nix_drv, "building hello-nix\n", Compression::Bzip2);
    stores.guix.add_log(guix_drv, "building guix-style...\n", Compression::Gzip);
    stores.guix.add_log(bz2_drv, "a Nix-style log in a Guix store\n", Compression::Bzip2);
    let gz = compress(Compression::Gzip, b"building guix-style...\n");
    let state = tempfile::tempdir().unwrap();
    let srv = serve(&stores, state.path());

    let nix = get(srv.addr, &format!("/nix/log/{nix_drv}"));
    assert_eq!(nix.status, 200);
    assert_eq!(nix.header("content-encoding"), None);
    assert_eq!(nix.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(nix.body, b"building hello-nix\n");

    // Guix's .gz log: the file as it is, as guix publish sends it.
    let guix = get(srv.addr, &format!("/guix/log/{guix_drv}"));
    assert_eq!(guix.status, 200);
    assert_eq!(guix.header("content-encoding"), Some("gzip"));
    assert_eq!(guix.body, gz);
    let head = request(srv.addr, "HEAD", format!("/guix/log/{guix_drv}").as_bytes(), "");
    assert_eq!((head.status, head.header("content-encoding")), (200, Some("gzip")));
    // A .bz2 log in the Guix store is decompressed: Guix clients take no bzip2 encoding.
    let bz2 = get(srv.addr, &format!("/guix/log/{bz2_drv}"));
    assert_eq!((bz2.status, bz2.header("content-encoding")), (200, None));
    assert_eq!(bz2.body, b"a Nix-style log in a Guix store\n");

    // Each store's logs are its own.
    assert_eq!(get(srv.addr, &format!("/nix/log/{guix_drv}")).status, 404);
    assert_eq!(get(srv.addr, &format!("/guix/log/{nix_drv}")).status, 404);
}
