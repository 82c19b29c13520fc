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
use exp_proto::v1::{self, event_service_client::EventServiceClient};

/// A batch of distinct clicks (`run` keeps ids of different runs apart,
/// so no event is a duplicate).
fn batch(run: &str, caller: usize, round: usize, size: usize) -> Vec<v1::Outcome> {
    let timestamp = Some(SystemTime::now().into());
    (0..size)
        .map(|index| v1::Outcome {
            event_id: format!("bench-{run}-{caller}-{round}-{index}"),
            r#type: v1::OutcomeType::Click as i32,
            user_id: format!("u-{}", (caller * 7_919 + index) % 100_000),
            session_id: format!("s-{caller}-{round}"),
            placement: "you_may_also_like".into(),
            page_type: "product_detail".into(),
            item_id: format!("sku-{}", index % 5_000),
            from_recommendation: true,
            source_placement: "you_may_also_like".into(),
            timestamp,
            ..Default::default()
        })
        .collect()
}

/// `rate` events/s in batches of `size` from 64 callers, each on its own
/// schedule; latency is measured from the actual send, and sends that left
/// more than 5 ms after their scheduled time are counted.
async fn open_loop(addr: std::net::SocketAddr, size: usize, rate: u64, seconds: u64) {
    const CALLERS: usize = 64;
    let channels = exp_benches::channels(addr, 4).await;
    let calls_per_second = rate as f64 / size as f64;
    let interval = Duration::from_secs_f64(CALLERS as f64 / calls_per_second);
    let per_caller = (calls_per_second * seconds as f64 / CALLERS as f64).round() as usize;
    let started = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let mut client = EventServiceClient::new(channels[caller % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let offset = interval.mul_f64(caller as f64 / CALLERS as f64);
            let mut latencies = Vec::with_capacity(per_caller);
            let (mut acked, mut refused, mut late) = (0u64, 0u64, 0u64);
            for round in 0..per_caller {
                let outcomes = batch(&format!("open{size}"), caller, round, size);
                let due = started + offset + interval.mul_f64(round as f64);
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                if sent - due > Duration::from_millis(5) {
                    late += 1;
                }
                match client
                    .log_outcomes(v1::LogOutcomesRequest { outcomes })
                    .await
                {
                    Ok(answer) => {
                        latencies.push(sent.elapsed());
                        acked += u64::from(answer.into_inner().accepted_count);
                    }
                    Err(_) => refused += 1,
                }
            }
            (latencies, acked, refused, late)
        }));
    }
    let mut all = Vec::new();
    let (mut acked, mut refused, mut late) = (0, 0, 0);
    for task in tasks {
        let (latencies, events, failures, delayed) = task.await.expect("caller");
        all.extend(latencies);
        acked += events;
        refused += failures;
        late += delayed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = all.len();
    Summary::of(all).print(&format!(
        "LogOutcomes ack at {rate} events/s offered, batches of {size}"
    ));
    println!(
        "  achieved {:.0} durable events/s over {elapsed:.1} s, {refused} calls refused, {late} of {calls} sent > 5 ms late",
        acked as f64 / elapsed
    );
}

/// `callers` clients, each sending its next batch when the last is acked.
async fn closed_loop(addr: std::net::SocketAddr, size: usize, callers: usize, seconds: u64) {
    let channels = exp_benches::channels(addr, 4).await;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let mut client = EventServiceClient::new(channels[caller % channels.len()].clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut acked, mut refused) = (0u64, 0u64);
            let mut round = 0;
            while Instant::now() < deadline {
                let outcomes = batch(&format!("closed{size}"), caller, round, size);
                round += 1;
                let sent = Instant::now();
                match client
                    .log_outcomes(v1::LogOutcomesRequest { outcomes })
                    .await
                {
                    Ok(answer) => {
                        latencies.push(sent.elapsed());
                        acked += u64::from(answer.into_inner().accepted_count);
                    }
                    Err(_) => refused += 1,
                }
            }
            (latencies, acked, refused)
        }));
    }
    let mut all = Vec::new();
    let (mut acked, mut refused) = (0, 0);
    for task in tasks {
        let (latencies, events, failures) = task.await.expect("caller");
        all.extend(latencies);
        acked += events;
        refused += failures;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Summary::of(all).print(&format!(
        "LogOutcomes ack, batches of {size}, {callers} callers"
    ));
    println!(
        "  {:.0} durable events/s over {elapsed:.1} s ({acked} events, {refused} calls refused)",
        acked as f64 / elapsed
    );
}

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
        client_runtime.block_on(open_loop(addr, size, rate, seconds));
    }
    for (size, callers) in [(100, 32), (1_000, 16)] {
        client_runtime.block_on(closed_loop(addr, size, callers, seconds));
    }
    server_runtime.block_on(server.stop());
}
