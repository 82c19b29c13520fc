//! Assignment as the rec service sees it: determinism, splits, ramps,
//! layers, unit fallback, eligibility, schedule, overrides, shipping.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use exp_core::{
    AttributeOperator, AttributeRule, BucketingUnit, Error, Experiment, LoggedIn, ParamSchema,
    QaOverride, Status, UnitType, allocation,
    evaluate::{AssignmentReason, CompiledSnapshot, Evaluation, RequestContext},
    examples::seed_experiment,
    lifecycle::{self, Change, Transition, Update},
    serving::ServingConfig,
};
use serde_json::json;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn change() -> Change<'static> {
    Change {
        now: now(),
        author: "test",
        reason: "test",
    }
}

/// A running experiment with `weights`, on the seed's placement, placed
/// next to `others` (its layer's allocation).
fn running(
    id: &str,
    layer: &str,
    traffic: u32,
    weights: &[u32],
    others: &[Experiment],
) -> Experiment {
    let mut proposal = seed_experiment();
    proposal.id = id.into();
    proposal.layer = layer.into();
    proposal.traffic_percent = traffic;
    proposal.variants = weights
        .iter()
        .enumerate()
        .map(|(index, weight)| exp_core::Variant {
            name: format!("v{index}"),
            description: String::new(),
            weight: *weight,
            params: serde_json::from_value(json!({"rerank_weight_style": index as f64 / 10.0}))
                .expect("map"),
        })
        .collect();
    proposal.control_variant = "v0".into();
    let draft = lifecycle::create(&proposal, &ParamSchema::builtin(), change()).expect("valid");
    let mut started = lifecycle::transition(&draft, &Transition::Start, change()).expect("start");
    allocation::allocate(&mut started, Some(&draft), others).expect("fits");
    started
}

fn ramp(experiment: &Experiment, traffic: u32, others: &[Experiment]) -> Experiment {
    let mut proposed = experiment.clone();
    proposed.traffic_percent = traffic;
    let mut next = lifecycle::update(
        experiment,
        Update {
            proposed: &proposed,
            mask: &[],
            rerandomize: false,
        },
        &ParamSchema::builtin(),
        change(),
    )
    .expect("ramp");
    allocation::allocate(&mut next, Some(experiment), others).expect("fits");
    next
}

fn snapshot(experiments: &[Experiment], overrides: &[QaOverride]) -> CompiledSnapshot {
    CompiledSnapshot::compile(&ServingConfig::build(7, experiments, overrides, now()))
}

fn ymal() -> RequestContext {
    RequestContext {
        placement: "you_may_also_like".into(),
        ..RequestContext::default()
    }
}

fn assign(snapshot: &CompiledSnapshot, user: &str) -> Evaluation {
    snapshot
        .evaluate(user, "", &ymal(), now())
        .expect("valid request")
}

fn variant_of(snapshot: &CompiledSnapshot, user: &str, experiment: &str) -> Option<String> {
    assign(snapshot, user)
        .assignments
        .into_iter()
        .find(|a| &*a.experiment_id == experiment)
        .map(|a| a.variant.to_string())
}

/// Chi-square statistic of observed counts against expected shares.
fn chi_square(observed: &[f64], shares: &[f64]) -> f64 {
    let total: f64 = observed.iter().sum();
    observed
        .iter()
        .zip(shares)
        .map(|(o, share)| {
            let expected = total * share;
            (o - expected).powi(2) / expected
        })
        .sum()
}

// Critical values of the chi-square distribution at p = 0.001.
const CHI2_DF1_P001: f64 = 10.828;
const CHI2_DF2_P001: f64 = 13.816;

#[test]
fn the_same_request_gets_the_same_answer_every_time() {
    let experiment = running("exp_a", "", 100, &[50, 50], &[]);
    let first = snapshot(std::slice::from_ref(&experiment), &[]);
    let second = snapshot(&[experiment], &[]);
    for user in (0..1000).map(|i| format!("u{i}")) {
        let answer = assign(&first, &user);
        assert_eq!(answer, assign(&first, &user));
        assert_eq!(
            answer,
            assign(&second, &user),
            "a recompiled snapshot answers the same"
        );
    }
}

#[test]
fn observed_splits_match_90_10_and_80_10_10_weights() {
    for weights in [vec![90, 10], vec![80, 10, 10]] {
        let experiment = running("split", "", 100, &weights, &[]);
        let snapshot = snapshot(&[experiment], &[]);
        let mut counts = vec![0.0; weights.len()];
        for user in 0..100_000 {
            let variant =
                variant_of(&snapshot, &format!("user-{user}"), "split").expect("everyone is in");
            counts[variant[1..].parse::<usize>().expect("v<index>")] += 1.0;
        }
        let shares: Vec<f64> = weights.iter().map(|w| f64::from(*w) / 100.0).collect();
        let statistic = chi_square(&counts, &shares);
        let critical = if weights.len() == 2 {
            CHI2_DF1_P001
        } else {
            CHI2_DF2_P001
        };
        assert!(
            statistic < critical,
            "{weights:?}: counts {counts:?}, chi2 {statistic}"
        );
    }
}

#[test]
fn a_skewed_split_would_be_caught_by_the_same_check() {
    // The check above can fail: 52/48 observed against 50/50 over 100k.
    assert!(chi_square(&[52_000.0, 48_000.0], &[0.5, 0.5]) > CHI2_DF1_P001);
}

#[test]
fn traffic_percent_admits_its_share_of_units() {
    let experiment = running("share", "", 10, &[50, 50], &[]);
    let snapshot = snapshot(&[experiment], &[]);
    let inside = (0..100_000)
        .filter(|user| variant_of(&snapshot, &format!("user-{user}"), "share").is_some())
        .count() as f64;
    let statistic = chi_square(&[inside, 100_000.0 - inside], &[0.1, 0.9]);
    assert!(
        statistic < CHI2_DF1_P001,
        "{inside} of 100000 inside at 10%"
    );
}

#[test]
fn ramping_10_to_50_to_100_never_moves_a_unit_that_was_in() {
    let at_10 = running("ramped", "", 10, &[50, 50], &[]);
    let at_50 = ramp(&at_10, 50, &[]);
    let at_100 = ramp(&at_50, 100, &[]);
    let stages: Vec<CompiledSnapshot> = [&at_10, &at_50, &at_100]
        .into_iter()
        .map(|e| snapshot(std::slice::from_ref(e), &[]))
        .collect();
    let mut entered = [0usize; 3];
    for user in (0..20_000).map(|i| format!("user-{i}")) {
        let answers: Vec<Option<String>> = stages
            .iter()
            .map(|s| variant_of(s, &user, "ramped"))
            .collect();
        for (stage, answer) in answers.iter().enumerate() {
            if answer.is_some() {
                entered[stage] += 1;
            }
        }
        for window in answers.windows(2) {
            if let Some(before) = &window[0] {
                assert_eq!(
                    window[1].as_ref(),
                    Some(before),
                    "{user} moved during a ramp"
                );
            }
        }
    }
    assert!(
        entered[0] < entered[1] && entered[1] < entered[2],
        "{entered:?}"
    );
    assert_eq!(entered[2], 20_000);
}

#[test]
fn ramping_down_removes_units_without_moving_the_rest() {
    let at_50 = running("down", "", 50, &[50, 50], &[]);
    let at_10 = ramp(&at_50, 10, &[]);
    let (before, after) = (snapshot(&[at_50], &[]), snapshot(&[at_10], &[]));
    for user in (0..20_000).map(|i| format!("user-{i}")) {
        if let Some(kept) = variant_of(&after, &user, "down") {
            assert_eq!(variant_of(&before, &user, "down"), Some(kept), "{user}");
        }
    }
}

#[test]
fn experiments_of_one_layer_never_share_a_unit() {
    let first = running("first", "shared", 50, &[50, 50], &[]);
    let second = running(
        "second",
        "shared",
        50,
        &[50, 50],
        std::slice::from_ref(&first),
    );
    let snapshot = snapshot(&[first, second], &[]);
    let mut in_either = 0;
    for user in (0..20_000).map(|i| format!("user-{i}")) {
        let answer = assign(&snapshot, &user);
        assert!(
            answer.assignments.len() <= 1,
            "{user} is in two experiments of one layer"
        );
        in_either += answer.assignments.len();
    }
    assert_eq!(in_either, 20_000, "two halves of a layer cover everyone");
}

#[test]
fn experiments_of_different_layers_are_independent() {
    let first = running("first", "layer_a", 100, &[50, 50], &[]);
    let mut second = running("second", "layer_b", 100, &[50, 50], &[]);
    for variant in &mut second.variants {
        variant.params = serde_json::from_value(json!({"price_band": "tight"})).expect("map");
    }
    let snapshot = snapshot(&[first, second], &[]);
    let mut table = HashMap::new();
    for user in (0..40_000).map(|i| format!("user-{i}")) {
        let answer = assign(&snapshot, &user);
        assert_eq!(answer.assignments.len(), 2);
        *table
            .entry((
                answer.assignments[0].variant.to_string(),
                answer.assignments[1].variant.to_string(),
            ))
            .or_insert(0.0) += 1.0;
    }
    // Chi-square test of independence on the 2x2 cross-tab (df = 1).
    let total: f64 = table.values().sum();
    let row = |v: &str| {
        table
            .iter()
            .filter(|((a, _), _)| a == v)
            .map(|(_, n)| n)
            .sum::<f64>()
    };
    let column = |v: &str| {
        table
            .iter()
            .filter(|((_, b), _)| b == v)
            .map(|(_, n)| n)
            .sum::<f64>()
    };
    let mut statistic = 0.0;
    for a in ["v0", "v1"] {
        for b in ["v0", "v1"] {
            let expected = row(a) * column(b) / total;
            let observed = table
                .get(&(a.to_owned(), b.to_owned()))
                .copied()
                .unwrap_or(0.0);
            statistic += (observed - expected).powi(2) / expected;
        }
    }
    assert!(
        statistic < CHI2_DF1_P001,
        "cross-tab {table:?}, chi2 {statistic}"
    );
    let params = assign(&snapshot, "user-1").params();
    assert!(
        params.contains_key("rerank_weight_style") && params.contains_key("price_band"),
        "params merge"
    );
}

#[test]
fn the_unit_is_the_user_when_known_else_the_session() {
    let experiment = running("fallback", "", 100, &[50, 50], &[]);
    let snapshot = snapshot(&[experiment], &[]);
    let with_user = snapshot.evaluate("u-1", "s-1", &ymal(), now()).expect("ok");
    assert_eq!(with_user.unit_type, UnitType::User);
    assert_eq!(with_user.assignments[0].unit_type, UnitType::User);
    let user_only = snapshot.evaluate("u-1", "", &ymal(), now()).expect("ok");
    assert_eq!(
        with_user.assignments, user_only.assignments,
        "the session does not matter when the user is known"
    );
    let anonymous = snapshot.evaluate("", "s-1", &ymal(), now()).expect("ok");
    assert_eq!(anonymous.unit_type, UnitType::Session);
    assert_eq!(anonymous.assignments[0].unit_type, UnitType::Session);
    match snapshot.evaluate("", "", &ymal(), now()) {
        Err(Error::InvalidArgument(violations)) => assert_eq!(violations[0].field, "user_id"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn user_only_and_session_only_experiments_bucket_by_their_unit() {
    let mut by_user = running("by_user", "layer_one", 100, &[50, 50], &[]);
    by_user.bucketing_unit = BucketingUnit::User;
    let mut by_session = running("by_session", "layer_two", 100, &[50, 50], &[]);
    by_session.bucketing_unit = BucketingUnit::Session;
    by_session
        .variants
        .iter_mut()
        .for_each(|v| v.params.clear());
    let snapshot = snapshot(&[by_user, by_session], &[]);
    let anonymous = snapshot.evaluate("", "s-1", &ymal(), now()).expect("ok");
    let ids: Vec<&str> = anonymous
        .assignments
        .iter()
        .map(|a| &*a.experiment_id)
        .collect();
    assert_eq!(
        ids,
        ["by_session"],
        "no user id: the user-only experiment skips the request"
    );
    let logged_in = snapshot.evaluate("u-1", "s-1", &ymal(), now()).expect("ok");
    let session_assignment = logged_in
        .assignments
        .iter()
        .find(|a| &*a.experiment_id == "by_session")
        .expect("in");
    assert_eq!(session_assignment.unit_type, UnitType::Session);
}

/// A change to an eligible request that makes it ineligible.
type Variation = dyn Fn(&mut RequestContext);

#[test]
fn eligibility_rules_decide_who_enters() {
    let mut experiment = running("targeted", "", 100, &[50, 50], &[]);
    experiment.eligibility.countries = vec!["US".into()];
    experiment.eligibility.devices = vec!["mobile".into()];
    experiment.eligibility.page_types = vec!["product_detail".into()];
    experiment.eligibility.logged_in = LoggedIn::LoggedIn;
    experiment.eligibility.attribute_rules = vec![
        AttributeRule {
            attribute: "app_version".into(),
            operator: Some(AttributeOperator::SemverGreaterThanOrEqual),
            values: vec!["5.2.0".into()],
        },
        AttributeRule {
            attribute: "segment".into(),
            operator: Some(AttributeOperator::RegexMatch),
            values: vec!["^(returning|loyal)$".into()],
        },
        AttributeRule {
            attribute: "cart_items".into(),
            operator: Some(AttributeOperator::LessThan),
            values: vec!["10".into()],
        },
        AttributeRule {
            attribute: "tier".into(),
            operator: Some(AttributeOperator::NotIn),
            values: vec!["staff".into()],
        },
    ];
    let snapshot = snapshot(&[experiment], &[]);
    let eligible = RequestContext {
        page_type: "product_detail".into(),
        placement: "you_may_also_like".into(),
        country: "US".into(),
        device: "mobile".into(),
        attributes: [
            ("app_version", "5.10.1"),
            ("segment", "loyal"),
            ("cart_items", "3"),
            ("tier", "gold"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    };
    let enters = |user: &str, context: &RequestContext| {
        !snapshot
            .evaluate(user, "s", context, now())
            .expect("ok")
            .assignments
            .is_empty()
    };
    assert!(enters("u-1", &eligible));
    assert!(!enters("", &eligible), "anonymous");
    let variations: Vec<Box<Variation>> = vec![
        Box::new(|c| c.placement = "cart".into()),
        Box::new(|c| c.country = "GB".into()),
        Box::new(|c| c.device = "desktop".into()),
        Box::new(|c| c.page_type = "home".into()),
        Box::new(|c| {
            c.attributes.insert("app_version".into(), "5.1.9".into());
        }),
        Box::new(|c| {
            c.attributes.insert("segment".into(), "new".into());
        }),
        Box::new(|c| {
            c.attributes.insert("cart_items".into(), "12".into());
        }),
        Box::new(|c| {
            c.attributes.insert("tier".into(), "staff".into());
        }),
        Box::new(|c| {
            c.attributes.remove("tier");
        }),
    ];
    for (index, vary) in variations.iter().enumerate() {
        let mut context = eligible.clone();
        vary(&mut context);
        assert!(
            !enters("u-1", &context),
            "variation {index} should not enter: {context:?}"
        );
    }
}

#[test]
fn only_the_schedule_window_assigns() {
    let mut experiment = running("timed", "", 100, &[50, 50], &[]);
    experiment.schedule.start_time = Some(now() + Duration::from_secs(60));
    experiment.schedule.end_time = Some(now() + Duration::from_secs(120));
    experiment.status = Status::Scheduled;
    let snapshot = snapshot(&[experiment], &[]);
    let at = |offset: u64| {
        snapshot
            .evaluate("u-1", "", &ymal(), now() + Duration::from_secs(offset))
            .expect("ok")
            .assignments
            .len()
    };
    assert_eq!((at(0), at(59), at(60), at(119), at(120)), (0, 0, 1, 1, 0));
}

#[test]
fn paused_draft_and_completed_experiments_assign_nobody() {
    for status in [Status::Paused, Status::Draft, Status::Completed] {
        let mut experiment = running("idle", "", 100, &[50, 50], &[]);
        experiment.status = status;
        let snapshot = snapshot(&[experiment], &[]);
        assert!(assign(&snapshot, "u-1").assignments.is_empty(), "{status}");
    }
}

#[test]
fn a_stopped_experiment_that_shipped_gives_everyone_the_shipped_params() {
    let running = running("shipped", "", 10, &[50, 50], &[]);
    let stopped = lifecycle::transition(
        &running,
        &Transition::Stop {
            ship_variant: Some("v1".into()),
        },
        change(),
    )
    .expect("stop");
    let snapshot = snapshot(&[stopped], &[]);
    for user in (0..200).map(|i| format!("user-{i}")) {
        let answer = assign(&snapshot, &user);
        assert_eq!(answer.assignments.len(), 1, "everyone, not just the 10%");
        assert_eq!(&*answer.assignments[0].variant, "v1");
        assert_eq!(answer.assignments[0].reason, AssignmentReason::Shipped);
    }
}

fn qa(
    experiment: &str,
    unit_type: UnitType,
    unit: &str,
    variant: &str,
    expire: Option<SystemTime>,
) -> QaOverride {
    QaOverride {
        experiment_id: experiment.into(),
        unit_type,
        unit_id: unit.into(),
        variant: variant.into(),
        expire_time: expire,
        reason: String::new(),
        create_time: now(),
        created_by: "qa".into(),
    }
}

#[test]
fn qa_overrides_win_over_bucketing_until_they_expire() {
    let experiment = running("forced", "", 1, &[50, 50], &[]);
    let draft = lifecycle::create(
        &Experiment {
            id: "not_started".into(),
            layer: "elsewhere".into(),
            ..seed_experiment()
        },
        &ParamSchema::builtin(),
        change(),
    )
    .expect("draft");
    let overrides = [
        qa(
            "forced",
            UnitType::User,
            "qa-user",
            "v1",
            Some(now() + Duration::from_secs(60)),
        ),
        qa("forced", UnitType::Session, "qa-session", "v0", None),
        qa("not_started", UnitType::User, "qa-user", "treatment", None),
    ];
    let snapshot = snapshot(&[experiment, draft], &overrides);
    let user = snapshot
        .evaluate("qa-user", "", &ymal(), now())
        .expect("ok");
    let forced: Vec<(&str, &str, AssignmentReason)> = user
        .assignments
        .iter()
        .map(|a| (&*a.experiment_id, &*a.variant, a.reason))
        .collect();
    assert_eq!(
        forced,
        [
            ("not_started", "treatment", AssignmentReason::Override),
            ("forced", "v1", AssignmentReason::Override)
        ],
        "overrides apply even to a 1% experiment and to a draft under QA"
    );
    let session = snapshot
        .evaluate("", "qa-session", &ymal(), now())
        .expect("ok");
    assert_eq!(&*session.assignments[0].variant, "v0");
    assert_eq!(session.assignments[0].unit_type, UnitType::Session);
    let later = snapshot
        .evaluate("qa-user", "", &ymal(), now() + Duration::from_secs(61))
        .expect("ok");
    assert!(
        later
            .assignments
            .iter()
            .all(|a| &*a.experiment_id != "forced" || a.reason != AssignmentReason::Override),
        "expired"
    );
}

#[test]
fn two_layers_may_not_set_the_same_param_on_one_placement() {
    let first = running("first", "layer_a", 50, &[50, 50], &[]);
    let second = running("second", "layer_b", 50, &[50, 50], &[]);
    match lifecycle::check_param_conflicts(&second, [&first]) {
        Err(Error::InvalidArgument(violations)) => {
            assert!(
                violations[0].field.ends_with("params.rerank_weight_style"),
                "{violations:?}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let same_layer = running(
        "third",
        "layer_a",
        50,
        &[50, 50],
        std::slice::from_ref(&first),
    );
    assert!(
        lifecycle::check_param_conflicts(&same_layer, [&first]).is_ok(),
        "one layer never overlaps"
    );
    let mut elsewhere = second.clone();
    elsewhere.eligibility.placements = vec!["cart".into()];
    assert!(
        lifecycle::check_param_conflicts(&elsewhere, [&first]).is_ok(),
        "different placements"
    );
}

#[test]
fn only_experiments_of_the_requested_placement_are_looked_at() {
    let mut others: Vec<Experiment> = (0..50)
        .map(|i| {
            let mut e = running(&format!("other_{i}"), "", 100, &[50, 50], &[]);
            e.eligibility.placements = vec![format!("slot_{i}")];
            e
        })
        .collect();
    others.push(running("ymal", "", 100, &[50, 50], &[]));
    let snapshot = snapshot(&others, &[]);
    let answer = assign(&snapshot, "u-1");
    let ids: Vec<&str> = answer
        .assignments
        .iter()
        .map(|a| &*a.experiment_id)
        .collect();
    assert_eq!(ids, ["ymal"]);
    assert_eq!(answer.config_version, 7);
}

#[test]
fn a_shipped_experiment_conflicts_even_with_its_own_layer() {
    let first = running("first", "shared", 50, &[50, 50], &[]);
    let shipped = lifecycle::transition(
        &first,
        &Transition::Stop {
            ship_variant: Some("v1".into()),
        },
        change(),
    )
    .expect("stop");
    let second = running("second", "shared", 50, &[50, 50], &[]);
    assert!(
        lifecycle::check_param_conflicts(&second, [&shipped]).is_err(),
        "a shipped variant reaches every unit, so it meets the layer's new experiment"
    );
}

#[test]
fn one_layer_buckets_by_one_unit() {
    let first = running("first", "shared", 50, &[50, 50], &[]);
    let mut second = running("second", "shared", 0, &[50, 50], &[]);
    second.bucketing_unit = BucketingUnit::Session;
    second.traffic_percent = 50;
    match allocation::allocate(&mut second, None, [&first]) {
        Err(Error::InvalidArgument(violations)) => {
            assert_eq!(violations[0].field, "bucketing_unit")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn oversized_request_fields_are_refused_with_their_path() {
    let snapshot = snapshot(&[running("exp", "", 100, &[50, 50], &[])], &[]);
    let mut context = ymal();
    context.country = "X".repeat(257);
    context
        .attributes
        .insert("segment".into(), "v".repeat(1025));
    match snapshot.evaluate("u-1", "", &context, now()) {
        Err(Error::InvalidArgument(violations)) => {
            let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
            assert_eq!(
                fields,
                ["context.country", "context.attributes[\"segment\"]"]
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_snapshot_says_whether_an_experiment_hands_out_variants_now() {
    let live = running("live_one", "", 100, &[50, 50], &[]);
    let mut paused = running("paused_one", "other", 100, &[50, 50], &[]);
    paused.status = Status::Paused;
    let mut ended = running("ended_one", "third", 100, &[50, 50], &[]);
    ended.schedule.end_time = Some(now() - Duration::from_secs(60));
    let snapshot = snapshot(&[live.clone(), paused, ended], &[]);

    let state = snapshot.experiment("live_one", now()).expect("held");
    assert!(state.live);
    assert_eq!(state.revision, live.revision);
    assert_eq!(
        &*state.layer, "live_one",
        "a layer of its own is named by the id"
    );
    assert!(!snapshot.experiment("paused_one", now()).expect("held").live);
    assert!(!snapshot.experiment("ended_one", now()).expect("held").live);
    assert_eq!(snapshot.experiment("never_heard_of", now()), None);
}
