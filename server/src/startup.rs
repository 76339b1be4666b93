//! Assembles an [`AppState`] from [`Settings`]: opens the store and loads (or, on first
//! start, generates) the signing keys. Every failure here is one clear line for the operator.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use signing::SecretKey;
use store_reader::Store;

use crate::settings::Settings;
use crate::state::AppState;

/// File name of the key generated in the state directory.
pub const DEFAULT_KEY_FILE: &str = "signing-key.sec";

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

/// Opens the store and loads the keys; the returned state is ready to serve.
pub fn build_state(settings: &Settings) -> anyhow::Result<(AppState, KeySource)> {
    let store = Store::open(settings.store.clone()).context(
        "cannot open the store (set --store-dir, --real-store-dir and --db, or --store-root for a chroot store)",
    )?;
    let (keys, source) = load_keys(settings)?;
    let proxy = match &settings.proxy {
        Some(config) => Some(upstream::Proxy::open(config.clone()).with_context(|| {
            format!("cannot open the proxy cache in {} (set --cache-dir)", config.cache_dir.display())
        })?),
        None => None,
    };
    let state = AppState {
        store,
        keys,
        dialect: settings.dialect,
        compressions: settings.compressions.clone(),
        narinfo_ttl: settings.narinfo_ttl,
        negative_ttl: settings.negative_ttl,
        levels: settings.levels,
        priority: settings.priority,
        log_dir: settings.log_dir.clone(),
        proxy,
    };
    Ok((state, source))
}

fn load_keys(settings: &Settings) -> anyhow::Result<(Vec<SecretKey>, KeySource)> {
    if !settings.sign_key_files.is_empty() {
        let keys = settings
            .sign_key_files
            .iter()
            .map(|p| {
                signing::read_secret_key_file(p).with_context(|| format!("cannot load signing key {}", p.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        return Ok((keys, KeySource::Configured));
    }
    let secret = settings.state_dir.join(DEFAULT_KEY_FILE);
    if secret.exists() {
        let key = signing::read_secret_key_file(&secret)
            .with_context(|| format!("cannot load signing key {}", secret.display()))?;
        return Ok((vec![key], KeySource::StateDir(secret)));
    }
    let public = settings.state_dir.join("signing-key.pub");
    let key = generate_into(&settings.state_dir, &secret, &public)?;
    Ok((vec![key], KeySource::Generated { secret, public }))
}

fn generate_into(state_dir: &Path, secret: &Path, public: &Path) -> anyhow::Result<SecretKey> {
    create_private_dir(state_dir)?;
    let key = SecretKey::generate(&format!("{}-1", hostname())).context("cannot generate a signing key")?;
    signing::write_key_pair(&key, secret, public)
        .with_context(|| format!("cannot write a signing key into {}", state_dir.display()))?;
    Ok(key)
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
