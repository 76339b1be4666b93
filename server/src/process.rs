//! What the whole process shares beyond its stores, and keeps across configuration reloads:
//! the metrics, the audit trail, the rules for client addresses, when it started and the URL
//! nodes reach it at. Every router the process builds ([`crate::router_with`]) is given the
//! same [`Process`]. Opening it is start-up work, so its errors are `anyhow`'s, as in
//! `crate::startup`.

use std::sync::Arc;
use std::time::Instant;

use crate::access::Access;
use crate::audit_trail::AuditTrail;
use crate::metrics::Metrics;
use crate::settings::Settings;

/// The process-wide parts of a running server.
#[derive(Debug)]
pub struct Process {
    /// The Prometheus metrics, served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The audit trail, when it is on.
    pub audit: Option<AuditTrail>,
    /// Who the client is, and who may read the operator's pages.
    pub access: Access,
    /// When the process started (for the uptime).
    pub started: Instant,
    /// The URL nodes reach this server at, without a trailing slash (`--url`, or derived from
    /// the listen address): what the status page's client configuration names. Never taken
    /// from a request.
    pub url: String,
}

impl Process {
    /// The parts `settings` ask for: the audit trail opened (creating its database) when it is
    /// on, nodes told to use `url`.
    pub fn open(settings: &Settings, url: &str) -> anyhow::Result<Self> {
        let audit = settings.audit.as_ref().map(AuditTrail::open).transpose()?;
        let metrics = Arc::new(Metrics::with_audit(audit.as_ref().map(|a| Arc::clone(a.log()))));
        Ok(Process {
            metrics,
            audit,
            access: settings.access.clone(),
            started: Instant::now(),
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    /// A process without an audit trail, with the default access rules (this host is the
    /// admin), for routers built without settings.
    pub fn without_audit(url: &str) -> Self {
        Process {
            metrics: Arc::new(Metrics::new()),
            audit: None,
            access: Access::default(),
            started: Instant::now(),
            url: url.trim_end_matches('/').to_owned(),
        }
    }
}
