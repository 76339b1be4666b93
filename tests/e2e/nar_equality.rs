//! Every NAR subserve serves, in every compression, is byte for byte what `nix-store --dump`
//! writes, and its sha256 and length are the NarHash and NarSize in the store DB and in our
//! signed narinfo.

use std::io::Write;
use std::process::Stdio;

use formats::{NarHash, NarInfo};
use sha2::{Digest, Sha256};

use crate::fixture;
use crate::harness::{scratch, Server};
use crate::http::get;

/// A `Write` that only hashes and counts.
#[derive(Default)]
struct HashWriter {
    hasher: Sha256,
    len: u64,
}

impl Write for HashWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl HashWriter {
    fn done(self) -> (NarHash, u64) {
        (NarHash(self.hasher.finalize().into()), self.len)
    }
}

fn decompress(compression: &str, data: &[u8]) -> (NarHash, u64) {
    let mut out = HashWriter::default();
    match compression {
        "none" => out.write_all(data).unwrap(),
        "zstd" => {
            zstd::stream::copy_decode(data, &mut out).unwrap();
        }
        "xz" => {
            std::io::copy(&mut liblzma::read::XzDecoder::new(data), &mut out).unwrap();
        }
        other => panic!("{other}"),
    }
    out.done()
}

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
        let mut hw = HashWriter::default();
        std::io::copy(dump.stdout.as_mut().unwrap(), &mut hw).unwrap();
        assert!(dump.wait().unwrap().success());
        let (dump_hash, dump_len) = hw.done();
        let query = |q: &str| fx.env.run("nix-store", &["--store", &fx.store_arg(), "-q", q, path]).trim().to_owned();
        assert_eq!(NarHash::parse(&query("--hash")).unwrap(), dump_hash, "{path}: DB NarHash");
        assert_eq!(query("--size").parse::<u64>().unwrap(), dump_len, "{path}: DB NarSize");

        let reply = get(srv.addr, &format!("/{}.narinfo", &path["/nix/store/".len()..][..32]));
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
            assert_eq!(decompress(compression, &reply.body), (dump_hash, dump_len), "{path} {compression}");
        }
    }
}
