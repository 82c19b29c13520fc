//! Event ingest over loopback, `EventService/LogOutcomes`, with batches of
//! 100 and of 1,000 events; every answer comes after the fsync that covers
//! its events (group commit):
//!
//! 1. open loop at a fixed offered rate (default 100,000 events/s): the
//!    acknowledgement latency at that rate;
//! 2. closed loop (each caller sends its next batch when the last is
//!    acked): the sustained durable capacity;
//! 3. the background cost of rolling a log segment of 300,000 exposures
//!    into Parquet, in process: time, page faults and peak memory, streamed
//!    as the roller does it against the whole segment read first.
//!
//! Run: `cargo bench -p exp-benches --bench events` (`EVENTS_SECONDS` sets
//! the length of each run, default 10; `EVENTS_RATE` the offered rate of
//! 1).

use std::time::{Duration, Instant, SystemTime};

use exp_benches::Summary;

// The allocator `expd` runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use exp_benches::events::{closed_loop, open_loop};

/// Exposures in the rolled segment: 30 s (the default flush interval) of
/// `Assign` at 10,000 new units/s.
const ROLLED_EXPOSURES: usize = 300_000;

fn roll_cost() {
    let dir = tempfile::tempdir().expect("dir");
    let now = SystemTime::now();
    let segment_id = exp_ingest::wal::SegmentId {
        seq: 0,
        opened_ms: 1,
    };
    let mut segment =
        exp_ingest::wal::SegmentWriter::create(dir.path(), segment_id).expect("segment");
    let mut records = Vec::new();
    for index in 0..ROLLED_EXPOSURES {
        let exposure = exp_core::event::Event::Exposure(exp_core::event::Exposure {
            event_id: format!("assign-{index:032x}"),
            experiment_id: "reco_ymal_v1".into(),
            variant: if index % 2 == 0 {
                "control"
            } else {
                "treatment"
            }
            .into(),
            user_id: format!("user-{index}"),
            session_id: format!("session-{index}"),
            unit_type: exp_core::UnitType::User,
            placement: "you_may_also_like".into(),
            page_type: "product_detail".into(),
            revision: 2,
            timestamp: now,
        });
        exp_ingest::wal::encode(&exposure, &mut records);
    }
    segment
        .append_durably(&records, ROLLED_EXPOSURES)
        .expect("write the segment");
    drop(records);
    let out = tempfile::tempdir().expect("dir");
    let path = segment.path.clone();
    // As the roller does it, one record at a time; and, for comparison,
    // the whole segment read into memory first, as the roller read it
    // before (it then built one batch per partition; here the rest is the
    // same streamed roll).
    let streamed = || {
        let events = exp_ingest::wal::SegmentReader::open(&path, u64::MAX).expect("open");
        exp_ingest::parquet::roll(out.path(), segment_id, events).expect("roll");
    };
    let whole = || {
        let (events, _) = exp_ingest::wal::read(&path).expect("read");
        exp_ingest::parquet::roll(out.path(), segment_id, events.into_iter().map(Ok))
            .expect("roll");
    };
    println!(
        "\nroll a segment of {ROLLED_EXPOSURES} exposures into Parquet ({:.1} MB), in process, \
         alternately:",
        segment.synced_len as f64 / 1e6
    );
    let mut variants = [
        RollVariant::new("streamed", &streamed),
        RollVariant::new("whole segment read first", &whole),
    ];
    for _ in 0..5 {
        for variant in &mut variants {
            let before = memory_counters();
            reset_peak_resident();
            let started = Instant::now();
            (variant.roll)();
            variant.times.push(started.elapsed());
            let after = memory_counters();
            variant
                .minor_faults
                .push(after.minor_faults - before.minor_faults);
            variant
                .peak_growth_kb
                .push(after.peak_resident_kb.saturating_sub(before.resident_kb));
        }
    }
    let parquet_bytes: u64 =
        exp_ingest::parquet::list(out.path(), exp_core::event::EventKind::Exposure)
            .expect("list")
            .iter()
            .map(|file| std::fs::metadata(file).expect("metadata").len())
            .sum();
    println!("  Parquet written: {:.1} MB", parquet_bytes as f64 / 1e6);
    for variant in variants {
        let summary = Summary::of(variant.times);
        summary.print(&format!("roll, {}", variant.name));
        println!(
            "  {:.2} us per exposure (wall time, one thread); median {} minor page faults, \
             peak resident memory +{} MB over what the process held before the roll",
            summary.p50.as_secs_f64() * 1e6 / ROLLED_EXPOSURES as f64,
            median(variant.minor_faults),
            median(variant.peak_growth_kb) / 1024,
        );
    }
}

/// One way of rolling a segment, and what each of its runs cost.
struct RollVariant<'a> {
    name: &'static str,
    roll: &'a dyn Fn(),
    times: Vec<Duration>,
    minor_faults: Vec<u64>,
    peak_growth_kb: Vec<u64>,
}

impl<'a> RollVariant<'a> {
    fn new(name: &'static str, roll: &'a dyn Fn()) -> Self {
        Self {
            name,
            roll,
            times: Vec::new(),
            minor_faults: Vec::new(),
            peak_growth_kb: Vec::new(),
        }
    }
}

struct MemoryCounters {
    minor_faults: u64,
    resident_kb: u64,
    peak_resident_kb: u64,
}

/// This process's minor page faults and its resident and peak resident
/// memory (`/proc/self/status`).
fn memory_counters() -> MemoryCounters {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .expect("status field")
    };
    MemoryCounters {
        minor_faults: exp_benches::own_minor_faults(),
        resident_kb: kb("VmRSS:"),
        peak_resident_kb: kb("VmHWM:"),
    }
}

/// Starts a new peak resident memory measurement (Linux `clear_refs`).
fn reset_peak_resident() {
    std::fs::write("/proc/self/clear_refs", "5").expect("/proc/self/clear_refs");
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn main() {
    roll_cost();
    let seconds = std::env::var("EVENTS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    // The server gets a runtime of its own, as in production; callers
    // another. They share the machine's two cores.
    let server_runtime = expd::server::runtime().expect("runtime");
    let server = server_runtime.block_on(exp_e2e::TestServer::start_with(&[
        "--events-flush-interval",
        "10s",
        "--events-max-pending",
        "1000000",
    ]));
    let addr = server.grpc_addr;
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rate = std::env::var("EVENTS_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100_000);
    for size in [100, 1_000] {
        client_runtime
            .block_on(open_loop(addr, "open", size, rate, seconds))
            .print();
    }
    for (size, callers) in [(100, 32), (1_000, 16)] {
        client_runtime
            .block_on(closed_loop(addr, "closed", size, callers, seconds))
            .print();
    }
    server_runtime.block_on(server.stop());
}
