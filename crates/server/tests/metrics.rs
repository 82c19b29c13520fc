//! `GET /metrics` of a real `expd`: the Prometheus text format, with
//! counters that moved by exactly what the test did.

mod common;

use std::time::{Duration, Instant};

use common::{http_get, start_quiet, wait_until_assigned};
use exp_proto::v1::{
    self, admin_service_client::AdminServiceClient,
    assignment_service_client::AssignmentServiceClient,
};
use tonic::transport::Channel;

const USERS: u64 = 50;

/// The value of the sample `name` (with exactly these `labels`, in the
/// order the exporter writes them) in a scrape.
fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric != name {
            return None;
        }
        let matches = labels
            .iter()
            .all(|(key, wanted)| rest.contains(&format!("{key}=\"{wanted}\"")));
        matches.then(|| value.parse().ok()).flatten()
    })
}

/// Creates and starts the seed at 100% of traffic; answers an assignment
/// client once assignment serves it.
async fn launch_seed(channel: Channel) -> AssignmentServiceClient<Channel> {
    let mut admin = AdminServiceClient::new(channel.clone());
    let mut seed = exp_core::examples::seed_experiment();
    seed.traffic_percent = 100;
    admin
        .create_experiment(v1::CreateExperimentRequest {
            experiment: Some(exp_proto::convert::experiment_to_proto(&seed)),
            reason: String::new(),
        })
        .await
        .expect("create");
    admin
        .start_experiment(v1::StartExperimentRequest {
            id: seed.id.clone(),
            ..Default::default()
        })
        .await
        .expect("start");
    wait_until_assigned(&channel, &seed.id).await;
    AssignmentServiceClient::new(channel)
}

fn request(user: &str, defer_exposure: bool) -> v1::AssignRequest {
    v1::AssignRequest {
        user_id: user.into(),
        defer_exposure,
        context: Some(v1::RequestContext {
            placement: "you_may_also_like".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_exposure_queue_shows_its_drops_and_every_exposure_is_accounted_for() {
    const CALLERS: u64 = 100;
    const EACH: u64 = 100;
    let data = tempfile::tempdir().expect("dir");
    // One record fits in the queue: a burst overflows it.
    let (_expd, _, http, channel) = start_quiet(data.path(), &["--exposure-queue", "1"]).await;
    let mut assignment = launch_seed(channel.clone()).await;
    // A repeat: the same unit to the same variant twice.
    for _ in 0..2 {
        assignment
            .assign(request("repeat-user", false))
            .await
            .expect("assign");
    }
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..CALLERS {
        let mut assignment = AssignmentServiceClient::new(channel.clone());
        callers.spawn(async move {
            for index in 0..EACH {
                assignment
                    .assign(request(&format!("burst-{caller}-{index}"), false))
                    .await
                    .expect("assign");
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done.expect("caller");
    }
    let offered = (CALLERS * EACH + 2) as f64;
    // Once the feed is idle, every offered exposure is handed on,
    // dropped, a repeat or refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let (_, scrape) = http_get(http, "/metrics").await;
        let count = |name: &str| sample(&scrape, name, &[]).unwrap_or(0.0);
        let accounted = count("expd_exposures_handed_on_total")
            + count("expd_exposures_dropped_total")
            + count("expd_exposures_repeated_total")
            + count("expd_exposures_refused_total");
        if count("expd_exposures_offered_total") == offered && accounted == offered {
            break scrape;
        }
        assert!(Instant::now() < deadline, "not accounted for:\n{scrape}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dropped = sample(&scrape, "expd_exposures_dropped_total", &[]).expect("dropped");
    let repeated = sample(&scrape, "expd_exposures_repeated_total", &[]).expect("repeated");
    println!("{offered} offered: {dropped} dropped by the full queue, {repeated} repeats");
    assert!(dropped > 0.0, "a queue of one overflowed by a burst drops");
    assert!(repeated >= 1.0, "the repeat is counted");
}

#[tokio::test]
async fn assign_calls_for_new_units_move_the_exposure_and_rpc_counters_by_as_many() {
    let data = tempfile::tempdir().expect("dir");
    let (_expd, _, http, channel) = start_quiet(data.path(), &[]).await;
    let mut assignment = launch_seed(channel).await;
    let (code, before) = http_get(http, "/metrics").await;
    assert_eq!(code, 200);
    let offered_before = sample(&before, "expd_exposures_offered_total", &[]).unwrap_or(0.0);
    let bucketed = [("experiment", "reco_ymal_v1"), ("reason", "bucketed")];
    let assigned_before = sample(&before, "expd_assignments_total", &bucketed)
        .expect("the warm-up assignments are counted");
    let assigns_before = sample(
        &before,
        "rpc_server_duration_seconds_count",
        &[("rpc_method", "Assign"), ("rpc_grpc_status_code", "0")],
    )
    .expect("the warm-up calls are counted");

    for user in 0..USERS {
        let answer = assignment
            .assign(request(&format!("metrics-user-{user}"), false))
            .await
            .expect("assign")
            .into_inner();
        assert_eq!(answer.assignments.len(), 1, "{answer:?}");
    }

    // The feed hands exposures on within its linger: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let (_, scrape) = http_get(http, "/metrics").await;
        if sample(&scrape, "expd_exposures_handed_on_total", &[]) == Some(USERS as f64) {
            break scrape;
        }
        assert!(
            Instant::now() < deadline,
            "exposures not handed on:\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let offered = sample(&scrape, "expd_exposures_offered_total", &[]).expect("offered");
    assert_eq!(
        offered - offered_before,
        USERS as f64,
        "one exposure per new unit"
    );
    assert_eq!(
        sample(&scrape, "expd_exposures_dropped_total", &[]),
        Some(0.0)
    );
    let assigned = sample(&scrape, "expd_assignments_total", &bucketed).expect("assignments");
    assert_eq!(
        assigned - assigned_before,
        USERS as f64,
        "one assignment per call"
    );
    let assigns = sample(
        &scrape,
        "rpc_server_duration_seconds_count",
        &[
            ("rpc_system", "grpc"),
            ("rpc_service", "experiments.v1.AssignmentService"),
            ("rpc_method", "Assign"),
            ("rpc_grpc_status_code", "0"),
        ],
    )
    .expect("Assign calls counted");
    assert_eq!(assigns - assigns_before, USERS as f64);
    // Create and start: config version 2.
    assert_eq!(sample(&scrape, "expd_config_version", &[]), Some(2.0));
    assert_eq!(sample(&scrape, "expd_store_writable", &[]), Some(1.0));
    assert!(
        sample(
            &scrape,
            "expd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ) == Some(1.0),
        "{scrape}"
    );
    assert!(sample(&scrape, "expd_connections_open", &[]).is_some_and(|open| open >= 1.0));
}
