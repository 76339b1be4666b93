//! The `subserve` binary: reads argv, the environment and the config file, and hands
//! everything else to the library.

use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use subserve::cli::{Cli, Command, KeyFormat, KeygenArgs, ServeArgs};
use subserve::settings::{self, Env, FileConfig};
use subserve::startup::{self, KeySource};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Keygen(args) => keygen(args),
    };
    if let Err(e) = result {
        eprintln!("subserve: error: {e:#}");
        std::process::exit(1);
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SUBSERVE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let env = Env {
        vars: std::env::vars()
            .filter(|(k, _)| k.starts_with("SUBSERVE_") || k == "HOME" || k == "XDG_STATE_HOME")
            .collect(),
        is_root: std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false),
    };
    let config_path = args.config.clone().or_else(|| env.vars.get("SUBSERVE_CONFIG").map(Into::into));
    let file = match &config_path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            FileConfig::parse(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let settings = settings::resolve(&args, &env, &file)?;
    let built = startup::build_states(&settings)?;
    for (state, keys) in &built {
        log_store(state, keys);
    }
    let stores: Vec<_> = built.into_iter().map(|(state, _)| Arc::new(state)).collect();
    for store in &stores {
        subserve::bake::bake_roots(Arc::clone(store));
    }

    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        tracing::info!(
            listen = %listener.local_addr()?,
            stores = stores.len(),
            max_streams = settings.max_streams,
            max_compressed_streams = settings.max_compressed_streams,
            "serving"
        );
        subserve::run(listener, stores, shutdown_signal()).await.context("server failed")
    })
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
    for key in &state.keys {
        tracing::info!(prefix = %url_prefix, public_key = %key.to_public(), "signing narinfos");
    }
    for key in &state.guix_keys {
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

/// Resolves on SIGTERM or SIGINT, starting a graceful shutdown.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutting down");
}

fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    if args.format == KeyFormat::Guix {
        let key = signing::GuixSecretKey::generate().context("cannot generate a key")?;
        signing::write_guix_key_pair(&key, &args.secret_out, &args.public_out)?;
        let url = args.url.unwrap_or_else(|| format!("http://{}:5000", startup::hostname()));
        print!("{}", key.public_sexp());
        eprintln!("wrote {} (secret, mode 0600) and {}", args.secret_out.display(), args.public_out.display());
        eprintln!("serve with: subserve serve --store-dir /gnu/store --sign-key-file {}", args.secret_out.display());
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
    eprintln!("serve with: subserve serve --sign-key-file {}", args.secret_out.display());
    eprintln!("add to /etc/nix/nix.conf on each client:");
    println!("substituters = {url}");
    println!("trusted-public-keys = {public}");
    Ok(())
}
