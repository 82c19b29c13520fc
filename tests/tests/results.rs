//! `ResultsService/GetResults` and the guardrail monitor against a real
//! `expd`: exposures come from `Assign`, outcomes from `LogOutcomes`, and
//! a harmful variant is stopped by the monitor alone.

use std::time::{Duration, Instant, SystemTime};

use exp_e2e::{
    TestServer, assign_users, bounce_guarded_seed, create_and_start, launch_seed_everywhere,
    log_outcomes, outcome, results_when, treatment_bounces, wait_until_assign_is_current,
    ymal_request,
};
use exp_proto::v1::{
    self, assignment_service_client::AssignmentServiceClient,
    event_service_client::EventServiceClient, results_service_client::ResultsServiceClient,
};
use tonic::{Code, transport::Channel};

fn field_of(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .and_then(|bad| bad.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_default()
}

#[tokio::test]
async fn get_results_refuses_bad_requests_naming_the_field() {
    let server = TestServer::start().await;
    let mut results = ResultsServiceClient::new(server.channel().await);
    let missing = results
        .get_results(v1::GetResultsRequest::default())
        .await
        .expect_err("no id");
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert_eq!(field_of(&missing), "experiment_id");

    let mut admin = server.admin().await;
    launch_seed_everywhere(&mut admin).await;
    let bad_alpha = results
        .get_results(v1::GetResultsRequest {
            experiment_id: "reco_ymal_v1".into(),
            alpha: 0.7,
            ..Default::default()
        })
        .await
        .expect_err("alpha too large");
    assert_eq!(bad_alpha.code(), Code::InvalidArgument);
    assert_eq!(field_of(&bad_alpha), "alpha");

    let unknown = results
        .get_results(v1::GetResultsRequest {
            experiment_id: "no_such_experiment".into(),
            alpha: 0.0,
            ..Default::default()
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
}

/// Exposed units and units with an add-to-cart (the primary metric's
/// value times the units), over every variant.
fn units_and_carts(results: &v1::GetResultsResponse) -> (u64, f64) {
    let units = results.variants.iter().map(|v| v.exposed_units).sum();
    let carted: f64 = results
        .variants
        .iter()
        .map(|v| v.metrics[0].value * v.exposed_units as f64)
        .sum();
    (units, carted.round())
}

#[tokio::test]
async fn get_results_counts_assigned_units_and_their_add_to_carts_per_variant() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let mut admin = server.admin().await;
    launch_seed_everywhere(&mut admin).await;
    wait_until_assign_is_current(channel.clone()).await;

    let assigned = assign_users(channel.clone(), "u", 400).await;
    assert_eq!(assigned.len(), 400, "traffic is 100%");
    // Every third user adds to cart; the expected rate per variant follows.
    let mut outcomes = Vec::new();
    let mut carts = std::collections::HashMap::<&str, (u64, u64)>::new();
    for (index, (user, variant)) in assigned.iter().enumerate() {
        let entry = carts.entry(variant.as_str()).or_default();
        entry.0 += 1;
        if index % 3 == 0 {
            entry.1 += 1;
            outcomes.push(outcome(user, v1::OutcomeType::AddToCart, 0));
        }
    }
    // A retried batch is counted once.
    log_outcomes(channel.clone(), outcomes.clone()).await;
    log_outcomes(channel.clone(), outcomes.clone()).await;

    let expected_carts = outcomes.len() as f64;
    let results = results_when(channel.clone(), "reco_ymal_v1", |results| {
        units_and_carts(results) == (400, expected_carts)
    })
    .await;
    assert_eq!(results.variants[0].variant, "control");
    assert!(results.variants[0].is_control);
    for variant in &results.variants {
        let (units, carted) = carts[variant.variant.as_str()];
        assert_eq!(variant.exposed_units, units);
        let primary = &variant.metrics[0];
        assert_eq!(primary.metric, "add_to_cart_rate");
        assert_eq!(primary.role, v1::MetricRole::Primary as i32);
        assert!((primary.value - carted as f64 / units as f64).abs() < 1e-12);
    }
    let treatment = &results.variants[1].metrics[0];
    let interval = treatment.absolute_interval.expect("interval");
    assert!(interval.lower <= treatment.absolute_difference);
    assert!(treatment.absolute_difference <= interval.upper);
    assert!((interval.level - 0.95).abs() < 1e-12);
    let sample_ratio = results.sample_ratio.expect("sample ratio check");
    assert!(!sample_ratio.mismatch, "{sample_ratio:?}");
    assert!(
        results.sanity_checks.iter().all(|check| check.passed),
        "{:?}",
        results.sanity_checks
    );
    assert_eq!(results.multiple_comparison_correction, "holm");
    assert!(results.data_freshness_time.is_some());
}

#[tokio::test]
async fn a_guardrail_breach_stops_the_experiment_and_changes_assign_answers_without_admin_calls() {
    let server = TestServer::start_with(&["--guardrail-interval", "1s"]).await;
    let channel = server.channel().await;
    let mut admin = server.admin().await;
    create_and_start(&mut admin, bounce_guarded_seed()).await;
    wait_until_assign_is_current(channel.clone()).await;

    // Treatment bounces twice as often: one page view for most of its
    // users, two or more for most of control's.
    let assigned = assign_users(channel.clone(), "g", 1200).await;
    log_outcomes(channel.clone(), treatment_bounces(&assigned)).await;

    // Nobody calls the admin from here on: the monitor stops it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stopped = loop {
        let current = admin
            .get_experiment(v1::GetExperimentRequest {
                id: "reco_ymal_v1".into(),
            })
            .await
            .expect("get")
            .into_inner()
            .experiment
            .expect("experiment");
        if current.status == v1::ExperimentStatus::Stopped as i32 {
            break current;
        }
        assert!(Instant::now() < deadline, "the guardrail never fired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(stopped.updated_by, "guardrail");

    let revisions = admin
        .list_experiment_revisions(v1::ListExperimentRevisionsRequest {
            id: "reco_ymal_v1".into(),
            ..Default::default()
        })
        .await
        .expect("revisions")
        .into_inner()
        .revisions;
    let newest = &revisions[0];
    assert_eq!(newest.author, "guardrail");
    assert_eq!(newest.action, v1::RevisionAction::Stop as i32);
    assert!(
        newest.reason.contains("bounce_rate") && newest.reason.contains("mSPRT"),
        "{}",
        newest.reason
    );

    // Assign follows the new config: the treatment's users get no variant.
    wait_until_assign_is_current(channel.clone()).await;
    let (treated, _) = assigned
        .iter()
        .find(|(_, variant)| variant == "treatment")
        .expect("a treated user");
    let answer = AssignmentServiceClient::new(channel.clone())
        .assign(ymal_request(treated, &format!("s-{treated}")))
        .await
        .expect("assign")
        .into_inner();
    assert!(answer.variant.is_empty(), "{answer:?}");
    assert!(answer.assignments.is_empty(), "{answer:?}");

    let results = results_when(channel, "reco_ymal_v1", |_| true).await;
    let guardrail = &results.guardrails[0];
    assert_eq!(guardrail.state, v1::GuardrailState::Breached as i32);
    assert!(guardrail.relative_difference > 0.5, "{guardrail:?}");
}

#[tokio::test]
async fn results_are_rebuilt_from_the_event_log_after_a_restart() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let mut admin = server.admin().await;
    launch_seed_everywhere(&mut admin).await;
    wait_until_assign_is_current(channel.clone()).await;
    let assigned = assign_users(channel.clone(), "r", 120).await;
    let outcomes: Vec<v1::Outcome> = assigned
        .iter()
        .step_by(2)
        .map(|(user, _)| outcome(user, v1::OutcomeType::AddToCart, 0))
        .collect();
    let carts = outcomes.len() as f64;
    log_outcomes(channel.clone(), outcomes).await;
    let counted = units_and_carts;
    let before = results_when(channel, "reco_ymal_v1", |results| {
        counted(results) == (120, carts)
    })
    .await;

    let data_dir = server.stop().await;
    let server = TestServer::start_in(data_dir, &[]).await;
    let after = results_when(server.channel().await, "reco_ymal_v1", |results| {
        counted(results) == (120, carts)
    })
    .await;
    assert_eq!(before.variants, after.variants);
    assert_eq!(before.sample_ratio, after.sample_ratio);
}

/// An exposure of `user` to the seed experiment's `variant` at `time`,
/// without a unit type (the experiment buckets by user when there is
/// one).
fn exposure(event_id: String, user: &str, variant: &str, time: SystemTime) -> v1::Exposure {
    v1::Exposure {
        event_id,
        experiment_id: "reco_ymal_v1".into(),
        variant: variant.into(),
        user_id: user.into(),
        session_id: format!("s-{user}"),
        unit_type: v1::UnitType::Unspecified as i32,
        placement: "you_may_also_like".into(),
        page_type: "product_detail".into(),
        revision: 2,
        timestamp: Some(time.into()),
    }
}

/// Logs one new unit's exposure and its add-to-cart, the way a page that
/// logs on render does; the position the add-to-cart reached.
async fn log_unit(events: &mut EventServiceClient<Channel>, user: &str, variant: &str) -> u64 {
    let exposed = events
        .log_exposures(v1::LogExposuresRequest {
            exposures: vec![exposure(
                format!("{user}-exposure"),
                user,
                variant,
                SystemTime::now(),
            )],
        })
        .await
        .expect("log exposure")
        .into_inner();
    assert_eq!(exposed.accepted_count, 1, "{:?}", exposed.rejections);
    let carted = events
        .log_outcomes(v1::LogOutcomesRequest {
            outcomes: vec![outcome(user, v1::OutcomeType::AddToCart, 0)],
        })
        .await
        .expect("log outcome")
        .into_inner();
    assert_eq!(carted.accepted_count, 1, "{:?}", carted.rejections);
    assert!(carted.position > exposed.position, "positions grow");
    carted.position
}

#[tokio::test]
async fn get_results_with_the_position_of_an_acknowledged_batch_includes_it_every_time() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    launch_seed_everywhere(&mut server.admin().await).await;
    let mut events = EventServiceClient::new(channel.clone());
    let mut results = ResultsServiceClient::new(channel);
    let mut included = 0;
    for index in 0..100_u64 {
        let variant = if index % 2 == 0 {
            "control"
        } else {
            "treatment"
        };
        let position = log_unit(&mut events, &format!("ryw-{index}"), variant).await;
        let answer = results_through(&mut results, position).await;
        assert!(answer.counted_position >= position, "{answer:?}");
        // Every unit so far, and every one of them with its add-to-cart.
        if units_and_carts(&answer) == (index + 1, (index + 1) as f64) {
            included += 1;
        }
    }
    assert_eq!(included, 100, "calls whose answer held their own batch");
}

#[tokio::test]
async fn get_results_refuses_a_position_past_the_log_and_says_how_far_behind_it_is() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    launch_seed_everywhere(&mut server.admin().await).await;
    let mut events = EventServiceClient::new(channel.clone());
    let position = log_unit(&mut events, "behind-1", "control").await;
    let mut results = ResultsServiceClient::new(channel);
    let future = results
        .get_results(v1::GetResultsRequest {
            experiment_id: "reco_ymal_v1".into(),
            min_position: position + 1_000_000_000,
            ..Default::default()
        })
        .await
        .expect_err("past the log");
    assert_eq!(future.code(), Code::InvalidArgument);
    assert_eq!(field_of(&future), "min_position");
    let answer = results_through(&mut results, position).await;
    assert_eq!(answer.counted_position, position);
    assert_eq!((answer.pending_events, answer.lag_seconds), (0, 0.0));
}

/// Exposures of `units` new units, all at `time`, for the seed experiment.
fn exposures_at(prefix: &str, units: usize, time: SystemTime) -> Vec<v1::Exposure> {
    (0..units)
        .map(|index| {
            let variant = if index % 2 == 0 {
                "control"
            } else {
                "treatment"
            };
            let user = format!("{prefix}-user-{index}");
            exposure(format!("{prefix}-{index}"), &user, variant, time)
        })
        .collect()
}

/// The seed experiment's results once they include `position`.
async fn results_through(
    results: &mut ResultsServiceClient<Channel>,
    position: u64,
) -> v1::GetResultsResponse {
    results
        .get_results(v1::GetResultsRequest {
            experiment_id: "reco_ymal_v1".into(),
            min_position: position,
            ..Default::default()
        })
        .await
        .expect("results")
        .into_inner()
}

async fn timeline(channel: Channel) -> v1::GetResultsTimelineResponse {
    ResultsServiceClient::new(channel)
        .get_results_timeline(v1::GetResultsTimelineRequest {
            experiment_id: "reco_ymal_v1".into(),
            granularity: v1::TimelineGranularity::Hour as i32,
            alpha: 0.05,
        })
        .await
        .expect("timeline")
        .into_inner()
}

fn units_at(point: &v1::TimelinePoint) -> u64 {
    point
        .variants
        .iter()
        .map(|variant| variant.exposed_units)
        .sum()
}

#[tokio::test]
async fn the_timeline_holds_cumulative_results_at_every_hour_end_and_is_rebuilt_after_a_restart() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    launch_seed_everywhere(&mut server.admin().await).await;
    let hour = |back: u64| {
        // The middle of the hour `back` hours before this one.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        SystemTime::UNIX_EPOCH + Duration::from_secs((now / 3600 - back) * 3600 + 1800)
    };
    let mut events = EventServiceClient::new(channel.clone());
    let mut position = 0;
    // 40 units three hours ago, 60 two hours ago, 80 an hour ago.
    for (back, units) in [(3, 40), (2, 60), (1, 80)] {
        let answer = events
            .log_exposures(v1::LogExposuresRequest {
                exposures: exposures_at(&format!("h{back}"), units, hour(back)),
            })
            .await
            .expect("log")
            .into_inner();
        assert!(answer.rejections.is_empty(), "{:?}", answer.rejections);
        position = answer.position;
    }
    results_through(&mut ResultsServiceClient::new(channel.clone()), position).await;
    let before = timeline(channel).await;
    let cumulative: Vec<u64> = before.points.iter().map(units_at).collect();
    assert_eq!(
        cumulative,
        [40, 100, 180],
        "the ends of the two hours crossed since the first unit, then now: {before:?}"
    );
    assert!(before.points.last().is_some_and(|point| point.current));
    assert!(before.points[..2].iter().all(|point| !point.current));
    let boundary = |point: &v1::TimelinePoint| point.time.expect("time").seconds;
    assert_eq!(
        boundary(&before.points[1]) - boundary(&before.points[0]),
        3600
    );

    let data = server.stop().await;
    let server = TestServer::start_in(data, &[]).await;
    let after = results_when(server.channel().await, "reco_ymal_v1", |results| {
        units_and_carts(results).0 == 180
    })
    .await;
    assert_eq!(after.counted_position, position);
    let rebuilt = timeline(server.channel().await).await;
    assert_eq!(
        rebuilt.points[..2],
        before.points[..2],
        "the hour ends, rebuilt from the log"
    );
}

#[tokio::test]
async fn plan_experiment_gives_the_z_tests_sample_size_and_days_and_names_bad_inputs() {
    let server = TestServer::start().await;
    let mut results = ResultsServiceClient::new(server.channel().await);
    let rate = |traffic_percent, weights: Vec<u32>| v1::PlanExperimentRequest {
        baseline: Some(v1::plan_experiment_request::Baseline::BaselineRate(0.1)),
        minimum_detectable_effect: 0.05,
        weights,
        traffic_percent,
        daily_units: 10_000.0,
        ..Default::default()
    };
    let planned = results
        .plan_experiment(rate(0, Vec::new()))
        .await
        .expect("plan")
        .into_inner();
    // statsmodels: zt_ind_solve_power(effect_size=0.005 / 0.3, alpha=0.05,
    // power=0.8) = 56511.80 control units (testdata/reference.json).
    assert_eq!(planned.control_units, 56_512);
    assert_eq!(planned.units_per_treatment, 56_512);
    assert_eq!(planned.total_units, 113_024);
    assert_eq!(planned.eligible_units, 113_024);
    assert!((planned.days - 11.3024).abs() < 1e-9, "{planned:?}");
    assert_eq!((planned.alpha, planned.power), (0.05, 0.8));
    assert!((planned.absolute_effect - 0.005).abs() < 1e-15);

    let fifth = results
        .plan_experiment(rate(20, vec![50, 50]))
        .await
        .expect("plan")
        .into_inner();
    assert_eq!(fifth.total_units, planned.total_units);
    assert_eq!(
        fifth.eligible_units, 565_120,
        "a fifth of the traffic: five times the units"
    );

    let mean = results
        .plan_experiment(v1::PlanExperimentRequest {
            baseline: Some(v1::plan_experiment_request::Baseline::BaselineMean(
                v1::MeanBaseline {
                    mean: 3.2,
                    variance: 41.5,
                },
            )),
            minimum_detectable_effect: 0.1,
            ..Default::default()
        })
        .await
        .expect("plan")
        .into_inner();
    assert!((mean.effect_size - 0.32 / 41.5_f64.sqrt()).abs() < 1e-12);
    assert_eq!(mean.days, 0.0, "no daily units given: no days");

    let no_baseline = results
        .plan_experiment(v1::PlanExperimentRequest {
            minimum_detectable_effect: 0.05,
            ..Default::default()
        })
        .await
        .expect_err("no baseline");
    assert_eq!(no_baseline.code(), Code::InvalidArgument);
    assert_eq!(field_of(&no_baseline), "baseline");
    let mut too_sure = rate(0, Vec::new());
    too_sure.power = 1.5;
    let refused = results
        .plan_experiment(too_sure)
        .await
        .expect_err("power 1.5");
    assert_eq!(field_of(&refused), "power");
}

#[tokio::test]
async fn plan_experiment_for_a_started_experiment_says_where_it_stands() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    launch_seed_everywhere(&mut server.admin().await).await;
    let mut events = EventServiceClient::new(channel.clone());
    // 100 new units an hour over the last six hours, half in each arm.
    let now = SystemTime::now();
    let mut exposures = Vec::new();
    for hour in 0..6_u64 {
        for index in 0..100_u64 {
            let user = format!("plan-{hour}-{index}");
            let variant = if index % 2 == 0 {
                "control"
            } else {
                "treatment"
            };
            let at = now - Duration::from_secs((6 - hour) * 3_600 - index * 30);
            exposures.push(exposure(format!("{user}-exposure"), &user, variant, at));
        }
    }
    let logged = events
        .log_exposures(v1::LogExposuresRequest { exposures })
        .await
        .expect("log")
        .into_inner();
    assert_eq!(logged.accepted_count, 600, "{:?}", logged.rejections);
    let mut results = ResultsServiceClient::new(channel);
    // Read your writes: the plan's view counts every exposure logged.
    results
        .get_results(v1::GetResultsRequest {
            experiment_id: "reco_ymal_v1".into(),
            min_position: logged.position,
            ..Default::default()
        })
        .await
        .expect("counted");
    let planned = results
        .plan_experiment(v1::PlanExperimentRequest {
            baseline: Some(v1::plan_experiment_request::Baseline::BaselineRate(0.1)),
            minimum_detectable_effect: 0.05,
            experiment_id: "reco_ymal_v1".into(),
            ..Default::default()
        })
        .await
        .expect("plan")
        .into_inner();
    let progress = planned.progress.expect("a started experiment's progress");
    assert_eq!(progress.control_units, 300);
    assert!(
        progress.minimum_detectable_effect > 0.5,
        "300 units per arm detect only large changes: {progress:?}"
    );

    // The rate it saw, recomputed from the timeline it read: units gained
    // since the first point of the last 24 hours, per day (traffic 100%).
    let timeline = results
        .get_results_timeline(v1::GetResultsTimelineRequest {
            experiment_id: "reco_ymal_v1".into(),
            ..Default::default()
        })
        .await
        .expect("timeline")
        .into_inner();
    let at = |point: &v1::TimelinePoint| {
        let time = point.time.expect("a time");
        (
            time.seconds as f64 + f64::from(time.nanos) * 1e-9,
            point.variants.iter().map(|v| v.exposed_units).sum::<u64>() as f64,
        )
    };
    let (first, last) = (
        at(timeline.points.first().expect("points")),
        at(timeline.points.last().expect("now")),
    );
    let expected = (last.1 - first.1) / (last.0 - first.0) * 86_400.0;
    assert!(
        (progress.observed_daily_units - expected).abs() < 1e-6 * expected,
        "{progress:?} against {expected}"
    );
    // Roughly 100 units an hour.
    assert!(
        (1_800.0..3_000.0).contains(&progress.observed_daily_units),
        "{progress:?}"
    );
    // Days left: the eligible units still to come at that rate.
    let left = (planned.eligible_units as f64 - 600.0) / progress.observed_daily_units;
    assert!(
        (progress.days_left - left).abs() < 1e-6 * left,
        "{progress:?}"
    );
    assert!(
        (planned.days - planned.eligible_units as f64 / progress.observed_daily_units).abs() < 1e-6
    );
}

#[tokio::test]
async fn plan_experiment_before_launch_takes_the_days_from_a_placements_units_of_the_last_day() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    launch_seed_everywhere(&mut server.admin().await).await;
    let mut events = EventServiceClient::new(channel.clone());
    // 120 units on the seed's placement over the last 20 hours, the first
    // 30 exposed again an hour later: 120 distinct units.
    let now = SystemTime::now();
    let mut exposures = exposures_at("placed", 120, now - Duration::from_secs(20 * 3_600));
    exposures.extend(
        exposures_at("placed", 30, now - Duration::from_secs(3_600))
            .into_iter()
            .map(|mut again| {
                again.event_id.push_str("-again");
                again
            }),
    );
    let logged = events
        .log_exposures(v1::LogExposuresRequest { exposures })
        .await
        .expect("log")
        .into_inner();
    assert_eq!(logged.accepted_count, 150, "{:?}", logged.rejections);
    let mut results = ResultsServiceClient::new(channel);
    results_through(&mut results, logged.position).await;
    let request = |placement: &str| v1::PlanExperimentRequest {
        baseline: Some(v1::plan_experiment_request::Baseline::BaselineRate(0.1)),
        minimum_detectable_effect: 0.05,
        traffic_percent: 20,
        placement: placement.into(),
        ..Default::default()
    };
    let planned = results
        .plan_experiment(request("you_may_also_like"))
        .await
        .expect("plan")
        .into_inner();
    assert_eq!(
        planned.daily_units_source,
        v1::DailyUnitsSource::Placement as i32
    );
    assert_eq!(planned.daily_units, 120.0, "{planned:?}");
    // 113,024 units at a fifth of the traffic: 565,120 eligible units, at
    // 120 a day.
    assert_eq!(planned.eligible_units, 565_120);
    assert!(
        (planned.days - 565_120.0 / 120.0).abs() < 1e-9,
        "{planned:?}"
    );
    assert!(planned.progress.is_none(), "no experiment named");

    let given = results
        .plan_experiment(v1::PlanExperimentRequest {
            daily_units: 10_000.0,
            ..request("you_may_also_like")
        })
        .await
        .expect("plan")
        .into_inner();
    assert_eq!(
        (given.daily_units_source, given.daily_units),
        (v1::DailyUnitsSource::Given as i32, 10_000.0),
        "given daily units win"
    );

    let unseen = results
        .plan_experiment(request("checkout_banner"))
        .await
        .expect_err("a placement without exposures");
    assert_eq!(unseen.code(), Code::InvalidArgument);
    assert_eq!(field_of(&unseen), "placement");
    assert!(
        unseen.message().contains("no exposures") && unseen.message().contains("24 hours"),
        "{unseen:?}"
    );

    let invalid_on_unseen = results
        .plan_experiment(v1::PlanExperimentRequest {
            minimum_detectable_effect: 0.0,
            ..request("checkout_banner")
        })
        .await
        .expect_err("no effect to detect");
    assert_eq!(invalid_on_unseen.code(), Code::InvalidArgument);
    assert_eq!(
        field_of(&invalid_on_unseen),
        "minimum_detectable_effect",
        "the request is checked before the placement: {invalid_on_unseen:?}"
    );
}

/// Benjamini-Hochberg's adjustment of two p-values, in their order.
fn benjamini_hochberg_of_two(p: [f64; 2]) -> [f64; 2] {
    let (low, high) = (p[0].min(p[1]), p[0].max(p[1]));
    let adjusted_low = (2.0 * low).min(high);
    if p[0] <= p[1] {
        [adjusted_low, high]
    } else {
        [high, adjusted_low]
    }
}

#[tokio::test]
async fn a_sequential_experiment_with_benjamini_hochberg_answers_always_valid_intervals_and_says_so()
 {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let mut admin = server.admin().await;
    launch_seed_everywhere(&mut admin).await;
    wait_until_assign_is_current(channel.clone()).await;

    let assigned = assign_users(channel.clone(), "s", 400).await;
    let mut outcomes = Vec::new();
    for (index, (user, _)) in assigned.iter().enumerate() {
        if index % 3 == 0 {
            outcomes.push(outcome(user, v1::OutcomeType::AddToCart, 0));
        }
        if index % 5 == 0 {
            let mut purchase = outcome(user, v1::OutcomeType::Purchase, 0);
            purchase.value = 10.0 + (index % 7) as f64;
            purchase.currency = "USD".into();
            outcomes.push(purchase);
        }
    }
    let carts = assigned.iter().step_by(3).count() as f64;
    log_outcomes(channel.clone(), outcomes).await;
    let fixed = results_when(channel.clone(), "reco_ymal_v1", |results| {
        units_and_carts(results) == (400, carts)
    })
    .await;
    assert_eq!(fixed.interval_kind, v1::IntervalKind::FixedHorizon as i32);
    assert_eq!(fixed.multiple_comparison_correction, "holm");

    // Both may change on a running experiment, by name in the mask.
    let current = admin
        .get_experiment(v1::GetExperimentRequest {
            id: "reco_ymal_v1".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .experiment
        .expect("experiment");
    let updated = admin
        .update_experiment(v1::UpdateExperimentRequest {
            experiment: Some(v1::Experiment {
                sequential: true,
                multiple_comparison_correction: v1::MultipleComparisonCorrection::BenjaminiHochberg
                    as i32,
                sequential_tuning_parameter: 20_000,
                ..current
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![
                    "sequential".into(),
                    "multiple_comparison_correction".into(),
                    "sequential_tuning_parameter".into(),
                ],
            }),
            reason: "peek daily".into(),
            rerandomize: false,
        })
        .await
        .expect("update")
        .into_inner()
        .experiment
        .expect("experiment");
    assert!(updated.sequential);

    let sequential = results_when(channel.clone(), "reco_ymal_v1", |results| {
        results.interval_kind == v1::IntervalKind::Sequential as i32
    })
    .await;
    assert_eq!(
        sequential.multiple_comparison_correction,
        "benjamini_hochberg"
    );
    assert_eq!(fixed.sequential_tuning_parameter, 5_000);
    assert_eq!(sequential.sequential_tuning_parameter, 20_000);
    let computed = v1::ComparisonStatus::Computed as i32;
    let mut secondary = Vec::new();
    for (before, after) in fixed.variants[1]
        .metrics
        .iter()
        .zip(&sequential.variants[1].metrics)
    {
        assert_eq!(before.metric, after.metric);
        if after.comparison_status != computed {
            continue;
        }
        // The same estimate and standard error, a wider interval.
        assert_eq!(before.absolute_difference, after.absolute_difference);
        assert_eq!(before.standard_error, after.standard_error);
        assert!(after.standard_error > 0.0, "{}", after.metric);
        let (was, is) = (
            before.absolute_interval.expect("interval"),
            after.absolute_interval.expect("interval"),
        );
        assert!(
            is.lower < was.lower && was.upper < is.upper,
            "{}: {is:?} is not wider than {was:?}",
            after.metric
        );
        if after.role == v1::MetricRole::Secondary as i32 {
            secondary.push((after.p_value, after.adjusted_p_value));
        }
    }
    // Conversion rate and revenue per session are compared (no
    // impressions were logged, so CTR is not): adjusted together.
    assert_eq!(secondary.len(), 2, "{secondary:?}");
    let expected = benjamini_hochberg_of_two([secondary[0].0, secondary[1].0]);
    for ((_, adjusted), expected) in secondary.iter().zip(expected) {
        assert!((adjusted - expected).abs() < 1e-15, "{adjusted} {expected}");
    }
    let points = timeline(channel).await.points;
    assert!(!points.is_empty());
    assert!(
        points
            .iter()
            .all(|point| point.interval_kind == v1::IntervalKind::Sequential as i32)
    );
}

#[tokio::test]
async fn results_adjust_proportions_and_means_for_the_days_before_exposure_and_carry_the_unadjusted_ones()
 {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let mut admin = server.admin().await;
    launch_seed_everywhere(&mut admin).await;
    wait_until_assign_is_current(channel.clone()).await;

    // Two days ago (a whole UTC day before today's exposures, inside the
    // 14-day pre-period), every user bought for an amount of its own...
    let users: Vec<String> = (0..400).map(|index| format!("c-{index}")).collect();
    let spend = |index: usize| 10.0 + (index * 37 % 101) as f64;
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    let before: Vec<v1::Outcome> = users
        .iter()
        .enumerate()
        .map(|(index, user)| {
            let mut purchase = outcome(user, v1::OutcomeType::Purchase, 0);
            purchase.value = spend(index);
            purchase.currency = "USD".into();
            purchase.timestamp = Some(two_days_ago.into());
            purchase
        })
        .collect();
    log_outcomes(channel.clone(), before).await;
    // ...and, once exposed, spends about as much again.
    let mut assign = AssignmentServiceClient::new(channel.clone());
    let mut after = Vec::new();
    for (index, user) in users.iter().enumerate() {
        let answer = assign
            .assign(ymal_request(user, &format!("s-{user}")))
            .await
            .expect("assign")
            .into_inner();
        assert!(!answer.variant.is_empty());
        let mut purchase = outcome(user, v1::OutcomeType::Purchase, 1);
        purchase.value = spend(index) * 1.1 + (index % 5) as f64;
        purchase.currency = "USD".into();
        after.push(purchase);
    }
    log_outcomes(channel.clone(), after).await;

    let revenue = |results: &v1::GetResultsResponse, variant: usize| {
        results.variants[variant]
            .metrics
            .iter()
            .find(|metric| metric.metric == "revenue_per_session")
            .cloned()
            .expect("revenue_per_session is reported")
    };
    let results = results_when(channel.clone(), "reco_ymal_v1", |results| {
        results
            .variants
            .iter()
            .map(|v| v.exposed_units)
            .sum::<u64>()
            == 400
            && results.variants.len() == 2
            && revenue(results, 1).value > 0.0
            && revenue(results, 0).value > 0.0
    })
    .await;
    let treatment = revenue(&results, 1);
    let cuped = treatment.cuped.expect("a mean is adjusted");
    assert!(cuped.applied);
    assert_eq!(cuped.pre_period_days, 14);
    assert!(
        cuped.theta > 1.0,
        "spend follows the past: theta {}",
        cuped.theta
    );
    assert!(!cuped.variance_reduction_undefined);
    assert!(
        cuped.variance_reduction > 0.9,
        "the past explains nearly all: {}",
        cuped.variance_reduction
    );
    assert_eq!(
        cuped.unadjusted_status,
        v1::ComparisonStatus::Computed as i32
    );
    // The adjusted interval is the narrower.
    assert!(treatment.standard_error < cuped.unadjusted_standard_error);
    let width = |interval: &v1::ConfidenceInterval| interval.upper - interval.lower;
    assert!(
        width(&treatment.absolute_interval.expect("adjusted interval"))
            < width(
                &cuped
                    .unadjusted_absolute_interval
                    .expect("unadjusted interval")
            )
    );
    let control = revenue(&results, 0)
        .cuped
        .expect("the control carries it too");
    assert_eq!(
        control.unadjusted_status,
        v1::ComparisonStatus::Control as i32
    );
    assert!(control.variance_reduction_undefined);
    // A ratio is not adjusted.
    let ctr = results.variants[1]
        .metrics
        .iter()
        .find(|metric| metric.metric == "ctr")
        .expect("ctr is reported");
    assert!(ctr.cuped.is_none());
    assert!(
        results
            .sanity_checks
            .iter()
            .any(|check| check.name == "pre_period_outcomes_kept" && check.passed)
    );
}
