//! Reading the audit trail: which nodes fetched a path, and what one node fetched. Only NAR
//! downloads that succeeded count as fetches; narinfo answers are kept but not reported.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, OpenFlags};

use crate::{from_millis, millis, Error, Kind};

/// The nodes that fetched paths matching a pattern: one per client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFetches {
    /// The node's address.
    pub client: String,
    /// Its first matching fetch.
    pub first: SystemTime,
    /// Its last matching fetch.
    pub last: SystemTime,
    /// How many NAR downloads.
    pub count: u64,
    /// Body bytes sent to it.
    pub bytes: u64,
    /// The matching store paths it fetched (`<hash>-<name>`), sorted.
    pub paths: Vec<String>,
}

/// What one node fetched: one per store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFetches {
    /// The store path, `<hash>-<name>`.
    pub path: String,
    /// The first fetch.
    pub first: SystemTime,
    /// The last fetch.
    pub last: SystemTime,
    /// How many NAR downloads.
    pub count: u64,
    /// Body bytes sent.
    pub bytes: u64,
}

/// A line of a top list: a client or a store path, with its NAR downloads and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Top {
    /// The client's address, or the store path (`<hash>-<name>`).
    pub name: String,
    /// NAR downloads.
    pub count: u64,
    /// Body bytes sent.
    pub bytes: u64,
}

/// A path row's basename, `<hash>-<name>`, or the hash alone when the name was never known.
const BASENAME: &str = "CASE p.name WHEN '' THEN p.hash ELSE p.hash || '-' || p.name END";

/// The audit database, opened read-only.
pub struct Query {
    conn: Connection,
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query").finish_non_exhaustive()
    }
}

/// How a `who-fetched` pattern matches store paths.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// A store path or its hash part: that path exactly.
    Hash(String),
    /// Anything else: a part of the path's name (`glibc-2.39`), in any case.
    Name(String),
}

impl Pattern {
    fn parse(text: &str) -> Pattern {
        let base = text.trim().rsplit('/').next().unwrap_or_default();
        let hash_part = base.get(..32).filter(|h| h.bytes().all(is_nix32));
        match hash_part {
            Some(hash) if base.len() == 32 || base.as_bytes()[32] == b'-' => Pattern::Hash(hash.to_owned()),
            _ => Pattern::Name(text.trim().to_owned()),
        }
    }
}

/// A character of the Nix32 alphabet (digits and lower-case letters but e, o, u and t).
fn is_nix32(c: u8) -> bool {
    c.is_ascii_digit() || (c.is_ascii_lowercase() && !matches!(c, b'e' | b'o' | b'u' | b't'))
}

impl Query {
    /// Opens the database at `path` read-only; [`Error::Missing`] when there is none.
    pub fn open(path: &Path) -> Result<Self, Error> {
        if !path.exists() {
            return Err(Error::Missing { path: path.to_owned() });
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .and_then(|conn| conn.busy_timeout(Duration::from_secs(5)).map(|()| conn))
                .map_err(|source| Error::Open { path: path.to_owned(), source })?;
        Ok(Query { conn })
    }

    /// The nodes that downloaded a NAR of a path matching `pattern` since `since`, the most
    /// recent first. `pattern` is a store path, a hash part, or a part of a name
    /// (`glibc-2.39`; `%` and `_` are literal).
    pub fn who_fetched(&self, pattern: &str, since: Option<SystemTime>) -> Result<Vec<NodeFetches>, Error> {
        let (condition, value) = match Pattern::parse(pattern) {
            Pattern::Hash(hash) => ("p.hash = ?1", hash),
            Pattern::Name(name) => ("p.name LIKE ?1 ESCAPE '\\'", format!("%{}%", escape_like(&name))),
        };
        let sql = format!(
            "SELECT f.client, min(f.at), max(f.at), count(*), sum(f.bytes), group_concat(DISTINCT {BASENAME})
             FROM fetch f JOIN path p ON p.id = f.path
             WHERE {condition} AND f.kind = ?2 AND f.status < 400 AND f.at >= ?3
             GROUP BY f.client ORDER BY max(f.at) DESC, f.client"
        );
        let mut statement = self.conn.prepare(&sql)?;
        let rows = statement.query_map(params![value, Kind::Nar.code(), since.map_or(0, millis)], |row| {
            let paths: String = row.get(5)?;
            let mut paths: Vec<String> = paths.split(',').map(str::to_owned).collect();
            paths.sort();
            Ok(NodeFetches {
                client: row.get(0)?,
                first: from_millis(row.get(1)?),
                last: from_millis(row.get(2)?),
                count: row.get::<_, i64>(3)?.try_into().unwrap_or(0),
                bytes: row.get::<_, i64>(4)?.try_into().unwrap_or(0),
                paths,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The NARs `client` downloaded since `since`, one entry per store path, the most recent
    /// first.
    pub fn node(&self, client: IpAddr, since: Option<SystemTime>) -> Result<Vec<PathFetches>, Error> {
        let mut statement = self.conn.prepare(&format!(
            "SELECT {BASENAME}, min(f.at), max(f.at), count(*), sum(f.bytes)
             FROM fetch f JOIN path p ON p.id = f.path
             WHERE f.client = ?1 AND f.kind = ?2 AND f.status < 400 AND f.at >= ?3
             GROUP BY f.path ORDER BY max(f.at) DESC, 1"
        ))?;
        let rows = statement.query_map(
            params![client.to_canonical().to_string(), Kind::Nar.code(), since.map_or(0, millis)],
            |row| {
                Ok(PathFetches {
                    path: row.get(0)?,
                    first: from_millis(row.get(1)?),
                    last: from_millis(row.get(2)?),
                    count: row.get::<_, i64>(3)?.try_into().unwrap_or(0),
                    bytes: row.get::<_, i64>(4)?.try_into().unwrap_or(0),
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Query {
    /// The `limit` clients that were sent the most NAR bytes since `since`.
    pub fn top_clients(&self, since: SystemTime, limit: usize) -> Result<Vec<Top>, Error> {
        self.top("f.client", since, limit)
    }

    /// The `limit` store paths downloaded most often since `since`.
    pub fn top_paths(&self, since: SystemTime, limit: usize) -> Result<Vec<Top>, Error> {
        self.top(BASENAME, since, limit)
    }

    fn top(&self, name: &str, since: SystemTime, limit: usize) -> Result<Vec<Top>, Error> {
        let order = if name == "f.client" { "sum(f.bytes)" } else { "count(*)" };
        let sql = format!(
            "SELECT {name}, count(*), sum(f.bytes) FROM fetch f JOIN path p ON p.id = f.path
             WHERE f.kind = ?1 AND f.status < 400 AND f.at >= ?2
             GROUP BY 1 ORDER BY {order} DESC, 1 LIMIT ?3"
        );
        let mut statement = self.conn.prepare(&sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement.query_map(params![Kind::Nar.code(), millis(since), limit], |row| {
            Ok(Top {
                name: row.get(0)?,
                count: row.get::<_, i64>(1)?.try_into().unwrap_or(0),
                bytes: row.get::<_, i64>(2)?.try_into().unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// `text` with LIKE's wildcards (and the escape character) escaped by `\`.
fn escape_like(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_name_a_path_or_a_part_of_a_name() {
        let hash = "7rjj86a15146cq1d3qy068lml7n8ykzm";
        assert_eq!(Pattern::parse(hash), Pattern::Hash(hash.into()));
        assert_eq!(Pattern::parse(&format!("/nix/store/{hash}-glibc-2.39")), Pattern::Hash(hash.into()));
        assert_eq!(Pattern::parse(&format!("{hash}-glibc-2.39")), Pattern::Hash(hash.into()));
        assert_eq!(Pattern::parse(" glibc-2.39 "), Pattern::Name("glibc-2.39".into()));
        // 32 characters, but not all Nix32: a name.
        assert_eq!(
            Pattern::parse("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"),
            Pattern::Name("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee".into())
        );
        assert_eq!(Pattern::parse(&format!("{hash}x")), Pattern::Name(format!("{hash}x")));
        assert_eq!(Pattern::parse("é"), Pattern::Name("é".into()));
    }

    #[test]
    fn like_wildcards_are_literal() {
        assert_eq!(escape_like("a%b_c\\d"), "a\\%b\\_c\\\\d");
    }
}
