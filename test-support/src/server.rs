//! The real server in process: a config file's text resolved as the binary resolves it,
//! the stores opened by `subserve::startup`, and `subserve::run` on a listener bound to
//! `127.0.0.1:0` (the kernel picks the port: no pick-then-bind race), on a runtime of its
//! own so that tests drive it with blocking clients. Its [`subserve::Stats`] are readable at
//! any time, so tests wait for events, not for log lines or time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use subserve::admission::{blocking_threads, Admission};
use subserve::settings::{resolve, Env, FileConfig, Options as Flags};
use subserve::{AppState, Listener, Process, Stats};

/// How long [`TestServer::wait_until`] waits: far more than any event takes on a loaded
/// machine, so that only a real failure reaches it.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// What a test may change beyond the config file.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a NAR request waits for an admission permit before its 503
    /// (`subserve::admission::QUEUE_TIMEOUT` in the binary).
    pub queue_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { queue_timeout: subserve::admission::QUEUE_TIMEOUT }
    }
}

/// A running in-process server; shut down gracefully when dropped.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The served stores' states.
    pub stores: Vec<Arc<AppState>>,
    /// The process's metrics, audit trail (on unless the config turns it off) and access
    /// rules, as the binary has them.
    pub process: Arc<Process>,
    routers: tokio::sync::watch::Sender<axum::Router>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Starts a server configured by `config` (a config file's text; `state-dir` and every
/// store's `upstream` must be set, since nothing outside 127.0.0.1 may be reached).
pub fn spawn_server(config: &str) -> TestServer {
    spawn_server_with(config, Options::default())
}

/// [`spawn_server`] with `options`.
pub fn spawn_server_with(config: &str, options: Options) -> TestServer {
    assert!(config.contains("state-dir"), "a test server needs its own state-dir:\n{config}");
    assert!(config.contains("upstream"), "a test server names its upstreams (`upstream = []` for none):\n{config}");
    let settings = settings(config).unwrap_or_else(|e| panic!("{e}\n{config}"));
    // As `startup::build_states`, with the test's queue timeout.
    let admission = Arc::new(Admission::with_shares(
        (settings.max_streams, settings.max_streams_per_client),
        (settings.max_compressed_streams, settings.max_compressed_streams_per_client),
        options.queue_timeout,
    ));
    let stores: Vec<Arc<AppState>> = settings
        .stores
        .iter()
        .map(|store| {
            let (state, _) = subserve::startup::build_state(store, &settings, Arc::clone(&admission))
                .unwrap_or_else(|e| panic!("{e:#}"));
            Arc::new(state)
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(blocking_threads(settings.max_streams, settings.max_compressed_streams))
        .thread_name("test-server")
        .enable_all()
        .build()
        .expect("runtime");
    // The binary queues bake roots from its runtime; so do we.
    let _entered = runtime.enter();
    for store in &stores {
        if let Some(baker) = &store.baker {
            subserve::bake::bake_roots(Arc::clone(baker), Arc::clone(&store.store));
        }
    }
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound address");
    let limits = settings.conn.limits(1024, 256);
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let process = Arc::new(Process::open(&settings, &format!("http://{addr}")).expect("the audit trail opens"));
    let (routers, router) = tokio::sync::watch::channel(subserve::router_with(&stores, &process));
    let task =
        runtime.spawn(subserve::run_reloadable(vec![Listener::Tcp(listener)], router, limits, None, async move {
            let _ = stop.await;
        }));
    drop(_entered);
    TestServer { addr, stores, process, routers, shutdown: Some(shutdown), task: Some(task), runtime: Some(runtime) }
}

/// A config file's text resolved as the binary resolves it, without flags or variables.
fn settings(config: &str) -> Result<subserve::settings::Settings, subserve::settings::SettingsError> {
    let file = FileConfig::parse(config, "subserve.toml")?;
    resolve(&Flags::default(), &Env::default(), &file)
}

impl TestServer {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `config` as SIGHUP does (`subserve::startup::reload_states`): the next requests
    /// on every connection see it. Returns what changed, or why the configuration in force
    /// stays.
    pub fn reload(&mut self, config: &str) -> Result<Vec<String>, String> {
        let settings = settings(config).map_err(|e| e.to_string())?;
        let (states, changes) =
            subserve::startup::reload_states(&self.stores, &settings).map_err(|e| format!("{e:#}"))?;
        self.stores = states.into_iter().map(Arc::new).collect();
        drop(self.routers.send_replace(subserve::router_with(&self.stores, &self.process)));
        Ok(changes)
    }

    /// The server's counters now.
    pub fn stats(&self) -> Stats {
        Stats::collect(&self.stores)
    }

    /// Waits until `done` holds of the server's counters, for at most [`DEADLINE`]; `what`
    /// names the event in the failure.
    pub fn wait_until(&self, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
        let start = Instant::now();
        loop {
            let stats = self.stats();
            if done(&stats) {
                return stats;
            }
            assert!(start.elapsed() < DEADLINE, "not within {DEADLINE:?}: {what}; {stats:?}");
            // Polling: the counters are plain atomics, with nothing to wait on.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the audit trail has written at least `records` records (they are queued
    /// when a body ends, which may be just after the client has read it), for at most
    /// [`DEADLINE`].
    pub fn wait_for_audit(&self, records: u64) {
        let log = self.process.audit.as_ref().expect("the audit trail is on").log();
        let start = Instant::now();
        while log.written() < records {
            assert!(start.elapsed() < DEADLINE, "not within {DEADLINE:?}: {records} audit records; {log:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops accepting, lets responses in flight finish (up to the shutdown timeout), and
    /// returns what `subserve::run` returned.
    pub fn shut_down(mut self) -> std::io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> std::io::Result<()> {
        let (Some(shutdown), Some(task), Some(runtime)) = (self.shutdown.take(), self.task.take(), self.runtime.take())
        else {
            return Ok(());
        };
        let _ = shutdown.send(());
        let result = runtime.block_on(task).expect("the server task does not panic");
        // Bodies cut at the deadline stop at their next write; don't wait on them.
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let result = self.stop();
        if !std::thread::panicking() {
            result.expect("the server shuts down cleanly");
        }
    }
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}
