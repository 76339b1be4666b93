//! Baking: local NARs compressed once, in the background, into the cache area, so that later
//! requests are served from a file (with `Content-Length` and `Range`) instead of being
//! compressed again for every client.
//!
//! A path is baked on its first narinfo request when its NarSize is at least the threshold
//! (small paths are cheap on the fly), and eagerly for the configured roots' closures. Until
//! its file is ready a path is served on the fly as before: nothing ever waits for, or is
//! refused because of, baking. A bounded pool of low-priority threads does the work; a full
//! queue drops the request (the next narinfo request asks again).
//!
//! The NAR is checked while it is baked: its sha256 and size must equal the DB's NarHash and
//! NarSize, or the result is thrown away, so a file that changed behind the store's back is
//! never frozen into the cache.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use formats::{Compression, NarHash};
use sha2::{Digest, Sha256};
use store_reader::Store;
use upstream::{Baked, CacheArea, Grower, Growing};

use crate::compression::{self, Levels};
use crate::cpu::Yielder;
use crate::stats::{BakeCounters, BakeStats};

/// Jobs that may wait for a worker; beyond this, requests to bake are dropped.
const QUEUE: usize = 4096;
/// Jobs the eager baking of the roots may have queued or in progress at once: it waits for
/// room beyond this, so that half the queue stays free for the paths clients ask for.
const EAGER: usize = QUEUE / 2;

/// What to bake and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakeConfig {
    /// Compressions to bake (zstd, xz); empty turns baking off.
    pub compressions: Vec<Compression>,
    /// NARs smaller than this are never baked.
    pub min_size: u64,
    /// Worker threads, i.e. NARs baked at once.
    pub workers: usize,
    /// Levels to bake at in the background.
    pub levels: Levels,
    /// Levels of a bake a client waits for (its first request came before the background
    /// bake): the on-the-fly levels, fast enough to stream.
    pub urgent_levels: Levels,
    /// How long a bake queued by a narinfo request waits for a worker: a client that asks
    /// for the file meanwhile gets it baked at once at `urgent_levels` (see
    /// [`Baker::follow`]), and the worker finds it done. The roots' bakes do not wait.
    pub delay: Duration,
    /// Store paths whose closures are baked at start-up.
    pub roots: Vec<String>,
}

/// Default zstd level for baking: high, since it is paid once per path.
pub const DEFAULT_BAKE_ZSTD_LEVEL: i32 = 15;
/// Default xz preset for baking.
pub const DEFAULT_BAKE_XZ_LEVEL: u32 = 6;
/// Default [`BakeConfig::delay`]: a job wave asks for its NARs within seconds of their
/// narinfos, so its bakes are the fast ones it follows; what nobody fetched is baked small.
pub const DEFAULT_BAKE_DELAY: Duration = Duration::from_secs(30);
/// Default threshold: smaller NARs are compressed on the fly at little cost.
pub const DEFAULT_BAKE_MIN_SIZE: u64 = 1 << 20;

/// Default number of bake workers on a machine with `cores` cores: half of them, at least one,
/// so requests keep the rest.
pub fn default_workers(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// One NAR to bake.
#[derive(Debug)]
pub struct Job {
    /// The path's files.
    pub root: PathBuf,
    /// What the NAR must hash to.
    pub nar_hash: NarHash,
    /// What it must measure.
    pub nar_size: u64,
    /// What to compress it with.
    pub compression: Compression,
}

/// The bake queue and its workers, the bakes being written and what is known to be worth
/// baking; shared by every request of one store.
pub struct Baker {
    config: BakeConfig,
    cache: CacheArea,
    /// Jobs, each with the moment it may start.
    tx: mpsc::SyncSender<(Job, Instant)>,
    pending: Arc<Pending>,
    counters: Arc<BakeCounters>,
    /// Bakes being written, by NarHash and compression: clients that ask for the file follow
    /// it as it grows.
    writing: Arc<Mutex<Writing>>,
    /// Whether a NAR is worth baking, once sampled (see [`Baker::worth_baking`]).
    verdicts: Mutex<HashMap<NarHash, bool>>,
}

/// The bakes being written, by what they bake.
type Writing = HashMap<(NarHash, Compression), Arc<Growing>>;

/// The NARs queued or being baked, and a signal for whoever waits for the queue to shrink.
#[derive(Default)]
struct Pending {
    jobs: Mutex<HashSet<(NarHash, Compression)>>,
    /// Notified whenever a job is done.
    shrunk: Condvar,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(NarHash, Compression)>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn done(&self, key: &(NarHash, Compression)) {
        self.lock().remove(key);
        self.shrunk.notify_all();
    }
}

impl std::fmt::Debug for Baker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Baker").field("config", &self.config).finish_non_exhaustive()
    }
}

/// What a client asking for a file to bake gets (see [`Baker::follow`]).
#[derive(Debug)]
pub enum Following {
    /// The baked file.
    Baked(Baked),
    /// The bake being written, to stream as it grows.
    Writing(Arc<Growing>),
}

/// What [`Baker::begin`] found.
enum Begin {
    /// A bake of it is being written: follow that one.
    Writing(Arc<Growing>),
    /// It is baked.
    Baked(Baked),
    /// No temp file could be made.
    Unable,
    /// This caller writes it, through the grower.
    Started(Grower, Arc<Growing>),
}

/// Bytes of a NAR's beginning compressed to judge whether baking it pays.
const SAMPLE: usize = 1 << 20;
/// A bake must shrink the sample below this fraction of its size to be worth it.
const WORTH_RATIO: f64 = 0.9;
/// Verdicts remembered; beyond this they are forgotten and sampled again when asked.
const VERDICTS: usize = 1 << 16;

impl Baker {
    /// Starts the workers, which bake into `cache`, the store's cache area (shared with its
    /// proxy, if it has one). Fails if a worker thread cannot be started.
    pub fn start(config: BakeConfig, cache: CacheArea) -> io::Result<Arc<Self>> {
        let (tx, rx) = mpsc::sync_channel::<(Job, Instant)>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let baker = Arc::new(Self {
            config,
            cache,
            tx,
            pending: Arc::default(),
            counters: Arc::default(),
            writing: Arc::default(),
            verdicts: Mutex::default(),
        });
        for n in 0..baker.config.workers.max(1) {
            let (rx, baker) = (Arc::clone(&rx), Arc::downgrade(&baker));
            std::thread::Builder::new().name(format!("bake-{n}")).spawn(move || {
                lower_priority();
                let mut yielder = Yielder::new();
                loop {
                    let (job, not_before) = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(queued) => queued,
                        Err(_) => return,
                    };
                    // Queued in order, so the jobs behind this one may not start earlier.
                    std::thread::sleep(not_before.saturating_duration_since(Instant::now()));
                    let Some(baker) = baker.upgrade() else { return };
                    let key = (job.nar_hash, job.compression);
                    // A client may have started this bake meanwhile; it is followed, not redone.
                    if let Begin::Started(grower, _) = baker.begin(&job) {
                        let levels = baker.config.levels;
                        baker.run(&job, levels, grower, Some(&mut yielder));
                    }
                    baker.pending.done(&key);
                }
            })?;
        }
        Ok(baker)
    }

    /// The compressions baked.
    pub fn compressions(&self) -> &[Compression] {
        &self.config.compressions
    }

    /// Whether a NAR of this size is worth baking.
    pub fn wants(&self, nar_size: u64) -> bool {
        nar_size >= self.config.min_size
    }

    /// [`Baker::wants`] for a narinfo request of a local NAR: counts the ones too small to
    /// bake (`skipped_total` of [`Baker::stats`]).
    pub fn considers(&self, nar_size: u64) -> bool {
        let wanted = self.wants(nar_size);
        if !wanted {
            self.counters.skipped_total.fetch_add(1, Ordering::Relaxed);
        }
        wanted
    }

    /// Bakes pending, queued, skipped, done and failed so far.
    pub fn stats(&self) -> BakeStats {
        // Counters first: a bake leaves `pending` before it is counted done or failed.
        let mut stats = self.counters.snapshot();
        stats.pending = self.pending_len();
        stats.running = self.writing().len();
        stats
    }

    /// A number that changes whenever a baked file lands or any file leaves the cache area:
    /// a narinfo rendered from what was baked is stale once it moves.
    pub fn generation(&self) -> u64 {
        // A failed bake changes nothing a narinfo says.
        self.counters.completed_total.load(Ordering::Acquire) + self.cache.evictions()
    }

    /// The baked file of a NAR in the cache area, if it is ready. Blocking (one indexed SQLite
    /// read).
    pub fn ready(&self, nar_hash: &NarHash, compression: Compression) -> Option<Baked> {
        self.cache.baked(nar_hash, compression)
    }

    /// Whether baking the NAR at `root` pays: its first MiB, compressed fast, must shrink by a
    /// tenth, and the whole file, at that ratio, must fit the cache area. Sampled once per
    /// NarHash and remembered (until many others were sampled). Blocking: reads up to a MiB.
    pub fn worth_baking(&self, root: &Path, nar_hash: &NarHash, nar_size: u64) -> bool {
        if let Some(&verdict) = self.verdicts.lock().unwrap_or_else(|e| e.into_inner()).get(nar_hash) {
            return verdict;
        }
        let verdict = match sample_ratio(root) {
            Ok(ratio) => {
                let fits = (nar_size as f64 * ratio) < self.cache.config().max_size as f64;
                ratio < WORTH_RATIO && fits
            }
            // Unreadable now: the bake would fail too; serve it as it is, and ask again later.
            Err(e) => {
                tracing::debug!(path = %root.display(), error = %e, "cannot sample a NAR for baking");
                return false;
            }
        };
        if !verdict {
            self.counters.unprofitable_total.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(path = %root.display(), "not worth baking: served as it is");
        }
        let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        if verdicts.len() >= VERDICTS {
            verdicts.clear();
        }
        verdicts.insert(*nar_hash, verdict);
        verdict
    }

    /// Queues a NAR for baking unless it is baked, queued, too small, or the queue is full.
    /// Blocking (one SQLite read); never waits for the bake itself.
    pub fn request(&self, job: Job) {
        self.queue(job, false);
    }

    /// Like [`Baker::request`], but first waits while eager work holds its share of the
    /// queue: for the roots' closures, which must not be dropped.
    fn request_eagerly(&self, job: Job) {
        self.queue(job, true);
    }

    fn queue(&self, job: Job, eager: bool) {
        if !self.wants(job.nar_size) || !self.config.compressions.contains(&job.compression) {
            return;
        }
        if eager {
            let mut pending = self.pending.lock();
            while pending.len() >= EAGER {
                pending = self.pending.shrunk.wait(pending).unwrap_or_else(|e| e.into_inner());
            }
        }
        let key = (job.nar_hash, job.compression);
        if self.cache.baked(&job.nar_hash, job.compression).is_some() {
            return;
        }
        if !self.pending.lock().insert(key) {
            return;
        }
        let not_before = if eager { Instant::now() } else { Instant::now() + self.config.delay };
        match self.tx.try_send((job, not_before)) {
            Ok(()) => {
                self.counters.queued_total.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.pending.done(&key);
                if let mpsc::TrySendError::Full((job, _)) = e {
                    tracing::debug!(path = %job.root.display(), "bake queue full; will ask again on a later request");
                }
            }
        }
    }

    /// `job`'s file for a client that asks for it: the baked file; else the bake being
    /// written; else one started now, on a thread of its own at the on-the-fly levels (a
    /// client waits for it), whose file becomes the baked one. `None` when no bake can be
    /// started. Blocking: one indexed SQLite read when the file is baked, two otherwise.
    pub fn follow(self: &Arc<Self>, job: Job) -> Option<Following> {
        // Baked files are the common case: looked up without the table's lock.
        if let Some(baked) = self.cache.baked(&job.nar_hash, job.compression) {
            return Some(Following::Baked(baked));
        }
        let key = (job.nar_hash, job.compression);
        let (grower, growing) = match self.begin(&job) {
            Begin::Writing(growing) => return Some(Following::Writing(growing)),
            Begin::Baked(baked) => return Some(Following::Baked(baked)),
            Begin::Unable => return None,
            Begin::Started(grower, growing) => (grower, growing),
        };
        self.counters.streamed_total.fetch_add(1, Ordering::Relaxed);
        let baker = Arc::clone(self);
        let started = std::thread::Builder::new().name("bake-now".into()).spawn(move || {
            let levels = baker.config.urgent_levels;
            baker.run(&job, levels, grower, None);
        });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start a bake thread; serving on the fly");
            self.writing().remove(&key);
            return None;
        }
        Some(Following::Writing(growing))
    }

    fn writing(&self) -> std::sync::MutexGuard<'_, Writing> {
        self.writing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the bake of `job` as being written, with its temp file created, unless it is
    /// written or baked already: one look, under the table's lock, so that two clients asking
    /// at once follow one bake (and get the same bytes).
    fn begin(&self, job: &Job) -> Begin {
        let key = (job.nar_hash, job.compression);
        let mut writing = self.writing();
        if let Some(growing) = writing.get(&key).filter(|g| !g.failed()) {
            return Begin::Writing(Arc::clone(growing));
        }
        if let Some(baked) = self.cache.baked(&job.nar_hash, job.compression) {
            return Begin::Baked(baked);
        }
        let temp = self.cache.temp_file("bake");
        if let Err(e) = std::fs::File::create(&temp) {
            tracing::warn!(path = %temp.display(), error = %e, "cannot create a bake file");
            return Begin::Unable;
        }
        let (growing, grower) = Growing::start(temp);
        let growing = Arc::new(growing);
        writing.insert(key, Arc::clone(&growing));
        Begin::Started(grower, growing)
    }

    /// Bakes `job` through `grower` at `levels`, commits it, and leaves the table of bakes
    /// being written. A background bake pauses through `yielder` while the machine is
    /// saturated (see `crate::cpu`).
    fn run(&self, job: &Job, levels: Levels, grower: Grower, mut yielder: Option<&mut Yielder>) {
        let key = (job.nar_hash, job.compression);
        let Some(temp) = self.writing().get(&key).map(|g| g.temp().to_owned()) else { return };
        let paused_before = yielder.as_ref().map(|y| y.paused());
        let result = bake(&self.cache, job, levels, &temp, &grower, yielder.as_deref_mut());
        if let (Some(y), Some(before)) = (yielder, paused_before) {
            let paused = y.paused().saturating_sub(before);
            self.counters.paused_ms_total.fetch_add(paused.as_millis() as u64, Ordering::Relaxed);
        }
        // Leaves the table before it counts as done: whoever sees it counted finds it baked.
        self.writing().remove(&key);
        match result {
            Ok(baked) => {
                tracing::info!(
                    path = %job.root.display(), compression = %job.compression,
                    nar_size = job.nar_size, file_size = baked.file_size, "baked"
                );
                grower.done(baked.file_size);
                self.counters.read_bytes_total.fetch_add(job.nar_size, Ordering::Relaxed);
                self.counters.written_bytes_total.fetch_add(baked.file_size, Ordering::Relaxed);
                self.counters.completed_total.fetch_add(1, Ordering::Release);
            }
            Err(e) => {
                tracing::warn!(
                    path = %job.root.display(), compression = %job.compression, error = %e,
                    "baking failed; the path is still served on the fly"
                );
                grower.fail();
                self.counters.failed_total.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Jobs queued or being baked.
    pub fn pending_len(&self) -> usize {
        self.pending.lock().len()
    }

    /// The roots to bake eagerly, from the settings.
    pub fn roots(&self) -> &[String] {
        &self.config.roots
    }
}

/// How much the first [`SAMPLE`] bytes of the NAR of `root` shrink under fast zstd (the
/// compressed size over the sample's).
fn sample_ratio(root: &Path) -> io::Result<f64> {
    let mut sample = Vec::with_capacity(SAMPLE);
    let mut sink = Prefix { buf: &mut sample };
    match store_reader::nar::dump(root, &mut sink) {
        Ok(_) => {}
        // The sample is full: what the dump reports is our own refusal of more bytes.
        Err(_) if sample.len() >= SAMPLE => {}
        Err(e) => return Err(io::Error::other(e)),
    }
    if sample.is_empty() {
        return Ok(1.0);
    }
    let compressed = zstd::bulk::compress(&sample, 3)?;
    Ok(compressed.len() as f64 / sample.len() as f64)
}

/// A writer that keeps the first [`SAMPLE`] bytes and then refuses more.
struct Prefix<'a> {
    buf: &'a mut Vec<u8>,
}

impl Write for Prefix<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = SAMPLE - self.buf.len();
        if room == 0 {
            return Err(io::Error::other("sample complete"));
        }
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bake workers yield to request handling: this thread runs under `SCHED_IDLE`, so it gets a
/// core only when nothing else wants it (nice 10 alone still took a share of the CPU and
/// cost narinfo throughput about 40% at 2 cores); nice 19 where that policy is refused.
fn lower_priority() {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    let set =
        thread_priority::set_thread_priority_and_policy(thread_priority::thread_native_id(), ThreadPriority::Min, idle);
    if let Err(e) = set {
        tracing::debug!(error = ?e, "cannot put a bake worker under SCHED_IDLE; lowering its nice value instead");
        if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
            tracing::debug!(error = %e, "cannot lower the priority of a bake worker");
        }
    }
}

/// Why a bake was abandoned.
#[derive(Debug, thiserror::Error)]
enum BakeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the files no longer match the DB (NarHash or NarSize differs): not baked")]
    Changed,
    #[error("{0}")]
    Cache(#[from] upstream::Error),
}

/// Produces the compressed NAR into `temp`, announcing each write to `grower` so that clients
/// follow it, checks it, commits it.
fn bake(
    cache: &CacheArea,
    job: &Job,
    levels: Levels,
    temp: &Path,
    grower: &Grower,
    yielder: Option<&mut Yielder>,
) -> Result<Baked, BakeError> {
    let result = (|| {
        let file = std::fs::OpenOptions::new().write(true).truncate(true).open(temp)?;
        let out = Counting { inner: Announcing { file, grower, written: 0 }, hasher: Sha256::new(), bytes: 0 };
        let mut nar = None;
        let out = compression::encode(job.compression, levels, out, |w| {
            let mut tee = Counting { inner: Yielding { inner: w, yielder }, hasher: Sha256::new(), bytes: 0 };
            store_reader::nar::dump(&job.root, &mut tee).map_err(io::Error::other)?;
            nar = Some((tee.bytes, tee.hasher.finalize()));
            Ok(())
        })?;
        let Some((nar_size, nar_digest)) = nar else {
            return Err(BakeError::Io(io::Error::other("the compressor never produced the NAR")));
        };
        if nar_size != job.nar_size || NarHash(nar_digest.into()) != job.nar_hash {
            return Err(BakeError::Changed);
        }
        let Counting { inner, hasher, bytes } = out;
        inner.file.sync_all()?;
        let file_hash = NarHash(hasher.finalize().into());
        Ok(cache.commit_baked(&job.nar_hash, job.compression, temp, bytes, file_hash)?)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    result
}

/// Writes straight to the bake's file and announces each new length: what a client following
/// the bake may read. (The compressor's own output buffer makes the writes large.)
struct Announcing<'a> {
    file: std::fs::File,
    grower: &'a Grower,
    written: u64,
}

impl Write for Announcing<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.file.write(data)?;
        self.written += n as u64;
        self.grower.grew(self.written);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A writer that, for a background bake, pauses between writes while the machine is saturated.
struct Yielding<'y, W> {
    inner: W,
    yielder: Option<&'y mut Yielder>,
}

impl<W: Write> Write for Yielding<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(y) = self.yielder.as_deref_mut() {
            y.pause_while_saturated();
        }
        self.inner.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A writer that hashes and counts what passes through.
struct Counting<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Bakes the closures of the configured roots of `store`, in the background: walks the
/// references in the store DB and queues every path big enough, waiting for room in the
/// queue when it is busy. Roots that are not valid are logged and skipped; nothing here can
/// stop the server.
pub fn bake_roots(baker: Arc<Baker>, store: Arc<Store>) {
    if baker.roots().is_empty() {
        return;
    }
    std::thread::spawn(move || {
        let store_dir = store.store_dir().to_owned();
        let mut seen = HashSet::new();
        let mut todo = Vec::new();
        for root in baker.roots() {
            match formats::StorePath::from_absolute(&store_dir, root) {
                Ok(path) => todo.push(path),
                Err(e) => tracing::warn!(root = %root, error = %e, "not a store path: not baked"),
            }
        }
        let mut queued = 0usize;
        while let Some(path) = todo.pop() {
            if !seen.insert(path.hash().to_string()) {
                continue;
            }
            let info = match store.query_by_hash(path.hash()) {
                Ok(Some(info)) => info,
                Ok(None) => {
                    tracing::warn!(path = %path, "bake root or reference is not valid in the store: skipped");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(path = %path, error = %e, "cannot read the store DB while baking roots");
                    continue;
                }
            };
            todo.extend(info.references.iter().filter(|r| !seen.contains(&r.hash().to_string())).cloned());
            if !baker.wants(info.nar_size) {
                continue;
            }
            for &compression in baker.compressions() {
                baker.request_eagerly(Job {
                    root: store.real_path(&info.path),
                    nar_hash: info.nar_hash,
                    nar_size: info.nar_size,
                    compression,
                });
                queued += 1;
            }
        }
        tracing::info!(roots = baker.roots().len(), paths = seen.len(), queued, "bake roots queued");
    });
}

#[cfg(test)]
mod tests {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};

    #[test]
    fn a_bake_worker_gets_the_cpu_only_when_nothing_else_wants_it() {
        let policy = std::thread::spawn(|| {
            super::lower_priority();
            thread_priority::thread_schedule_policy().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(policy, ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle));
        // Only that thread: this one is as it was.
        assert_eq!(
            thread_priority::thread_schedule_policy().unwrap(),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other)
        );
    }
}
