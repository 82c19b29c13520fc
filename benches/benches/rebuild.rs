//! The rebuild of results from the event log after a restart, in bounded
//! memory.
//!
//! For each history length (default 2,500,000 and 10,000,000 events), the
//! same 1,000,000 exposed units of the seed experiment, the rest outcomes
//! spread over them and over the past hours: the events are appended to
//! the event log of a data directory and rolled into Parquet (in this
//! process, with `exp_ingest`), then the release `expd` starts on that
//! directory, twice: first without results (`--services admin,ingest`),
//! for what the event log itself costs to open (it reads back the ids of
//! the events of the dedup window, at least 24 h, and keeps them), then
//! with every service, for the time from the process's start until
//! `GetResults` answers with every event counted. It prints both, with
//! each run's peak resident memory (`VmHWM`) and resident memory after;
//! the difference between the two runs is the analysis. The rebuild
//! streams the files a record batch at a time, so the analysis' peak is
//! its per-unit aggregates plus a bounded buffer: the two lengths should
//! cost it alike.
//!
//! Run: `cargo build --release -p expd && cargo bench -p exp-benches
//! --bench rebuild` (`REBUILD_EVENTS=2500000,10000000` sets the lengths,
//! `REBUILD_UNITS` the units).

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use exp_benches::ReleaseExpd;
use exp_core::{
    UnitType,
    event::{Exposure, Outcome},
    metrics::OutcomeType,
};
use exp_ingest::{Batch, EventLog, LogOptions};
use exp_proto::v1::{self, admin_service_client::AdminServiceClient};

/// An exposure of unit `index` at `time`.
fn exposure(index: u64, time: SystemTime) -> Exposure {
    Exposure {
        event_id: format!("exposure-{index}"),
        experiment_id: "reco_ymal_v1".into(),
        variant: if index.is_multiple_of(2) {
            "control"
        } else {
            "treatment"
        }
        .into(),
        user_id: format!("user-{index}"),
        session_id: format!("session-{index}"),
        unit_type: UnitType::User,
        placement: "you_may_also_like".into(),
        page_type: "product_detail".into(),
        revision: 2,
        timestamp: time,
    }
}

/// Outcome `serial` of unit `unit` at `time`: mostly impressions and page
/// views, some clicks, add-to-carts and purchases.
fn outcome(serial: u64, unit: u64, time: SystemTime) -> Outcome {
    let outcome_type = match serial % 10 {
        0..=3 => OutcomeType::Impression,
        4..=6 => OutcomeType::PageView,
        7 => OutcomeType::Click,
        8 => OutcomeType::AddToCart,
        _ => OutcomeType::Purchase,
    };
    Outcome {
        event_id: format!("outcome-{serial}"),
        outcome_type,
        user_id: format!("user-{unit}"),
        session_id: format!("session-{unit}"),
        placement: "you_may_also_like".into(),
        page_type: "product_detail".into(),
        item_id: format!("sku-{}", serial % 5_000),
        item_ids: if outcome_type == OutcomeType::Impression {
            (0..4)
                .map(|slot| format!("sku-{}", (serial + slot * 131) % 5_000))
                .collect()
        } else {
            Vec::new()
        },
        from_recommendation: true,
        source_placement: "you_may_also_like".into(),
        value: if outcome_type == OutcomeType::Purchase {
            42.0
        } else {
            0.0
        },
        currency: if outcome_type == OutcomeType::Purchase {
            "USD"
        } else {
            ""
        }
        .into(),
        quantity: 1,
        latency_ms: 0.0,
        timestamp: time,
        attributes: BTreeMap::new(),
    }
}

/// Appends `events` events over `units` units to the log in `dir` (every
/// unit's exposure first, then outcomes), spread over the past three
/// hours, and rolls them into Parquet. Answers the seconds it took.
async fn write_history(dir: &Path, units: u64, events: u64) -> f64 {
    let started = Instant::now();
    let log = EventLog::open(LogOptions {
        dir: dir.to_owned(),
        flush_interval: Duration::from_secs(30),
        max_pending_events: 200_000,
        dedup_window: Duration::from_secs(24 * 3600),
    })
    .expect("open the log");
    let start = SystemTime::now() - Duration::from_secs(3 * 3600);
    let span = 3 * 3600 * 1_000_000 - 60_000_000;
    let at = |serial: u64| start + Duration::from_micros(serial * span / events);
    let mut serial = 0;
    while serial < events {
        let batch: Batch = (serial..(serial + 5_000).min(events))
            .map(|serial| -> exp_core::event::Event {
                if serial < units {
                    exposure(serial, at(serial)).into()
                } else {
                    outcome(
                        serial,
                        serial.wrapping_mul(2_654_435_761) % units,
                        at(serial),
                    )
                    .into()
                }
            })
            .collect();
        serial += batch.len() as u64;
        log.append(batch).await.expect("append");
    }
    tokio::task::spawn_blocking(move || log.close())
        .await
        .expect("close");
    started.elapsed().as_secs_f64()
}

async fn rebuild(binary: &Path, units: u64, events: u64) {
    let data = tempfile::tempdir().expect("dir");
    // The experiment first: results count exposures of experiments the
    // store holds.
    let server = ReleaseExpd::start_in(binary, data.path(), &[]).await;
    exp_e2e::launch_seed_everywhere(&mut AdminServiceClient::new(
        exp_e2e::connect(server.grpc).await,
    ))
    .await;
    server.stop();
    let written = write_history(&data.path().join("events"), units, events).await;
    let parquet_bytes: u64 = exp_core::event::EventKind::ALL
        .into_iter()
        .flat_map(|kind| {
            exp_ingest::parquet::list(&data.path().join("events"), kind).expect("list")
        })
        .map(|file| std::fs::metadata(file).expect("metadata").len())
        .sum();

    // The log alone: open until EventService takes a call.
    let started = Instant::now();
    let server = ReleaseExpd::start_in(binary, data.path(), &["--services", "admin,ingest"]).await;
    let mut events_client =
        v1::event_service_client::EventServiceClient::new(exp_e2e::connect(server.grpc).await);
    while events_client
        .log_outcomes(v1::LogOutcomesRequest::default())
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opened = started.elapsed().as_secs_f64();
    let (log_peak, log_resident) = (server.peak_resident_mb(), server.resident_mb());
    server.stop();

    let started = Instant::now();
    let server = ReleaseExpd::start_in(binary, data.path(), &[]).await;
    let mut results =
        v1::results_service_client::ResultsServiceClient::new(exp_e2e::connect(server.grpc).await);
    let mut peak = 0.0_f64;
    let answer = loop {
        peak = peak.max(server.peak_resident_mb());
        match results
            .get_results(v1::GetResultsRequest {
                experiment_id: "reco_ymal_v1".into(),
                ..Default::default()
            })
            .await
        {
            Ok(answer) => break answer.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("GetResults: {status:?}"),
        }
    };
    let rebuilt = started.elapsed().as_secs_f64();
    let counted: u64 = answer
        .variants
        .iter()
        .map(|variant| variant.exposed_units)
        .sum();
    assert_eq!(counted, units, "every unit counted");
    peak = peak.max(server.peak_resident_mb());
    let resident = server.resident_mb();
    println!(
        "{events} events over {units} units ({:.0} MB of Parquet, written and rolled in {written:.0} s):\n  \
         the log alone: open in {opened:.1} s, peak resident {log_peak:.0} MB, resident after {log_resident:.0} MB\n  \
         with results: GetResults counts every event {rebuilt:.1} s after the start ({:.2} us per event), \
         peak resident {peak:.0} MB, resident after {resident:.0} MB\n  \
         the analysis (with results minus the log alone): peak +{:.0} MB, resident +{:.0} MB",
        parquet_bytes as f64 / 1e6,
        rebuilt / events as f64 * 1e6,
        peak - log_peak,
        resident - log_resident,
    );
}

fn main() {
    let Some(binary) = ReleaseExpd::binary() else {
        return;
    };
    let units: u64 = std::env::var("REBUILD_UNITS")
        .ok()
        .map(|units| units.parse().expect("REBUILD_UNITS: a number"))
        .unwrap_or(1_000_000);
    let lengths: Vec<u64> = std::env::var("REBUILD_EVENTS")
        .unwrap_or_else(|_| "2500000,10000000".into())
        .split(',')
        .map(|length| length.trim().parse().expect("REBUILD_EVENTS: numbers"))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("rebuild of results from the event log after a restart, release expd:");
    for events in lengths {
        runtime.block_on(rebuild(&binary, units, events.max(units)));
    }
}
