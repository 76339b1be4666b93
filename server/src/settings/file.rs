//! The TOML config file: the global options and the options of one store at its top level,
//! or `[[store]]` tables, each with a `prefix` and the options of its store. A key of the
//! wrong scope is refused with where it belongs; every other error names the key, as
//! `store[2].narinfo-ttl`, or for a syntax error the line.

use serde::Deserialize;

use super::options::{GlobalOptions, OptionSet, StoreOptions};
use super::SettingsError;

/// A parsed config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    /// The file's name as given, for messages.
    pub name: String,
    /// Its global options.
    pub global: GlobalOptions,
    /// The options of the one store, at the top level (empty when there are `[[store]]`
    /// tables; [`resolve`](fn@super::resolve) refuses them then).
    pub store: StoreOptions,
    /// Its `[[store]]` tables, if it has any (`store = []` is `Some` of none).
    pub stores: Option<Vec<StoreTable>>,
}

/// One `[[store]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreTable {
    /// The URL prefix the store is served under (`/nix`, `/guix`).
    pub prefix: Option<String>,
    /// The options of its store.
    pub options: StoreOptions,
}

/// One `[[upstream]]` table: an upstream cache, in the file or in a `[[store]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct UpstreamTable {
    /// Base URL.
    pub url: String,
    /// Trusted public keys, `name:base64` (a `(public-key …)` sexp for Guix).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Lower is asked first [default: the order in the file].
    pub priority: Option<i32>,
    /// Seconds to wait for response headers [default: --upstream-timeout].
    pub timeout: Option<u64>,
}

impl FileConfig {
    /// Parses the TOML text of the config file `name`.
    pub fn parse(text: &str, name: &str) -> Result<Self, SettingsError> {
        let error = |message: String| SettingsError::File { file: name.to_owned(), message };
        let mut top: toml::Table = toml::from_str(text).map_err(|e: toml::de::Error| {
            // toml's Display spans several lines with a source excerpt; keep it to one.
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().replace('\n', " ");
            error(match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            })
        })?;
        let stores = match top.remove("store") {
            None => None,
            Some(toml::Value::Array(tables)) => Some(
                tables
                    .into_iter()
                    .enumerate()
                    .map(|(i, table)| store_table(table, &format!("store[{}].", i + 1)).map_err(error))
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => return Err(error("store: must be [[store]] tables".into())),
        };
        check_keys(&top, "").map_err(error)?;
        let (global, store): (toml::Table, toml::Table) = top.into_iter().partition(|(k, _)| is_global(k));
        Ok(FileConfig {
            name: name.to_owned(),
            global: options(global, "").map_err(error)?,
            store: options(store, "").map_err(error)?,
            stores,
        })
    }
}

/// Refuses a key of the wrong scope, saying where it belongs, and an unknown key; `at` is
/// empty at the top level, else the `[[store]]` table's `store[n].`.
fn check_keys(table: &toml::Table, at: &str) -> Result<(), String> {
    for key in table.keys() {
        let field = key.replace('-', "_");
        if GlobalOptions::FIELDS.contains(&field.as_str()) {
            if !at.is_empty() {
                return Err(format!("{at}{key}: belongs at the top level, not in a [[store]] table"));
            }
        } else if key == "prefix" {
            if at.is_empty() {
                return Err("prefix: belongs in a [[store]] table".into());
            }
        } else if !StoreOptions::FIELDS.contains(&field.as_str()) {
            return Err(format!("{at}{key}: unknown key (docs/config.md lists them)"));
        }
    }
    Ok(())
}

/// Whether `key` is a global option's.
fn is_global(key: &str) -> bool {
    GlobalOptions::FIELDS.contains(&key.replace('-', "_").as_str())
}

/// A `[[store]]` table, whose keys are shown under `at` (`store[2].`).
fn store_table(table: toml::Value, at: &str) -> Result<StoreTable, String> {
    let toml::Value::Table(mut table) = table else {
        return Err(format!("{}: must be a [[store]] table", at.trim_end_matches('.')));
    };
    check_keys(&table, at)?;
    let prefix = match table.remove("prefix") {
        None => None,
        Some(toml::Value::String(prefix)) => Some(prefix),
        Some(_) => return Err(format!("{at}prefix: must be a string like \"/nix\"")),
    };
    Ok(StoreTable { prefix, options: options(table, at)? })
}

/// The options of one scope, from its keys; an error names the key under `at`.
fn options<T: for<'de> Deserialize<'de>>(table: toml::Table, at: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let mut key = at.to_owned();
        for segment in e.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => key = format!("{key}[{}]", index + 1),
                serde_path_to_error::Segment::Map { key: k } => key = format!("{key}{}{k}", separator(&key)),
                _ => {}
            }
        }
        let message = e.into_inner().message().trim().replace('\n', " ");
        match key.trim_end_matches('.') {
            "" => message,
            key => format!("{key}: {message}"),
        }
    })
}

fn separator(key: &str) -> &'static str {
    if key.is_empty() || key.ends_with('.') {
        ""
    } else {
        "."
    }
}
