//! Results for 1,000,000 exposed units:
//!
//! 1. in process: feeding the analyzer (exposures and outcomes per second)
//!    and `Analyzer::report` over the per-unit state, with its memory;
//! 2. over gRPC: `GetResults` and `GetResultsTimeline` against a real
//!    `expd` whose event log holds the same traffic, logged through
//!    `EventService` (so the analyzer was fed by the log's subscription, as
//!    in production);
//! 3. over HTTP: every console page of that experiment.
//!
//! The experiment is the seed's with every catalogue metric: add-to-cart
//! rate (primary), CTR, conversion, revenue per session (secondary), bounce
//! rate, page load time and inventory exposure balance (guardrails).
//!
//! Run: `cargo bench -p exp-benches --bench results` (`RESULTS_UNITS` sets
//! the number of units, default 1,000,000; `RESULTS_CUPED=off` turns CUPED
//! off in the in-process part; `RESULTS_IN_PROCESS_ONLY=1` stops after it).

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use exp_analysis::Analyzer;
use exp_benches::Summary;
use exp_core::{
    Experiment, Guardrail, GuardrailAction, Status, UnitType, bucketing,
    event::{Exposure, Outcome, from_unix_micros},
    examples, lifecycle,
    metrics::OutcomeType,
};
use exp_proto::v1::{
    self, event_service_client::EventServiceClient, results_service_client::ResultsServiceClient,
};

const ITEMS: usize = 5_000;

fn experiment() -> Experiment {
    let mut experiment = examples::seed_experiment();
    experiment.traffic_percent = 100;
    experiment.metrics.guardrails = [
        "bounce_rate",
        "page_load_time",
        "inventory_exposure_balance",
    ]
    .into_iter()
    .map(|metric| Guardrail {
        metric: metric.into(),
        threshold: 0.1,
        action: Some(GuardrailAction::Pause),
    })
    .collect();
    experiment
}

/// A unit's simulated day: deterministic from its index.
struct Traffic {
    variant: usize,
    shown: Vec<String>,
    clicks: usize,
    carted: bool,
    purchase: Option<f64>,
    pages: usize,
    load_ms: f64,
}

fn traffic(experiment: &Experiment, salt: &str, index: usize, items: &[String]) -> Traffic {
    let user = format!("u-{index}");
    let variant =
        bucketing::variant_index(&experiment.variants, bucketing::bucket(salt, &user)).unwrap_or(0);
    let hash = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let shown = (0..4)
        .map(|slot| items[(hash as usize / 7 + slot * 131) % items.len()].clone())
        .collect();
    Traffic {
        variant,
        shown,
        clicks: usize::from(hash.is_multiple_of(17)),
        carted: hash % 10 < 1 + variant as u64 % 2,
        purchase: hash.is_multiple_of(23).then_some(20.0 + (hash % 97) as f64),
        pages: 1 + (hash % 3) as usize,
        load_ms: 300.0 + (hash % 500) as f64,
    }
}

fn fact(
    user: &str,
    outcome_type: OutcomeType,
    item_ids: &[String],
    value: f64,
    latency_ms: f64,
    time_micros: i64,
) -> Outcome {
    Outcome {
        event_id: String::new(),
        outcome_type,
        user_id: user.into(),
        session_id: String::new(),
        placement: "you_may_also_like".into(),
        page_type: String::new(),
        item_id: "sku-1".into(),
        item_ids: item_ids.to_vec(),
        from_recommendation: true,
        source_placement: "you_may_also_like".into(),
        value,
        currency: if outcome_type == OutcomeType::Purchase {
            "USD".into()
        } else {
            String::new()
        },
        quantity: 1,
        latency_ms,
        timestamp: from_unix_micros(time_micros),
        attributes: Default::default(),
    }
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn in_process(units: usize) {
    let mut experiment = experiment();
    experiment.status = Status::Running;
    experiment.revision = 2;
    experiment.randomization = Some(lifecycle::randomization(&experiment, 2));
    let salt = experiment
        .randomization
        .as_ref()
        .map(|r| r.variant_salt.clone())
        .unwrap_or_default();
    let items: Vec<String> = (0..ITEMS).map(|item| format!("sku-{item}")).collect();
    // `RESULTS_CUPED=off` measures the same without the pre-period ledger
    // and covariates.
    experiment.metrics.cuped.enabled =
        std::env::var("RESULTS_CUPED").map_or(true, |cuped| cuped != "off");
    let catalog_experiment = Arc::new(experiment.clone());
    let mut analyzer = Analyzer::new(Box::new(move |id| {
        (id == catalog_experiment.id).then(|| (*catalog_experiment).clone())
    }));
    let before = rss_mb();
    let started = Instant::now();
    let mut events = 0_u64;
    let now = 1_800_000_000_000_000_i64;
    for index in 0..units {
        let day = traffic(&experiment, &salt, index, &items);
        let user = format!("u-{index}");
        analyzer.exposure(&Exposure {
            event_id: String::new(),
            experiment_id: experiment.id.clone(),
            variant: experiment.variants[day.variant].name.clone(),
            user_id: user.clone(),
            session_id: String::new(),
            unit_type: UnitType::User,
            placement: "you_may_also_like".into(),
            page_type: String::new(),
            revision: 2,
            timestamp: from_unix_micros(now),
        });
        let mut send = |outcome_type, item_ids: &[String], value, latency_ms| {
            analyzer.outcome(&fact(
                &user,
                outcome_type,
                item_ids,
                value,
                latency_ms,
                now + 1,
            ));
            events += 1;
        };
        send(OutcomeType::Impression, &day.shown, 0.0, 0.0);
        for _ in 0..day.pages {
            send(OutcomeType::PageView, &[], 0.0, 0.0);
        }
        send(OutcomeType::PageLoad, &[], 0.0, day.load_ms);
        for _ in 0..day.clicks {
            send(OutcomeType::Click, &[], 0.0, 0.0);
        }
        if day.carted {
            send(OutcomeType::AddToCart, &[], 0.0, 0.0);
        }
        if let Some(value) = day.purchase {
            send(OutcomeType::Purchase, &[], value, 0.0);
        }
        events += 1;
    }
    let fed = started.elapsed();
    println!(
        "analyzer fed {units} units, {events} events in {:.2} s: {:.2} us per event, {:.0} MB resident for the per-unit state",
        fed.as_secs_f64(),
        fed.as_secs_f64() * 1e6 / events as f64,
        rss_mb() - before
    );
    let summary = exp_benches::time_each(1, 7, |_| {
        let report = analyzer.report(&experiment.id, 0.05).expect("report");
        assert_eq!(
            report
                .variants
                .iter()
                .map(|variant| variant.exposed_units)
                .sum::<u64>(),
            units as u64
        );
    });
    summary.print(&format!("Analyzer::report, {units} units, 7 metrics"));
}

async fn over_grpc(units: usize) {
    let server = exp_e2e::TestServer::start_with(&[
        "--events-flush-interval",
        "10s",
        "--events-max-pending",
        "1000000",
    ])
    .await;
    let channel = server.channel().await;
    let mut admin = server.admin().await;
    let mut proposed = exp_proto::convert::experiment_to_proto(&experiment());
    proposed.status = 0;
    admin
        .create_experiment(v1::CreateExperimentRequest {
            experiment: Some(proposed),
            reason: String::new(),
        })
        .await
        .expect("create");
    let started = admin
        .start_experiment(v1::StartExperimentRequest {
            id: "reco_ymal_v1".into(),
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner()
        .experiment
        .expect("experiment");
    let salt = started
        .randomization
        .as_ref()
        .map(|r| r.variant_salt.clone())
        .expect("salts");
    let experiment = experiment();
    let items: Vec<String> = (0..ITEMS).map(|item| format!("sku-{item}")).collect();
    let mut events = EventServiceClient::new(channel.clone())
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    let logging = Instant::now();
    let timestamp = Some(SystemTime::now().into());
    let later = Some((SystemTime::now() + Duration::from_millis(1)).into());
    let mut logged = 0_u64;
    for chunk in (0..units).collect::<Vec<_>>().chunks(1_000) {
        let mut exposures = Vec::with_capacity(chunk.len());
        let mut outcomes = Vec::new();
        for index in chunk {
            let day = traffic(&experiment, &salt, *index, &items);
            let user = format!("u-{index}");
            exposures.push(v1::Exposure {
                event_id: format!("x-{index}"),
                experiment_id: "reco_ymal_v1".into(),
                variant: experiment.variants[day.variant].name.clone(),
                user_id: user.clone(),
                session_id: format!("s-{index}"),
                unit_type: v1::UnitType::User as i32,
                placement: "you_may_also_like".into(),
                page_type: "product_detail".into(),
                revision: started.revision,
                timestamp,
            });
            let mut push = |kind: v1::OutcomeType, serial: usize, outcome: v1::Outcome| {
                outcomes.push(v1::Outcome {
                    event_id: format!("o-{index}-{}-{serial}", kind as i32),
                    r#type: kind as i32,
                    user_id: user.clone(),
                    session_id: format!("s-{index}"),
                    placement: "you_may_also_like".into(),
                    from_recommendation: true,
                    timestamp: later,
                    ..outcome
                });
            };
            push(
                v1::OutcomeType::Impression,
                0,
                v1::Outcome {
                    item_ids: day.shown.clone(),
                    ..Default::default()
                },
            );
            for page in 0..day.pages {
                push(v1::OutcomeType::PageView, page, v1::Outcome::default());
            }
            push(
                v1::OutcomeType::PageLoad,
                0,
                v1::Outcome {
                    latency_ms: day.load_ms,
                    ..Default::default()
                },
            );
            if day.clicks > 0 {
                push(
                    v1::OutcomeType::Click,
                    0,
                    v1::Outcome {
                        item_id: day.shown[0].clone(),
                        ..Default::default()
                    },
                );
            }
            if day.carted {
                push(
                    v1::OutcomeType::AddToCart,
                    0,
                    v1::Outcome {
                        item_id: day.shown[0].clone(),
                        quantity: 1,
                        ..Default::default()
                    },
                );
            }
            if let Some(value) = day.purchase {
                push(
                    v1::OutcomeType::Purchase,
                    0,
                    v1::Outcome {
                        item_id: day.shown[0].clone(),
                        value,
                        currency: "USD".into(),
                        quantity: 1,
                        ..Default::default()
                    },
                );
            }
        }
        logged += (exposures.len() + outcomes.len()) as u64;
        let answer = events
            .log_exposures(v1::LogExposuresRequest { exposures })
            .await
            .expect("exposures")
            .into_inner();
        assert!(answer.rejections.is_empty(), "{:?}", answer.rejections);
        for batch in outcomes.chunks(5_000) {
            let answer = events
                .log_outcomes(v1::LogOutcomesRequest {
                    outcomes: batch.to_vec(),
                })
                .await
                .expect("outcomes")
                .into_inner();
            assert!(answer.rejections.is_empty(), "{:?}", answer.rejections);
        }
    }
    println!(
        "logged {logged} events for {units} units through EventService in {:.1} s",
        logging.elapsed().as_secs_f64()
    );
    let mut results = ResultsServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let request = || v1::GetResultsRequest {
        experiment_id: "reco_ymal_v1".into(),
        alpha: 0.0,
        ..Default::default()
    };
    let waiting = Instant::now();
    loop {
        if let Ok(answer) = results.get_results(request()).await {
            let counted: u64 = answer
                .get_ref()
                .variants
                .iter()
                .map(|variant| variant.exposed_units)
                .sum();
            if counted == units as u64 {
                break;
            }
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(600),
            "results never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "results caught up {:.1} s after the last ack",
        waiting.elapsed().as_secs_f64()
    );
    let mut samples = Vec::new();
    for _ in 0..7 {
        let sent = Instant::now();
        let answer = results.get_results(request()).await.expect("results");
        samples.push(sent.elapsed());
        assert_eq!(answer.into_inner().variants.len(), 2);
    }
    Summary::of(samples).print(&format!("GetResults over gRPC, {units} units, 7 metrics"));
    let mut timelines =
        ResultsServiceClient::new(server.channel().await).max_decoding_message_size(64 << 20);
    let mut samples = Vec::new();
    for _ in 0..7 {
        let sent = Instant::now();
        let answer = timelines
            .get_results_timeline(v1::GetResultsTimelineRequest {
                experiment_id: "reco_ymal_v1".into(),
                ..Default::default()
            })
            .await
            .expect("timeline");
        samples.push(sent.elapsed());
        assert!(!answer.into_inner().points.is_empty());
    }
    Summary::of(samples).print(&format!(
        "GetResultsTimeline over gRPC, {units} units (what a first look at a results page adds)"
    ));
    console_pages(&server, units).await;
    server.stop().await;
}

/// The console's pages over HTTP for the experiment with `units` units,
/// once its results page shows everything counted (the view a page reads
/// is refreshed in the background after the traffic; a page never waits
/// for it).
async fn console_pages(server: &exp_e2e::TestServer, units: usize) {
    let results_page = "/experiments/reco_ymal_v1/results";
    let waiting = Instant::now();
    loop {
        let (status, body) = exp_e2e::http_get_with(server.http_addr, results_page, &[]).await;
        assert_eq!(status, 200, "{body}");
        if units_on_page(&body) == units as u64 {
            break;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(120),
            "the results page never showed every unit"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for page in [
        "/experiments",
        "/experiments/reco_ymal_v1",
        results_page,
        "/experiments/reco_ymal_v1/edit",
        "/experiments/reco_ymal_v1/overrides",
        "/experiments/new",
    ] {
        let mut samples = Vec::new();
        let mut bytes = 0;
        for _ in 0..21 {
            let sent = Instant::now();
            let (status, body) = exp_e2e::http_get_with(server.http_addr, page, &[]).await;
            samples.push(sent.elapsed());
            assert_eq!(status, 200, "{page}: {body}");
            bytes = body.len();
        }
        Summary::of(samples).print(&format!(
            "console GET {page}, {units} units ({} KB)",
            bytes / 1024
        ));
    }
}

/// Exposed units the results page lists, summed over its variants (the
/// primary metric's rows).
fn units_on_page(body: &str) -> u64 {
    body.split(r#"data-metric="add_to_cart_rate""#)
        .skip(1)
        .filter_map(|row| {
            let at =
                row.find(r#"class="units" data-value=""#)? + r#"class="units" data-value=""#.len();
            row[at..].split('"').next()?.parse::<u64>().ok()
        })
        .sum()
}

fn main() {
    let units = std::env::var("RESULTS_UNITS")
        .ok()
        .and_then(|units| units.parse().ok())
        .unwrap_or(1_000_000);
    in_process(units);
    if std::env::var("RESULTS_IN_PROCESS_ONLY").is_ok_and(|only| only == "1") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(over_grpc(units));
}
