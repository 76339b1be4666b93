//! Turns flags, environment and config file into validated [`Settings`], with one pure
//! function, [`resolve`]: flag > `SUBSERVE_*` environment > TOML file > default.
//!
//! Nothing here reads the process environment: the binary passes it in as an [`Env`], so
//! tests can pin the precedence order with plain values.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use store_reader::StoreConfig;

use crate::cli::ServeArgs;
use crate::compression::{Compression, Levels};

/// Default listen address: loopback only, so a fresh install exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
/// Default logical store directory.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";
/// Default priority: preferred over cache.nixos.org (40).
pub const DEFAULT_PRIORITY: i32 = 30;

/// The `[serve]`-level keys of the TOML config file; every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Logical store directory.
    pub store_dir: Option<String>,
    /// Root of a chroot store.
    pub store_root: Option<PathBuf>,
    /// Physical store directory.
    pub real_store_dir: Option<PathBuf>,
    /// Store DB.
    pub db: Option<PathBuf>,
    /// Build logs directory.
    pub log_dir: Option<PathBuf>,
    /// Secret keys to sign with.
    pub sign_key_files: Option<Vec<PathBuf>>,
    /// Compression advertised in narinfos.
    pub compression: Option<String>,
    /// zstd level.
    pub zstd_level: Option<i32>,
    /// xz preset.
    pub xz_level: Option<u32>,
    /// Priority in `/nix-cache-info`.
    pub priority: Option<i32>,
    /// subserve's state directory.
    pub state_dir: Option<PathBuf>,
}

impl FileConfig {
    /// Parses the TOML text of a config file.
    pub fn parse(text: &str) -> Result<Self, SettingsError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            // toml's Display spans several lines with a source excerpt; keep it to one.
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().replace('\n', " ");
            SettingsError::File(match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            })
        })
    }
}

/// What the binary knows of its environment: `SUBSERVE_*`, `HOME`, `XDG_STATE_HOME`, and
/// whether it runs as root.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Environment variables.
    pub vars: HashMap<String, String>,
    /// Whether the process runs as root (chooses the default state directory).
    pub is_root: bool,
}

/// Everything `subserve serve` needs, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the store is.
    pub store: StoreConfig,
    /// Build logs directory.
    pub log_dir: PathBuf,
    /// Secret key files; empty means use (or create) `state_dir/signing-key.sec`.
    pub sign_key_files: Vec<PathBuf>,
    /// Compression advertised in narinfos.
    pub compression: Compression,
    /// On-the-fly compression levels.
    pub levels: Levels,
    /// Priority in `/nix-cache-info`.
    pub priority: i32,
    /// subserve's state directory.
    pub state_dir: PathBuf,
}

/// A setting that is malformed or out of range.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A value from the environment does not parse.
    #[error("environment variable {var}: invalid value {value:?}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The config file does not parse.
    #[error("config file: {0}")]
    File(String),
    /// A value parses but is not allowed.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The setting, as its flag name.
        setting: &'static str,
        /// Why.
        reason: String,
    },
}

/// Applies flag > environment > file > default, then validates.
pub fn resolve(args: &ServeArgs, env: &Env, file: &FileConfig) -> Result<Settings, SettingsError> {
    let store_dir = pick(args.store_dir.clone(), env_var(env, "STORE_DIR")?, file.store_dir.clone())
        .unwrap_or_else(|| DEFAULT_STORE_DIR.to_owned());
    if !store_dir.starts_with('/') || store_dir.len() < 2 || store_dir.ends_with('/') || store_dir.contains("//") {
        return Err(invalid("--store-dir", format!("{store_dir:?} must be an absolute path without a trailing slash")));
    }
    let store_root = pick(args.store_root.clone(), env_var(env, "STORE_ROOT")?, file.store_root.clone());
    let under_root = |rel: &str| store_root.as_ref().map(|r| r.join(rel.trim_start_matches('/')));
    let real_store_dir =
        pick(args.real_store_dir.clone(), env_var(env, "REAL_STORE_DIR")?, file.real_store_dir.clone())
            .or_else(|| under_root(&store_dir))
            .unwrap_or_else(|| PathBuf::from(&store_dir));
    let db = pick(args.db.clone(), env_var(env, "DB")?, file.db.clone())
        .or_else(|| under_root("nix/var/nix/db/db.sqlite"))
        .unwrap_or_else(|| PathBuf::from("/nix/var/nix/db/db.sqlite"));
    let log_dir = pick(args.log_dir.clone(), env_var(env, "LOG_DIR")?, file.log_dir.clone())
        .or_else(|| under_root("nix/var/log/nix/drvs"))
        .unwrap_or_else(|| PathBuf::from("/nix/var/log/nix/drvs"));

    let env_keys = env
        .vars
        .get("SUBSERVE_SIGN_KEY_FILE")
        .map(|v| v.split(',').filter(|s| !s.trim().is_empty()).map(|s| PathBuf::from(s.trim())).collect::<Vec<_>>());
    let sign_key_files = pick(
        (!args.sign_key_files.is_empty()).then(|| args.sign_key_files.clone()),
        env_keys,
        file.sign_key_files.clone(),
    )
    .unwrap_or_default();

    let file_compression = file
        .compression
        .as_deref()
        .map(|c| c.parse::<Compression>().map_err(|e| SettingsError::File(e.to_string())))
        .transpose()?;
    let compression =
        pick(args.compression, env_var(env, "COMPRESSION")?, file_compression).unwrap_or(Compression::None);
    let defaults = Levels::default();
    let zstd = pick(args.zstd_level, env_var(env, "ZSTD_LEVEL")?, file.zstd_level).unwrap_or(defaults.zstd);
    if !(1..=19).contains(&zstd) {
        return Err(invalid("--zstd-level", format!("{zstd} is not in 1..=19")));
    }
    let xz = pick(args.xz_level, env_var(env, "XZ_LEVEL")?, file.xz_level).unwrap_or(defaults.xz);
    if xz > 9 {
        return Err(invalid("--xz-level", format!("{xz} is not in 0..=9")));
    }
    let priority = pick(args.priority, env_var(env, "PRIORITY")?, file.priority).unwrap_or(DEFAULT_PRIORITY);
    let listen = pick(args.listen, env_var(env, "LISTEN")?, file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
    let state_dir = pick(args.state_dir.clone(), env_var(env, "STATE_DIR")?, file.state_dir.clone())
        .map_or_else(|| default_state_dir(env), Ok)?;

    Ok(Settings {
        listen,
        store: StoreConfig { store_dir, real_store_dir, db },
        log_dir,
        sign_key_files,
        compression,
        levels: Levels { zstd, xz },
        priority,
        state_dir,
    })
}

fn pick<T>(flag: Option<T>, env: Option<T>, file: Option<T>) -> Option<T> {
    flag.or(env).or(file)
}

fn invalid(setting: &'static str, reason: String) -> SettingsError {
    SettingsError::Invalid { setting, reason }
}

/// Reads and parses `SUBSERVE_<name>`, if set.
fn env_var<T: FromStr>(env: &Env, name: &str) -> Result<Option<T>, SettingsError>
where
    T::Err: Display,
{
    let var = format!("SUBSERVE_{name}");
    match env.vars.get(&var) {
        None => Ok(None),
        Some(value) => value.parse().map(Some).map_err(|e: T::Err| SettingsError::Env {
            var,
            value: value.clone(),
            reason: e.to_string(),
        }),
    }
}

fn default_state_dir(env: &Env) -> Result<PathBuf, SettingsError> {
    if env.is_root {
        return Ok(PathBuf::from("/var/lib/subserve"));
    }
    let absolute = |v: &String| Path::new(v).is_absolute().then(|| PathBuf::from(v));
    if let Some(xdg) = env.vars.get("XDG_STATE_HOME").and_then(absolute) {
        return Ok(xdg.join("subserve"));
    }
    if let Some(home) = env.vars.get("HOME").and_then(absolute) {
        return Ok(home.join(".local/state/subserve"));
    }
    Err(invalid("--state-dir", "not given, and neither HOME nor XDG_STATE_HOME is set".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env { vars: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), is_root: true }
    }

    #[test]
    fn defaults() {
        let s = resolve(&ServeArgs::default(), &env(&[]), &FileConfig::default()).unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.store.store_dir, "/nix/store");
        assert_eq!(s.store.real_store_dir, PathBuf::from("/nix/store"));
        assert_eq!(s.store.db, PathBuf::from("/nix/var/nix/db/db.sqlite"));
        assert_eq!(s.log_dir, PathBuf::from("/nix/var/log/nix/drvs"));
        assert_eq!(s.compression, Compression::None);
        assert_eq!(s.priority, DEFAULT_PRIORITY);
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/subserve"));
        assert!(s.sign_key_files.is_empty());
    }

    /// The precedence table: each row sets the priority in some of the three sources.
    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        // (flag, SUBSERVE_PRIORITY, file, expected)
        type Row = (Option<i32>, Option<&'static str>, Option<i32>, i32);
        let rows: [Row; 5] = [
            (Some(1), Some("2"), Some(3), 1),
            (None, Some("2"), Some(3), 2),
            (None, None, Some(3), 3),
            (Some(1), None, Some(3), 1),
            (None, None, None, DEFAULT_PRIORITY),
        ];
        for (flag, var, file, want) in rows {
            let args = ServeArgs { priority: flag, ..Default::default() };
            let e = env(&var.map(|v| vec![("SUBSERVE_PRIORITY", v)]).unwrap_or_default());
            let f = FileConfig { priority: file, ..Default::default() };
            assert_eq!(resolve(&args, &e, &f).unwrap().priority, want, "{flag:?} {var:?} {file:?}");
        }
    }

    #[test]
    fn store_root_places_everything_under_it() {
        let args =
            ServeArgs { store_root: Some("/tmp/x".into()), db: Some("/elsewhere.sqlite".into()), ..Default::default() };
        let s = resolve(&args, &env(&[]), &FileConfig::default()).unwrap();
        assert_eq!(s.store.store_dir, "/nix/store");
        assert_eq!(s.store.real_store_dir, PathBuf::from("/tmp/x/nix/store"));
        assert_eq!(s.store.db, PathBuf::from("/elsewhere.sqlite"));
        assert_eq!(s.log_dir, PathBuf::from("/tmp/x/nix/var/log/nix/drvs"));
    }

    #[test]
    fn key_files_from_each_source() {
        let e = env(&[("SUBSERVE_SIGN_KEY_FILE", "/a.sec, /b.sec")]);
        let s = resolve(&ServeArgs::default(), &e, &FileConfig::default()).unwrap();
        assert_eq!(s.sign_key_files, vec![PathBuf::from("/a.sec"), PathBuf::from("/b.sec")]);
        let args = ServeArgs { sign_key_files: vec!["/c.sec".into()], ..Default::default() };
        assert_eq!(resolve(&args, &e, &FileConfig::default()).unwrap().sign_key_files, vec![PathBuf::from("/c.sec")]);
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = env(&[("SUBSERVE_PRIORITY", "high")]);
        let msg = resolve(&ServeArgs::default(), &e, &FileConfig::default()).unwrap_err().to_string();
        assert!(msg.contains("SUBSERVE_PRIORITY") && msg.contains("high"), "{msg}");
        let e = env(&[("SUBSERVE_COMPRESSION", "gzip")]);
        assert!(resolve(&ServeArgs::default(), &e, &FileConfig::default()).is_err());
        for dir in ["nix/store", "/nix/store/", "/", "/nix//store"] {
            let args = ServeArgs { store_dir: Some(dir.into()), ..Default::default() };
            assert!(resolve(&args, &env(&[]), &FileConfig::default()).is_err(), "{dir}");
        }
        let args = ServeArgs { zstd_level: Some(30), ..Default::default() };
        assert!(resolve(&args, &env(&[]), &FileConfig::default()).is_err());
        assert!(FileConfig::parse("listen = \"127.0.0.1:1\"\nbogus = 1\n").is_err());
    }

    #[test]
    fn state_dir_for_non_root() {
        let mut e = env(&[("HOME", "/home/u")]);
        e.is_root = false;
        let s = resolve(&ServeArgs::default(), &e, &FileConfig::default()).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/home/u/.local/state/subserve"));
        e.vars.insert("XDG_STATE_HOME".into(), "/xdg".into());
        let s = resolve(&ServeArgs::default(), &e, &FileConfig::default()).unwrap();
        assert_eq!(s.state_dir, PathBuf::from("/xdg/subserve"));
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../docs/subserve.example.toml");
        let file = FileConfig::parse(text).unwrap();
        assert!(file.listen.is_some() && file.compression.is_some() && file.sign_key_files.is_some());
        resolve(&ServeArgs::default(), &env(&[]), &file).unwrap();
    }
}
