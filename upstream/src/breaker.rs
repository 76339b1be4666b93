//! A circuit breaker per upstream: after a few consecutive failures the upstream is no longer
//! sent every request, so a dead upstream costs little; one probe is let through every
//! cool-down, and a success closes the breaker again.
//!
//! The breaker only decides who may *send*. It never turns a blip into a run of misses by
//! itself: a request that finds the breaker open waits, within its retry budget, for the next
//! probe (see `lookup.rs`), so once the upstream is back it is answered within about a
//! cool-down. Only after an upstream has been failing for longer than the patience do requests
//! stop waiting and answer at once: a long outage then costs the nodes no latency.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
const THRESHOLD: u32 = 3;

/// What a request may do with an upstream now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Send: the breaker is closed, or this request is the probe of an open one.
    Go,
    /// The breaker is open and the next probe may go at this instant: worth waiting for.
    Wait(Instant),
    /// The upstream has been failing for longer than the patience: do not wait for it.
    Skip,
}

#[derive(Debug)]
struct Open {
    /// When the breaker opened.
    since: Instant,
    /// When the next probe may go.
    next_probe: Instant,
}

#[derive(Debug)]
struct State {
    failures: u32,
    open: Option<Open>,
}

/// The health of one upstream.
#[derive(Debug)]
pub(crate) struct Breaker {
    cool_down: Duration,
    patience: Duration,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker that, once open, lets a probe through every `cool_down`, and whose
    /// waiters give up waiting once it has been open for `patience`.
    pub(crate) fn new(cool_down: Duration, patience: Duration) -> Self {
        Self { cool_down, patience, state: Mutex::new(State { failures: 0, open: None }) }
    }

    /// Whether a request may be sent now. When the breaker is open and a probe is due, this
    /// request is the probe, and the next one is due a cool-down later.
    pub(crate) fn gate(&self, now: Instant) -> Gate {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(open) = &mut s.open else { return Gate::Go };
        if now >= open.next_probe {
            open.next_probe = now + self.cool_down;
            Gate::Go
        } else if now.saturating_duration_since(open.since) >= self.patience {
            Gate::Skip
        } else {
            Gate::Wait(open.next_probe)
        }
    }

    /// Records an answer (a hit or a clean miss): the upstream is up.
    pub(crate) fn success(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.failures = 0;
        s.open = None;
    }

    /// Since when the breaker has been open (the upstream failing), if it is.
    pub(crate) fn open_since(&self) -> Option<Instant> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.open.as_ref().map(|open| open.since)
    }

    /// Records a failure; returns true when this failure opened the breaker.
    pub(crate) fn failure(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.failures = s.failures.saturating_add(1);
        if s.failures >= THRESHOLD && s.open.is_none() {
            s.open = Some(Open { since: now, next_probe: now + self.cool_down });
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_lets_one_probe_through_per_cool_down() {
        let b = Breaker::new(Duration::from_secs(2), Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(b.gate(t0), Gate::Go);
        assert!(!b.failure(t0));
        assert!(!b.failure(t0));
        assert!(b.failure(t0), "third failure opens");
        let probe_at = t0 + Duration::from_secs(2);
        assert_eq!(b.gate(t0 + Duration::from_secs(1)), Gate::Wait(probe_at));
        assert_eq!(b.gate(probe_at), Gate::Go, "one probe after the cool-down");
        assert_eq!(b.gate(probe_at), Gate::Wait(probe_at + Duration::from_secs(2)), "only one");
        assert!(!b.failure(probe_at), "a failed probe keeps it open without a new report");
        assert_eq!(b.gate(probe_at + Duration::from_secs(2)), Gate::Go, "the next probe");
        b.success();
        assert_eq!(b.gate(probe_at), Gate::Go, "a success closes it");
        assert!(!b.failure(probe_at), "the count starts again after a success");
    }

    #[test]
    fn waiters_stop_waiting_once_the_outage_outlasts_the_patience() {
        let b = Breaker::new(Duration::from_secs(2), Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            b.failure(t0);
        }
        // Probes keep going out every cool-down; between them, requests skip the upstream.
        let mut t = t0;
        while t < t0 + Duration::from_secs(60) {
            t += Duration::from_secs(2);
            assert_eq!(b.gate(t), Gate::Go);
            b.failure(t);
        }
        assert_eq!(b.gate(t + Duration::from_secs(1)), Gate::Skip);
        assert_eq!(b.gate(t + Duration::from_secs(2)), Gate::Go, "probes go on during a long outage");
        b.success();
        assert_eq!(b.gate(t + Duration::from_secs(2)), Gate::Go);
    }
}
