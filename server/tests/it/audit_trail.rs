//! The audit trail wired into the server: every GET of a narinfo or a NAR recorded when its
//! body ends (client, store prefix, path, status, bytes sent), found by `audit::Query`; the
//! names of Nix NARs learnt from their narinfos, Guix's from their URLs; the counters in
//! `/metrics`; and `audit = false` recording nothing.

use audit::Query;
use test_support::http::{get, request};
use test_support::{basename, hash_part, spawn_server, FakeStore};

fn db(state: &std::path::Path) -> std::path::PathBuf {
    state.join("audit.sqlite")
}

#[test]
fn every_narinfo_and_nar_answer_is_recorded() {
    let nix = FakeStore::nix();
    let guix = FakeStore::guix();
    let hello = nix.add_file("hello-2.12", b"hello\n");
    let guile = guix.add_file("guile-3.0", b"guile\n");
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&crate::store::nix_and_guix_config(&nix, &guix, state.path()));

    let narinfo = get(srv.addr, &format!("/nix/{}.narinfo", hash_part(&hello)));
    assert_eq!(narinfo.status, 200);
    let url =
        String::from_utf8(narinfo.body).unwrap().lines().find_map(|l| l.strip_prefix("URL: ")).unwrap().to_owned();
    let nar = get(srv.addr, &format!("/nix/{url}"));
    assert_eq!(nar.status, 200);
    // A miss, a HEAD (not a download), a listing (not audited) and a Guix NAR by its basename.
    assert_eq!(get(srv.addr, "/nix/0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb.narinfo").status, 404);
    assert_eq!(request(srv.addr, "HEAD", format!("/nix/{url}").as_bytes(), "").status, 200);
    assert_eq!(get(srv.addr, &format!("/nix/{}.ls", hash_part(&hello))).status, 200);
    let guix_nar = get(srv.addr, &format!("/guix/nar/{}", basename(&guile)));
    assert_eq!(guix_nar.status, 200);
    srv.wait_for_audit(4);

    let query = Query::open(&db(state.path())).unwrap();
    let nodes = query.who_fetched("hello", None).unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0].client, "127.0.0.1");
    assert_eq!((nodes[0].count, nodes[0].bytes), (1, nar.body.len() as u64), "the NAR's bytes, as sent");
    assert_eq!(nodes[0].paths, [basename(&hello)]);
    let guix_nodes = query.who_fetched(&guile, None).unwrap();
    assert_eq!(guix_nodes[0].bytes, guix_nar.body.len() as u64);
    let fetched: Vec<String> =
        query.node("127.0.0.1".parse().unwrap(), None).unwrap().into_iter().map(|p| p.path).collect();
    assert_eq!(fetched.len(), 2, "{fetched:?}");

    // The records themselves: kinds, stores, statuses, and nothing for the HEAD or the listing.
    let conn = rusqlite::Connection::open(db(state.path())).unwrap();
    let mut rows: Vec<(String, i64, String, i64)> = conn
        .prepare("SELECT f.store, f.kind, p.hash, f.status FROM fetch f JOIN path p ON p.id = f.path ORDER BY f.rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.sort();
    let mut want = vec![
        ("/guix".to_owned(), 2, hash_part(&guile).to_owned(), 200),
        ("/nix".to_owned(), 1, "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb".to_owned(), 404),
        ("/nix".to_owned(), 1, hash_part(&hello).to_owned(), 200),
        ("/nix".to_owned(), 2, hash_part(&hello).to_owned(), 200),
    ];
    want.sort();
    assert_eq!(rows, want);

    let metrics = String::from_utf8(get(srv.addr, "/metrics").body).unwrap();
    assert!(metrics.contains("subserve_audit_records_written_total 4"), "{metrics}");
    assert!(metrics.contains("subserve_audit_records_dropped_total 0"), "{metrics}");
}

#[test]
fn audit_off_records_nothing() {
    let nix = FakeStore::nix();
    let hello = nix.add_file("hello", b"hello\n");
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&format!("state-dir = {:?}\naudit = false\nupstream = []\n{}", state.path(), nix.config()));
    assert_eq!(get(srv.addr, &format!("/{}.narinfo", hash_part(&hello))).status, 200);
    assert!(srv.process.audit.is_none());
    assert!(!db(state.path()).exists(), "no audit database is created");
    let metrics = String::from_utf8(get(srv.addr, "/metrics").body).unwrap();
    assert!(metrics.contains("subserve_audit_records_written_total 0"), "{metrics}");
}

/// A writer stuck on its database (here locked by another connection, as a stalled disk would
/// hold it) never holds a request: every narinfo is answered at once, and the records are
/// written once the lock goes (or, past the writer's busy timeout, counted as dropped).
#[test]
fn a_stuck_audit_writer_never_holds_a_request() {
    let nix = FakeStore::nix();
    let hello = nix.add_file("hello", b"hello\n");
    let state = tempfile::tempdir().unwrap();
    let srv = spawn_server(&format!("state-dir = {:?}\nupstream = []\n{}", state.path(), nix.config()));
    let blocker = rusqlite::Connection::open(db(state.path())).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let requests = 50;
    for _ in 0..requests {
        assert_eq!(get(srv.addr, &format!("/{}.narinfo", hash_part(&hello))).status, 200);
    }
    let log = srv.process.audit.as_ref().unwrap().log();
    assert_eq!(log.written(), 0, "nothing written while the database is locked");
    blocker.execute_batch("COMMIT").unwrap();
    let start = std::time::Instant::now();
    while log.written() + log.dropped() < requests {
        assert!(start.elapsed() < test_support::server::DEADLINE, "{log:?}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
