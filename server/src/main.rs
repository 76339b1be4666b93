//! The `subserve` binary: reads argv, the environment and the config file, and hands
//! everything else to the library.

use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use subserve::cli::{AuditArgs, Cli, Command, KeygenArgs, ServeArgs};
use subserve::settings::{self, Env, FileConfig, ListenAddr};
use subserve::startup::{self, KeySource};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Keygen(args) => keygen(args),
        Command::Audit(args) => audit(args),
    };
    if let Err(e) = result {
        eprintln!("subserve: error: {e:#}");
        std::process::exit(1);
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let env = read_env();
    let settings = read_settings(&args, &env)?;
    init_logging(settings.log_format);
    let built = startup::build_states(&settings)?;
    for (state, keys) in &built {
        log_store(state, keys);
    }
    let stores: Vec<_> = built.into_iter().map(|(state, _)| Arc::new(state)).collect();
    for store in &stores {
        if let Some(baker) = &store.baker {
            subserve::bake::bake_roots(Arc::clone(baker), Arc::clone(&store.store));
        }
    }

    let nofile = subserve::conn::raise_nofile_limit();
    // Descriptors kept for everything but client sockets: a file or two per NAR stream, the
    // store DBs' and the caches' connections, upstream sockets, bake workers.
    let reserved = 2 * (settings.max_streams + settings.max_compressed_streams) as u64 + 256;
    let limits = settings.conn.limits(nofile, reserved);

    let tls = match &settings.tls {
        Some((cert, key)) => Some(subserve::tls::Tls::load(cert, key).context("cannot set up HTTPS")?),
        None => None,
    };
    let blocking_threads = subserve::admission::blocking_threads(settings.max_streams, settings.max_compressed_streams);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads)
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let listeners = listeners(&settings.listen).await?;
        let bound = listeners.iter().find_map(subserve::Listener::tcp_addr);
        let url = client_url(&settings, bound);
        // Before the "serving" line: a trail that cannot be opened stops the start.
        let process = Arc::new(
            subserve::Process::open(&settings, &url)
                .context("cannot open the audit trail (set --state-dir, or --audit=off to turn it off)")?,
        );
        match &settings.audit {
            Some(audit) => tracing::info!(
                db = %audit.path.display(), retention_days = audit.retention.as_secs() / 86_400,
                max_bytes = audit.max_bytes, "audit trail: recording every narinfo and NAR request"
            ),
            None => tracing::info!("audit trail turned off"),
        }
        // Before anyone learns we are up (the "serving" line, READY): a signal sent from then
        // on must find its handler, not the default action that ends the process.
        let signals = Signals::install();
        for listener in &listeners {
            tracing::info!(
                listen = %listener.describe(),
                stores = stores.len(),
                max_streams = settings.max_streams,
                max_streams_per_client = settings.max_streams_per_client,
                max_compressed_streams = settings.max_compressed_streams,
                max_compressed_streams_per_client = settings.max_compressed_streams_per_client,
                max_connections = limits.max_connections,
                descriptor_limit = nofile,
                blocking_threads,
                "serving"
            );
        }
        print_client_config(&stores, &url);
        // Under systemd (Type=notify): ready once every socket is bound.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let (routers, router) = tokio::sync::watch::channel(subserve::router_with(&stores, &process));
        let stores = std::sync::Mutex::new(stores);
        let reloader = Reloader { args, env, settings, stores, routers, process, tls: tls.clone() };
        subserve::run_reloadable(listeners, router, limits, tls, shutdown_signal(signals, reloader))
            .await
            .context("server failed")
    });
    // Producers of streams cut at the deadline stop at their next write; don't wait on them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// The sockets to serve on: those systemd passed (socket activation, `LISTEN_FDS`), else
/// `listen` bound now. A stale Unix socket file of an earlier run is replaced.
async fn listeners(listen: &ListenAddr) -> anyhow::Result<Vec<subserve::Listener>> {
    let mut passed = listenfd::ListenFd::from_env();
    let mut listeners = Vec::new();
    for i in 0..passed.len() {
        let listener = if let Some(tcp) = passed.take_tcp_listener(i).context("a socket from systemd")? {
            tcp.set_nonblocking(true)?;
            subserve::Listener::Tcp(tokio::net::TcpListener::from_std(tcp)?)
        } else if let Some(unix) = passed.take_unix_listener(i).context("a socket from systemd")? {
            unix.set_nonblocking(true)?;
            subserve::Listener::Unix(tokio::net::UnixListener::from_std(unix)?)
        } else {
            anyhow::bail!("socket {i} passed by systemd is neither a TCP nor a Unix stream socket");
        };
        listeners.push(listener);
    }
    if !listeners.is_empty() {
        tracing::info!(sockets = listeners.len(), "serving the sockets systemd passed; --listen is not used");
        return Ok(listeners);
    }
    let listener = match listen {
        ListenAddr::Tcp(addr) => subserve::Listener::Tcp(
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?,
        ),
        ListenAddr::Unix(path) => {
            use std::os::unix::fs::FileTypeExt as _;
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
            }
            subserve::Listener::Unix(
                tokio::net::UnixListener::bind(path)
                    .with_context(|| format!("cannot listen on unix:{}", path.display()))?,
            )
        }
    };
    Ok(vec![listener])
}

/// The URL nodes reach this server at: `--url`, else derived from the listen address (the
/// host name when listening on every address). Warns when nodes could not reach it.
fn client_url(settings: &subserve::settings::Settings, bound: Option<std::net::SocketAddr>) -> String {
    let Some(listen) = bound.or(match settings.listen {
        ListenAddr::Tcp(addr) => Some(addr),
        ListenAddr::Unix(_) => None,
    }) else {
        // Behind a reverse proxy: only the operator knows the URL.
        return settings.url.clone().unwrap_or_else(|| "http://HOST (set --url)".into());
    };
    let scheme = if settings.tls.is_some() { "https" } else { "http" };
    let Some(url) = &settings.url else {
        return match listen.ip().is_unspecified() {
            true => format!("{scheme}://{}:{}", startup::hostname(), listen.port()),
            false => format!("{scheme}://{listen}"),
        };
    };
    let host = url.split("://").nth(1).unwrap_or("").split(['/', ':']).next().unwrap_or("");
    let local_host = matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.starts_with("127.");
    if listen.ip().is_loopback() && !local_host {
        tracing::warn!(
            %listen, %url,
            "listening on loopback only: nodes cannot reach {url}; listen on their network (--listen 0.0.0.0:{})",
            listen.port()
        );
    }
    url.trim_end_matches('/').to_owned()
}

/// Log lines go to stderr, filtered by `SUBSERVE_LOG` (info by default), as text (coloured
/// only when stderr is a terminal) or one JSON object per line.
fn init_logging(format: settings::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SUBSERVE_LOG").unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        settings::LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        settings::LogFormat::Json => logs.json().init(),
    }
}

/// Prints, for each store, what its clients need: the Nix `nix.conf` lines or the Guix
/// commands, with this server's URL and keys.
fn print_client_config(stores: &[Arc<subserve::AppState>], url: &str) {
    for state in stores {
        match state.settings.dialect {
            formats::Dialect::Nix => {
                println!("# {} clients: add to /etc/nix/nix.conf on each node", state.store.store_dir())
            }
            formats::Dialect::Guix => {
                println!("# {} clients: on each node, authorize the key and use the URL", state.store.store_dir())
            }
        }
        for line in state.client_config(url) {
            println!("{line}");
        }
    }
}

/// What the operator needs to know of one store at start-up: where, which keys, which proxy.
fn log_store(state: &subserve::AppState, keys: &KeySource) {
    let config = &state.settings;
    let url_prefix = if state.settings.prefix.is_empty() { "/" } else { state.settings.prefix.as_str() };
    tracing::info!(
        prefix = %url_prefix,
        store_dir = %config.store.store_dir,
        real_store_dir = %config.store.real_store_dir.display(),
        dialect = %config.dialect,
        compression = ?config.compressions,
        "store"
    );
    if state.store.reads_immutable() {
        tracing::info!(
            db = %config.store.db.display(),
            "the store DB's directory is read-only to subserve and no writer has the DB open: reading it as \
             immutable, and checking for a writer at every lookup"
        );
    }
    match keys {
        KeySource::Generated { secret, public } => tracing::info!(
            secret = %secret.display(), public = %public.display(),
            "no signing key configured: generated one"
        ),
        KeySource::StateDir(path) => {
            tracing::info!(path = %path.display(), "using the signing key from the state directory")
        }
        KeySource::Configured => {}
    }
    for key in state.signer.nix_keys() {
        tracing::info!(prefix = %url_prefix, public_key = %key.to_public(), "signing narinfos");
    }
    for key in state.signer.guix_keys() {
        let q: String = key.to_public().q().iter().map(|b| format!("{b:02X}")).collect();
        tracing::info!(
            prefix = %url_prefix, public_key_q = %q, host = %state.host,
            "signing Guix narinfos (key served at signing-key.pub)"
        );
    }
    match config.proxy.as_ref().filter(|p| !p.upstreams.is_empty()) {
        Some(proxy) => {
            for up in &proxy.upstreams {
                tracing::info!(prefix = %url_prefix, upstream = %up.url, priority = up.priority, "proxying");
            }
            tracing::info!(cache_dir = %proxy.cache_dir.display(), max_size = proxy.max_size, "proxy cache");
        }
        None => tracing::info!(prefix = %url_prefix, "proxying turned off"),
    }
    let bake = &config.bake;
    if bake.compressions.is_empty() {
        tracing::info!(prefix = %url_prefix, "baking turned off");
    } else {
        tracing::info!(
            prefix = %url_prefix, compressions = ?bake.compressions, min_size = bake.min_size,
            workers = bake.workers, zstd_level = bake.levels.zstd, roots = bake.roots.len(),
            "baking large NARs in the background"
        );
    }
}

/// Flags, environment and the config file (if any) resolved into settings.
fn read_settings(args: &ServeArgs, env: &Env) -> anyhow::Result<settings::Settings> {
    let config_path = args.config.clone().or_else(|| env.vars.get("SUBSERVE_CONFIG").map(Into::into));
    let file = match &config_path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            FileConfig::parse(&text, &path.display().to_string())?
        }
        None => FileConfig::default(),
    };
    Ok(settings::resolve(&args.options, env, &file)?)
}

/// What SIGHUP needs: how the server was configured, what it serves now, and where to send a
/// new router.
struct Reloader {
    args: ServeArgs,
    env: Env,
    /// The settings in force.
    settings: settings::Settings,
    stores: std::sync::Mutex<Vec<Arc<subserve::AppState>>>,
    routers: tokio::sync::watch::Sender<axum::Router>,
    /// The process's metrics, audit trail and access rules, which every router built uses.
    process: Arc<subserve::Process>,
    tls: Option<subserve::tls::Tls>,
}

impl Reloader {
    /// SIGHUP: re-reads the config file and applies what can change without a restart (each
    /// store's keys, compressions, TTLs, levels, priority, log dir, upstreams) to the next
    /// requests on every connection; re-reads the TLS certificate and key. Anything wrong keeps
    /// what is in force, with one error line.
    fn reload(&self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        match self.tls.as_ref().map(subserve::tls::Tls::reload) {
            Some(Ok(())) => tracing::info!("SIGHUP: reloaded the TLS certificate and key"),
            Some(Err(e)) => tracing::error!(error = %e, "SIGHUP: keeping the TLS certificate in use"),
            None => {}
        }
        match self.reload_stores() {
            Ok(changes) if changes.is_empty() => tracing::info!("SIGHUP: the configuration is unchanged"),
            Ok(changes) => tracing::info!(changed = %changes.join(", "), "SIGHUP: reloaded the configuration"),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "SIGHUP: keeping the configuration in force"),
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }

    fn reload_stores(&self) -> anyhow::Result<Vec<String>> {
        let new = read_settings(&self.args, &self.env)?;
        let global = [
            (new.listen != self.settings.listen, "listen"),
            (new.state_dir != self.settings.state_dir, "state-dir"),
            (new.max_streams != self.settings.max_streams, "max-streams"),
            (new.max_compressed_streams != self.settings.max_compressed_streams, "max-compressed-streams"),
            (new.max_streams_per_client != self.settings.max_streams_per_client, "max-streams-per-client"),
            (
                new.max_compressed_streams_per_client != self.settings.max_compressed_streams_per_client,
                "max-compressed-streams-per-client",
            ),
            (new.conn != self.settings.conn, "the connection limits and timeouts"),
            (new.tls != self.settings.tls, "the TLS files' paths"),
            (new.log_format != self.settings.log_format, "log-format"),
            (new.audit != self.settings.audit, "the audit trail's settings"),
            (new.access != self.settings.access, "admin-allow and trusted-proxy"),
            (new.url != self.settings.url, "url"),
        ];
        for (_, what) in global.iter().filter(|(changed, _)| *changed) {
            tracing::warn!("SIGHUP: {what} changed; it takes effect at the next restart");
        }
        let mut stores = self.stores.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (states, changes) = startup::reload_states(&stores, &new)?;
        *stores = states.into_iter().map(Arc::new).collect();
        drop(self.routers.send_replace(subserve::router_with(&stores, &self.process)));
        Ok(changes)
    }
}

/// The signals the server handles, listened to from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Replaces the default actions of SIGTERM, SIGINT and SIGHUP (ending the process); must
    /// run inside the runtime.
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            term: signal(SignalKind::terminate()).expect("can install a SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("can install a SIGINT handler"),
            hup: signal(SignalKind::hangup()).expect("can install a SIGHUP handler"),
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT, starting a graceful shutdown; a second one ends
/// the process at once. SIGHUP reloads (see [`Reloader::reload`]) and never stops the server.
async fn shutdown_signal(signals: Signals, reloader: Reloader) {
    let Signals { mut term, mut int, mut hup } = signals;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reloader.reload(),
        }
    }
    tracing::info!("shutting down: no new connections; a second signal exits at once");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(0);
    });
}

/// `subserve audit …`: the audit database of the server that `--state-dir` or `--config` (or
/// their variables) name, as `serve` finds it.
fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let env = read_env();
    let mut serve = ServeArgs { config: args.config.clone(), ..ServeArgs::default() };
    serve.options.global.state_dir = args.state_dir.clone();
    let settings = read_settings(&serve, &env)?;
    let db = settings.state_dir.join(subserve::settings::AuditSettings::FILE_NAME);
    let text = subserve::audit_report::report(&args.query, &db, args.since, args.json)?;
    print!("{text}");
    Ok(())
}

/// What the settings take from the environment: `SUBSERVE_*`, `HOME`, `XDG_STATE_HOME`,
/// whether this is root, the cores.
fn read_env() -> Env {
    Env {
        vars: std::env::vars()
            .filter(|(k, _)| k.starts_with("SUBSERVE_") || k == "HOME" || k == "XDG_STATE_HOME")
            .collect(),
        is_root: std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false),
        cores: subserve::admission::cores(),
    }
}

fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    if args.format == formats::Dialect::Guix {
        let key = signing::GuixSecretKey::generate().context("cannot generate a key")?;
        signing::write_guix_key_pair(&key, &args.secret_out, &args.public_out)?;
        let url = args.url.unwrap_or_else(|| format!("http://{}:5000", startup::hostname()));
        print!("{}", key.public_sexp());
        eprintln!("wrote {} (secret, mode 0600) and {}", args.secret_out.display(), args.public_out.display());
        eprintln!(
            "serve with: subserve serve --listen 0.0.0.0:5000 --url {url} --store-dir /gnu/store --sign-key-file {}",
            args.secret_out.display()
        );
        eprintln!("on each Guix node, authorize the key and use the URL:");
        eprintln!("  guix archive --authorize < {}", args.public_out.display());
        eprintln!("  guix-daemon --substitute-urls={url}");
        return Ok(());
    }
    let name = args.name.as_deref().context("--name is required for Nix keys")?;
    let key = signing::SecretKey::generate(name).context("cannot generate a key")?;
    signing::write_key_pair(&key, &args.secret_out, &args.public_out)?;
    let public = key.to_public();
    let url = args.url.unwrap_or_else(|| format!("http://{}:5000", startup::hostname()));
    println!("{public}");
    eprintln!("wrote {} (secret, mode 0600) and {}", args.secret_out.display(), args.public_out.display());
    eprintln!(
        "serve with: subserve serve --listen 0.0.0.0:5000 --url {url} --sign-key-file {}",
        args.secret_out.display()
    );
    eprintln!("add to /etc/nix/nix.conf on each client:");
    println!("substituters = {url}");
    println!("trusted-public-keys = {public}");
    Ok(())
}
