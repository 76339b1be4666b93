//! Every NAR subserve serves, in every compression, is byte for byte what `nix-store --dump`
//! writes, and its sha256 and length are the NarHash and NarSize in the store DB and in our
//! signed narinfo.

use std::process::Stdio;

use formats::{Compression, NarHash, NarInfo};

use crate::fixture;
use crate::harness::{scratch, Server};
use test_support::compression::nar_hash_of;
use test_support::hash_part;
use test_support::http::get;

#[test]
fn every_served_nar_equals_nix_store_dump() {
    let fx = fixture::get();
    let dir = scratch("nar-equality");
    let srv = Server::start(&["--store-root", &fx.store_arg(), "--state-dir", dir.join("state").to_str().unwrap()]);
    let public = signing::read_public_key_file(&dir.join("state/signing-key.pub")).unwrap();
    for path in &fx.closure {
        // `nix-store --store ROOT --dump` (2.8) dumps the host path: dump the physical one.
        let physical = fx.root.join(path.trim_start_matches('/'));
        let mut dump = fx.env.cmd("nix-store").arg("--dump").arg(&physical).stdout(Stdio::piped()).spawn().unwrap();
        let (dump_hash, dump_len) = nar_hash_of(Compression::None, dump.stdout.take().unwrap());
        assert!(dump.wait().unwrap().success());
        let query = |q: &str| fx.env.run("nix-store", &["--store", &fx.store_arg(), "-q", q, path]).trim().to_owned();
        assert_eq!(NarHash::parse(&query("--hash")).unwrap(), dump_hash, "{path}: DB NarHash");
        assert_eq!(query("--size").parse::<u64>().unwrap(), dump_len, "{path}: DB NarSize");

        let reply = get(srv.addr, &format!("/{}.narinfo", hash_part(path)));
        assert_eq!(reply.status, 200, "{path}");
        let text = String::from_utf8(reply.body).unwrap();
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!(info.render(), text, "{path}: narinfo not in Nix's canonical form");
        assert_eq!((info.nar_hash, info.nar_size), (dump_hash, dump_len), "{path}: narinfo");
        assert!(
            signing::verify_any(std::slice::from_ref(&public), &info.fingerprint("/nix/store"), &info.sigs),
            "{path}: signature"
        );

        let stem = info.url.strip_suffix(".nar").expect("the default is uncompressed");
        for (compression, ext) in [("none", ""), ("zstd", ".zst"), ("xz", ".xz")] {
            let reply = get(srv.addr, &format!("/{stem}.nar{ext}"));
            assert_eq!(reply.status, 200, "{path} {compression}");
            assert_eq!(reply.header("content-encoding"), None);
            if compression == "none" {
                assert_eq!(reply.header("content-length"), Some(dump_len.to_string().as_str()));
            }
            assert_eq!(
                nar_hash_of(compression.parse().unwrap(), &reply.body[..]),
                (dump_hash, dump_len),
                "{path} {compression}"
            );
        }
    }
}
