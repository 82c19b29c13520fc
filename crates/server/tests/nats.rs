//! Events on NATS JetStream (`--events-sink nats://...`) against a real
//! Debian `nats-server` (2.9) with JetStream, and real `expd` processes:
//!
//! - one node: what `EventService` acknowledges and what `Assign` (of the
//!   admin's process and of a replica) exposes reaches Parquet through a
//!   writer exactly once, retries answered as duplicates, and `GetResults`
//!   reads its writes (`min_position` = an answer's position);
//! - a three-node cluster, stream replicas 3: a client logging batches
//!   without pause (retrying each with the same ids until acknowledged)
//!   while the stream's leader node and a writer are killed with SIGKILL;
//!   DuckDB then finds every acknowledged id in the two writers' Parquet
//!   exactly once;
//! - NATS down: `EventService` answers UNAVAILABLE at once and says so in
//!   health and `/readyz`, `Assign` keeps answering, and ingest resumes
//!   when NATS is back on the same port and store, without restarting
//!   `expd`;
//! - one writer per partition: a second writer named for claimed
//!   partitions writes none of them, and the owner, killed and started
//!   again on its data directory, takes its claims back.
//!
//! Not part of `cargo test --workspace`: the target needs the
//! `nats-tests` feature, and `.ci/run` runs it in its own step:
//!
//! ```text
//! cargo test -p expd --features nats-tests --test nats -- --test-threads=1
//! ```
//!
//! It needs `nats-server` (`apt-get install nats-server`; found on `PATH`,
//! in `/usr/sbin`, or at `EXPD_NATS_SERVER`) and the `duckdb` Python
//! package (in `EXPD_DUCKDB_PYTHONPATH`, by default
//! `target/ci-tools/python-nats`: `python3 -m pip install --target
//! target/ci-tools/python-nats duckdb==2.0.1`). Without either the tests
//! fail saying so; they are never skipped.

mod common;
#[path = "common/nats.rs"]
mod nats_harness;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use common::{Expd, start_quiet, wait_until, wait_until_assigned};
use exp_core::event::{Event, EventKind};
use exp_ingest::parquet;
use exp_proto::v1::{
    self, admin_service_client::AdminServiceClient,
    assignment_service_client::AssignmentServiceClient, event_service_client::EventServiceClient,
    results_service_client::ResultsServiceClient,
};
use nats_harness::{
    NatsCluster, NatsServer, duckdb_event_id_counts, nats_server_version, require_duckdb,
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const EXPERIMENT: &str = "reco_ymal_v1";
const EVENT_SERVICE: &str = "experiments.v1.EventService";
/// The stream `expd` creates (`--nats-stream`'s default).
const STREAM: &str = "EXPD_EVENTS";

// === helpers ===

/// Creates the seed experiment with everyone in it and starts it.
async fn create_and_start_seed_experiment(channel: &Channel) {
    let mut admin = AdminServiceClient::new(channel.clone());
    let mut seed = exp_proto::convert::experiment_to_proto(&exp_core::examples::seed_experiment());
    seed.traffic_percent = 100;
    admin
        .create_experiment(v1::CreateExperimentRequest {
            experiment: Some(seed),
            reason: String::new(),
        })
        .await
        .expect("create");
    admin
        .start_experiment(v1::StartExperimentRequest {
            id: EXPERIMENT.into(),
            ..Default::default()
        })
        .await
        .expect("start");
}

/// `Assign` for `user` on the seed's placement: its variant of the seed
/// experiment.
async fn assign(channel: &Channel, user: &str) -> Result<String, tonic::Status> {
    let answer = AssignmentServiceClient::new(channel.clone())
        .assign(v1::AssignRequest {
            user_id: user.into(),
            context: Some(v1::RequestContext {
                placement: "you_may_also_like".into(),
                page_type: "product_detail".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    answer
        .assignments
        .into_iter()
        .find(|assignment| assignment.experiment_id == EXPERIMENT)
        .map(|assignment| assignment.variant)
        .ok_or_else(|| tonic::Status::not_found(format!("{user} is not in {EXPERIMENT}")))
}

/// A page view with id `id`.
fn page_view(id: &str) -> v1::Outcome {
    v1::Outcome {
        event_id: id.into(),
        r#type: v1::OutcomeType::PageView as i32,
        session_id: format!("s-{id}"),
        page_type: "product_detail".into(),
        timestamp: Some(SystemTime::now().into()),
        ..Default::default()
    }
}

/// An add-to-cart by `user` with id `id`.
fn add_to_cart(id: &str, user: &str) -> v1::Outcome {
    v1::Outcome {
        event_id: id.into(),
        r#type: v1::OutcomeType::AddToCart as i32,
        user_id: user.into(),
        item_id: "sku-1".into(),
        quantity: 1,
        placement: "you_may_also_like".into(),
        page_type: "product_detail".into(),
        timestamp: Some(SystemTime::now().into()),
        ..Default::default()
    }
}

/// An exposure of `user` to `variant` of the seed experiment.
fn exposure(id: &str, user: &str, variant: &str) -> v1::Exposure {
    v1::Exposure {
        event_id: id.into(),
        experiment_id: EXPERIMENT.into(),
        variant: variant.into(),
        user_id: user.into(),
        unit_type: v1::UnitType::User as i32,
        placement: "you_may_also_like".into(),
        page_type: "product_detail".into(),
        timestamp: Some(SystemTime::now().into()),
        ..Default::default()
    }
}

async fn log_outcomes(
    channel: &Channel,
    outcomes: &[v1::Outcome],
) -> Result<v1::LogOutcomesResponse, tonic::Status> {
    let mut request = tonic::Request::new(v1::LogOutcomesRequest {
        outcomes: outcomes.to_vec(),
    });
    request.set_timeout(Duration::from_secs(15));
    EventServiceClient::new(channel.clone())
        .log_outcomes(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn log_exposures(
    channel: &Channel,
    exposures: &[v1::Exposure],
) -> Result<v1::LogExposuresResponse, tonic::Status> {
    let mut request = tonic::Request::new(v1::LogExposuresRequest {
        exposures: exposures.to_vec(),
    });
    request.set_timeout(Duration::from_secs(15));
    EventServiceClient::new(channel.clone())
        .log_exposures(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Logs `outcomes` again and again until they are acknowledged, as a
/// client does; the answer.
async fn log_outcomes_until_acked(
    channel: &Channel,
    outcomes: &[v1::Outcome],
    within: Duration,
) -> v1::LogOutcomesResponse {
    let mut last = None;
    let acked = wait_until(within, async || {
        match log_outcomes(channel, outcomes).await {
            Ok(answer) => Some(answer),
            Err(status) => {
                last = Some(status);
                None
            }
        }
    })
    .await;
    acked.unwrap_or_else(|| panic!("not acknowledged within {within:?}; last answer {last:?}"))
}

async fn health(channel: &Channel, service: &str) -> i32 {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

/// `GET /readyz`: its status and body.
async fn readyz(expd: &Expd) -> (u16, String) {
    common::http_get(expd.http.parse().expect("address"), "/readyz").await
}

/// The value of the counter `name` on `GET /metrics`.
async fn metric(expd: &Expd, name: &str) -> Option<f64> {
    let (_, body) = common::http_get(expd.http.parse().expect("address"), "/metrics").await;
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let key = key.split('{').next()?;
            (key == name).then(|| value.parse().ok()).flatten()
        })
}

/// How many times each event id of `kind` is in the Parquet files under
/// `<data_dir>/events`, counted file by file.
fn parquet_id_counts(data_dir: &Path, kind: EventKind) -> HashMap<String, usize> {
    parquet::count_event_ids(&data_dir.join("events"), kind).expect("complete Parquet files")
}

/// The exposures in the Parquet files under `<data_dir>/events`.
fn parquet_exposures(data_dir: &Path) -> Vec<exp_core::event::Exposure> {
    let events = data_dir.join("events");
    parquet::list(&events, EventKind::Exposure)
        .expect("list")
        .iter()
        .flat_map(|file| parquet::read_events(file, EventKind::Exposure).expect("read"))
        .filter_map(|event| match event {
            Event::Exposure(exposure) => Some(exposure),
            Event::Outcome(_) => None,
        })
        .collect()
}

/// Asserts that `written` (id → copies) holds every id of `expected`
/// once, and nothing else.
fn assert_exactly_once(what: &str, written: &HashMap<String, usize>, expected: &BTreeSet<String>) {
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !written.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: {} of {} acknowledged ids are not in Parquet, e.g. {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(10)]
    );
    let doubled: Vec<(&String, &usize)> =
        written.iter().filter(|(_, copies)| **copies != 1).collect();
    assert!(
        doubled.is_empty(),
        "{what}: {} ids are in Parquet more than once, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(10)]
    );
    let unexpected: Vec<&String> = written
        .keys()
        .filter(|id| !expected.contains(*id))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{what}: ids in Parquet that were never acknowledged: {unexpected:?}"
    );
}

// === one node ===

/// A process with every service but the writer, publishing to `sink`,
/// and a writer of every partition: the main process, the writer, and
/// the main process's channel.
async fn start_main_and_writer(
    main_dir: &std::path::Path,
    writer_dir: &std::path::Path,
    sink: &str,
) -> (Expd, Expd, tonic::transport::Channel) {
    let (main, _, _, channel) = start_quiet(
        main_dir,
        &[
            "--services",
            "admin,assign,ingest,results",
            "--events-sink",
            sink,
        ],
    )
    .await;
    let (writer, ..) = start_quiet(
        writer_dir,
        &[
            "--services",
            "writer",
            "--events-sink",
            sink,
            "--events-flush-interval",
            "1s",
        ],
    )
    .await;
    (main, writer, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_logged_and_assigned_through_one_nats_node_reach_parquet_once_and_results_read_their_writes()
 {
    println!("{}", nats_server_version());
    let dir = tempfile::tempdir().expect("dir");
    let nats = NatsServer::start(dir.path()).await;
    let sink = nats.url();
    let (main_dir, writer_dir, replica_dir) = (
        dir.path().join("main"),
        dir.path().join("writer"),
        dir.path().join("replica"),
    );
    let (main, _writer, channel) = start_main_and_writer(&main_dir, &writer_dir, &sink).await;
    create_and_start_seed_experiment(&channel).await;
    let source = format!("http://{}", main.grpc);
    let (_replica, _, _, replica_channel) = start_quiet(
        &replica_dir,
        &[
            "--services",
            "assign",
            "--config-source",
            &source,
            "--events-sink",
            &sink,
        ],
    )
    .await;
    wait_until_assigned(&channel, EXPERIMENT).await;
    wait_until_assigned(&replica_channel, EXPERIMENT).await;

    // Assign's exposures: of the admin's process, and of a replica.
    let mut variants: BTreeMap<String, String> = BTreeMap::new();
    for (on, prefix, users) in [
        (&channel, "assigned-main", 150),
        (&replica_channel, "assigned-replica", 100),
    ] {
        for index in 0..users {
            let user = format!("{prefix}-{index}");
            let variant = assign(on, &user).await.expect("assigned");
            variants.insert(user, variant);
        }
    }
    let assigned_users: BTreeSet<String> = variants.keys().cloned().collect();

    // EventService's exposures, in batches each sent twice: the retry is
    // all duplicates, at the same position.
    let mut exposure_ids = BTreeSet::new();
    let mut last_position = 0;
    let logged: Vec<(String, &str)> = (0..200)
        .map(|index| {
            let variant = if index % 3 == 0 {
                "control"
            } else {
                "treatment"
            };
            (format!("logged-{index}"), variant)
        })
        .collect();
    for chunk in logged.chunks(50) {
        let batch: Vec<v1::Exposure> = chunk
            .iter()
            .map(|(user, variant)| exposure(&format!("x-{user}"), user, variant))
            .collect();
        let first = log_exposures(&channel, &batch).await.expect("acknowledged");
        assert!(first.rejections.is_empty(), "{:?}", first.rejections);
        assert_eq!((first.accepted_count, first.duplicate_count), (50, 0));
        assert!(
            first.position > last_position,
            "positions grow: {} after {last_position}",
            first.position
        );
        last_position = first.position;
        let retry = log_exposures(&channel, &batch).await.expect("acknowledged");
        assert_eq!(
            (retry.accepted_count, retry.duplicate_count, retry.position),
            (0, 50, first.position),
            "a retry is answered as duplicates at the first copies' position"
        );
        exposure_ids.extend(batch.into_iter().map(|exposure| exposure.event_id));
        variants.extend(
            chunk
                .iter()
                .map(|(user, variant)| (user.clone(), (*variant).to_owned())),
        );
    }

    // Outcomes: add-to-carts of every fourth logged user, page views; a
    // retry of them, then a batch half new, half retried.
    let carted: BTreeSet<String> = logged
        .iter()
        .step_by(4)
        .map(|(user, _)| user.clone())
        .collect();
    let mut outcomes: Vec<v1::Outcome> = carted
        .iter()
        .map(|user| add_to_cart(&format!("cart-{user}"), user))
        .collect();
    outcomes.extend((0..100).map(|index| page_view(&format!("view-{index}"))));
    let first = log_outcomes(&channel, &outcomes)
        .await
        .expect("acknowledged");
    assert_eq!(
        (first.accepted_count, first.duplicate_count),
        (outcomes.len() as u32, 0)
    );
    let retry = log_outcomes(&channel, &outcomes)
        .await
        .expect("acknowledged");
    assert_eq!(
        (retry.accepted_count, retry.duplicate_count, retry.position),
        (0, outcomes.len() as u32, first.position)
    );
    let half: Vec<v1::Outcome> = (50..150)
        .map(|index| page_view(&format!("view-{index}")))
        .collect();
    let mixed = log_outcomes(&channel, &half).await.expect("acknowledged");
    assert_eq!(
        (mixed.accepted_count, mixed.duplicate_count),
        (50, 50),
        "views 50 to 99 were acknowledged before, 100 to 149 are new"
    );
    assert!(mixed.position > first.position);
    let mut outcome_ids: BTreeSet<String> = outcomes
        .iter()
        .chain(&half)
        .map(|outcome| outcome.event_id.clone())
        .collect();

    // The writer's Parquet: every id once; Assign's exposures once per
    // assigned user, with the variant it was answered.
    let exposures_expected = exposure_ids.len() + assigned_users.len();
    let arrived = wait_until(Duration::from_secs(30), async || {
        let exposures = parquet_id_counts(&writer_dir, EventKind::Exposure);
        let outcomes = parquet_id_counts(&writer_dir, EventKind::Outcome);
        (exposures.values().sum::<usize>() >= exposures_expected
            && outcomes.values().sum::<usize>() >= outcome_ids.len())
        .then_some(())
    })
    .await;
    let written_outcomes = parquet_id_counts(&writer_dir, EventKind::Outcome);
    let written_exposures = parquet_id_counts(&writer_dir, EventKind::Exposure);
    assert!(
        arrived.is_some(),
        "within 30 s the writer's Parquet holds {} of {exposures_expected} exposures and {} of \
         {} outcomes",
        written_exposures.len(),
        written_outcomes.len(),
        outcome_ids.len()
    );
    assert_exactly_once("outcomes", &written_outcomes, &outcome_ids);
    let assign_ids: BTreeSet<String> = written_exposures
        .keys()
        .filter(|id| !exposure_ids.contains(*id))
        .cloned()
        .collect();
    assert_exactly_once(
        "exposures",
        &written_exposures,
        &exposure_ids.union(&assign_ids).cloned().collect(),
    );
    let from_assign: BTreeMap<String, String> = parquet_exposures(&writer_dir)
        .into_iter()
        .filter(|exposure| assign_ids.contains(&exposure.event_id))
        .map(|exposure| (exposure.user_id, exposure.variant.to_string()))
        .collect();
    assert_eq!(
        from_assign.len(),
        assign_ids.len(),
        "one exposure per assigned user"
    );
    assert_eq!(
        from_assign,
        variants
            .iter()
            .filter(|(user, _)| assigned_users.contains(*user))
            .map(|(user, variant)| (user.clone(), variant.clone()))
            .collect::<BTreeMap<_, _>>(),
        "Assign's exposures in Parquet are the assigned users, with their variants"
    );

    // Results read their writes: with the position of a batch logged
    // after everything above reached the stream, no waiting or polling.
    let last = log_outcomes(&channel, &[page_view("view-last")])
        .await
        .expect("acknowledged");
    outcome_ids.insert("view-last".into());
    let mut request = tonic::Request::new(v1::GetResultsRequest {
        experiment_id: EXPERIMENT.into(),
        min_position: last.position,
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(30));
    let results = ResultsServiceClient::new(channel.clone())
        .get_results(request)
        .await
        .expect("results through the last position")
        .into_inner();
    assert!(
        results.counted_position >= last.position,
        "counted {} < {}",
        results.counted_position,
        last.position
    );
    let mut expected_units: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (user, variant) in &variants {
        let entry = expected_units.entry(variant.clone()).or_default();
        entry.0 += 1;
        entry.1 += u64::from(carted.contains(user));
    }
    let counted: BTreeMap<String, (u64, f64)> = results
        .variants
        .iter()
        .map(|variant| {
            let rate = variant
                .metrics
                .iter()
                .find(|metric| metric.metric == "add_to_cart_rate")
                .map_or(f64::NAN, |metric| metric.value);
            (variant.variant.clone(), (variant.exposed_units, rate))
        })
        .collect();
    assert_eq!(
        counted.keys().collect::<Vec<_>>(),
        expected_units.keys().collect::<Vec<_>>()
    );
    for (variant, (units, carts)) in &expected_units {
        let (exposed, rate) = counted[variant];
        assert_eq!(exposed, *units, "exposed units of {variant}: {counted:?}");
        let expected_rate = *carts as f64 / *units as f64;
        assert!(
            (rate - expected_rate).abs() < 1e-9,
            "add_to_cart_rate of {variant}: {rate}, expected {carts}/{units}"
        );
    }
    println!(
        "{} exposures ({} logged, {} assigned) and {} outcomes in Parquet once each; results \
         through position {}: {counted:?}",
        written_exposures.len(),
        exposure_ids.len(),
        assign_ids.len(),
        outcome_ids.len(),
        last.position
    );
}

// === three nodes ===

/// What the client has had acknowledged.
#[derive(Debug, Default)]
struct Acked {
    ids: Mutex<Vec<String>>,
    count: AtomicUsize,
}

/// What the client saw besides acknowledgements.
#[derive(Debug, Default)]
struct ClientReport {
    attempts: usize,
    duplicates: u64,
    refusals: BTreeMap<String, usize>,
    longest_until_acked: Duration,
}

const CLIENT_BATCH: usize = 100;

/// Logs batches of page views without pause, each until acknowledged
/// with the same ids, until `stop`; records every acknowledged id.
async fn log_without_pause(
    channel: Channel,
    acked: Arc<Acked>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> ClientReport {
    let mut report = ClientReport::default();
    let mut next = 0;
    while !*stop.borrow() {
        let batch: Vec<v1::Outcome> = (next..next + CLIENT_BATCH)
            .map(|index| page_view(&format!("ha-{index:07}")))
            .collect();
        next += CLIENT_BATCH;
        let first_try = Instant::now();
        loop {
            report.attempts += 1;
            match log_outcomes(&channel, &batch).await {
                Ok(answer) => {
                    assert!(answer.rejections.is_empty(), "{:?}", answer.rejections);
                    assert_eq!(
                        (answer.accepted_count + answer.duplicate_count) as usize,
                        CLIENT_BATCH
                    );
                    report.duplicates += u64::from(answer.duplicate_count);
                    acked
                        .ids
                        .lock()
                        .expect("ids")
                        .extend(batch.iter().map(|outcome| outcome.event_id.clone()));
                    acked.count.fetch_add(CLIENT_BATCH, Ordering::SeqCst);
                    report.longest_until_acked =
                        report.longest_until_acked.max(first_try.elapsed());
                    break;
                }
                Err(status) => {
                    let message: String = status.message().chars().take(60).collect();
                    *report
                        .refusals
                        .entry(format!("{:?}: {message}", status.code()))
                        .or_default() += 1;
                    // A client's retry pause.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    report
}

/// Waits until the client has had `target` events acknowledged; how long
/// it took.
async fn acked_past(acked: &Acked, target: usize, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    let reached = wait_until(within, async || {
        (acked.count.load(Ordering::SeqCst) >= target).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "{what}: {} of {target} events acknowledged within {within:?}",
        acked.count.load(Ordering::SeqCst)
    );
    started.elapsed()
}

/// The stream partition of the outcome `id` (as `expd` computes it).
fn partition(id: &str) -> u32 {
    (exp_ingest::dedup::digest(EventKind::Outcome, id) % 16) as u32
}

/// SIGKILL, then every line `expd` had logged.
async fn kill_and_read_log(mut expd: Expd) -> Vec<String> {
    expd.child.kill().expect("SIGKILL");
    expd.child.wait().expect("reaped");
    tokio::task::spawn_blocking(move || expd.logs.iter().collect())
        .await
        .expect("log read")
}

/// The warnings and errors among JSON log lines.
fn warnings(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\""))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_reaches_parquet_once_through_a_nats_node_and_a_writer_killed_mid_ingest()
 {
    println!("{}; DuckDB {}", nats_server_version(), require_duckdb());
    let dir = tempfile::tempdir().expect("dir");
    let mut cluster = NatsCluster::start(dir.path()).await;
    let sink = cluster.servers();
    let common_flags = ["--events-sink", &sink, "--nats-replicas", "3"];
    let (ingest_dir, first_dir, second_dir) = (
        dir.path().join("ingest"),
        dir.path().join("writer-0-7"),
        dir.path().join("writer-8-15"),
    );
    let ingest_flags: Vec<&str> = ["--services", "admin,ingest"]
        .into_iter()
        .chain(common_flags)
        .collect();
    let (ingest, _, _, channel) = start_quiet(&ingest_dir, &ingest_flags).await;
    let writer_flags = |partitions| -> Vec<&str> {
        [
            "--services",
            "writer",
            "--writer-partitions",
            partitions,
            "--events-flush-interval",
            "1s",
        ]
        .into_iter()
        .chain(common_flags)
        .collect()
    };
    let (first_writer, ..) = start_quiet(&first_dir, &writer_flags("0-7")).await;
    let (second_writer, ..) = start_quiet(&second_dir, &writer_flags("8-15")).await;

    let acked = Arc::new(Acked::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let client = tokio::spawn(log_without_pause(channel.clone(), acked.clone(), stopped));
    acked_past(&acked, 2_000, Duration::from_secs(30), "before any kill").await;

    // The stream's leader node, killed mid-ingest.
    let (leader, _) = wait_until(Duration::from_secs(10), async || {
        cluster
            .stream_leader(STREAM)
            .await
            .filter(|(_, current)| *current == 2)
    })
    .await
    .expect("within 10 s /jsz names the stream's leader and two current replicas");
    let killed_node = cluster.nodes[leader].name.clone();
    cluster.nodes[leader].kill();
    let at_node_kill = acked.count.load(Ordering::SeqCst);
    let node_recovery = acked_past(
        &acked,
        at_node_kill + 2_000,
        Duration::from_secs(60),
        "after the leader node was killed",
    )
    .await;
    let (new_leader, _) = wait_until(Duration::from_secs(10), async || {
        cluster
            .stream_leader(STREAM)
            .await
            .filter(|(index, _)| *index != leader)
    })
    .await
    .expect("a new leader");

    // A writer killed mid-ingest, then restarted on its data dir.
    let killed_writer_log = kill_and_read_log(first_writer).await;
    let at_writer_kill = acked.count.load(Ordering::SeqCst);
    acked_past(
        &acked,
        at_writer_kill + 1_000,
        Duration::from_secs(30),
        "with a writer killed",
    )
    .await;
    let (restarted_writer, ..) = start_quiet(&first_dir, &writer_flags("0-7")).await;
    let at_writer_restart = acked.count.load(Ordering::SeqCst);
    acked_past(
        &acked,
        at_writer_restart + 1_000,
        Duration::from_secs(30),
        "after the writer's restart",
    )
    .await;
    let _ = stop.send(true);
    let report = client.await.expect("client");
    let acked: BTreeSet<String> = acked.ids.lock().expect("ids").iter().cloned().collect();

    // Both writers' Parquet, as DuckDB reads it: every acknowledged id,
    // once.
    let dirs = vec![first_dir.clone(), second_dir.clone()];
    let mut last = Ok(HashMap::new());
    let all_there = wait_until(Duration::from_secs(60), async || {
        let read = dirs.clone();
        last = tokio::task::spawn_blocking(move || {
            let dirs: Vec<&Path> = read.iter().map(PathBuf::as_path).collect();
            duckdb_event_id_counts(&dirs, "outcomes")
        })
        .await
        .expect("DuckDB");
        let counts = last.as_ref().ok()?;
        acked.iter().all(|id| counts.contains_key(id)).then_some(())
    })
    .await;
    let written = last.expect("DuckDB reads the writers' Parquet");
    if all_there.is_none() {
        let missing: Vec<(&String, u32)> = acked
            .iter()
            .filter(|id| !written.contains_key(*id))
            .map(|id| (id, partition(id)))
            .collect();
        let consumers = cluster.consumers(STREAM).await;
        panic!(
            "within 60 s DuckDB finds {} of {} acknowledged ids in the writers' Parquet; \
             missing (id, partition): {:?}\nthe writers' consumers:\n{}\nwarnings of the \
             killed writer:\n{}\nwarnings of the other processes:\n{}",
            acked.len() - missing.len(),
            acked.len(),
            &missing[..missing.len().min(20)],
            consumers.join("\n"),
            warnings(&killed_writer_log).join("\n"),
            [&restarted_writer, &second_writer, &ingest]
                .into_iter()
                .flat_map(|expd| warnings(&expd.logs.try_iter().collect::<Vec<_>>()))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    assert_exactly_once("outcomes (DuckDB)", &written, &acked);
    for dir in dirs {
        assert!(
            !parquet::list(&dir.join("events"), EventKind::Outcome)
                .expect("list")
                .is_empty(),
            "each writer wrote its partitions: none in {}",
            dir.display()
        );
    }
    println!(
        "{} events acknowledged in {} attempts ({} answered as duplicates on a retry); \
         refusals: {:?}; longest until a batch was acknowledged: {:?}; node {killed_node} \
         (the stream's leader) killed, {} led next, 2,000 more acknowledged {node_recovery:?} \
         later; a writer killed and restarted; each id once in Parquet",
        acked.len(),
        report.attempts,
        report.duplicates,
        report.refusals,
        report.longest_until_acked,
        cluster.nodes[new_leader].name,
    );
}

// === NATS down ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_down_event_service_answers_unavailable_assign_keeps_serving_and_ingest_resumes_when_nats_is_back()
 {
    println!("{}", nats_server_version());
    let dir = tempfile::tempdir().expect("dir");
    let mut nats = NatsServer::start(dir.path()).await;
    let sink = nats.url();
    let (main_dir, writer_dir) = (dir.path().join("main"), dir.path().join("writer"));
    let (main, _writer, channel) = start_main_and_writer(&main_dir, &writer_dir, &sink).await;
    create_and_start_seed_experiment(&channel).await;
    wait_until_assigned(&channel, EXPERIMENT).await;

    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;
    wait_until(Duration::from_secs(10), async || {
        (health(&channel, EVENT_SERVICE).await == serving).then_some(())
    })
    .await
    .expect("EventService SERVING with NATS up");
    let (code, body) = readyz(&main).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("events: NATS reachable"), "{body}");

    let before: Vec<v1::Outcome> = (0..50)
        .map(|index| page_view(&format!("before-{index}")))
        .collect();
    let answer = log_outcomes(&channel, &before).await.expect("acknowledged");
    assert_eq!(answer.accepted_count, 50);

    // NATS killed.
    nats.kill();
    wait_until(Duration::from_secs(10), async || {
        (health(&channel, EVENT_SERVICE).await == not_serving).then_some(())
    })
    .await
    .expect("EventService NOT_SERVING within 10 s of NATS going down");
    let down: Vec<v1::Outcome> = (0..50)
        .map(|index| page_view(&format!("down-{index}")))
        .collect();
    let asked = Instant::now();
    let refused = log_outcomes(&channel, &down)
        .await
        .expect_err("refused while NATS is down");
    let refused_in = asked.elapsed();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("NATS is unreachable"),
        "{refused:?}"
    );
    assert!(
        refused_in < Duration::from_secs(1),
        "refused at once, not after a timeout: {refused_in:?}"
    );
    let (code, body) = readyz(&main).await;
    assert_eq!(
        code, 200,
        "NATS down takes no process out of rotation: {body}"
    );
    assert!(body.contains("events: NATS unreachable"), "{body}");

    // Assign keeps answering; the exposures it cannot publish are
    // dropped and counted.
    let refused_before = metric(&main, "expd_exposures_refused_total")
        .await
        .unwrap_or(0.0);
    for index in 0..50 {
        assign(&channel, &format!("during-outage-{index}"))
            .await
            .expect("assigned while NATS is down");
    }
    let refused_exposures = wait_until(Duration::from_secs(20), async || {
        metric(&main, "expd_exposures_refused_total")
            .await
            .filter(|refused| *refused >= refused_before + 50.0)
    })
    .await
    .expect("the outage's exposures counted as refused on /metrics");

    // NATS back on its port and store: ingest resumes, expd untouched.
    nats.restart().await;
    let back = Instant::now();
    wait_until(Duration::from_secs(30), async || {
        (health(&channel, EVENT_SERVICE).await == serving).then_some(())
    })
    .await
    .expect("EventService SERVING again within 30 s of NATS being back");
    let serving_again = back.elapsed();
    let (_, body) = readyz(&main).await;
    assert!(body.contains("events: NATS reachable"), "{body}");
    let after: Vec<v1::Outcome> = (0..50)
        .map(|index| page_view(&format!("after-{index}")))
        .collect();
    let answer = log_outcomes_until_acked(&channel, &after, Duration::from_secs(30)).await;
    assert_eq!(answer.accepted_count, 50);
    for index in 0..20 {
        assign(&channel, &format!("after-outage-{index}"))
            .await
            .expect("assigned");
    }

    let expected: BTreeSet<String> = before
        .iter()
        .chain(&after)
        .map(|outcome| outcome.event_id.clone())
        .collect();
    let arrived = wait_until(Duration::from_secs(30), async || {
        let outcomes = parquet_id_counts(&writer_dir, EventKind::Outcome);
        let exposed: BTreeSet<String> = parquet_exposures(&writer_dir)
            .into_iter()
            .map(|exposure| exposure.user_id)
            .filter(|user| user.starts_with("after-outage-"))
            .collect();
        (outcomes.len() >= expected.len() && exposed.len() == 20).then_some(())
    })
    .await;
    let written = parquet_id_counts(&writer_dir, EventKind::Outcome);
    assert!(
        arrived.is_some(),
        "within 30 s of NATS being back, the writer's Parquet holds {} of {} outcomes and \
         the exposures of users assigned after",
        written.len(),
        expected.len()
    );
    assert_exactly_once("outcomes", &written, &expected);
    println!(
        "refused in {refused_in:?} with NATS down; {refused_exposures} exposures refused \
         (counted); SERVING again {serving_again:?} after NATS was back"
    );
}

// === one writer per partition ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_named_for_claimed_partitions_writes_none_of_them_and_the_owner_takes_its_claims_back_after_a_restart()
 {
    let dir = tempfile::tempdir().expect("dir");
    let nats = NatsServer::start(dir.path()).await;
    let sink = nats.url();
    let (main_dir, owner_dir, second_dir) = (
        dir.path().join("main"),
        dir.path().join("owner"),
        dir.path().join("second"),
    );
    let (_main, _, _, channel) = start_quiet(
        &main_dir,
        &["--services", "admin,ingest", "--events-sink", &sink],
    )
    .await;
    let writer = [
        "--services",
        "writer",
        "--events-sink",
        sink.as_str(),
        "--events-flush-interval",
        "1s",
    ];
    let (owner, ..) = start_quiet(&owner_dir, &writer).await;
    // The owner has claimed every partition once its first batch is in
    // Parquet; only then does the second writer start.
    let first: Vec<v1::Outcome> = (0..200).map(|i| page_view(&format!("c1-{i:04}"))).collect();
    log_outcomes_until_acked(&channel, &first, Duration::from_secs(20)).await;
    let mut expected: BTreeSet<String> = first.iter().map(|o| o.event_id.clone()).collect();
    let written = wait_until(Duration::from_secs(20), async || {
        let counts = parquet_id_counts(&owner_dir, EventKind::Outcome);
        (counts.len() == expected.len()).then_some(counts)
    })
    .await
    .expect("the owner writes the first batch");
    assert_exactly_once("the first batch", &written, &expected);

    let (second, ..) = start_quiet(&second_dir, &writer).await;
    // It finds all 16 partitions owned by the first writer (and says so
    // in its log and its metrics), and writes none.
    let elsewhere = wait_until(Duration::from_secs(20), async || {
        let waiting = metric(&second, "expd_writer_partitions_elsewhere").await?;
        (waiting == 16.0).then_some(waiting)
    })
    .await;
    assert_eq!(
        elsewhere,
        Some(16.0),
        "the second writer finds every partition owned by the first"
    );
    assert_eq!(
        metric(&second, "expd_writer_partitions_owned").await,
        Some(0.0)
    );
    assert_eq!(
        metric(&owner, "expd_writer_partitions_owned").await,
        Some(16.0)
    );

    // The owner killed and started again on its data directory: the same
    // name, so it takes its claims back, and writes what came meanwhile.
    let _ = kill_and_read_log(owner).await;
    let more: Vec<v1::Outcome> = (0..200).map(|i| page_view(&format!("c2-{i:04}"))).collect();
    log_outcomes_until_acked(&channel, &more, Duration::from_secs(20)).await;
    expected.extend(more.iter().map(|o| o.event_id.clone()));
    let (_owner, ..) = start_quiet(&owner_dir, &writer).await;
    let written = wait_until(Duration::from_secs(30), async || {
        let counts = parquet_id_counts(&owner_dir, EventKind::Outcome);
        (counts.len() == expected.len()).then_some(counts)
    })
    .await
    .unwrap_or_else(|| parquet_id_counts(&owner_dir, EventKind::Outcome));
    assert_exactly_once("both batches, by the owner", &written, &expected);
    assert!(
        parquet_id_counts(&second_dir, EventKind::Outcome).is_empty(),
        "the second writer wrote events of partitions it does not own"
    );
    drop(second);
}
