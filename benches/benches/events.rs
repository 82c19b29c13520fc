//! Event ingest over loopback, `EventService/LogOutcomes`, with batches of
//! 100 and of 1,000 events; every answer comes after the fsync that covers
//! its events (group commit):
//!
//! 1. open loop at a fixed offered rate (default 100,000 events/s): the
//!    acknowledgement latency at that rate;
//! 2. closed loop (each caller sends its next batch when the last is
//!    acked): the sustained durable capacity;
//! 3. the background cost of rolling a log segment of 100,000 exposures
//!    into Parquet, in process.
//!
//! Run: `cargo bench -p exp-benches --bench events` (`EVENTS_SECONDS` sets
//! the length of each run, default 10; `EVENTS_RATE` the offered rate of
//! 1).

use std::time::{Duration, Instant, SystemTime};

use exp_benches::Summary;
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

fn roll_cost() {
    let dir = tempfile::tempdir().expect("dir");
    let now = SystemTime::now();
    let events: Vec<exp_ingest::Event> = (0..100_000)
        .map(|index| {
            exp_ingest::Event::Exposure(v1::Exposure {
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
                unit_type: v1::UnitType::User as i32,
                placement: "you_may_also_like".into(),
                page_type: "product_detail".into(),
                revision: 2,
                timestamp: Some(now.into()),
            })
        })
        .collect();
    let samples = (0..5u64)
        .map(|seq| {
            let started = Instant::now();
            exp_ingest::parquet::roll(
                dir.path(),
                exp_ingest::wal::SegmentId { seq, opened_ms: 1 },
                &events,
            )
            .expect("roll");
            started.elapsed()
        })
        .collect();
    let summary = Summary::of(samples);
    summary.print("roll 100,000 exposures into Parquet");
    println!(
        "  {:.2} us of one core per exposure",
        summary.p50.as_secs_f64() * 1e6 / 100_000.0
    );
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
