//! Shared helpers of the benchmarks: timing loops; a summary of a
//! latency sample (median, p99) printed the same way by every bench;
//! processes' CPU time from `/proc`; a release `expd` in a process of its
//! own ([`ReleaseExpd`]) and an open-loop `Assign` load
//! ([`drive_assign`]); intervals of means and ratios ([`Interval`]);
//! `EventService` load ([`events`]).
//!
//! Benchmarks run with `cargo bench -p exp-benches`; each prints one line
//! per measurement, and `benches/RESULTS.md` records the figures with the
//! machine and method.

#[path = "events_load.rs"]
pub mod events;

use statrs::distribution::{ContinuousCDF, StudentsT};
use std::{
    path::Path,
    time::{Duration, Instant},
};

/// Latency percentiles of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Number of timed operations.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Mean: what the operations cost in all, rare slow ones included.
    pub mean: Duration,
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
            mean: samples.iter().sum::<Duration>() / samples.len() as u32,
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

    /// Prints `name: p50 .. p99 ..` in nanoseconds, then the mean: for
    /// operations whose rare slow calls (a table's rehash) are part of
    /// their cost.
    pub fn print_with_mean_ns(&self, name: &str) {
        self.print_ns(name);
        println!(
            "  mean {:.1} ns per call, slow calls included",
            self.mean.as_secs_f64() * 1e9
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

/// User plus system CPU seconds of process `pid` so far (Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_seconds(pid, CPU_FIELDS)
}

/// utime and stime: fields 14 and 15 (1-based) of a stat file.
const CPU_FIELDS: [usize; 2] = [14, 15];

/// Minor page faults of this process so far (Linux).
pub fn own_minor_faults() -> u64 {
    // minflt is field 10 (1-based).
    stat_fields(std::process::id(), [10])[0] as u64
}

/// The sum of the clock-tick fields `fields` (1-based, as in proc(5)) of
/// `/proc/<pid>/stat`, in seconds.
fn stat_seconds(pid: u32, fields: [usize; 2]) -> f64 {
    stat_file_seconds(Path::new(&format!("/proc/{pid}/stat")), fields)
}

/// The sum of the clock-tick fields `fields` of the stat file at `path` (a
/// process's or a thread's), in seconds.
fn stat_file_seconds(path: &Path, fields: [usize; 2]) -> f64 {
    stat_file_fields(path, fields).iter().sum::<f64>() / 100.0
}

/// The numeric fields `fields` (1-based, as in proc(5)) of
/// `/proc/<pid>/stat`; 0 for any it cannot read.
fn stat_fields<const N: usize>(pid: u32, fields: [usize; N]) -> [f64; N] {
    stat_file_fields(Path::new(&format!("/proc/{pid}/stat")), fields)
}

/// The numeric fields `fields` of the stat file at `path` (a process's or
/// a thread's); 0 for any it cannot read.
fn stat_file_fields<const N: usize>(path: &Path, fields: [usize; N]) -> [f64; N] {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let values: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Field 3 (1-based) is the first after the command name.
    fields.map(|field| {
        values
            .get(field - 3)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    })
}

/// Open loop: `rate` requests/s for `seconds`, from 64 callers on 4
/// connections, every request a new user with its exposure logged.
/// Latency runs from the actual send. Answers the latencies, the errors
/// and the seconds the run took. `run` keeps users of different runs
/// apart.
pub async fn drive_assign(
    addr: std::net::SocketAddr,
    rate: u64,
    seconds: u64,
    run: u64,
) -> (Vec<Duration>, u64, f64) {
    const CALLERS: u64 = 64;
    let channels: Vec<tonic::transport::Channel> = channels(addr, 4).await;
    let started = Instant::now() + Duration::from_millis(100);
    let per_caller = rate * seconds / CALLERS;
    let interval = Duration::from_secs_f64(CALLERS as f64 / rate as f64);
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let mut client = exp_proto::v1::assignment_service_client::AssignmentServiceClient::new(
            channels[caller as usize % channels.len()].clone(),
        );
        tasks.push(tokio::spawn(async move {
            let offset = interval.mul_f64(caller as f64 / CALLERS as f64);
            let mut latencies = Vec::with_capacity(per_caller as usize);
            let mut errors = 0u64;
            for index in 0..per_caller {
                tokio::time::sleep_until((started + offset + interval * index as u32).into()).await;
                let sent = Instant::now();
                let result = client
                    .assign(exp_proto::v1::AssignRequest {
                        user_id: format!("user-{run}-{caller}-{index}"),
                        context: Some(exp_proto::v1::RequestContext {
                            placement: "you_may_also_like".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await;
                errors += u64::from(result.is_err());
                latencies.push(sent.elapsed());
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (sample, failed) = task.await.expect("caller");
        latencies.extend(sample);
        errors += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    (latencies, errors, elapsed)
}

/// A release `expd` in a process of its own, serving every role on
/// ephemeral loopback ports and a temporary data directory, killed when
/// dropped. The server the rec service would run, measured from outside:
/// its CPU time is read from `/proc`.
#[derive(Debug)]
pub struct ReleaseExpd {
    process: std::process::Child,
    /// Its gRPC address.
    pub grpc: std::net::SocketAddr,
    /// Its HTTP address.
    pub http: std::net::SocketAddr,
    _data: Option<tempfile::TempDir>,
}

impl ReleaseExpd {
    /// The release binary: `BENCH_EXPD` if set, else `target/release/expd`
    /// next to the bench's own build; `None` (with a note printed) when
    /// there is none.
    pub fn binary() -> Option<std::path::PathBuf> {
        let binary = std::env::var_os("BENCH_EXPD")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                Some(exe.parent()?.parent()?.join("expd"))
            })
            .filter(|path| path.exists());
        if binary.is_none() {
            println!(
                "no release expd (cargo build --release -p expd, or BENCH_EXPD=path): skipped"
            );
        }
        binary
    }

    /// Starts `binary` on a temporary data directory with `args` (beyond
    /// the addresses and data directory) and waits until its gRPC port
    /// answers.
    pub async fn start(binary: &Path, args: &[&str]) -> Self {
        let data = tempfile::tempdir().expect("dir");
        let mut server = Self::start_in(binary, data.path(), args).await;
        server._data = Some(data);
        server
    }

    /// [`ReleaseExpd::start`] on the data directory `data`.
    pub async fn start_in(binary: &Path, data: &Path, args: &[&str]) -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("free port")
        };
        let (grpc, http) = (free(), free());
        let process = std::process::Command::new(binary)
            .arg("--data-dir")
            .arg(data)
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--http-addr", &http.to_string()])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn expd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(grpc).await.is_err() {
            assert!(Instant::now() < deadline, "expd never listened on {grpc}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            process,
            grpc,
            http,
            _data: None,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Its CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    /// Its resident memory now, in MB.
    pub fn resident_mb(&self) -> f64 {
        self.status_mb("VmRSS:")
    }

    /// The most resident memory it has had, in MB.
    pub fn peak_resident_mb(&self) -> f64 {
        self.status_mb("VmHWM:")
    }

    fn status_mb(&self, field: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// Asks it to stop (SIGTERM: a graceful shutdown) and waits.
    pub fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let _ = self.process.wait();
    }
}

impl Drop for ReleaseExpd {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// An estimate with a two-sided confidence interval, from independent
/// samples (Student's t).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The estimate.
    pub estimate: f64,
    /// The interval's low end.
    pub low: f64,
    /// The interval's high end.
    pub high: f64,
}

impl Interval {
    /// The mean of `samples` (at least two) with its `confidence`
    /// interval.
    pub fn arithmetic(samples: &[f64], confidence: f64) -> Self {
        assert!(samples.len() >= 2, "an interval needs two samples");
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let variance = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let t = StudentsT::new(0.0, 1.0, n - 1.0)
            .expect("degrees of freedom are positive")
            .inverse_cdf(0.5 + confidence / 2.0);
        let half = t * (variance / n).sqrt();
        Self {
            estimate: mean,
            low: mean - half,
            high: mean + half,
        }
    }

    /// The geometric mean of `ratios` (positive, at least two) with its
    /// `confidence` interval: the arithmetic one of their logarithms,
    /// exponentiated.
    pub fn geometric(ratios: &[f64], confidence: f64) -> Self {
        let logs: Vec<f64> = ratios.iter().map(|ratio| ratio.ln()).collect();
        let Self {
            estimate,
            low,
            high,
        } = Self::arithmetic(&logs, confidence);
        Self {
            estimate: estimate.exp(),
            low: low.exp(),
            high: high.exp(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Interval;

    #[test]
    fn a_mean_has_a_student_t_interval_from_the_spread_of_its_samples() {
        // Mean 3, standard error sqrt(2.5 / 5), t(0.95, 4 df) = 2.1318.
        let interval = Interval::arithmetic(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.90);
        assert!((interval.estimate - 3.0).abs() < 1e-12);
        assert!(
            (interval.high - 3.0 - 2.1318 * 0.5f64.sqrt()).abs() < 1e-3,
            "{interval:?}"
        );
        assert!((3.0 - interval.low - (interval.high - 3.0)).abs() < 1e-12);
    }

    #[test]
    fn ratios_have_a_geometric_mean_and_an_interval_symmetric_in_their_logarithms() {
        let interval = Interval::geometric(&[2.0, 8.0, 4.0], 0.90);
        assert!((interval.estimate - 4.0).abs() < 1e-9, "{interval:?}");
        assert!(
            (interval.low * interval.high - 16.0).abs() < 1e-9,
            "{interval:?}"
        );
        assert!(interval.low < 2.0 && interval.high > 8.0, "{interval:?}");
    }
}
