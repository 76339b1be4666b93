//! The status page at `/`: one server-rendered HTML page an admin reads in a browser (on a
//! phone too), with nothing fetched from elsewhere and no script.
//!
//! Everything on it is rendered through askama's HTML escaping, because much of it comes from
//! outside: upstream URLs and store paths from the configuration and the store, client
//! addresses, names of fetched paths. Nothing comes from the request: the page never reflects
//! a header (not even `Host`); the host named is the configured URL's.
//!
//! [`StatusPage`] is a snapshot, taken by the caller at one moment, so that the figures on the
//! page agree with each other and with `/metrics` taken from the same counters.

use std::time::Duration;

use askama::Template;

/// One rendering of the status page.
#[derive(Debug, Clone, Template)]
#[template(path = "status.html")]
pub struct StatusPage {
    /// subserve's version.
    pub version: &'static str,
    /// The host of the configured URL (never a request header).
    pub host: String,
    /// Time since start.
    pub uptime: Duration,
    /// The NAR streams and their queue.
    pub streams: Streams,
    /// Each served store.
    pub stores: Vec<StoreStatus>,
    /// Requests answered and bytes sent since start, as `/metrics` counts them.
    pub traffic: Traffic,
    /// Whether the audit trail is on (the lists below come from it).
    pub audit: bool,
    /// Whether the reader may see the lists below (an `--admin-allow` address); when not,
    /// they are empty and the page says why.
    pub admin: bool,
    /// The busiest clients of the last hour.
    pub clients: Vec<Top>,
    /// The most fetched paths of the last hour.
    pub paths: Vec<Top>,
    /// Why the lists could not be read, if they could not (a broken audit database).
    pub lists_error: Option<String>,
    /// The URL path of `/metrics` (under the configured URL's path), for the page's links.
    pub metrics_href: String,
    /// The URL path of `/health`.
    pub health_href: String,
}

pub use crate::metrics::Traffic;

/// NAR streams in use, against their caps.
#[derive(Debug, Clone, Default)]
pub struct Streams {
    /// Streams in use.
    pub in_use: usize,
    /// Their cap.
    pub cap: usize,
    /// Streams compressing on the fly.
    pub compressed_in_use: usize,
    /// Their cap.
    pub compressed_cap: usize,
    /// Requests waiting for a stream.
    pub waiting: u64,
    /// Requests refused with 503 since start.
    pub refused: u64,
}

/// One served store.
#[derive(Debug, Clone)]
pub struct StoreStatus {
    /// Its URL prefix (empty at the root).
    pub prefix: String,
    /// The URL nodes substitute from.
    pub url: String,
    /// `nix` or `guix`.
    pub dialect: String,
    /// Its store dir.
    pub store_dir: String,
    /// Its public keys, as clients trust them.
    pub keys: Vec<String>,
    /// The exact lines a node's configuration needs.
    pub client_config: Vec<String>,
    /// Its upstreams.
    pub upstreams: Vec<Upstream>,
    /// Its cache area, if it has one.
    pub cache: Option<Cache>,
    /// Its baking, if on.
    pub baking: Option<Baking>,
}

/// An upstream and how it is doing.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Its URL.
    pub url: String,
    /// Whether it answers.
    pub healthy: bool,
    /// A word on its state (`up`, `down since …`).
    pub state: String,
}

/// A cache area's use.
#[derive(Debug, Clone)]
pub struct Cache {
    /// Bytes used.
    pub used: u64,
    /// Its limit.
    pub limit: u64,
    /// NAR files in it, proxied and baked.
    pub files: u64,
}

impl Cache {
    fn used_human(&self) -> String {
        bytes(self.used)
    }

    fn limit_human(&self) -> String {
        bytes(self.limit)
    }
}

/// Baking progress.
#[derive(Debug, Clone)]
pub struct Baking {
    /// Bakes waiting or running.
    pub queued: u64,
    /// Bakes done since start.
    pub done: u64,
    /// Bakes failed since start.
    pub failed: u64,
}

/// A line of a top list: a client or a path, with its NAR downloads and bytes.
#[derive(Debug, Clone)]
pub struct Top {
    /// The client's address or the store path.
    pub name: String,
    /// NAR downloads.
    pub count: u64,
    /// Bytes sent.
    pub bytes: u64,
}

impl Top {
    fn bytes_human(&self) -> String {
        bytes(self.bytes)
    }
}

impl StatusPage {
    fn bytes_human(&self) -> String {
        bytes(self.traffic.bytes)
    }

    fn nar_bytes_human(&self) -> String {
        bytes(self.traffic.nar_bytes)
    }

    fn uptime_text(&self) -> String {
        let s = self.uptime.as_secs();
        match s {
            0..60 => format!("{s} s"),
            60..3600 => format!("{} min", s / 60),
            3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
            _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
        }
    }

    /// The page's HTML.
    pub fn html(&self) -> String {
        // Rendering writes into a String and the template has no fallible calls.
        self.render().unwrap_or_else(|e| format!("status page: {e}"))
    }
}

/// `n` bytes for people: `812 B`, `3.4 MiB`, `1.2 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "<script>alert('x')</script>\"&";

    fn page() -> StatusPage {
        StatusPage {
            version: "0.1.0",
            host: "head-1.cluster".into(),
            uptime: Duration::from_secs(3 * 3600 + 5 * 60),
            streams: Streams { in_use: 3, cap: 64, compressed_in_use: 1, compressed_cap: 8, waiting: 2, refused: 7 },
            stores: vec![StoreStatus {
                prefix: String::new(),
                url: "http://head-1.cluster:5000".into(),
                dialect: "nix".into(),
                store_dir: "/nix/store".into(),
                keys: vec!["head-1:abc=".into()],
                client_config: vec!["substituters = http://head-1.cluster:5000".into()],
                upstreams: vec![Upstream {
                    url: format!("https://up.example/{HOSTILE}"),
                    healthy: false,
                    state: "down".into(),
                }],
                cache: Some(Cache { used: 3 << 30, limit: 10 << 30, files: 1234 }),
                baking: Some(Baking { queued: 4, done: 40, failed: 0 }),
            }],
            traffic: Traffic {
                requests: 1234,
                bytes: 5 << 30,
                narinfo_requests: 1000,
                nar_requests: 200,
                nar_bytes: 4 << 30,
            },
            audit: true,
            admin: true,
            clients: vec![Top { name: "10.0.0.7".into(), count: 42, bytes: 75 << 20 }],
            paths: vec![Top { name: format!("7rjj86a15146cq1d3qy068lml7n8ykzm-{HOSTILE}"), count: 9, bytes: 812 }],
            lists_error: None,
            metrics_href: "/metrics".into(),
            health_href: "/health".into(),
        }
    }

    #[test]
    fn the_page_shows_the_snapshot() {
        let html = page().html();
        for shown in [
            "subserve 0.1.0",
            "up 3 h 5 min",
            "<td class=\"n\" id=\"streams-in-use\">3</td><td>of 64 in use</td>",
            "id=\"streams-refused\">7<",
            "substituters = http://head-1.cluster:5000",
            "head-1:abc=",
            "3.0 GiB of 10.0 GiB, 1234 files",
            "<td class=\"n\" id=\"requests\">1234</td>",
            "<td class=\"n\" id=\"nar-bytes\">4294967296</td><td>4.0 GiB</td>",
            "href=\"/metrics\"",
            "<td>10.0.0.7</td><td class=\"n\">42</td><td class=\"n\">75.0 MiB</td>",
            "class=\"bad\">down<",
        ] {
            assert!(html.contains(shown), "{shown:?} missing from:\n{html}");
        }
    }

    #[test]
    fn the_lists_are_for_admins_only() {
        let mut p = page();
        p.admin = false;
        p.clients.clear();
        p.paths.clear();
        let html = p.html();
        assert!(html.contains("shown to admin addresses only"), "{html}");
        assert!(!html.contains("10.0.0.7"), "{html}");
        p.admin = true;
        p.audit = false;
        assert!(p.html().contains("the audit trail is off"));
    }

    #[test]
    fn everything_from_outside_is_escaped() {
        let html = page().html();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62;&#34;&#38;"), "{html}");
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 40), "5.0 TiB");
        let mut p = page();
        p.uptime = Duration::from_secs(59);
        assert_eq!(p.uptime_text(), "59 s");
        p.uptime = Duration::from_secs(2 * 86_400 + 7200);
        assert_eq!(p.uptime_text(), "2 d 2 h");
    }
}
