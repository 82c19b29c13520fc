//! `expctl demo`: the whole product in about a minute, from nothing.
//!
//! 1. starts a private `expd` in this process (loopback, ephemeral ports,
//!    a temporary data directory, guardrails judged every 2 s);
//! 2. creates and starts two experiments: the seed's `reco_ymal_v1`
//!    (re-ranked you-may-also-like, a true +2.5 point add-to-cart lift) and
//!    `home_pool_v1` (a cross-category candidate pool on the home page that
//!    makes visitors bounce more: 30% -> 42%, past its 5% bounce-rate
//!    guardrail);
//! 3. simulates rec-service traffic: every user is assigned through
//!    `Assign`, and the front end logs what it rendered through
//!    `EventService`: the exposure (`defer_exposure`, as a page that logs
//!    on render does), then impressions, clicks, add-to-carts, purchases,
//!    page views and page loads;
//! 4. prints the guardrail monitor stopping `home_pool_v1` on its own,
//!    `Assign` no longer serving its variant, and both results tables,
//!    which include every event the demo logged: each answer of
//!    `EventService` gives the log position it reached, and `GetResults`
//!    waits until the analysis has counted through the last of them.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use clap::{Args, Parser};
use exp_proto::v1::{
    self, admin_service_client::AdminServiceClient,
    assignment_service_client::AssignmentServiceClient, event_service_client::EventServiceClient,
    results_service_client::ResultsServiceClient,
};
use tonic::transport::Channel;

use crate::table;

/// Options of `expctl demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Simulated users.
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    /// Keep the demo's data here (an empty directory) instead of a
    /// temporary one, to look at the Parquet files afterwards.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

const YMAL: &str = "reco_ymal_v1";
const HOME: &str = "home_pool_v1";
const WORKERS: usize = 8;

/// How a simulated user behaves in each arm.
const CART_RATE: [f64; 2] = [0.10, 0.125];
const BOUNCE_RATE: [f64; 2] = [0.30, 0.42];

fn home_experiment() -> v1::Experiment {
    let mut experiment =
        exp_proto::convert::experiment_to_proto(&exp_core::examples::seed_experiment());
    experiment.id = HOME.into();
    experiment.name = "Home: cross-category candidate pool".into();
    experiment.description = "Home feed candidates from every category".into();
    experiment.hypothesis = "A wider pool raises engagement without more bounces".into();
    experiment.layer = "home_ranking".into();
    experiment.traffic_percent = 100;
    experiment.variants = vec![
        variant("control", "same_category"),
        variant("cross_category", "cross_category"),
    ];
    let eligibility = experiment.eligibility.get_or_insert_with(Default::default);
    eligibility.placements = vec!["home_feed".into()];
    eligibility.page_types.clear();
    experiment.metrics = Some(v1::MetricsConfig {
        primary_metric: "add_to_cart_rate".into(),
        secondary_metrics: vec!["page_load_time".into()],
        guardrails: vec![v1::Guardrail {
            metric: "bounce_rate".into(),
            threshold: 0.05,
            action: v1::GuardrailAction::Stop as i32,
        }],
        ..Default::default()
    });
    experiment
}

fn variant(name: &str, pool: &str) -> v1::Variant {
    let mut params = prost_types::Struct::default();
    params.fields.insert(
        "candidate_pool".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(pool.into())),
        },
    );
    v1::Variant {
        name: name.into(),
        description: format!("candidates from {pool}"),
        weight: 50,
        params: Some(params),
    }
}

fn ymal_experiment() -> v1::Experiment {
    let mut experiment =
        exp_proto::convert::experiment_to_proto(&exp_core::examples::seed_experiment());
    experiment.traffic_percent = 100;
    experiment
}

/// A deterministic coin for user `user`, event `salt`.
fn chance(user: usize, salt: u64) -> f64 {
    let mut z = (user as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ salt.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

fn request(user: &str, placement: &str, page_type: &str) -> v1::AssignRequest {
    v1::AssignRequest {
        user_id: user.into(),
        session_id: format!("s-{user}"),
        context: Some(v1::RequestContext {
            placement: placement.into(),
            page_type: page_type.into(),
            country: "US".into(),
            device: "mobile".into(),
            ..Default::default()
        }),
        // The page logs the exposure when it renders the recommendations.
        defer_exposure: true,
    }
}

/// The exposures of an `Assign` answer, as the page that rendered them
/// logs them.
fn exposures_of(
    answer: &v1::AssignResponse,
    user: &str,
    placement: &str,
    page_type: &str,
) -> Vec<v1::Exposure> {
    answer
        .assignments
        .iter()
        .filter(|assignment| assignment.reason == v1::AssignmentReason::Bucketed as i32)
        .map(|assignment| v1::Exposure {
            event_id: format!("demo-exposure-{}-{user}", assignment.experiment_id),
            experiment_id: assignment.experiment_id.clone(),
            variant: assignment.variant.clone(),
            user_id: user.into(),
            session_id: format!("s-{user}"),
            unit_type: assignment.unit_type,
            placement: placement.into(),
            page_type: page_type.into(),
            revision: assignment.revision,
            timestamp: Some(SystemTime::now().into()),
        })
        .collect()
}

fn outcome(
    user: &str,
    serial: &mut u32,
    outcome_type: v1::OutcomeType,
    placement: &str,
) -> v1::Outcome {
    *serial += 1;
    v1::Outcome {
        event_id: format!("demo-{user}-{serial}"),
        r#type: outcome_type as i32,
        user_id: user.into(),
        session_id: format!("s-{user}"),
        placement: placement.into(),
        page_type: if placement == "home_feed" {
            "home"
        } else {
            "product_detail"
        }
        .into(),
        from_recommendation: true,
        source_placement: placement.into(),
        quantity: 1,
        timestamp: Some((SystemTime::now() + Duration::from_millis(1)).into()),
        ..Default::default()
    }
}

/// One user's visit: assigned on both placements, then the exposures of
/// what was rendered and the user's outcomes.
async fn visit(
    assign: &mut AssignmentServiceClient<Channel>,
    index: usize,
    exposures: &mut Vec<v1::Exposure>,
    outcomes: &mut Vec<v1::Outcome>,
) -> Result<(), String> {
    let user = format!("u-{index}");
    let ymal = assign
        .assign(request(&user, "you_may_also_like", "product_detail"))
        .await
        .map_err(|status| format!("Assign: {}", status.message()))?
        .into_inner();
    let home = assign
        .assign(request(&user, "home_feed", "home"))
        .await
        .map_err(|status| format!("Assign: {}", status.message()))?
        .into_inner();
    exposures.extend(exposures_of(
        &ymal,
        &user,
        "you_may_also_like",
        "product_detail",
    ));
    exposures.extend(exposures_of(&home, &user, "home_feed", "home"));
    let mut serial = 0;
    if !ymal.variant.is_empty() {
        let arm = usize::from(ymal.variant != "control");
        let mut impression = outcome(
            &user,
            &mut serial,
            v1::OutcomeType::Impression,
            "you_may_also_like",
        );
        impression.item_ids = (0..4)
            .map(|slot| format!("sku-{}", (index * 7 + slot * 131) % 2_000))
            .collect();
        outcomes.push(impression);
        if chance(index, 1) < 0.06 {
            let mut click = outcome(
                &user,
                &mut serial,
                v1::OutcomeType::Click,
                "you_may_also_like",
            );
            click.item_id = recommended_item(index);
            outcomes.push(click);
        }
        if chance(index, 2) < CART_RATE[arm] {
            let mut cart = outcome(
                &user,
                &mut serial,
                v1::OutcomeType::AddToCart,
                "you_may_also_like",
            );
            cart.item_id = recommended_item(index);
            outcomes.push(cart);
            if chance(index, 3) < 0.4 {
                let mut purchase = outcome(
                    &user,
                    &mut serial,
                    v1::OutcomeType::Purchase,
                    "you_may_also_like",
                );
                purchase.item_id = recommended_item(index);
                purchase.value = 20.0 + 80.0 * chance(index, 4);
                purchase.currency = "USD".into();
                outcomes.push(purchase);
            }
        }
    }
    if !home.variant.is_empty() {
        let arm = usize::from(home.variant != "control");
        let pages = if chance(index, 5) < BOUNCE_RATE[arm] {
            1
        } else {
            2 + index % 3
        };
        for _ in 0..pages {
            outcomes.push(outcome(
                &user,
                &mut serial,
                v1::OutcomeType::PageView,
                "home_feed",
            ));
        }
        let mut load = outcome(&user, &mut serial, v1::OutcomeType::PageLoad, "home_feed");
        load.latency_ms = 400.0 + 600.0 * chance(index, 6);
        outcomes.push(load);
    }
    Ok(())
}

/// The item user `index` clicks, carts and buys: the first one shown.
fn recommended_item(index: usize) -> String {
    format!("sku-{}", index * 7 % 2_000)
}

/// Logs what a worker holds, exposures first; the log position the
/// outcomes reached (which is past the exposures').
async fn log_events(
    events: &mut EventServiceClient<Channel>,
    exposures: &mut Vec<v1::Exposure>,
    outcomes: &mut Vec<v1::Outcome>,
) -> Result<u64, String> {
    let mut position = 0;
    if !exposures.is_empty() {
        let answer = events
            .log_exposures(v1::LogExposuresRequest {
                exposures: std::mem::take(exposures),
            })
            .await
            .map_err(|status| format!("LogExposures: {}", status.message()))?
            .into_inner();
        if let Some(rejection) = answer.rejections.first() {
            return Err(format!(
                "LogExposures refused {} exposures, the first for {}: {}",
                answer.rejections.len(),
                rejection.field,
                rejection.reason
            ));
        }
        position = answer.position;
    }
    if !outcomes.is_empty() {
        let answer = events
            .log_outcomes(v1::LogOutcomesRequest {
                outcomes: std::mem::take(outcomes),
            })
            .await
            .map_err(|status| format!("LogOutcomes: {}", status.message()))?
            .into_inner();
        position = position.max(answer.position);
    }
    Ok(position)
}

async fn status_of(
    admin: &mut AdminServiceClient<Channel>,
    id: &str,
) -> Result<v1::Experiment, String> {
    admin
        .get_experiment(v1::GetExperimentRequest { id: id.into() })
        .await
        .map_err(|status| format!("GetExperiment: {}", status.message()))
        .map(|answer| answer.into_inner().experiment.unwrap_or_default())
}

async fn create_and_start(
    admin: &mut AdminServiceClient<Channel>,
    experiment: v1::Experiment,
) -> Result<(), String> {
    let id = experiment.id.clone();
    admin
        .create_experiment(v1::CreateExperimentRequest {
            experiment: Some(experiment),
            reason: "expctl demo".into(),
        })
        .await
        .map_err(|status| format!("CreateExperiment {id}: {}", status.message()))?;
    admin
        .start_experiment(v1::StartExperimentRequest {
            id: id.clone(),
            revision: 0,
            reason: "expctl demo".into(),
        })
        .await
        .map_err(|status| format!("StartExperiment {id}: {}", status.message()))?;
    Ok(())
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<(), String> {
    let started = Instant::now();
    let temporary = tempfile::tempdir().map_err(|error| format!("temporary directory: {error}"))?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let config = expd::Config::try_parse_from([
        "expd",
        "--data-dir",
        &data_dir.to_string_lossy(),
        "--guardrail-interval",
        "2s",
        "--events-flush-interval",
        "5s",
    ])
    .map_err(|error| error.to_string())?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = grpc.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(expd::serve(config, grpc, http, async {
        let _ = stopped.await;
    }));
    println!(
        "expd started on {addr} with its data in {}",
        data_dir.display()
    );

    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|error| error.to_string())?
        .connect()
        .await
        .map_err(|error| format!("connect: {error}"))?;
    let mut admin = AdminServiceClient::new(channel.clone());
    create_and_start(&mut admin, ymal_experiment()).await?;
    create_and_start(&mut admin, home_experiment()).await?;
    println!(
        "created and started {YMAL} (true add-to-cart lift: {:.1}% -> {:.1}%) and {HOME} \
         (harmful: bounce rate {:.0}% -> {:.0}%, guardrail tolerates 5% worse), both at 100% traffic",
        CART_RATE[0] * 100.0,
        CART_RATE[1] * 100.0,
        BOUNCE_RATE[0] * 100.0,
        BOUNCE_RATE[1] * 100.0
    );

    // Assignment follows the config publisher; wait until both are served.
    let mut assign = AssignmentServiceClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let home = assign.assign(request("probe", "home_feed", "home")).await;
        if home.is_ok_and(|answer| !answer.into_inner().variant.is_empty()) {
            break;
        }
        if Instant::now() > deadline {
            return Err("assignment never served the demo's experiments".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!(
        "simulating {} users on {WORKERS} connections ...",
        args.users
    );
    let users_total = args.users;
    let next = Arc::new(AtomicUsize::new(0));
    // The guardrail monitor judges every 2 s; nobody calls the admin.
    let watcher = {
        let next = next.clone();
        let mut admin = admin.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let home = status_of(&mut admin, HOME).await?;
                if home.status == v1::ExperimentStatus::Stopped as i32 {
                    let users = next.load(Ordering::Relaxed).min(users_total);
                    println!(
                        "  GUARDRAIL: {HOME} stopped by {:?} at revision {}, after {users} users:\n    {}",
                        home.updated_by, home.revision, home.status_reason
                    );
                    return Ok::<v1::Experiment, String>(home);
                }
                if Instant::now() > deadline {
                    return Err(format!("the guardrail did not stop {HOME} within a minute"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // The highest log position an EventService answer gave: results that
    // have counted through it include every event the demo logged.
    let logged_through = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let next = next.clone();
        let users = args.users;
        let logged_through = logged_through.clone();
        let mut assign = AssignmentServiceClient::new(channel.clone());
        let mut events = EventServiceClient::new(channel.clone());
        workers.push(tokio::spawn(async move {
            let (mut exposures, mut outcomes) = (Vec::new(), Vec::new());
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= users {
                    break;
                }
                visit(&mut assign, index, &mut exposures, &mut outcomes).await?;
                if outcomes.len() >= 500 {
                    let position = log_events(&mut events, &mut exposures, &mut outcomes).await?;
                    logged_through.fetch_max(position, Ordering::Relaxed);
                }
                if index > 0 && index.is_multiple_of(5_000) {
                    println!("  {index} users");
                }
            }
            let position = log_events(&mut events, &mut exposures, &mut outcomes).await?;
            logged_through.fetch_max(position, Ordering::Relaxed);
            Ok::<(), String>(())
        }));
    }
    for worker in workers {
        worker.await.map_err(|error| error.to_string())??;
    }
    println!(
        "  {} users simulated in {:.1} s",
        args.users,
        started.elapsed().as_secs_f64()
    );

    watcher.await.map_err(|error| error.to_string())??;
    println!();
    let after = assign
        .assign(request("u-1", "home_feed", "home"))
        .await
        .map_err(|status| format!("Assign: {}", status.message()))?
        .into_inner();
    println!(
        "Assign on home_feed now answers {}",
        if after.variant.is_empty() {
            "no experiment (the harmful variant is gone)".to_owned()
        } else {
            format!("variant {:?}", after.variant)
        }
    );

    let mut results = ResultsServiceClient::new(channel.clone());
    let position = logged_through.load(Ordering::Relaxed);
    for id in [YMAL, HOME] {
        let answer = results
            .get_results(v1::GetResultsRequest {
                experiment_id: id.into(),
                alpha: 0.05,
                min_position: position,
            })
            .await
            .map_err(|status| format!("GetResults {id}: {}", status.message()))?
            .into_inner();
        println!();
        print!("{}", table::render(&answer));
    }
    let ymal = status_of(&mut admin, YMAL).await?;
    println!();
    println!(
        "{YMAL} is still {} (no guardrail breached). Demo finished in {:.1} s; run it with \
         --data-dir DIR to keep the event files (Parquet under DIR/events).",
        crate::status_name(ymal.status),
        started.elapsed().as_secs_f64()
    );
    let _ = stop.send(());
    server
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    Ok(())
}
