//! Shared helpers of the benchmarks: timing loops and a summary of a
//! latency sample (median, p99) printed the same way by every bench.
//!
//! Benchmarks run with `cargo bench -p exp-benches`; each prints one line
//! per measurement, and `benches/RESULTS.md` records the figures with the
//! machine and method.

use std::time::{Duration, Instant};

/// Latency percentiles of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Number of timed operations.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl Summary {
    /// Summarises `samples` (any order).
    pub fn of(mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Self {
            count: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
        }
    }

    /// Prints `name: p50 .. p99 .. (n)` in microseconds.
    pub fn print(&self, name: &str) {
        println!(
            "{name:<48} p50 {:>10.2} us   p99 {:>10.2} us   n={}",
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6,
            self.count
        );
    }

    /// Prints `name: p50 .. p99 ..` in nanoseconds, for fast operations.
    pub fn print_ns(&self, name: &str) {
        println!(
            "{name:<48} p50 {:>10.1} ns   p99 {:>10.1} ns   n={}",
            self.p50.as_secs_f64() * 1e9,
            self.p99.as_secs_f64() * 1e9,
            self.count
        );
    }
}

/// Times `operation` `count` times after `warmup` untimed runs.
pub fn time_each(warmup: usize, count: usize, mut operation: impl FnMut(usize)) -> Summary {
    for index in 0..warmup {
        operation(index);
    }
    let samples = (0..count)
        .map(|index| {
            let started = Instant::now();
            operation(warmup + index);
            started.elapsed()
        })
        .collect();
    Summary::of(samples)
}

/// Median time per operation of `batch` back-to-back runs, over `rounds`
/// rounds: for operations too fast to time one by one.
pub fn time_batched(rounds: usize, batch: usize, mut operation: impl FnMut()) -> Summary {
    let samples = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..batch {
                operation();
            }
            started.elapsed() / batch as u32
        })
        .collect();
    Summary::of(samples)
}

/// `count` connections to the gRPC server at `addr`, so load spreads over
/// several HTTP/2 connections as it does from a fleet of callers.
pub async fn channels(addr: std::net::SocketAddr, count: usize) -> Vec<tonic::transport::Channel> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(exp_e2e::connect(addr).await);
    }
    channels
}

/// User plus system CPU seconds of this process so far (Linux).
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id())
}

/// User plus system CPU seconds of process `pid` so far (Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> f64 {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}
