//! Background work that yields to serving: a [`Yielder`] pauses its thread while the rest of
//! the machine keeps the CPUs busy.
//!
//! The bake workers already run under `SCHED_IDLE`, so they only get a core nobody else wants;
//! but on a loaded machine the idle moments they fill are the short gaps between requests,
//! and every time they fill one the server's next request finds its caches cold (measured at
//! 2 cores: level-15 zstd bakes cost a narinfo load 10–15% of its throughput). So a worker
//! also pauses outright while the CPU time used by everything but itself, over the last
//! [`WINDOW`], is at least [`SATURATED`] of all CPUs (those `/proc/stat` counts: in a container
//! with a CPU quota, the host's), and carries on once it falls below, or after [`MAX_PAUSE`]
//! for one window, so that a machine that stays saturated does not starve it.

use std::time::{Duration, Instant};

/// How often the machine's load is looked at.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);

/// The longest pause in a row: then a window of work goes through, so that background work
/// on a machine that stays saturated still moves on (at SCHED_IDLE, by the scheduler's leave).
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The share of all cores that, used by other threads, makes background work pause.
pub(crate) const SATURATED: f64 = 0.75;

/// Busy time of all CPUs, from `/proc/stat`, in clock ticks, and how many CPUs it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuTimes {
    /// Ticks spent on anything but idling and waiting for I/O.
    pub(crate) busy: u64,
    /// The CPUs `/proc/stat` lists (`cpu0`, `cpu1`, …): in a container with a CPU quota,
    /// the host's, which the busy time is counted over, not the quota's.
    pub(crate) cpus: usize,
}

impl CpuTimes {
    /// The first (`cpu`) line of `/proc/stat`: user nice system idle iowait irq softirq steal …
    pub(crate) fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = line.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
        if fields.len() < 5 {
            return None;
        }
        // Guest time is already counted in user and nice.
        let counted = &fields[..fields.len().min(8)];
        let total: u64 = counted.iter().sum();
        let cpus = stat
            .lines()
            .filter(|l| l.strip_prefix("cpu").is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())))
            .count();
        Some(Self { busy: total - fields[3] - fields[4], cpus: cpus.max(1) })
    }

    fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }
}

/// Whether others kept the CPUs saturated over a window of `wall`: `busy` seconds of CPU time
/// used on the machine, of which `own` by the asking thread, on `cores` cores.
pub(crate) fn saturated(busy: f64, own: f64, wall: f64, cores: usize) -> bool {
    wall > 0.0 && (busy - own).max(0.0) >= SATURATED * cores as f64 * wall
}

/// Decides, in a background thread, when to pause for the machine (see the module docs).
pub(crate) struct Yielder {
    tick: f64,
    /// The longest pause in a row ([`MAX_PAUSE`]).
    max_pause: Duration,
    /// The last look: when, the machine's busy ticks, this thread's CPU time.
    last: Option<(Instant, CpuTimes, Duration)>,
    /// Time spent paused so far.
    paused: Duration,
}

impl Yielder {
    /// A yielder for the calling thread.
    pub(crate) fn new() -> Self {
        let tick = 1.0 / rustix::param::clock_ticks_per_second() as f64;
        Self { tick, max_pause: MAX_PAUSE, last: None, paused: Duration::ZERO }
    }

    /// Called between pieces of work: once a [`WINDOW`] has passed since the last look, looks
    /// at the machine, and sleeps a window at a time while others keep it saturated, at most
    /// [`MAX_PAUSE`] in a row. Returns how long it slept.
    pub(crate) fn pause_while_saturated(&mut self) -> Duration {
        let mut slept = Duration::ZERO;
        loop {
            let now = Instant::now();
            // Between looks, a call costs one clock read: /proc/stat is read once a window.
            if self.last.is_some_and(|(at, _, _)| now.duration_since(at) < WINDOW) {
                return slept;
            }
            let own = thread_cpu_time();
            let Some(times) = CpuTimes::read() else { return slept };
            let Some((at, before, own_before)) = self.last.replace((now, times, own)) else { return slept };
            let wall = now.duration_since(at).as_secs_f64();
            let busy = times.busy.saturating_sub(before.busy) as f64 * self.tick;
            let own_used = own.saturating_sub(own_before).as_secs_f64();
            if !saturated(busy, own_used, wall, times.cpus) || slept >= self.max_pause {
                return slept;
            }
            std::thread::sleep(WINDOW);
            slept += WINDOW;
            self.paused += WINDOW;
        }
    }

    /// Time spent paused so far.
    pub(crate) fn paused(&self) -> Duration {
        self.paused
    }
}

fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 20 3 2 7 40 0\ncpu0 50 2 25 500 10 1 1 3 20 0\nintr 1 2\n";
        // user nice system irq softirq steal; guest (40) is inside user already.
        assert_eq!(CpuTimes::parse(stat), Some(CpuTimes { busy: 100 + 5 + 50 + 3 + 2 + 7, cpus: 1 }));
        let two = "cpu  10 0 10 100 0 0 0 0\ncpu0 5 0 5 50 0 0 0 0\ncpu1 5 0 5 50 0 0 0 0\n";
        assert_eq!(CpuTimes::parse(two).map(|t| t.cpus), Some(2));
        assert_eq!(CpuTimes::parse("cpu  1 2 3 4\n"), None, "too few fields");
        assert_eq!(CpuTimes::parse("intr 1 2\n"), None);
        assert_eq!(CpuTimes::parse("cpu  a b c d e\n"), None);
    }

    #[test]
    fn saturation_counts_the_others_only() {
        // 2 cores over 1 s: others used 1.6 s: saturated; 1.4 s: not.
        assert!(saturated(1.6, 0.0, 1.0, 2));
        assert!(!saturated(1.4, 0.0, 1.0, 2));
        // The thread's own use is not held against the others.
        assert!(!saturated(2.0, 0.9, 1.0, 2));
        assert!(saturated(2.0, 0.4, 1.0, 2));
        assert!(!saturated(5.0, 0.0, 0.0, 2), "no window, no verdict");
    }

    #[test]
    fn a_yielder_pauses_while_other_threads_keep_every_core_busy() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let cores = CpuTimes::read().expect("/proc/stat").cpus;
        let spinners: Vec<_> = (0..cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        let stopper = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                std::thread::sleep(Duration::from_millis(2000));
                stop.store(true, Ordering::Relaxed);
            }
        });
        let mut y = Yielder::new();
        y.max_pause = 3 * WINDOW; // rather than MAX_PAUSE, to keep the test short
        y.pause_while_saturated(); // the first sample
        std::thread::sleep(WINDOW);
        let slept = y.pause_while_saturated();
        assert_eq!(slept, 3 * WINDOW, "a pause while {cores} threads spin on the {cores} CPUs of /proc/stat, capped");
        assert_eq!(y.pause_while_saturated(), Duration::ZERO, "then a window of work goes through");
        std::thread::sleep(WINDOW);
        assert_eq!(y.pause_while_saturated(), 3 * WINDOW, "and the next look pauses again");
        assert_eq!(y.paused(), 6 * WINDOW);
        stopper.join().unwrap();
        for s in spinners {
            s.join().unwrap();
        }
    }
}
