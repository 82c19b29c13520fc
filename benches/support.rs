//! Shared helpers of the benchmarks: timing loops; a summary of a
//! latency sample (median, p99) printed the same way by every bench;
//! processes' CPU time from `/proc`; and hiccup meters, which measure the
//! machine's own stalls during a load test so a tail latency can be set
//! against them ([`HiccupMeters`], [`Timeline`]).
//!
//! Benchmarks run with `cargo bench -p exp-benches`; each prints one line
//! per measurement, and `benches/RESULTS.md` records the figures with the
//! machine and method.

use statrs::distribution::{ContinuousCDF, StudentsT};
use std::{
    collections::BTreeMap,
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

/// User plus system CPU seconds of this process so far (Linux).
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id())
}

/// User plus system CPU seconds of process `pid` so far (Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_seconds(pid, CPU_FIELDS)
}

/// utime and stime: fields 14 and 15 (1-based) of a stat file.
const CPU_FIELDS: [usize; 2] = [14, 15];

/// User plus system CPU seconds of this process's children that have
/// ended and been waited for (Linux): the cost of a load generator run
/// as a child process.
pub fn children_cpu_seconds() -> f64 {
    // cutime and cstime are fields 16 and 17 (1-based).
    stat_seconds(std::process::id(), [16, 17])
}

/// Minor page faults of this process so far (Linux).
pub fn own_minor_faults() -> u64 {
    // minflt is field 10 (1-based).
    stat_fields(std::process::id(), [10])[0] as u64
}

/// User plus system CPU seconds of each thread of process `pid` alive
/// now, with its name (Linux). Set two readings against each other with
/// [`cpu_seconds_by_thread_name`].
pub fn cpu_seconds_by_thread(pid: u32) -> BTreeMap<u32, (String, f64)> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|tid| tid.parse().ok()) else {
            continue;
        };
        let path = task.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let seconds = stat_file_seconds(&path.join("stat"), CPU_FIELDS);
        threads.insert(tid, (name.trim().to_owned(), seconds));
    }
    threads
}

/// The CPU seconds each thread used between readings `before` and
/// `after` of [`cpu_seconds_by_thread`], summed by thread name (threads
/// started in between count from zero). `total` is the process's own
/// [`cpu_seconds`] over the same span: what it has beyond the threads
/// alive at `after` (threads that ended in between) is given as
/// `"(ended threads)"`.
pub fn cpu_seconds_by_thread_name(
    before: &BTreeMap<u32, (String, f64)>,
    after: &BTreeMap<u32, (String, f64)>,
    total: f64,
) -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let mut alive = 0.0;
    for (tid, (name, seconds)) in after {
        let earlier = before.get(tid).map_or(0.0, |(_, seconds)| *seconds);
        alive += seconds - earlier;
        *by_name.entry(name.clone()).or_insert(0.0) += seconds - earlier;
    }
    by_name.insert("(ended threads)".to_owned(), total - alive);
    by_name
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

/// Env variable that turns a bench binary into a hiccup meter (see
/// [`HiccupMeters`]).
const HICCUP_METER: &str = "EXP_BENCH_HICCUP_METER";

/// Stalls of the machine itself, measured while a load test runs, so a
/// tail latency can be told apart from the host pausing the whole VM.
///
/// One meter process per CPU, pinned to it (`taskset`) at real-time
/// priority (`chrt -f`), so no ordinary process on that CPU (the server,
/// the load generator) can delay it: it sleeps 1 ms at a time and
/// reports each wake-up more than 0.5 ms late. What delays it is the
/// hypervisor or the kernel, which delay every process on that CPU
/// alike. The meters cost about 1,000 wake-ups per second per CPU.
#[derive(Debug)]
pub struct HiccupMeters {
    meters: Vec<std::process::Child>,
}

/// One stall a meter saw.
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    /// When the meter went to sleep, in microseconds since the Unix epoch.
    pub at_unix_micros: u64,
    /// How much later than asked it woke up.
    pub length: Duration,
}

impl HiccupMeters {
    /// Starts a meter on each of `cpus`; `None` (with the reason printed)
    /// when `chrt` or `taskset` cannot run them (not root, not Linux).
    pub fn start(cpus: &[usize]) -> Option<Self> {
        let exe = std::env::current_exe().ok()?;
        let mut meters = Vec::new();
        for cpu in cpus {
            let meter = std::process::Command::new("chrt")
                .args(["-f", "50", "taskset", "-c"])
                .arg(cpu.to_string())
                .arg(&exe)
                .env(HICCUP_METER, "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn();
            match meter {
                Ok(meter) => meters.push(meter),
                Err(err) => {
                    println!("  hiccup meter unavailable (chrt, taskset): {err}");
                    return None;
                }
            }
        }
        // Give them a moment to start (a refused `chrt` exits at once).
        std::thread::sleep(Duration::from_millis(50));
        for meter in &mut meters {
            if let Ok(Some(status)) = meter.try_wait() {
                println!("  hiccup meter unavailable: chrt/taskset exited with {status}");
                return None;
            }
        }
        Some(Self { meters })
    }

    /// Stops the meters and answers every stall they saw.
    pub fn stop(mut self) -> Vec<Stall> {
        use std::io::Read;
        let mut stalls = Vec::new();
        for mut meter in std::mem::take(&mut self.meters) {
            let _ = meter.kill();
            let mut text = String::new();
            if let Some(mut out) = meter.stdout.take() {
                let _ = out.read_to_string(&mut text);
            }
            let _ = meter.wait();
            stalls.extend(text.lines().filter_map(|line| {
                let (at, micros) = line.split_once(' ')?;
                Some(Stall {
                    at_unix_micros: at.parse().ok()?,
                    length: Duration::from_micros(micros.parse().ok()?),
                })
            }));
        }
        stalls
    }
}

impl Drop for HiccupMeters {
    /// Meters not stopped (a bench that panicked) are killed, not left
    /// running.
    fn drop(&mut self) {
        for meter in &mut self.meters {
            let _ = meter.kill();
            let _ = meter.wait();
        }
    }
}

/// Runs this process as a hiccup meter, forever, when it was started as
/// one by [`HiccupMeters::start`]; returns at once otherwise. Benches
/// that use meters call it first thing in `main`.
pub fn run_hiccup_meter_if_asked() {
    if std::env::var_os(HICCUP_METER).is_none() {
        return;
    }
    let nap = Duration::from_millis(1);
    loop {
        let asleep = Instant::now();
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        std::thread::sleep(nap);
        let late = asleep.elapsed().saturating_sub(nap);
        if late > Duration::from_micros(500) {
            println!("{} {}", at.as_micros(), late.as_micros());
        }
    }
}

/// Latencies of one load test, each with the moment it was sent, so the
/// slow requests can be set against the machine's stalls.
#[derive(Debug, Default)]
pub struct Timeline {
    /// (sent, in microseconds since the Unix epoch; latency).
    samples: Vec<(u64, Duration)>,
}

/// How many requests of a [`Timeline`] were slow, and how many of them
/// and of all met a stall of the machine.
#[derive(Debug, Clone, Copy)]
pub struct StallShare {
    /// Requests slower than the bound asked for.
    pub slow: usize,
    /// Those of them that met a stall.
    pub slow_met_stall: usize,
    /// All requests.
    pub all: usize,
    /// Those of them that met a stall.
    pub all_met_stall: usize,
}

impl Timeline {
    /// Records a request sent at `sent` that took `latency`.
    pub fn record(&mut self, sent: std::time::SystemTime, latency: Duration) {
        let micros = sent
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        self.samples
            .push((u64::try_from(micros).unwrap_or(u64::MAX), latency));
    }

    /// Number of requests recorded.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// How many requests took longer than `bound`.
    pub fn count_slower_than(&self, bound: Duration) -> usize {
        self.samples
            .iter()
            .filter(|(_, latency)| *latency > bound)
            .count()
    }

    /// The summary of every request.
    pub fn summary(&self) -> Summary {
        Summary::of(self.samples.iter().map(|(_, latency)| *latency).collect())
    }

    /// How many requests took longer than `slow`, and how many of them,
    /// and of all requests, met a stall of `threshold` or more: one that
    /// began while the request was in flight or in the `backlog` before
    /// it was sent (a stalled server answers the queue that built up
    /// during the stall afterwards).
    pub fn stall_share(
        &self,
        stalls: &[Stall],
        threshold: Duration,
        slow: Duration,
        backlog: Duration,
    ) -> StallShare {
        let met = stall_meeter(stalls, threshold, backlog);
        let slow_samples = || self.samples.iter().filter(|(_, latency)| *latency > slow);
        StallShare {
            slow: self.count_slower_than(slow),
            slow_met_stall: slow_samples().filter(|sample| met(sample)).count(),
            all: self.samples.len(),
            all_met_stall: self.samples.iter().filter(|sample| met(sample)).count(),
        }
    }

    /// The requests that met no stall of `threshold` or more (in flight,
    /// or in the `backlog` before they were sent; see
    /// [`Self::stall_share`]): what the server's own work made of their
    /// latency, with the machine's stalls, which hit logging on and off
    /// alike but far more in some runs than in others, left out.
    pub fn clear_of_stalls(
        &self,
        stalls: &[Stall],
        threshold: Duration,
        backlog: Duration,
    ) -> Self {
        let met = stall_meeter(stalls, threshold, backlog);
        Self {
            samples: self
                .samples
                .iter()
                .filter(|sample| !met(sample))
                .copied()
                .collect(),
        }
    }
}

/// Whether a request (sent, latency) met one of `stalls` of `threshold` or
/// more: one that began while it was in flight or in the `backlog` before
/// it was sent.
fn stall_meeter(
    stalls: &[Stall],
    threshold: Duration,
    backlog: Duration,
) -> impl Fn(&(u64, Duration)) -> bool {
    let mut starts: Vec<u64> = stalls
        .iter()
        .filter(|stall| stall.length >= threshold)
        .map(|stall| stall.at_unix_micros)
        .collect();
    starts.sort_unstable();
    let backlog = u64::try_from(backlog.as_micros()).unwrap_or(u64::MAX);
    move |(sent, latency): &(u64, Duration)| {
        let from = sent.saturating_sub(backlog);
        let to = sent + u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let first = starts.partition_point(|start| *start < from);
        starts.get(first).is_some_and(|start| *start <= to)
    }
}

/// The total length of `stalls` of `threshold` or more.
pub fn stall_time(stalls: &[Stall], threshold: Duration) -> Duration {
    stalls
        .iter()
        .filter(|stall| stall.length >= threshold)
        .map(|stall| stall.length)
        .sum()
}

/// Prints what the meters saw over a run: stalls of 1 ms and 2 ms or more,
/// the longest, and their total.
pub fn print_stalls(stalls: &[Stall]) {
    let over = |ms: u64| {
        stalls
            .iter()
            .filter(|stall| stall.length >= Duration::from_millis(ms))
            .count()
    };
    let longest = stalls
        .iter()
        .map(|stall| stall.length)
        .max()
        .unwrap_or_default();
    let total: Duration = stalls.iter().map(|stall| stall.length).sum();
    println!(
        "  machine stalls (all CPUs): {} >= 1 ms, {} >= 2 ms, longest {:.1} ms, {:.1} ms in all",
        over(1),
        over(2),
        longest.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3
    );
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
    use std::collections::BTreeMap;

    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::{Interval, Stall, Timeline, cpu_seconds_by_thread_name, stall_time};

    #[test]
    fn each_thread_counts_from_its_own_earlier_reading_and_ended_threads_are_the_rest() {
        let thread = |name: &str, seconds: f64| (name.to_owned(), seconds);
        // Thread 2 ("worker", 5 s) ends; thread 4 starts; thread 3 idles.
        let before = BTreeMap::from([
            (1, thread("worker", 1.0)),
            (2, thread("worker", 5.0)),
            (3, thread("feed", 2.0)),
        ]);
        let after = BTreeMap::from([
            (1, thread("worker", 1.5)),
            (3, thread("feed", 2.0)),
            (4, thread("worker", 0.25)),
        ]);
        let by_name = cpu_seconds_by_thread_name(&before, &after, 3.0);
        assert_eq!(
            by_name,
            BTreeMap::from([
                ("(ended threads)".to_owned(), 2.25),
                ("feed".to_owned(), 0.0),
                ("worker".to_owned(), 0.75),
            ])
        );
    }

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

    #[test]
    fn requests_in_flight_during_a_stall_or_sent_in_its_backlog_are_not_clear_of_it() {
        let at = |micros: u64| UNIX_EPOCH + Duration::from_micros(micros);
        let stalls = [
            Stall {
                at_unix_micros: 10_000,
                length: Duration::from_millis(3),
            },
            Stall {
                at_unix_micros: 30_000,
                length: Duration::from_micros(600),
            },
        ];
        let mut timeline = Timeline::default();
        let mut record = |sent: SystemTime, micros: u64| {
            timeline.record(sent, Duration::from_micros(micros));
        };
        record(at(9_000), 4_000); // in flight when the stall began
        record(at(14_000), 300); // sent 4 ms after it: in its backlog
        record(at(20_000), 300); // sent 10 ms after it
        record(at(29_900), 800); // met only a stall under the threshold
        record(at(8_000), 500); // answered before it
        let clear =
            timeline.clear_of_stalls(&stalls, Duration::from_millis(1), Duration::from_millis(5));
        assert_eq!(clear.len(), 3);
        assert_eq!(clear.summary().p99, Duration::from_micros(800));
        assert_eq!(
            stall_time(&stalls, Duration::from_millis(1)),
            Duration::from_millis(3)
        );
    }
}
