//! What one simulated node does: `nix-cache-info`, every narinfo of the closure over a few
//! keep-alive connections, then every NAR, a few at a time, each request tried up to
//! [`ATTEMPTS`] times with Nix's back-off.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;

use formats::narinfo::NarInfo;
use futures_util::future::join_all;
use http_body_util::BodyExt;

use crate::check::{is_plain, BodyCheck, Checks};
use crate::conn::{backoff, Conn, Trouble, ATTEMPTS};

/// The same for every node: where the cache is and what to fetch.
pub(crate) struct Plan {
    pub(crate) addr: SocketAddr,
    /// URL path prefix of the store, without a trailing `/`.
    pub(crate) prefix: String,
    /// Store path hashes of the closure.
    pub(crate) hashes: Vec<String>,
    pub(crate) narinfo_connections: usize,
    pub(crate) nar_jobs: usize,
}

impl Plan {
    /// The request path of `relative` (a narinfo's `URL:`, or `nix-cache-info`).
    pub(crate) fn url(&self, relative: &str) -> String {
        format!("{}/{relative}", self.prefix)
    }
}

/// Counts over all nodes.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) requests: u64,
    pub(crate) retries: u64,
    /// Retries by cause: a status code, or `connect`/`send`/`body`.
    pub(crate) retry_causes: BTreeMap<String, u64>,
    pub(crate) bytes: u64,
    pub(crate) nar_bodies: u64,
    pub(crate) by_compression: BTreeMap<String, u64>,
}

/// Runs one node; an error names what failed for good.
pub(crate) async fn run(plan: &Plan, checks: &RefCell<Checks>, tally: &RefCell<Tally>) -> Result<(), String> {
    let mut conns: Vec<Conn> = (0..plan.narinfo_connections.max(plan.nar_jobs)).map(|_| Conn::new(plan.addr)).collect();
    let info = fetch(&mut conns[0], &plan.url("nix-cache-info"), tally, |body| Ok(body.len())).await?;
    if info == 0 {
        return Err("empty nix-cache-info".to_owned());
    }

    let next = Cell::new(0);
    let infos: RefCell<Vec<Option<NarInfo>>> = RefCell::new(vec![None; plan.hashes.len()]);
    let workers = conns[..plan.narinfo_connections].iter_mut().map(|conn| async {
        while let Some(i) = take(&next, plan.hashes.len()) {
            let hash = &plan.hashes[i];
            let info = fetch(conn, &plan.url(&format!("{hash}.narinfo")), tally, |body| {
                let text =
                    std::str::from_utf8(body).map_err(|_| Trouble::Fatal(format!("{hash}.narinfo: not UTF-8")))?;
                let info = NarInfo::parse(text).map_err(|e| Trouble::Fatal(format!("{hash}.narinfo: {e}")))?;
                if !info.store_path.rsplit('/').next().is_some_and(|base| base.starts_with(hash.as_str())) {
                    return Err(Trouble::Fatal(format!("{hash}.narinfo names {}", info.store_path)));
                }
                Ok(info)
            })
            .await?;
            infos.borrow_mut()[i] = Some(info);
        }
        Ok::<(), String>(())
    });
    join_all(workers).await.into_iter().collect::<Result<(), String>>()?;
    let infos: Vec<NarInfo> = infos.into_inner().into_iter().flatten().collect();

    let next = Cell::new(0);
    let workers = conns[..plan.nar_jobs].iter_mut().map(|conn| async {
        while let Some(i) = take(&next, infos.len()) {
            nar(conn, plan, &infos[i], checks, tally).await?;
        }
        Ok::<(), String>(())
    });
    join_all(workers).await.into_iter().collect::<Result<(), String>>()
}

/// The next index below `len` from a shared cursor.
fn take(next: &Cell<usize>, len: usize) -> Option<usize> {
    let i = next.get();
    (i < len).then(|| {
        next.set(i + 1);
        i
    })
}

/// Fetches a small body whole (`nix-cache-info`, a narinfo) and hands it to `parse`, with
/// retries.
async fn fetch<T>(
    conn: &mut Conn,
    path: &str,
    tally: &RefCell<Tally>,
    parse: impl Fn(&[u8]) -> Result<T, Trouble>,
) -> Result<T, String> {
    let mut attempt = 1;
    loop {
        let result = async {
            let response = conn.get(path).await?;
            let body =
                response.into_body().collect().await.map_err(|e| Trouble::Transient(format!("body: {e}")))?.to_bytes();
            tally.borrow_mut().bytes += body.len() as u64;
            parse(&body)
        }
        .await;
        tally.borrow_mut().requests += 1;
        match result {
            Ok(value) => return Ok(value),
            Err(trouble) => retry_or_fail(conn, path, trouble, &mut attempt, tally).await?,
        }
    }
}

/// Downloads and checks one NAR, with retries.
async fn nar(
    conn: &mut Conn,
    plan: &Plan,
    info: &NarInfo,
    checks: &RefCell<Checks>,
    tally: &RefCell<Tally>,
) -> Result<(), String> {
    let path = plan.url(&info.url);
    let mut attempt = 1;
    loop {
        let decode = is_plain(info) || checks.borrow_mut().begin(&info.url, info);
        let result = async {
            let response = conn.get(&path).await?;
            let mut check = BodyCheck::new(info, decode)?;
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| Trouble::Transient(format!("body: {e}")))?;
                if let Ok(data) = frame.into_data() {
                    tally.borrow_mut().bytes += data.len() as u64;
                    check.update(&data)?;
                }
            }
            check.finish(info)
        }
        .await;
        {
            let mut tally = tally.borrow_mut();
            tally.requests += 1;
            tally.nar_bodies += u64::from(result.is_ok());
            if result.is_ok() {
                *tally.by_compression.entry(info.compression.to_string()).or_default() += 1;
            }
        }
        match (&result, &mut *checks.borrow_mut()) {
            (Ok((_, true)), checks) if is_plain(info) => checks.decoded += 1,
            (Ok((digest, true)), checks) => checks.decoded(&info.url, Some(*digest)),
            (Ok((digest, false)), checks) => checks.hashed(&info.url, *digest),
            (Err(_), checks) if decode && !is_plain(info) => checks.decoded(&info.url, None),
            (Err(_), _) => {}
        }
        match result {
            Ok(_) => return Ok(()),
            Err(trouble) => retry_or_fail(conn, &path, trouble, &mut attempt, tally).await?,
        }
    }
}

/// After a failed attempt: waits and counts a retry when Nix would retry, else fails.
async fn retry_or_fail(
    conn: &mut Conn,
    path: &str,
    trouble: Trouble,
    attempt: &mut u32,
    tally: &RefCell<Tally>,
) -> Result<(), String> {
    match trouble {
        Trouble::Transient(cause) if *attempt < ATTEMPTS => {
            conn.reset();
            *attempt += 1;
            {
                let mut tally = tally.borrow_mut();
                tally.retries += 1;
                let cause = cause.split(':').next().unwrap_or_default().to_owned();
                *tally.retry_causes.entry(cause).or_default() += 1;
            }
            tokio::time::sleep(backoff(*attempt)).await;
            Ok(())
        }
        Trouble::Transient(cause) => Err(format!("{path}: gave up after {ATTEMPTS} attempts: {cause}")),
        Trouble::Fatal(message) => Err(message),
    }
}
