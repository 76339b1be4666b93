//! `GET /` (and `GET <prefix>/` per store): the status page for browsers, the plain-text
//! index for everything else (scripts, curl), and `GET /index.txt`, the index always.
//!
//! A client that accepts `text/html` gets the page (`crate::status_page`); any other gets the
//! index that multi-store servers have always served at `/`, one line per store. The page's
//! lists of clients and paths, which tell what each node runs, are filled in only for
//! `--admin-allow` addresses; everyone else gets the rest of the page, which holds what every
//! node is told anyway (URLs, public keys) and load figures. Nothing on it comes from the
//! request: the host and URLs are the configured URL's, never the `Host` header.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use formats::Dialect;

use crate::conn::ClientAddr;

use crate::error::AppError;
use crate::process::Process;
use crate::state::AppState;
use crate::stats::Stats;
use crate::status_page::{Baking, Cache, StatusPage, StoreStatus, Streams, Top, Upstream};

/// How far back the page's lists look.
const WINDOW: Duration = Duration::from_secs(3600);
/// Lines in each of the page's lists.
const TOP: usize = 10;

/// The browser's page allows nothing but its own inline style: no script, nothing fetched.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What one status page (or index) shows: some stores of the process.
pub(super) struct Pages {
    /// The stores on this page: all of them at `/`, one at its prefix.
    pub(super) stores: Vec<Arc<AppState>>,
    /// The process they belong to.
    pub(super) process: Arc<Process>,
}

/// `GET /` or `GET <prefix>/`: the page for browsers, the index for the rest.
pub(super) async fn get(State(pages): State<Arc<Pages>>, request: Request) -> Result<Response, AppError> {
    if !accepts_html(request.headers()) {
        return Ok(text(index(&pages.stores)));
    }
    let client = request.extensions().get::<ClientAddr>().map(ClientAddr::ip);
    let admin = client.is_some_and(|ip| pages.process.access.is_admin(ip));
    let page = snapshot(&pages, admin).await?;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::VARY, HeaderValue::from_static("Accept")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    Ok((headers, page.html()).into_response())
}

/// `GET /index.txt`: the plain-text index, whatever the client accepts.
pub(super) async fn get_text(State(pages): State<Arc<Pages>>) -> Response {
    text(index(&pages.stores))
}

fn text(body: String) -> Response {
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::VARY, "Accept")];
    (headers, body).into_response()
}

/// Whether the request's `Accept` names `text/html` (as browsers' do; curl's `*/*` does not).
fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| media.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/html")))
}

/// The text index: where each store is.
fn index(stores: &[Arc<AppState>]) -> String {
    let mut text = String::from("subserve: binary caches served here\n\n");
    for s in stores {
        text.push_str(&format!(
            "{}/\t{} clients, store {}\n",
            s.settings.prefix,
            s.settings.dialect,
            s.store.store_dir()
        ));
    }
    text
}

/// The page's figures, taken now. The SQLite reads (cache use, the audit trail's lists) run
/// on the short-work pool.
async fn snapshot(pages: &Pages, admin: bool) -> Result<StatusPage, AppError> {
    let process = Arc::clone(&pages.process);
    let stats = Stats::collect(&pages.stores);
    let streams = match pages.stores.first() {
        Some(state) => Streams {
            in_use: stats.streams.in_use,
            cap: state.admission.streams.cap(),
            compressed_in_use: stats.compressed_streams.in_use,
            compressed_cap: state.admission.compressed.cap(),
            waiting: (stats.streams.waiting + stats.compressed_streams.waiting) as u64,
            refused: stats.streams.rejected_total + stats.compressed_streams.rejected_total,
        },
        None => Streams::default(),
    };
    let stores = pages.stores.clone();
    let reads = {
        let process = Arc::clone(&process);
        move || {
            let usage: Vec<Option<Cache>> = stores
                .iter()
                .map(|s| {
                    let usage = s.cache.as_ref()?.usage().map_err(|e| tracing::warn!(error = %e, "cache use")).ok()?;
                    Some(Cache { used: usage.bytes, limit: usage.max_size, files: usage.files })
                })
                .collect();
            let lists = match (&process.audit, admin) {
                (Some(trail), true) => Some(trail.top(WINDOW, TOP).map_err(|e| e.to_string())),
                _ => None,
            };
            (usage, lists)
        }
    };
    let (usage, lists) = match pages.stores.first() {
        Some(state) => state.admission.blocking(reads).await?,
        None => tokio::task::spawn_blocking(reads).await?,
    };
    let (clients, paths, lists_error) = match lists {
        Some(Ok((clients, paths))) => (tops(clients), tops(paths), None),
        Some(Err(e)) => (Vec::new(), Vec::new(), Some(e)),
        None => (Vec::new(), Vec::new(), None),
    };
    let base = url_path(&process.url);
    Ok(StatusPage {
        version: env!("CARGO_PKG_VERSION"),
        host: url_host(&process.url).to_owned(),
        uptime: process.started.elapsed(),
        streams,
        stores: pages.stores.iter().zip(usage).map(|(s, cache)| store_status(s, &process.url, cache)).collect(),
        traffic: process.metrics.traffic(),
        audit: process.audit.is_some(),
        admin,
        clients,
        paths,
        lists_error,
        metrics_href: format!("{base}/metrics"),
        health_href: format!("{base}/health"),
    })
}

fn tops(list: Vec<audit::Top>) -> Vec<Top> {
    list.into_iter().map(|t| Top { name: t.name, count: t.count, bytes: t.bytes }).collect()
}

/// One store's part of the page.
fn store_status(state: &AppState, url: &str, cache: Option<Cache>) -> StoreStatus {
    let keys = match state.settings.dialect {
        Dialect::Nix => state.signer.nix_keys().iter().map(|k| k.to_public().to_string()).collect(),
        Dialect::Guix => state.signer.guix_keys().iter().map(|k| k.public_sexp()).collect(),
    };
    let upstreams = state
        .proxy
        .as_ref()
        .map(|proxy| {
            proxy
                .upstream_health()
                .into_iter()
                .map(|(url, failing)| Upstream {
                    url: without_userinfo(&url),
                    healthy: failing.is_none(),
                    state: match failing {
                        None => "answering".to_owned(),
                        Some(d) => format!("failing for {}", duration(d)),
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let baking = state.baker.as_ref().map(|b| {
        let s = b.stats();
        Baking { queued: s.pending as u64, done: s.completed_total, failed: s.failed_total }
    });
    StoreStatus {
        prefix: state.settings.prefix.clone(),
        url: format!("{url}{}", state.settings.prefix),
        dialect: state.settings.dialect.to_string(),
        store_dir: state.store.store_dir().to_owned(),
        keys,
        client_config: state.client_config(url),
        upstreams,
        cache,
        baking,
    }
}

/// `d` for people: `40 s`, `3 min`, `2 h 5 min`.
fn duration(d: Duration) -> String {
    match d.as_secs() {
        s @ 0..120 => format!("{s} s"),
        s @ 120..7200 => format!("{} min", s / 60),
        s => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// A URL without the `user:password@` an upstream's may carry: a secret is never shown.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// The host (and port) of `url`, as the page's title names the server.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit('@').next().unwrap_or(authority)
}

/// The path of `url` without a trailing slash (`""` for `http://head:5000`).
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find('/').map_or("", |i| rest[i..].trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_the_page_scripts_the_index() {
        let accept = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, v.parse().unwrap());
            accepts_html(&h)
        };
        assert!(accept("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"));
        assert!(accept("TEXT/HTML"));
        assert!(!accept("*/*"));
        assert!(!accept("text/plain"));
        assert!(!accept("text/htmlx"));
        assert!(!accepts_html(&HeaderMap::new()));
    }

    #[test]
    fn urls_are_taken_apart_without_their_secrets() {
        assert_eq!(without_userinfo("https://user:secret@cache.example/x"), "https://cache.example/x");
        assert_eq!(without_userinfo("https://cache.example/a@b"), "https://cache.example/a@b");
        assert_eq!(url_host("http://head-1:5000"), "head-1:5000");
        assert_eq!(url_host("https://u:p@head-1/cache/"), "head-1");
        assert_eq!(url_path("http://head-1:5000"), "");
        assert_eq!(url_path("https://head-1/cache/"), "/cache");
        assert_eq!(duration(Duration::from_secs(7300)), "2 h 1 min");
    }
}
