//! Nix or Guix: the one seam between the two ecosystems, for the whole workspace. The dialect
//! decides the narinfo format, the signature scheme, the URL layout, the store's default
//! locations, and which kind of upstream cache a proxy fronts.

use std::fmt;
use std::str::FromStr;

use crate::Compression;

/// The ecosystem a store belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Dialect {
    /// Nix clients: `Sig:` lines, `nar/<hash>-<narhash>.nar.<ext>`, one compression.
    #[default]
    Nix,
    /// Guix clients: one `Signature:`, `nar/<compression>/<basename>` groups.
    Guix,
}

impl Dialect {
    /// The dialect a store dir implies when none is given: `/gnu/store` is Guix.
    pub fn for_store_dir(store_dir: &str) -> Self {
        if store_dir == "/gnu/store" {
            Dialect::Guix
        } else {
            Dialect::Nix
        }
    }

    /// The store dir of a default installation.
    pub fn default_store_dir(self) -> &'static str {
        match self {
            Dialect::Nix => "/nix/store",
            Dialect::Guix => "/gnu/store",
        }
    }

    /// The store DB, relative to the root of the filesystem (or of a chroot store).
    pub fn db_path(self) -> &'static str {
        match self {
            Dialect::Nix => "nix/var/nix/db/db.sqlite",
            Dialect::Guix => "var/guix/db/db.sqlite",
        }
    }

    /// The build-log directory, relative to the root.
    pub fn log_dir(self) -> &'static str {
        match self {
            Dialect::Nix => "nix/var/log/nix/drvs",
            Dialect::Guix => "var/log/guix/drvs",
        }
    }

    /// What narinfos offer by default: Nix clients get the bare NAR (fastest on a LAN,
    /// resumable); Guix clients pick among zstd, gzip (for clients without guile-zstd) and none.
    pub fn default_compressions(self) -> Vec<Compression> {
        match self {
            Dialect::Nix => vec![Compression::None],
            Dialect::Guix => vec![Compression::Zstd, Compression::Gzip, Compression::None],
        }
    }

    /// Whether subserve can offer `c` to this dialect's clients (produce it on the fly, and
    /// the clients can decode it).
    pub fn can_offer(self, c: Compression) -> bool {
        match self {
            Dialect::Nix => matches!(c, Compression::None | Compression::Zstd | Compression::Xz),
            Dialect::Guix => matches!(c, Compression::None | Compression::Zstd | Compression::Gzip | Compression::Xz),
        }
    }
}

impl Dialect {
    /// `nix` or `guix`, as flags, files and the cache index write it.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Nix => "nix",
            Dialect::Guix => "guix",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dialect name that is neither `nix` nor `guix`.
#[derive(Debug, thiserror::Error)]
#[error("unknown dialect {0:?} (expected nix or guix)")]
pub struct UnknownDialect(String);

impl FromStr for Dialect {
    type Err = UnknownDialect;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nix" => Ok(Dialect::Nix),
            "guix" => Ok(Dialect::Guix),
            other => Err(UnknownDialect(other.to_owned())),
        }
    }
}
