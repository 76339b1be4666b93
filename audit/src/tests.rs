//! The audit trail end to end within the crate: records written by the thread and found by
//! the queries, a stalled writer dropping (never blocking), retention and the size cap.

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::writer::Writer;

const GLIBC: &str = "7rjj86a15146cq1d3qy068lml7n8ykzm";
const BASH: &str = "0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb";

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
}

fn record(seconds: u64, client: &str, kind: Kind, hash: &str, name: &str, status: u16, bytes: u64) -> Record {
    Record {
        at: at(seconds),
        client: client.parse().unwrap(),
        store: String::new(),
        kind,
        hash: hash.into(),
        name: name.into(),
        status,
        bytes,
        duration: Duration::from_millis(3),
    }
}

fn wave() -> Vec<Record> {
    vec![
        record(1, "10.0.0.1", Kind::Narinfo, GLIBC, "glibc-2.39-52", 200, 900),
        record(2, "10.0.0.1", Kind::Nar, GLIBC, "glibc-2.39-52", 200, 30_000_000),
        record(3, "10.0.0.2", Kind::Nar, GLIBC, "glibc-2.39-52", 200, 30_000_000),
        record(4, "10.0.0.2", Kind::Nar, GLIBC, "glibc-2.39-52", 206, 1_000),
        record(5, "10.0.0.2", Kind::Nar, BASH, "bash-5.2", 200, 2_000_000),
        record(6, "10.0.0.3", Kind::Nar, GLIBC, "glibc-2.39-52", 404, 0),
        record(7, "10.0.0.4", Kind::Narinfo, GLIBC, "glibc-2.39-52", 200, 900),
        record(8, "::ffff:10.0.0.5", Kind::Nar, BASH, "bash-5.2", 200, 2_000_000),
    ]
}

#[test]
fn who_fetched_finds_the_nodes_that_downloaded_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.sqlite");
    let log = AuditLog::open(&db, AuditConfig::default()).unwrap();
    for r in wave() {
        log.record(r);
    }
    log.flush();
    assert_eq!((log.written(), log.dropped()), (8, 0));

    let query = Query::open(&db).unwrap();
    for pattern in ["glibc-2.39", "GLIBC", GLIBC, &format!("/nix/store/{GLIBC}-glibc-2.39-52")] {
        let nodes = query.who_fetched(pattern, None).unwrap();
        // 10.0.0.3 got a 404 and 10.0.0.4 only read the narinfo: neither fetched it.
        let clients: Vec<&str> = nodes.iter().map(|n| n.client.as_str()).collect();
        assert_eq!(clients, ["10.0.0.2", "10.0.0.1"], "{pattern}");
        assert_eq!((nodes[0].count, nodes[0].bytes, nodes[0].first, nodes[0].last), (2, 30_001_000, at(3), at(4)));
        assert_eq!(nodes[0].paths, [format!("{GLIBC}-glibc-2.39-52")]);
    }
    assert!(query.who_fetched("glibc-2.40", None).unwrap().is_empty());
    assert!(query.who_fetched("glibc%", None).unwrap().is_empty(), "% is literal");
    assert_eq!(query.who_fetched("glibc", Some(at(3))).unwrap().len(), 1, "--since");

    let fetched = query.node("10.0.0.2".parse().unwrap(), None).unwrap();
    let paths: Vec<(&str, u64)> = fetched.iter().map(|p| (p.path.as_str(), p.count)).collect();
    assert_eq!(paths, [(format!("{BASH}-bash-5.2").as_str(), 1), (format!("{GLIBC}-glibc-2.39-52").as_str(), 2)]);
    let top: Vec<(String, u64)> = query.top_clients(at(0), 2).unwrap().into_iter().map(|t| (t.name, t.bytes)).collect();
    assert_eq!(top, [("10.0.0.2".to_owned(), 32_001_000), ("10.0.0.1".to_owned(), 30_000_000)]);
    let top = query.top_paths(at(0), 1).unwrap();
    assert_eq!((top[0].name.as_str(), top[0].count), (format!("{GLIBC}-glibc-2.39-52").as_str(), 3));
    assert!(query.top_paths(at(9), 5).unwrap().is_empty(), "nothing since");
    // An IPv4 client seen through an IPv6 socket is the IPv4 node.
    let mapped: IpAddr = "10.0.0.5".parse().unwrap();
    assert_eq!(query.node(mapped, None).unwrap().len(), 1);
}

#[test]
fn a_missing_database_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = Query::open(&dir.path().join("audit.sqlite")).unwrap_err();
    assert!(matches!(err, Error::Missing { .. }), "{err}");
    assert!(err.to_string().contains("audit.sqlite"), "{err}");
}

/// A writer stuck on a locked database (a stalled disk) fills its queue; further records are
/// dropped and counted, and recording never waits. Once the lock goes, what was queued is
/// written. (The writer may have taken one batch off the queue before it stalled, so the
/// flood is bigger than a batch and the queue together.)
#[test]
fn a_stalled_writer_drops_records_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.sqlite");
    let queue = 16;
    let log = AuditLog::open(&db, AuditConfig { queue, ..AuditConfig::default() }).unwrap();
    let blocker = rusqlite::Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let total = 4 * writer::BATCH as u64;
    for i in 0..total {
        log.record(record(i, "10.0.0.1", Kind::Nar, GLIBC, "glibc", 200, 1));
    }
    let dropped = log.dropped();
    let held = (writer::BATCH + queue + 1) as u64;
    assert!(dropped >= total - held && dropped < total, "dropped {dropped} of {total}");
    blocker.execute_batch("COMMIT").unwrap();
    log.flush();
    assert_eq!(log.written() + log.dropped(), total);
}

fn writer(dir: &std::path::Path, config: AuditConfig) -> Writer {
    let counter = || Arc::new(AtomicU64::new(0));
    Writer::new(writer::open(&dir.join("audit.sqlite")).unwrap(), config, counter(), counter())
}

fn count(writer: &Writer, table: &str) -> i64 {
    writer.conn().query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).unwrap()
}

#[test]
fn records_past_the_retention_go_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), AuditConfig { retention: Duration::from_secs(100), ..AuditConfig::default() });
    w.write(&wave()).unwrap();
    assert_eq!((count(&w, "fetch"), count(&w, "path")), (8, 2));
    // At 104 s, the records of the first 4 s are past a 100 s retention.
    w.maintain(at(104));
    assert_eq!(count(&w, "fetch"), 5);
    w.maintain(at(108));
    assert_eq!((count(&w, "fetch"), count(&w, "path")), (1, 1), "glibc's path row goes with its last record");
}

#[test]
fn the_size_cap_deletes_the_oldest_records() {
    let dir = tempfile::tempdir().unwrap();
    let max_bytes = 256 * 1024;
    let mut w = writer(dir.path(), AuditConfig { max_bytes, ..AuditConfig::default() });
    let records: Vec<Record> = (0..20_000)
        .map(|i| record(i, &format!("10.0.{}.{}", i / 250, i % 250), Kind::Nar, GLIBC, "glibc", 200, i))
        .collect();
    for batch in records.chunks(1000) {
        w.write(batch).unwrap();
    }
    w.maintain(at(20_000));
    let used: i64 = w
        .conn()
        .query_row("SELECT (page_count - freelist_count) * page_size FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()", [], |row| row.get(0))
        .unwrap();
    assert!(u64::try_from(used).unwrap() <= max_bytes, "{used} bytes used");
    let (kept, oldest): (i64, i64) =
        w.conn().query_row("SELECT count(*), min(bytes) FROM fetch", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert!(kept > 0 && kept < 20_000, "kept {kept}");
    assert_eq!(oldest, 20_000 - kept, "the newest records are the ones kept");
}

/// A Nix NAR URL names only the hash: the record takes the name its narinfo's record knew, so
/// `who_fetched` finds it by name.
#[test]
fn a_nar_record_without_a_name_takes_its_narinfos() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), AuditConfig::default());
    w.write(&[
        record(1, "10.0.0.1", Kind::Narinfo, GLIBC, "glibc-2.39-52", 200, 900),
        record(2, "10.0.0.1", Kind::Nar, GLIBC, "", 200, 30_000),
        // A hash nothing named stays nameless.
        record(3, "10.0.0.1", Kind::Nar, BASH, "", 200, 7),
    ])
    .unwrap();
    // In a later batch too.
    w.write(&[record(4, "10.0.0.2", Kind::Nar, GLIBC, "", 200, 30_000)]).unwrap();
    drop(w);
    let query = Query::open(&dir.path().join("audit.sqlite")).unwrap();
    let nodes = query.who_fetched("glibc", None).unwrap();
    let found: Vec<(&str, u64)> = nodes.iter().map(|n| (n.client.as_str(), n.bytes)).collect();
    assert_eq!(found, [("10.0.0.2", 30_000), ("10.0.0.1", 30_000)]);
    assert_eq!(query.who_fetched(BASH, None).unwrap()[0].paths, [BASH.to_owned()]);
}
