//! `job-wave`: the load client of the `bench/wave` benchmark. It plays hundreds of compute nodes that start
//! the same job at once, each doing what a Nix 2.8 daemon does when it substitutes a closure:
//! `GET /nix-cache-info`, the closure's narinfos over a few keep-alive connections, then the
//! NARs those narinfos name, a few at a time, retrying transient failures as Nix does.
//!
//! Every body is checked, cheaply enough that one core drives 500 nodes: each body's SHA-256
//! is taken as it arrives, and per URL one body at a time is also decompressed and checked
//! against the narinfo's `NarHash` and `NarSize`. A body whose bytes equal a checked body's is
//! thereby checked; one with bytes never checked in the wave (a server may compress the same
//! URL differently over time) is checked after the wave by fetching its URL again, and counts
//! as an error if no fetch reproduces it. A `FileHash`/`FileSize` in the narinfo must match too.
//!
//! Prints one JSON object: makespan, per-node times, retries, errors, bytes, client CPU.

mod check;
mod conn;
mod node;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use crate::check::Checks;
use crate::node::{Plan, Tally};

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(about = "Simulated Nix nodes substituting one closure at once")]
struct Args {
    /// The cache's address, `127.0.0.1:PORT` (loopback only).
    #[arg(long)]
    addr: SocketAddr,
    /// URL path prefix of the cache (`/nix` for a prefixed store); empty for the root.
    #[arg(long, default_value = "")]
    prefix: String,
    /// A file with the store path hashes of the closure, one per line.
    #[arg(long)]
    paths: PathBuf,
    /// How many nodes.
    #[arg(long, default_value_t = 500)]
    nodes: usize,
    /// The nodes start evenly spread over this many seconds.
    #[arg(long, default_value_t = 1.0)]
    spread: f64,
    /// Keep-alive connections a node uses for its narinfos.
    #[arg(long, default_value_t = 2)]
    narinfo_connections: usize,
    /// NARs a node downloads at a time.
    #[arg(long, default_value_t = 4)]
    nar_jobs: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        bail!("--addr {}: the benchmark only talks to loopback addresses", args.addr);
    }
    let text = std::fs::read_to_string(&args.paths).with_context(|| format!("reading {}", args.paths.display()))?;
    let hashes: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    if hashes.is_empty() || args.nodes == 0 || args.narinfo_connections == 0 || args.nar_jobs == 0 {
        bail!("nothing to do: give paths, and at least one node, connection and job");
    }
    let plan = Rc::new(Plan {
        addr: args.addr,
        prefix: args.prefix.trim_end_matches('/').to_owned(),
        hashes,
        narinfo_connections: args.narinfo_connections,
        nar_jobs: args.nar_jobs,
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, wave(plan, args.nodes, args.spread))?;
    println!("{report}");
    Ok(())
}

/// Runs the wave and checks what is left to check; returns the report.
async fn wave(plan: Rc<Plan>, nodes: usize, spread: f64) -> anyhow::Result<serde_json::Value> {
    let checks = Rc::new(RefCell::new(Checks::default()));
    let tally = Rc::new(RefCell::new(Tally::default()));
    let cpu_before = cpu_seconds();
    let t0 = Instant::now() + Duration::from_millis(100);
    let handles: Vec<_> = (0..nodes)
        .map(|i| {
            let delay = Duration::from_secs_f64(spread * i as f64 / nodes as f64);
            let (plan, checks, tally) = (Rc::clone(&plan), Rc::clone(&checks), Rc::clone(&tally));
            tokio::task::spawn_local(async move {
                tokio::time::sleep_until((t0 + delay).into()).await;
                let start = Instant::now();
                let result = node::run(&plan, &checks, &tally).await;
                (result, start.elapsed(), t0.elapsed())
            })
        })
        .collect();
    let mut durations = Vec::with_capacity(nodes);
    let mut makespan = Duration::ZERO;
    let mut errors = Vec::new();
    for handle in handles {
        let (result, took, finished_at) = handle.await.context("a node panicked")?;
        makespan = makespan.max(finished_at);
        match result {
            Ok(()) => durations.push(took.as_secs_f64()),
            Err(e) => errors.push(e),
        }
    }
    let client_cpu = cpu_seconds() - cpu_before;
    let unverified = check::after_the_wave(&plan, &checks).await;
    durations.sort_by(f64::total_cmp);
    let tally = tally.borrow();
    let checks = checks.borrow();
    let mut first_errors: Vec<&str> = errors.iter().map(String::as_str).take(5).collect();
    first_errors.extend(unverified.iter().map(String::as_str).take(5));
    Ok(serde_json::json!({
        "nodes": nodes,
        "nodes_ok": durations.len(),
        "errors": errors.len() + unverified.len(),
        "first_errors": first_errors,
        "makespan_s": makespan.as_secs_f64(),
        "node_p50_s": percentile(&durations, 50),
        "node_p99_s": percentile(&durations, 99),
        "node_max_s": durations.last().copied().unwrap_or(0.0),
        "requests": tally.requests,
        "retries": tally.retries,
        "retry_causes": tally.retry_causes,
        "bytes": tally.bytes,
        "nar_bodies": tally.nar_bodies,
        "nar_bodies_by_compression": tally.by_compression,
        "bodies_decompressed_and_checked": checks.decoded,
        "bodies_unverified": unverified.len(),
        "client_cpu_s": client_cpu,
    }))
}

/// The nearest-rank percentile of sorted `values`.
fn percentile(values: &[f64], p: usize) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let rank = (values.len() * p).div_ceil(100).max(1);
    values[rank - 1]
}

/// CPU time this process's main thread has used (the runtime is single-threaded), from
/// `/proc/self/schedstat`; 0 where that is unavailable.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(super::percentile(&values, 50), 100.0);
        assert_eq!(super::percentile(&values, 99), 198.0);
        assert_eq!(super::percentile(&values[..1], 99), 1.0);
        assert_eq!(super::percentile(&[], 50), 0.0);
    }
}
