//! A fake upstream binary cache, in process on 127.0.0.1: an axum router whose answers each
//! test shapes (the fault matrix: down, 500, slow, stalled, truncated, a flipped byte),
//! counting every request it gets (and how many narinfo requests it is answering at once).
//! It serves real narinfo text signed with a real key; its "NARs" are arbitrary bytes, which
//! is all a proxy's verification looks at.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use formats::Dialect;
use formats::{Compression, NarHash, NarInfo, StorePathHash};
use signing::{GuixSecretKey, SecretKey};
use upstream::{NarSource, Proxy, ProxyConfig, Trust, UpstreamConfig};

/// How the fake answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// As a healthy cache would.
    Normal,
    /// This status, empty body.
    Status(u16),
    /// Never sends response headers.
    Hang,
    /// Sends headers and half the body, then nothing more (the connection stays open).
    Stall,
    /// Sends headers, a Content-Length, half the body, then closes.
    Truncate,
    /// Sends the body with one byte flipped in the middle.
    FlipByte,
    /// Sends the body slowly: 64 KiB, then waits to be released (see [`Fake::release`]).
    Gated,
    /// This status for the first `n` requests of the path, then as a healthy cache would.
    FailFirst(u16, usize),
}

/// One path the fake serves.
#[derive(Clone)]
pub struct Item {
    /// Its hash part.
    pub hash: StorePathHash,
    /// Its narinfo, as served.
    pub narinfo: String,
    /// The narinfo's `URL` (`nar/...`).
    pub nar_url: String,
    /// The file at that URL (the NAR, compressed).
    pub file: Bytes,
    /// The NAR.
    pub nar: Bytes,
}

/// The fake's state, shared by its handlers and the test.
pub struct Shared {
    /// Narinfo text by `<hash>.narinfo`.
    pub narinfos: HashMap<String, String>,
    /// NAR files by their path under `nar/`.
    pub files: HashMap<String, Bytes>,
    /// How each narinfo is answered (default [`Behaviour::Normal`]).
    pub narinfo_behaviour: Mutex<HashMap<String, Behaviour>>,
    /// How each NAR file is answered (default [`Behaviour::Normal`]).
    pub nar_behaviour: Mutex<HashMap<String, Behaviour>>,
    /// Requests so far by path (`<hash>.narinfo`, `nar/<file>`).
    pub requests: Mutex<HashMap<String, usize>>,
    /// Opened by [`Fake::release`] (closed again by [`Fake::hold_nars`]): gated bodies and held
    /// narinfos and NARs wait for it.
    pub gate: tokio::sync::watch::Sender<bool>,
    /// Requests so far.
    pub total: AtomicUsize,
    /// Every request so far, for tests that wait for the proxy to have asked.
    pub received: tokio::sync::watch::Sender<usize>,
    /// When set, overrides the behaviour of every narinfo request (an outage).
    pub all_narinfos: Mutex<Option<Behaviour>>,
    /// When set, every narinfo answer waits for [`Fake::release`].
    pub hold_narinfos: std::sync::atomic::AtomicBool,
    /// When set, every NAR answer waits for [`Fake::release`].
    pub hold_nars: std::sync::atomic::AtomicBool,
    /// narinfo requests being answered now.
    pub narinfos_in_flight: AtomicUsize,
    /// The most narinfo requests answered at once so far.
    pub max_narinfos_in_flight: AtomicUsize,
}

/// A running fake upstream; `K` is the key its narinfos are signed with (Nix by default,
/// [`GuixSecretKey`] for a Guix farm; [`crate::dialected::Dialected`] for either).
pub struct Fake<K = SecretKey> {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub shared: Arc<Shared>,
    /// The key its narinfos are signed with.
    pub key: K,
    /// What it serves.
    pub items: Vec<Item>,
    _server: tokio::task::JoinHandle<()>,
}

/// A signed narinfo for a path `/nix/store/<hash>-<name>` whose NAR is `nar`, served
/// compressed with `compression` (see [`make_item_in`]).
pub fn make_item(key: &SecretKey, hash: &str, name: &str, nar: Vec<u8>, compression: Compression) -> Item {
    make_item_in(key, "/nix/store", hash, name, nar, compression)
}

/// A Nix narinfo for a path `<store_dir>/<hash>-<name>` whose NAR is `nar`, served compressed
/// with `compression` at `nar/<filehash>.nar<ext>`, signed with `key` (over `store_dir`).
pub fn make_item_in(
    key: &SecretKey,
    store_dir: &str,
    hash: &str,
    name: &str,
    nar: Vec<u8>,
    compression: Compression,
) -> Item {
    let file = crate::compression::compress(compression, &nar);
    let nar_url = format!("nar/{}.nar{}", NarHash::digest(&file).to_nix32(), compression.extension());
    let mut info = NarInfo {
        store_path: format!("{store_dir}/{hash}-{name}"),
        url: nar_url.clone(),
        compression: compression.into(),
        file_hash: Some(NarHash::digest(&file)),
        file_size: Some(file.len() as u64),
        nar_hash: NarHash::digest(&nar),
        nar_size: nar.len() as u64,
        references: vec![format!("{hash}-{name}")],
        deriver: None,
        sigs: vec![],
        ca: None,
    };
    info.sigs.push(key.sign(&info.fingerprint(store_dir)));
    Item {
        hash: StorePathHash::parse(hash).unwrap(),
        narinfo: info.render(),
        nar_url,
        file: file.into(),
        nar: nar.into(),
    }
}

/// What guix publish signs for `<store_dir>/<hash>-<name>` with the NAR `nar`, referring to
/// itself: the text before `Signature:`.
pub fn guix_signed_part(store_dir: &str, hash: &str, name: &str, nar: &[u8]) -> String {
    format!(
        "StorePath: {store_dir}/{hash}-{name}\nNarHash: {}\nNarSize: {}\nReferences: {hash}-{name}\n",
        NarHash::digest(nar),
        nar.len()
    )
}

/// The proxy's order of preference among the groups a Guix farm offers.
const GUIX_PREFERENCE: [&str; 5] = ["zstd", "gzip", "xz", "bzip2", "none"];

/// A Guix path `/gnu/store/<hash>-<name>` offered in the `groups` compressions (lzip too,
/// though no one can fetch it: the fake serves only the NAR file the proxy should choose), its
/// narinfo signed with `key` as guix publish signs it.
pub fn make_guix_item(key: &GuixSecretKey, hash: &str, name: &str, nar: Vec<u8>, groups: &[&str]) -> Item {
    let signed = guix_signed_part("/gnu/store", hash, name, &nar);
    make_guix_item_signed(key, hash, name, nar, groups, signed)
}

/// Like [`make_guix_item`], with `signed` as the text above `Signature:`.
pub fn make_guix_item_signed(
    key: &GuixSecretKey,
    hash: &str,
    name: &str,
    nar: Vec<u8>,
    groups: &[&str],
    signed: String,
) -> Item {
    let basename = format!("{hash}-{name}");
    let signature = key.sign_narinfo("farm.example.org", &signed).unwrap();
    let mut narinfo = format!("{signed}Signature: {signature}\n");
    let mut files = Vec::new();
    for &group in groups {
        let (url, file): (String, Bytes) = match group.parse::<Compression>() {
            Ok(Compression::None) => (format!("nar/{basename}"), nar.clone().into()),
            Ok(c) => (format!("nar/{group}/{basename}"), crate::compression::compress(c, &nar).into()),
            Err(_) => (format!("nar/{group}/{basename}"), Bytes::from_static(b"not a NAR subserve can read")),
        };
        narinfo.push_str(&format!("URL: {url}\nCompression: {group}\nFileSize: {}\n", file.len()));
        files.push((group, url, file));
    }
    let rank = |g: &str| GUIX_PREFERENCE.iter().position(|p| *p == g).unwrap_or(GUIX_PREFERENCE.len());
    let (_, nar_url, file) = files.into_iter().min_by_key(|(g, _, _)| rank(g)).expect("at least one group");
    Item { hash: StorePathHash::parse(hash).unwrap(), narinfo, nar_url, file, nar: nar.into() }
}

/// Checks a Guix narinfo's signature as `guix substitute` does: what it covers, then the
/// signature.
pub fn verify_guix_narinfo(text: &str, acl: &[signing::GuixPublicKey]) -> Result<(), String> {
    let signed = formats::guix::signed(text).map_err(|e| e.to_string())?;
    signing::guix::verify(&signed.signature, signed.text, acl).map_err(|e| e.to_string())
}

impl<K> Fake<K> {
    /// Serves `items` on 127.0.0.1 from the current tokio runtime.
    pub async fn start(items: Vec<Item>, key: K) -> Self {
        let mut shared = Shared {
            narinfos: HashMap::new(),
            files: HashMap::new(),
            narinfo_behaviour: Mutex::default(),
            nar_behaviour: Mutex::default(),
            requests: Mutex::default(),
            gate: tokio::sync::watch::Sender::new(false),
            total: AtomicUsize::new(0),
            received: tokio::sync::watch::Sender::new(0),
            all_narinfos: Mutex::default(),
            hold_narinfos: false.into(),
            hold_nars: false.into(),
            narinfos_in_flight: AtomicUsize::new(0),
            max_narinfos_in_flight: AtomicUsize::new(0),
        };
        for item in &items {
            shared.narinfos.insert(format!("{}.narinfo", item.hash), item.narinfo.clone());
            shared.files.insert(item.nar_url.trim_start_matches("nar/").to_owned(), item.file.clone());
        }
        let shared = Arc::new(shared);
        let app = Router::new()
            .route("/{file}", axum::routing::get(narinfo))
            .route("/nar/{file}", axum::routing::get(nar))
            // guix publish's layout: nar/<compression>/<basename>.
            .route("/nar/{compression}/{file}", axum::routing::get(nar_in))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared, key, items, _server: server }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `item`'s narinfo with `b` from now on.
    pub fn set_narinfo(&self, item: &Item, b: Behaviour) {
        self.shared.narinfo_behaviour.lock().unwrap().insert(format!("{}.narinfo", item.hash), b);
    }

    /// Answers `item`'s NAR file with `b` from now on.
    pub fn set_nar(&self, item: &Item, b: Behaviour) {
        self.shared.nar_behaviour.lock().unwrap().insert(item.nar_url.trim_start_matches("nar/").to_owned(), b);
    }

    /// How many requests the fake got for `path` (`<hash>.narinfo` or `nar/<file>`).
    pub fn requests(&self, path: &str) -> usize {
        self.shared.requests.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// How many requests the fake got for `item`'s narinfo.
    pub fn narinfo_requests(&self, item: &Item) -> usize {
        self.requests(&format!("{}.narinfo", item.hash))
    }

    /// How many requests the fake got for `item`'s NAR file.
    pub fn nar_requests(&self, item: &Item) -> usize {
        self.requests(&item.nar_url)
    }

    /// Lets every gated body and held narinfo or NAR answer finish.
    pub fn release(&self) {
        self.shared.gate.send_replace(true);
    }

    /// Every narinfo request gets `b` (an outage), or each its own behaviour again (`None`).
    pub fn set_all_narinfos(&self, b: Option<Behaviour>) {
        *self.shared.all_narinfos.lock().unwrap() = b;
    }

    /// Holds every narinfo answer back until [`Fake::release`].
    pub fn hold_narinfos(&self) {
        self.shared.hold_narinfos.store(true, Ordering::SeqCst);
    }

    /// Holds every NAR answer back until [`Fake::release`]. Called again after a release, it
    /// closes the gate again (gated bodies and held narinfos wait too): the next NAR answers
    /// are held until the next release.
    pub fn hold_nars(&self) {
        self.shared.hold_nars.store(true, Ordering::SeqCst);
        self.shared.gate.send_replace(false);
    }

    /// Waits until the fake has received `n` requests in all.
    pub async fn wait_for_requests(&self, n: usize) {
        self.shared.received.subscribe().wait_for(|&got| got >= n).await.unwrap();
    }

    /// Requests received so far.
    pub fn total(&self) -> usize {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// The most narinfo requests the fake was answering at once.
    pub fn max_narinfos_in_flight(&self) -> usize {
        self.shared.max_narinfos_in_flight.load(Ordering::SeqCst)
    }
}

impl<K: UpstreamKey> Fake<K> {
    /// A proxy in front of this fake, caching in `dir` up to `max_size` bytes.
    pub fn proxy(&self, dir: &std::path::Path, max_size: u64) -> Proxy {
        proxy_for(&[self], dir, max_size)
    }
}

/// A proxy in front of `fakes` (in that order of priority), caching in `dir` up to
/// `max_size` bytes, with the timings of [`config_for`].
pub fn proxy_for<K: UpstreamKey>(fakes: &[&Fake<K>], dir: &std::path::Path, max_size: u64) -> Proxy {
    proxy_with_stall(fakes, dir, max_size, Duration::from_secs(2))
}

/// The configuration of a proxy in front of `fakes` (in that order of priority), caching in
/// `dir`, with timings short enough for tests: a 2 s upstream timeout, a 1 s retry budget and a
/// 200 ms breaker cool-down.
pub fn config_for<K: UpstreamKey>(fakes: &[&Fake<K>], dir: &std::path::Path) -> ProxyConfig {
    ProxyConfig {
        dialect: K::DIALECT,
        upstreams: fakes
            .iter()
            .enumerate()
            .map(|(i, f)| UpstreamConfig {
                url: f.url(),
                trust: f.key.trust(),
                priority: i as i32,
                timeout: Duration::from_secs(2),
            })
            .collect(),
        cache_dir: dir.to_path_buf(),
        max_size: 1 << 30,
        negative_ttl: Duration::from_secs(60),
        store_dir: K::STORE_DIR.into(),
        stall_timeout: Duration::from_secs(2),
        breaker_cool_down: Duration::from_millis(200),
        retry_budget: Duration::from_secs(1),
        outage_patience: Duration::from_secs(60),
        max_narinfo_fetches: ProxyConfig::DEFAULT_MAX_NARINFO_FETCHES,
        max_narinfo_fetches_per_client: ProxyConfig::DEFAULT_MAX_NARINFO_FETCHES_PER_CLIENT,
    }
}

/// A fake upstream's signing key: what the proxy must trust it with, and for which dialect.
pub trait UpstreamKey {
    /// The dialect this key's narinfos are for.
    const DIALECT: Dialect;
    /// The store dir those narinfos name.
    const STORE_DIR: &'static str;
    /// The trust of an upstream that signs with this key.
    fn trust(&self) -> Trust;
}

impl UpstreamKey for SecretKey {
    const DIALECT: Dialect = Dialect::Nix;
    const STORE_DIR: &'static str = "/nix/store";
    fn trust(&self) -> Trust {
        Trust::Nix(vec![self.to_public()])
    }
}

impl UpstreamKey for GuixSecretKey {
    const DIALECT: Dialect = Dialect::Guix;
    const STORE_DIR: &'static str = "/gnu/store";
    fn trust(&self) -> Trust {
        Trust::Guix(vec![self.to_public()])
    }
}

/// Like [`proxy_for`] with another stall timeout, for tests that hold a body back on purpose;
/// for Nix or Guix fakes alike.
pub fn proxy_with_stall<K: UpstreamKey>(
    fakes: &[&Fake<K>],
    dir: &std::path::Path,
    max_size: u64,
    stall: Duration,
) -> Proxy {
    Proxy::open(proxy_config(fakes, dir, max_size, stall)).unwrap()
}

/// The proxy configuration of [`proxy_with_stall`].
pub fn proxy_config<K: UpstreamKey>(
    fakes: &[&Fake<K>],
    dir: &std::path::Path,
    max_size: u64,
    stall: Duration,
) -> ProxyConfig {
    ProxyConfig { max_size, stall_timeout: stall, ..config_for(fakes, dir) }
}

/// Counts a request; returns how many requests `path` has had, this one included.
fn count(shared: &Shared, path: String) -> usize {
    let n = {
        let mut requests = shared.requests.lock().unwrap();
        let n = requests.entry(path).or_default();
        *n += 1;
        *n
    };
    shared.total.fetch_add(1, Ordering::SeqCst);
    shared.received.send_modify(|r| *r += 1);
    n
}

/// Counts a narinfo request in flight while it lives.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: &Arc<Shared>) -> Self {
        let now = shared.narinfos_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_narinfos_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.narinfos_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn narinfo(State(shared): State<Arc<Shared>>, Path(file): Path<String>) -> Response {
    let _in_flight = InFlight::new(&shared);
    let nth = count(&shared, file.clone());
    if shared.hold_narinfos.load(Ordering::SeqCst) {
        let _ = shared.gate.subscribe().wait_for(|open| *open).await;
    }
    let outage = *shared.all_narinfos.lock().unwrap();
    let behaviour =
        outage.or_else(|| shared.narinfo_behaviour.lock().unwrap().get(&file).copied()).unwrap_or(Behaviour::Normal);
    let behaviour = match behaviour {
        Behaviour::FailFirst(status, n) if nth <= n => Behaviour::Status(status),
        Behaviour::FailFirst(..) => Behaviour::Normal,
        b => b,
    };
    if let Behaviour::Status(s) = behaviour {
        return StatusCode::from_u16(s).unwrap().into_response();
    }
    let Some(text) = shared.narinfos.get(&file).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    respond(&shared, behaviour, Bytes::from(text)).await
}

async fn nar(State(shared): State<Arc<Shared>>, Path(file): Path<String>) -> Response {
    serve_nar(shared, file).await
}

async fn nar_in(State(shared): State<Arc<Shared>>, Path((compression, file)): Path<(String, String)>) -> Response {
    serve_nar(shared, format!("{compression}/{file}")).await
}

/// `file` is the path under `nar/`.
async fn serve_nar(shared: Arc<Shared>, file: String) -> Response {
    let nth = count(&shared, format!("nar/{file}"));
    if shared.hold_nars.load(Ordering::SeqCst) {
        let _ = shared.gate.subscribe().wait_for(|open| *open).await;
    }
    let behaviour = match shared.nar_behaviour.lock().unwrap().get(&file).copied().unwrap_or(Behaviour::Normal) {
        Behaviour::FailFirst(status, n) if nth <= n => Behaviour::Status(status),
        Behaviour::FailFirst(..) => Behaviour::Normal,
        b => b,
    };
    let Some(data) = shared.files.get(&file).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    respond(&shared, behaviour, data).await
}

async fn respond(shared: &Arc<Shared>, behaviour: Behaviour, data: Bytes) -> Response {
    let half = data.slice(..data.len() / 2);
    match behaviour {
        Behaviour::Normal | Behaviour::FailFirst(..) => data.into_response(),
        Behaviour::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Behaviour::Hang => std::future::pending().await,
        Behaviour::Stall => {
            let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(half) })
                .chain(futures_util::stream::pending());
            Response::new(Body::from_stream(stream))
        }
        Behaviour::Truncate => {
            let len = data.len();
            let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(half), Err(std::io::Error::other("cut"))]);
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert("content-length", len.into());
            r
        }
        Behaviour::FlipByte => {
            let mut v = data.to_vec();
            let mid = v.len() / 2;
            v[mid] ^= 0x01;
            v.into_response()
        }
        Behaviour::Gated => {
            let shared = Arc::clone(shared);
            let first = data.slice(..64 * 1024);
            let rest = data.slice(64 * 1024..);
            let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
                futures_util::stream::once(async move {
                    let _ = shared.gate.subscribe().wait_for(|open| *open).await;
                    Ok(rest)
                }),
            );
            Response::new(Body::from_stream(stream))
        }
    }
}

use futures_util::StreamExt as _;

/// Reads a proxied NAR whole; `Err` if the stream ended with an error.
pub async fn read_all(source: NarSource) -> Result<Vec<u8>, std::io::Error> {
    match source {
        NarSource::File { path, .. } => tokio::fs::read(path).await,
        NarSource::Stream(s) => {
            let mut s = s.into_stream();
            let mut out = Vec::new();
            while let Some(chunk) = s.next().await {
                out.extend_from_slice(&chunk?);
            }
            Ok(out)
        }
    }
}
