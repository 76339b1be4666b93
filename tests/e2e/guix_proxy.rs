//! The Guix pull-through proxy with real parts: a Guix-style build farm made of static files
//! (narinfos signed by a key libgcrypt generated, through the same code path as guix publish;
//! NARs from `nix-store --dump`, offered as lzip and zstd), served by `python3 -m http.server`
//! on 127.0.0.1. subserve, in front of a Guix store that lacks those paths, must serve them to
//! a node whose ACL holds only subserve's key: libgcrypt checks every narinfo, and every NAR
//! must be the canonical NAR of its NarHash. Then the farm goes away and the cache still serves.

use std::path::{Path, PathBuf};

use formats::nar::Node;
use formats::NarHash;
use test_support::gcrypt::gcrypt;
use test_support::hash_part;
use test_support::http::get;
use test_support::keys::guix_keygen;

use crate::fixture;
use crate::harness::{scratch, Server, StaticServer};

/// One path of the farm: what subserve must reproduce.
struct FarmPath {
    store_path: String,
    /// The narinfo text before `Signature:`, as the farm signed it.
    signed: String,
    nar_hash: NarHash,
    nar_size: u64,
}

/// Writes a farm for `paths` of the Guix fixture into `dir`, signed with (`sec`, `pub_`).
fn make_farm(dir: &Path, paths: &[String], sec: &Path, pub_: &Path) -> Vec<FarmPath> {
    let fx = fixture::guix();
    let uri = fx.store_uri();
    std::fs::create_dir_all(dir.join("nar/zstd")).unwrap();
    let texts = dir.join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    let mut farm = Vec::new();
    let mut sign_args: Vec<PathBuf> = vec!["sign".into(), sec.into(), pub_.into(), "farm.example".into()];
    for (i, path) in paths.iter().enumerate() {
        let basename = &path["/gnu/store/".len()..];
        let physical = fx.root.join("gnu/store").join(basename);
        let nar = fx.env.cmd("nix-store").arg("--dump").arg(&physical).output().unwrap().stdout;
        let nar_hash = NarHash::digest(&nar);
        let recorded = fx.env.run("nix-store", &["--store", &uri, "-q", "--hash", path]);
        assert_eq!(NarHash::parse(recorded.trim()).unwrap(), nar_hash, "{path}");
        let refs: Vec<String> = fx
            .env
            .run("nix-store", &["--store", &uri, "-q", "--references", path])
            .lines()
            .map(|r| r["/gnu/store/".len()..].to_owned())
            .collect();
        // As guix publish writes it, plus a System line: whatever precedes the signature is
        // signed, and must reach the node unchanged.
        let signed = format!(
            "StorePath: {path}\nNarHash: {nar_hash}\nNarSize: {}\nReferences: {}\nSystem: x86_64-linux\n",
            nar.len(),
            refs.join(" ")
        );
        let text = texts.join(format!("{i}.txt"));
        std::fs::write(&text, &signed).unwrap();
        sign_args.push(text);
        sign_args.push(texts.join(format!("{i}.narinfo")));
        std::fs::write(dir.join("nar/zstd").join(basename), zstd::encode_all(&nar[..], 19).unwrap()).unwrap();
        farm.push(FarmPath { store_path: path.clone(), signed, nar_hash, nar_size: nar.len() as u64 });
    }
    let refs: Vec<&Path> = sign_args.iter().map(PathBuf::as_path).collect();
    gcrypt(&refs);
    for (i, p) in farm.iter().enumerate() {
        // Keep the signed text and the Signature line; offer lzip first (subserve has no lzip
        // decoder, so it must not pass that group on) and zstd.
        let made = std::fs::read_to_string(texts.join(format!("{i}.narinfo"))).unwrap();
        let signature = made.lines().find(|l| l.starts_with("Signature: ")).unwrap();
        let basename = &p.store_path["/gnu/store/".len()..];
        let zstd_size = std::fs::metadata(dir.join("nar/zstd").join(basename)).unwrap().len();
        let narinfo = format!(
            "{}{signature}\nURL: nar/lzip/{basename}\nCompression: lzip\nFileSize: 1\n\
             URL: nar/zstd/{basename}\nCompression: zstd\nFileSize: {zstd_size}\n",
            p.signed
        );
        std::fs::write(dir.join(format!("{}.narinfo", hash_part(&p.store_path))), narinfo).unwrap();
    }
    farm
}

#[test]
fn guix_farm_paths_are_verified_re_signed_and_cached() {
    let fx = fixture::guix();
    let dir = scratch("guix-proxy");
    let (farm_sec, farm_pub) = (dir.join("farm.sec"), dir.join("farm.pub"));
    gcrypt(&[Path::new("genkey"), &farm_sec, &farm_pub]);
    let (stranger_sec, stranger_pub) = (dir.join("stranger.sec"), dir.join("stranger.pub"));
    gcrypt(&[Path::new("genkey"), &stranger_sec, &stranger_pub]);

    // The farm has the odd-files closure, except one path signed by a stranger's key.
    let stranger_path = fx.fixed_file.clone();
    let farm_paths: Vec<String> = fx.closure.clone();
    let up_dir = dir.join("farm");
    let farm = make_farm(&up_dir, &farm_paths, &farm_sec, &farm_pub);
    let stranger_dir = dir.join("stranger-farm");
    make_farm(&stranger_dir, std::slice::from_ref(&stranger_path), &stranger_sec, &stranger_pub);
    let stranger_narinfo = format!("{}.narinfo", hash_part(&stranger_path));
    std::fs::copy(stranger_dir.join(&stranger_narinfo), up_dir.join(&stranger_narinfo)).unwrap();
    let mut up = StaticServer::start(&up_dir);

    // subserve's own Guix store holds none of them.
    let local = dir.join("local");
    let local_uri = fixture::guix_store_uri(&local);
    let seed = dir.join("seed.txt");
    std::fs::write(&seed, "a path of the local store\n").unwrap();
    fx.env.run("nix-store", &["--store", &local_uri, "--add", seed.to_str().unwrap()]);
    let (our_sec, our_pub) = guix_keygen(&dir, "subserve");
    let farm_key = std::fs::read_to_string(&farm_pub).unwrap();
    let cache = dir.join("cache");
    let srv = Server::start(&[
        "--store-root",
        local.to_str().unwrap(),
        "--store-dir",
        "/gnu/store",
        "--sign-key-file",
        our_sec.to_str().unwrap(),
        "--upstream",
        &up.url,
        "--upstream-key",
        &farm_key,
        "--cache-dir",
        cache.to_str().unwrap(),
        "--state-dir",
        dir.join("state").to_str().unwrap(),
    ]);

    // Narinfos: the farm's signed text byte for byte, subserve's signature, the zstd group only.
    let served_dir = dir.join("served");
    std::fs::create_dir_all(&served_dir).unwrap();
    let mut served = Vec::new();
    for (i, p) in farm.iter().enumerate() {
        let reply = get(srv.addr, &format!("/{}.narinfo", hash_part(&p.store_path)));
        assert_eq!(reply.status, 200, "{}", p.store_path);
        assert_eq!(reply.header("content-length").unwrap().parse::<usize>().unwrap(), reply.body.len());
        let text = String::from_utf8(reply.body).unwrap();
        assert!(text.starts_with(&p.signed), "signed part changed:\n{text}\nfarm's:\n{}", p.signed);
        let tail = &text[p.signed.len()..];
        let basename = &p.store_path["/gnu/store/".len()..];
        assert!(tail.starts_with("Signature: 1;"), "{tail}");
        assert!(tail.contains(&format!("\nURL: nar/zstd/{basename}\nCompression: zstd\n")), "{tail}");
        assert!(!tail.contains("lzip"), "a group subserve cannot verify was offered: {tail}");
        let file = served_dir.join(format!("{i}.narinfo"));
        std::fs::write(&file, &text).unwrap();
        served.push(file);
    }
    // A node whose ACL holds only subserve's key accepts every one (libgcrypt, as guix
    // substitute checks); the farm's key alone does not (the signature is subserve's).
    let check = |key: &Path| {
        let mut args: Vec<&Path> = vec![Path::new("verify"), key];
        args.extend(served.iter().map(PathBuf::as_path));
        gcrypt(&args)
    };
    let ours = check(&our_pub);
    assert!(ours.lines().count() == farm.len() && ours.lines().all(|l| l == "valid"), "libgcrypt said:\n{ours}");
    assert!(check(&farm_pub).lines().all(|l| l != "valid"));

    // NARs: the canonical NAR of NarHash, fetched from the farm once however often asked.
    for _ in 0..2 {
        for p in &farm {
            let basename = &p.store_path["/gnu/store/".len()..];
            let reply = get(srv.addr, &format!("/nar/zstd/{basename}"));
            assert_eq!(reply.status, 200, "{basename}");
            let nar = zstd::decode_all(&reply.body[..]).unwrap();
            assert_eq!((NarHash::digest(&nar), nar.len() as u64), (p.nar_hash, p.nar_size), "{basename}");
            assert_eq!(Node::parse(&nar[..]).unwrap().to_nar(), nar, "{basename}: not canonical");
            // Another compression, or another name with the same hash, is not served.
            assert_eq!(get(srv.addr, &format!("/nar/gzip/{basename}")).status, 404);
            let other = format!("{}-other", &basename[..32]);
            assert_eq!(get(srv.addr, &format!("/nar/zstd/{other}")).status, 404);
        }
    }
    for p in &farm {
        let basename = &p.store_path["/gnu/store/".len()..];
        assert_eq!(up.gets(&format!("/nar/zstd/{basename}")), 1, "{basename}");
    }
    assert_eq!(up.gets(&format!("/nar/lzip/{}", &farm[0].store_path["/gnu/store/".len()..])), 0);

    // A narinfo signed by a key the farm's ACL entry does not hold is absent.
    let miss = get(srv.addr, &format!("/{stranger_narinfo}"));
    assert_eq!(miss.status, 404);
    assert_eq!(miss.header("cache-control"), Some("max-age=300"));

    // The farm goes away: everything fetched is still served, verified as before.
    up.stop();
    for p in &farm {
        let text = String::from_utf8(get(srv.addr, &format!("/{}.narinfo", hash_part(&p.store_path))).body).unwrap();
        assert!(text.starts_with(&p.signed));
        let basename = &p.store_path["/gnu/store/".len()..];
        let reply = get(srv.addr, &format!("/nar/zstd/{basename}"));
        assert_eq!(reply.status, 200);
        assert_eq!(NarHash::digest(&zstd::decode_all(&reply.body[..]).unwrap()), p.nar_hash);
    }
}
