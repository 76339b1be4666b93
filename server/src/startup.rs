//! Assembles an [`AppState`] from [`Settings`]: opens the store, loads (or, on first start,
//! generates) the signing keys, and opens the cache area with its proxy and baker. Every
//! failure here is one clear line for the operator.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use signing::{AnySecretKey, GuixSecretKey, SecretKey};
use store_reader::Store;
use upstream::ProxyConfig;

use crate::admission::Admission;
use crate::bake::Baker;
use crate::narinfo_cache::NarinfoCache;
use crate::settings::{Settings, StoreSettings};
use crate::state::{AppState, Signer};
use formats::Dialect;

/// File name of the Nix key generated in the state directory.
pub const DEFAULT_KEY_FILE: &str = "signing-key.sec";
/// File name of the Guix key generated in the state directory.
pub const DEFAULT_GUIX_KEY_FILE: &str = "guix-signing-key.sec";

/// What happened to the keys at start-up, for the operator's log.
#[derive(Debug)]
pub enum KeySource {
    /// Loaded from the configured files.
    Configured,
    /// Loaded from the state directory, generated there by an earlier start.
    StateDir(PathBuf),
    /// Generated now, written to these files.
    Generated {
        /// The secret key file.
        secret: PathBuf,
        /// The public key file.
        public: PathBuf,
    },
}

/// Opens every store and loads its keys; the returned states are ready to serve. The stores
/// share one [`Admission`], so its caps hold for the whole server.
pub fn build_states(settings: &Settings) -> anyhow::Result<Vec<(AppState, KeySource)>> {
    let admission = Arc::new(Admission::with_shares(
        (settings.max_streams, settings.max_streams_per_client),
        (settings.max_compressed_streams, settings.max_compressed_streams_per_client),
        crate::admission::QUEUE_TIMEOUT,
    ));
    settings
        .stores
        .iter()
        .map(|store| {
            build_state(store, settings, Arc::clone(&admission)).with_context(|| match store.prefix.as_str() {
                "" => format!("store {}", store.store.store_dir),
                prefix => format!("store {} at {prefix}/", store.store.store_dir),
            })
        })
        .collect()
}

/// Opens one store of `server` and loads its keys; its NAR bodies are admitted by `admission`.
pub fn build_state(
    settings: &StoreSettings,
    server: &Settings,
    admission: Arc<Admission>,
) -> anyhow::Result<(AppState, KeySource)> {
    let mut store = Store::open(settings.store.clone()).context(
        "cannot open the store (set --store-dir, --real-store-dir and --db, or --store-root for a chroot store)",
    )?;
    store.set_busy_timeout(server.db_busy_timeout);
    let (keys, source) = load_keys(settings, &server.state_dir)?;
    let host = hostname();
    if let Some(key) = keys.guix_key() {
        // Fail now, not on every request, if the host name cannot go into a Signature line.
        key.sign_narinfo(&host, "").with_context(|| format!("cannot sign Guix narinfos as host {host:?}"))?;
    }
    let (cache, proxy) = match &settings.proxy {
        Some(config) => {
            let cache_error = || format!("cannot open the cache in {} (set --cache-dir)", config.cache_dir.display());
            let cache = upstream::CacheArea::open(config.cache()).with_context(cache_error)?;
            let proxy = if config.upstreams.is_empty() {
                None
            } else {
                Some(upstream::Proxy::with_cache(config.clone(), cache.clone()).with_context(cache_error)?)
            };
            (Some(cache), proxy)
        }
        None => (None, None),
    };
    let baker = match &cache {
        Some(cache) if !settings.bake.compressions.is_empty() => {
            Some(Baker::start(settings.bake.clone(), cache.clone()).context("cannot start the bake worker threads")?)
        }
        _ => None,
    };
    let state = AppState {
        settings: settings.clone(),
        store: Arc::new(store),
        signer: keys,
        host,
        cache,
        proxy,
        baker,
        admission,
        narinfo_cache: NarinfoCache::with_defaults(settings.negative_ttl),
        listings: Default::default(),
        db_lookups: crate::state::db_lookup_histogram(),
    };
    Ok((state, source))
}

/// The stores of a running server rebuilt for reloaded `settings` (SIGHUP): the serving
/// policy (keys, compressions, TTLs, levels, priority, log dir) is taken from `settings`, and
/// changed upstreams (their URLs, keys, priorities, timeouts) get a new proxy over the same
/// cache area, which forgets its remembered misses; the cache area, the baker and the
/// admission limiters are kept as they are.
///
/// Returns the new states and what changed, one phrase per store and setting. A change only a
/// restart can apply (the stores and where they are, dialects, the cache, baking) is an error
/// naming it, and the caller keeps the old states.
pub fn reload_states(old: &[Arc<AppState>], settings: &Settings) -> anyhow::Result<(Vec<AppState>, Vec<String>)> {
    if old.len() != settings.stores.len()
        || old.iter().zip(&settings.stores).any(|(o, n)| o.settings.prefix != n.prefix)
    {
        anyhow::bail!("the set of stores changed: restart subserve to apply it");
    }
    let mut states = Vec::new();
    let mut changes = Vec::new();
    for (old, new) in old.iter().zip(&settings.stores) {
        let was = &old.settings;
        let at = if new.prefix.is_empty() { "/".to_owned() } else { new.prefix.clone() };
        let restart_only = [
            (was.store != new.store, "the store's location"),
            (was.dialect != new.dialect, "the dialect"),
            (was.proxy.as_ref().map(ProxyConfig::cache) != new.proxy.as_ref().map(ProxyConfig::cache), "the cache"),
            (was.bake != new.bake, "baking"),
        ];
        if let Some((_, what)) = restart_only.iter().find(|(changed, _)| *changed) {
            anyhow::bail!("{what} of the store at {at} changed: restart subserve to apply it");
        }
        let reloadable = [
            (was.sign_key_files != new.sign_key_files, "signing keys"),
            (was.compressions != new.compressions, "compression"),
            (was.narinfo_ttl != new.narinfo_ttl, "narinfo-ttl"),
            (was.negative_ttl != new.negative_ttl, "negative-ttl"),
            (was.levels != new.levels, "compression levels"),
            (was.priority != new.priority, "priority"),
            (was.log_dir != new.log_dir, "log-dir"),
            (was.proxy != new.proxy, "upstreams"),
            (was.publish != new.publish, "the publishing policy"),
        ];
        changes.extend(reloadable.iter().filter(|(c, _)| *c).map(|(_, what)| format!("{what} of the store at {at}")));
        let mut store = Store::open(new.store.clone()).context("cannot open the store")?;
        store.set_busy_timeout(settings.db_busy_timeout);
        let (keys, _) = load_keys(new, &settings.state_dir)?;
        let proxy = match (&old.cache, &new.proxy) {
            // New upstreams (or their keys, timings, caps) over the same cache area; a download
            // in flight finishes on the proxy it began on.
            (Some(cache), Some(config)) if was.proxy != new.proxy => {
                cache.forget_misses().context("cannot clear the cache's remembered misses")?;
                match config.upstreams.is_empty() {
                    true => None,
                    // Counting on from the old proxy's counters.
                    false => Some(match &old.proxy {
                        Some(proxy) => proxy.reconfigured(config.clone())?,
                        None => upstream::Proxy::with_cache(config.clone(), cache.clone())?,
                    }),
                }
            }
            _ => old.proxy.clone(),
        };
        states.push(AppState {
            settings: new.clone(),
            store: Arc::new(store),
            signer: keys,
            host: old.host.clone(),
            cache: old.cache.clone(),
            proxy,
            baker: old.baker.clone(),
            admission: Arc::clone(&old.admission),
            narinfo_cache: old.narinfo_cache.reloaded(new.negative_ttl),
            listings: Default::default(),
            db_lookups: old.db_lookups.clone(),
        });
    }
    Ok((states, changes))
}

/// The store's keys: the configured ones, else the state dir's, else a new pair written there.
fn load_keys(settings: &StoreSettings, state_dir: &Path) -> anyhow::Result<(Signer, KeySource)> {
    let dialect = settings.dialect;
    if !settings.sign_key_files.is_empty() {
        let mut keys = Signer::empty(dialect);
        for path in &settings.sign_key_files {
            let key = signing::read_any_secret_key_file(path)
                .with_context(|| format!("cannot load signing key {}", path.display()))?;
            add_key(&mut keys, key, path)?;
        }
        return Ok((keys, KeySource::Configured));
    }
    let (secret_name, public_name) = match dialect {
        Dialect::Nix => (DEFAULT_KEY_FILE, "signing-key.pub"),
        Dialect::Guix => (DEFAULT_GUIX_KEY_FILE, "guix-signing-key.pub"),
    };
    let secret = state_dir.join(secret_name);
    let mut keys = Signer::empty(dialect);
    if secret.exists() {
        let key = signing::read_any_secret_key_file(&secret)
            .with_context(|| format!("cannot load signing key {}", secret.display()))?;
        add_key(&mut keys, key, &secret)?;
        return Ok((keys, KeySource::StateDir(secret)));
    }
    let public = state_dir.join(public_name);
    create_private_dir(state_dir)?;
    let written = match dialect {
        Dialect::Nix => {
            let key = SecretKey::generate(&format!("{}-1", hostname())).context("cannot generate a signing key")?;
            let written = signing::write_key_pair(&key, &secret, &public);
            keys = Signer::Nix(vec![key]);
            written
        }
        Dialect::Guix => {
            let key = GuixSecretKey::generate().context("cannot generate a Guix signing key")?;
            let written = signing::write_guix_key_pair(&key, &secret, &public);
            keys = Signer::Guix(vec![key]);
            written
        }
    };
    written.with_context(|| format!("cannot write a signing key into {}", state_dir.display()))?;
    Ok((keys, KeySource::Generated { secret, public }))
}

/// Adds a loaded key, refusing one of the other ecosystem's format: it could sign nothing
/// this store's clients would accept.
fn add_key(keys: &mut Signer, key: AnySecretKey, path: &Path) -> anyhow::Result<()> {
    match (key, keys) {
        (AnySecretKey::Nix(k), Signer::Nix(keys)) => keys.push(k),
        (AnySecretKey::Guix(k), Signer::Guix(keys)) => keys.push(k),
        (AnySecretKey::Nix(_), Signer::Guix(_)) => anyhow::bail!(
            "{} is a Nix key (name:base64); a Guix store needs a Guix key (signing-key.sec sexp)",
            path.display()
        ),
        (AnySecretKey::Guix(_), Signer::Nix(_)) => anyhow::bail!(
            "{} is a Guix key; a Nix store needs a Nix key (name:base64, from subserve keygen)",
            path.display()
        ),
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create state directory {} (set --state-dir)", dir.display()))
}

/// This host's name, for key names and the printed client configuration.
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c)))
        .unwrap_or_else(|| "subserve".to_owned())
}
