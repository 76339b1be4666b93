//! The server's side of the audit trail (the `audit` crate keeps it): which requests are
//! recorded, and what each one is about, learnt from its URL and, for a narinfo, from the
//! answer itself.
//!
//! Every GET of a narinfo or a NAR is recorded, whatever its status, when its body has ended
//! (`routes::log_request` writes the log line there): the record's bytes are those sent and
//! its duration runs to the last byte. Recording hands the record to the `AuditLog`'s queue
//! and returns; the writer thread stores it within milliseconds, so `subserve audit` sees a
//! download as soon as it has ended.
//!
//! The store path's name: a Guix NAR URL carries the basename; a Nix NAR URL only the hash
//! (the writer then takes the name its narinfo's record had, see `audit::Record::name`); a
//! narinfo's answer names it on its `StorePath:` line, read off the body as it goes out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use audit::{AuditConfig, AuditLog, Kind, Query};
use formats::{StorePath, StorePathHash};

use crate::metrics::RouteKind;
use crate::settings::AuditSettings;

/// The process's audit trail: the log written to, and where it is for the status page's
/// queries.
#[derive(Debug)]
pub struct AuditTrail {
    log: Arc<AuditLog>,
    path: PathBuf,
}

impl AuditTrail {
    /// Opens the database `settings` names, and starts its writer. A new database is created
    /// readable by subserve's user only (mode 0600, SQLite gives its `-wal` and `-shm` the
    /// same), in its directory created 0700 if missing: it says what each node runs.
    pub fn open(settings: &AuditSettings) -> anyhow::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let path = &settings.path;
        if let Some(dir) = path.parent().filter(|d| !d.exists()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
        let config =
            AuditConfig { retention: settings.retention, max_bytes: settings.max_bytes, ..AuditConfig::default() };
        let log = AuditLog::open(&settings.path, config)?;
        Ok(AuditTrail { log: Arc::new(log), path: settings.path.clone() })
    }

    /// The recording end, for the metrics of its counters.
    pub fn log(&self) -> &Arc<AuditLog> {
        &self.log
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The busiest clients (by bytes) and the most fetched paths of the last `window`, at most
    /// `limit` of each. Blocking (opens the database read-only and reads it).
    pub fn top(&self, window: Duration, limit: usize) -> Result<(Vec<audit::Top>, Vec<audit::Top>), audit::Error> {
        let since = SystemTime::now().checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
        let query = Query::open(&self.path)?;
        Ok((query.top_clients(since, limit)?, query.top_paths(since, limit)?))
    }

    /// Queues one request's record; never blocks (see `audit::AuditLog::record`).
    pub(crate) fn record(&self, record: audit::Record) {
        self.log.record(record);
    }
}

/// What a recorded request is about: the kind, and the path as far as its URL tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) kind: Kind,
    pub(crate) hash: String,
    /// Empty until known (see the module's doc).
    pub(crate) name: String,
}

impl Target {
    /// The target of a request for `relative` (the URL path under its store's prefix) of
    /// route kind `kind`; `None` for what is not recorded (anything but narinfos and NARs) and
    /// for URLs that name no store path (they got a 400 or a 404 without a lookup).
    pub(crate) fn of(kind: RouteKind, relative: &str) -> Option<Target> {
        match kind {
            RouteKind::Narinfo => {
                let hash = relative.strip_prefix('/')?.strip_suffix(".narinfo")?;
                Some(Target { kind: Kind::Narinfo, hash: valid_hash(hash)?, name: String::new() })
            }
            RouteKind::Nar => {
                let file = relative.strip_prefix("/nar/")?;
                // Nix: `nar/<hash>-<narhash>.nar[.ext]`, the NarHash in Nix32 (52 characters).
                if let Some((hash, rest)) = file.split_once('-') {
                    let nar_hash = rest.get(..52).filter(|h| h.bytes().all(is_nix32));
                    if nar_hash.is_some() && rest[52..].starts_with(".nar") {
                        return Some(Target { kind: Kind::Nar, hash: valid_hash(hash)?, name: String::new() });
                    }
                }
                // Guix: `nar/<basename>` or `nar/<compression>/<basename>`, the name included.
                let path = StorePath::from_basename(file.rsplit('/').next()?).ok()?;
                Some(Target { kind: Kind::Nar, hash: path.hash().as_str().to_owned(), name: path.name().to_owned() })
            }
            _ => None,
        }
    }

    /// Learns the name from the first bytes of a narinfo answer (`StorePath: <dir>/<hash>-<name>`
    /// opens both dialects' narinfos), when they name this target's hash.
    pub(crate) fn learn_from_narinfo(&mut self, body: &[u8]) {
        if self.kind != Kind::Narinfo || !self.name.is_empty() {
            return;
        }
        let Some(line) = body.split(|&b| b == b'\n').next() else { return };
        let Some(path) = std::str::from_utf8(line).ok().and_then(|l| l.strip_prefix("StorePath: ")) else {
            return;
        };
        let Some(basename) = path.trim().rsplit('/').next() else { return };
        if let Ok(path) = StorePath::from_basename(basename) {
            if path.hash().as_str() == self.hash {
                self.name = path.name().to_owned();
            }
        }
    }
}

/// A character of the Nix32 alphabet.
fn is_nix32(c: u8) -> bool {
    c.is_ascii_digit() || (c.is_ascii_lowercase() && !matches!(c, b'e' | b'o' | b'u' | b't'))
}

/// `hash` if it is a valid store path hash part.
fn valid_hash(hash: &str) -> Option<String> {
    StorePathHash::parse(hash).ok().map(|h| h.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "7rjj86a15146cq1d3qy068lml7n8ykzm";
    const NARHASH: &str = "04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw";

    fn target(kind: Kind, name: &str) -> Option<Target> {
        Some(Target { kind, hash: HASH.into(), name: name.into() })
    }

    #[test]
    fn urls_name_their_paths() {
        let of = Target::of;
        assert_eq!(of(RouteKind::Narinfo, &format!("/{HASH}.narinfo")), target(Kind::Narinfo, ""));
        assert_eq!(of(RouteKind::Nar, &format!("/nar/{HASH}-{NARHASH}.nar.zst")), target(Kind::Nar, ""));
        assert_eq!(of(RouteKind::Nar, &format!("/nar/{HASH}-{NARHASH}.nar")), target(Kind::Nar, ""));
        assert_eq!(of(RouteKind::Nar, &format!("/nar/zstd/{HASH}-hello-2.12")), target(Kind::Nar, "hello-2.12"));
        assert_eq!(of(RouteKind::Nar, &format!("/nar/{HASH}-hello-2.12")), target(Kind::Nar, "hello-2.12"));
        for unrecorded in [
            (RouteKind::Narinfo, "/short.narinfo".to_owned()),
            (RouteKind::Nar, "/nar/eeee-x.nar".to_owned()),
            (RouteKind::Nar, "/nar/".to_owned()),
            (RouteKind::Listing, format!("/{HASH}.ls")),
            (RouteKind::Log, format!("/log/{HASH}-x.drv")),
            (RouteKind::Other, "/".to_owned()),
        ] {
            assert_eq!(of(unrecorded.0, &unrecorded.1), None, "{unrecorded:?}");
        }
    }

    #[test]
    fn a_narinfo_answer_names_its_path() {
        let mut t = target(Kind::Narinfo, "").unwrap();
        t.learn_from_narinfo(format!("StorePath: /nix/store/{HASH}-glibc-2.39\nURL: nar/x\n").as_bytes());
        assert_eq!(t.name, "glibc-2.39");
        // Another hash's narinfo, garbage, or a NAR: nothing learnt.
        for body in [
            "StorePath: /nix/store/0rhbmkw0ia6kxc0s9zsvv7fb8w5zcggb-bash\n".to_owned(),
            "Not Found\n".into(),
            format!("StorePath: /gnu/store/{HASH}-<script>\n"),
        ] {
            let mut t = target(Kind::Narinfo, "").unwrap();
            t.learn_from_narinfo(body.as_bytes());
            assert_eq!(t.name, "", "{body}");
        }
        let mut nar = target(Kind::Nar, "").unwrap();
        nar.learn_from_narinfo(format!("StorePath: /nix/store/{HASH}-glibc\n").as_bytes());
        assert_eq!(nar.name, "");
    }
}
