//! A circuit breaker per upstream: after a few consecutive failures the upstream is skipped
//! for a cool-down, so a dead upstream costs nothing; one trial request is let through when
//! the cool-down ends, and a success closes the breaker again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
const THRESHOLD: u32 = 3;

#[derive(Debug)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
}

/// The health of one upstream.
#[derive(Debug)]
pub(crate) struct Breaker {
    cool_down: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(cool_down: Duration) -> Self {
        Self { cool_down, state: Mutex::new(State { failures: 0, open_until: None }) }
    }

    /// Whether a request may be sent now. When a cool-down has just ended, this lets one trial
    /// through and re-arms the cool-down for everyone else until the trial reports.
    pub(crate) fn allow(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.open_until {
            Some(until) if now < until => false,
            Some(_) => {
                s.open_until = Some(now + self.cool_down);
                true
            }
            None => true,
        }
    }

    pub(crate) fn success(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.failures = 0;
        s.open_until = None;
    }

    /// Records a failure; returns true when this failure opened the breaker.
    pub(crate) fn failure(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.failures = s.failures.saturating_add(1);
        if s.failures >= THRESHOLD {
            let was_open = s.open_until.is_some();
            s.open_until = Some(now + self.cool_down);
            return !was_open;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_lets_one_trial_through() {
        let b = Breaker::new(Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(b.allow(t0));
        assert!(!b.failure(t0));
        assert!(!b.failure(t0));
        assert!(b.failure(t0), "third failure opens");
        assert!(!b.allow(t0 + Duration::from_secs(29)));
        let later = t0 + Duration::from_secs(31);
        assert!(b.allow(later), "one trial after the cool-down");
        assert!(!b.allow(later), "only one");
        assert!(!b.failure(later), "a failed trial keeps it open without a new report");
        assert!(!b.allow(later + Duration::from_secs(1)));
        assert!(b.allow(later + Duration::from_secs(31)));
        b.success();
        assert!(b.allow(later + Duration::from_secs(31)));
        assert!(!b.failure(later), "the count starts again after a success");
    }
}
