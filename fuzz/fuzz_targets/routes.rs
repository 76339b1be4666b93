//! The whole URL space: the real axum router of the `subserve` crate, in process, over two
//! small stores (a Nix one at `/nix`, a Guix one at `/guix`) without upstreams.
//!
//! Input: a request line `METHOD TARGET`, then up to eight `Name: value` header lines (a
//! `Range`, say). Inputs that hyper would refuse before routing (a bad method, target or
//! header) are skipped. No request may panic or get a 5xx, and a body must stream to its end.
#![no_main]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri};
use axum::Router;
use formats::store_path::fixed_output_path;
use formats::NarHash;
use http_body_util::BodyExt as _;
use libfuzzer_sys::fuzz_target;
use subserve::settings::{resolve, Env, FileConfig, Options};
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

/// Nix's store DB schema 10 (`src/libstore/schema.sql`), the tables the server reads.
const NIX_SCHEMA: &str = "
create table ValidPaths (
    id integer primary key autoincrement not null, path text unique not null, hash text not null,
    registrationTime integer not null, deriver text, narSize integer, ultimate integer, sigs text, ca text);
create table Refs (referrer integer not null, reference integer not null, primary key (referrer, reference));
create table DerivationOutputs (drv integer not null, id text not null, path text not null, primary key (drv, id));
";

/// Guix's schema 7, as the store reader's tests have it.
const GUIX_SCHEMA: &str = include_str!("../../store-reader/tests/data/guix-schema-7.sql");

/// Hash parts of the fixture paths, fixed so that the seed corpus can name them.
const HELLO: &str = "i9pmrzmpshapij2kin22pff6fc2adavx";
const TREE: &str = "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb";
const GHOST: &str = "7h6zklgbgjmqnkxpa7v7pqkvhwqjpjvs";
const DRV: &str = "3p2jdn7hy5c4nqwgzrz5ym9xvsdr5ns4";

struct Fixture {
    runtime: Runtime,
    router: Router,
    /// `FUZZ_VERBOSE` set: print each request's status and body size (to check the seeds).
    verbose: bool,
}

/// The stores, keys and router, made once per process in `$TMPDIR` (scripts/fuzz points it
/// into the target dir and empties it; the process exits without dropping statics).
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("routes-").tempdir().expect("temp dir").keep();
        let nix = make_store(&dir.join("nix"), "/nix/store", NIX_SCHEMA, true);
        let guix = make_store(&dir.join("guix"), "/gnu/store", GUIX_SCHEMA, false);
        let config = format!(
            "state-dir = {state:?}\n\
             [[store]]\nprefix = \"/nix\"\ndialect = \"nix\"\n{nix}upstream = []\n\
             [[store]]\nprefix = \"/guix\"\ndialect = \"guix\"\ncompression = \"zstd,none\"\n{guix}upstream = []\n",
            state = dir.join("state"),
        );
        let file = FileConfig::parse(&config, "fixture.toml").expect("fixture config parses");
        let settings = resolve(&Options::default(), &Env::default(), &file).expect("fixture settings resolve");
        let stores: Vec<Arc<_>> = subserve::startup::build_states(&settings)
            .expect("fixture stores open")
            .into_iter()
            .map(|(state, _)| Arc::new(state))
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Fixture { runtime, router: subserve::router(&stores), verbose: std::env::var_os("FUZZ_VERBOSE").is_some() }
    })
}

/// A store under `root` with a file, a directory (referring to itself and to the file, built
/// by a derivation with a log), a row whose files are missing and, for Guix, a flat
/// fixed-output file; returns its config-file keys.
fn make_store(root: &Path, store_dir: &str, schema: &str, nix_columns: bool) -> String {
    let real = root.join("store");
    let logs = root.join("logs");
    fs::create_dir_all(&real).expect("store dir");
    let hello = real.join(format!("{HELLO}-hello.txt"));
    fs::write(&hello, "hello\n").expect("hello");
    let tree = real.join(format!("{TREE}-tree"));
    fs::create_dir_all(tree.join("sub")).expect("tree");
    fs::write(tree.join("a.sh"), "#!x\n").expect("a.sh");
    fs::set_permissions(tree.join("a.sh"), fs::Permissions::from_mode(0o555)).expect("chmod");
    fs::write(tree.join("sub/b"), "hi\n").expect("b");
    symlink("sub/b", tree.join("l")).expect("symlink");
    fs::create_dir_all(logs.join(&DRV[..2])).expect("log dir");
    fs::write(logs.join(&DRV[..2]).join(format!("{}-tree.drv", &DRV[2..])), "building tree\n").expect("log");

    let db = root.join("db.sqlite");
    let conn = rusqlite::Connection::open(&db).expect("db");
    conn.execute_batch(schema).expect("schema");
    let mut rows = vec![
        (hello, format!("{store_dir}/{HELLO}-hello.txt"), None),
        (tree, format!("{store_dir}/{TREE}-tree"), Some(format!("{store_dir}/{DRV}-tree.drv"))),
    ];
    if !nix_columns {
        let flat = fixed_output_path(store_dir, "hello.txt", &NarHash::digest(b"hello\n")).expect("flat path");
        let path = real.join(flat.basename());
        fs::write(&path, "hello\n").expect("flat");
        rows.push((path, flat.absolute(store_dir), None));
    }
    for (real_path, path, deriver) in &rows {
        let mut nar = Vec::new();
        let size = store_reader::nar::dump(real_path, &mut nar).expect("dump");
        let hash = format!("sha256:{}", NarHash::digest(&nar).to_base16());
        conn.execute(
            "INSERT INTO ValidPaths (path, hash, registrationTime, deriver, narSize) VALUES (?1, ?2, 1, ?3, ?4)",
            rusqlite::params![path, hash, deriver, size],
        )
        .expect("row");
    }
    let ghost = format!("{store_dir}/{GHOST}-ghost");
    let any_hash = format!("sha256:{}", NarHash::digest(b"ghost").to_base16());
    conn.execute(
        "INSERT INTO ValidPaths (path, hash, registrationTime, narSize) VALUES (?1, ?2, 1, 8)",
        [&ghost, &any_hash],
    )
    .expect("ghost");
    conn.execute_batch(
        "INSERT INTO Refs SELECT t.id, r.id FROM ValidPaths t, ValidPaths r
           WHERE t.path LIKE '%-tree' AND (r.path LIKE '%-tree' OR r.path LIKE '%-hello.txt');",
    )
    .expect("refs");
    if nix_columns {
        conn.execute_batch("UPDATE ValidPaths SET sigs = 'a-1:c2lnMQ==', ca = 'fixed:r:sha256:0' WHERE id = 1;")
            .expect("sigs");
    } else {
        // A legacy row without narSize: the server computes it from the files.
        conn.execute_batch("UPDATE ValidPaths SET narSize = NULL WHERE path LIKE '%-tree';").expect("legacy");
    }
    format!("store-dir = {store_dir:?}\nreal-store-dir = {real:?}\ndb = {db:?}\nlog-dir = {logs:?}\n")
}

/// The request the input describes, or `None` where hyper would have refused it first.
fn request(data: &[u8]) -> Option<Request<Body>> {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&first[..space]).ok()?;
    let uri = Uri::try_from(&first[space + 1..]).ok()?;
    // The router sees origin-form targets only: hyper rejects the rest on a server socket.
    if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
        return None;
    }
    let mut builder = Request::builder().method(method).uri(uri);
    for line in lines.take(8) {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(line[colon + 1..].trim_ascii()))
        else {
            continue;
        };
        builder = builder.header(name, value);
    }
    builder.body(Body::empty()).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some(request) = request(data) else { return };
    let f = fixture();
    let described = format!("{} {}", request.method(), request.uri());
    f.runtime.block_on(async {
        let response = f.router.clone().oneshot(request).await.expect("the router is infallible");
        let status = response.status();
        assert!(!status.is_server_error(), "{described} answered {status}");
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => panic!("{described} ({status}): the body failed: {e}"),
        };
        if f.verbose {
            eprintln!("{described} -> {status}, {} body bytes", body.len());
        }
    });
});
