//! Holdouts as assignment sees them: held-out units never get an
//! experiment of a held-out layer or placement, everyone else gets exactly
//! what they got without the holdout, the held-out share is the configured
//! one, both groups are reported for exposures; and the rules a holdout
//! obeys.

use std::time::{Duration, SystemTime};

use exp_core::{
    Experiment, Holdout, HoldoutStatus, ParamSchema, QaOverride, UnitType, allocation,
    evaluate::{AssignmentReason, CompiledSnapshot, Evaluation, RequestContext},
    examples::seed_experiment,
    holdout::{self, HoldoutUpdate},
    lifecycle::{self, Change, Transition},
    serving::ServingConfig,
};

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

/// A running 50/50 experiment at `traffic` percent in `layer` on
/// `placements` (empty: everywhere), placed next to `others`.
fn running(
    id: &str,
    layer: &str,
    traffic: u32,
    placements: &[&str],
    others: &[Experiment],
) -> Experiment {
    let mut proposal = seed_experiment();
    proposal.id = id.into();
    proposal.layer = layer.into();
    proposal.traffic_percent = traffic;
    proposal.eligibility.placements = placements.iter().map(|p| (*p).to_owned()).collect();
    let draft = lifecycle::create(&proposal, &ParamSchema::builtin(), change()).expect("valid");
    let mut started = lifecycle::transition(&draft, &Transition::Start, change()).expect("start");
    allocation::allocate(&mut started, Some(&draft), others).expect("fits");
    started
}

fn holdout(id: &str, share_basis_points: u32, layers: &[&str], placements: &[&str]) -> Holdout {
    let proposed = Holdout {
        id: id.into(),
        description: "what the recommender changes of 2027 add up to".into(),
        share_basis_points,
        salt: String::new(),
        layers: layers.iter().map(|l| (*l).to_owned()).collect(),
        placements: placements.iter().map(|p| (*p).to_owned()).collect(),
        status: HoldoutStatus::Active,
        revision: 0,
        create_time: now(),
        update_time: now(),
        updated_by: String::new(),
    };
    holdout::create(&proposed, now(), "test").expect("a valid holdout")
}

fn snapshot(
    experiments: &[Experiment],
    overrides: &[QaOverride],
    holdouts: &[Holdout],
) -> CompiledSnapshot {
    CompiledSnapshot::compile(
        &ServingConfig::build(7, experiments, overrides, now()).with_holdouts(holdouts),
    )
}

fn on(placement: &str) -> RequestContext {
    RequestContext {
        placement: placement.into(),
        ..RequestContext::default()
    }
}

fn assign(snapshot: &CompiledSnapshot, user: &str, placement: &str) -> Evaluation {
    snapshot
        .evaluate(user, "", &on(placement), now())
        .expect("valid request")
}

/// The 99.9% interval of a binomial count of `n` trials at `p` (normal
/// approximation, z = 3.29; n p (1 - p) is in the thousands here).
fn binomial_interval(n: u64, p: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let half_width = 3.29 * (n as f64 * p * (1.0 - p)).sqrt();
    (mean - half_width, mean + half_width)
}

/// Two layers on "you may also like": `ranking` (two experiments of 50%
/// each, so every unit is in one) and `diversity` (one experiment at
/// 100%).
fn two_layers() -> Vec<Experiment> {
    let ranking_a = running("ranking_a", "ranking", 50, &["you_may_also_like"], &[]);
    let ranking_b = running(
        "ranking_b",
        "ranking",
        50,
        &["you_may_also_like"],
        std::slice::from_ref(&ranking_a),
    );
    let diversity = running("diversity_a", "diversity", 100, &["you_may_also_like"], &[]);
    vec![ranking_a, ranking_b, diversity]
}

#[test]
fn held_out_units_never_get_an_experiment_of_a_held_out_layer_over_100000_units() {
    let experiments = two_layers();
    let held = holdout("ranking_holdout", 1_000, &["ranking"], &[]);
    let without = snapshot(&experiments, &[], &[]);
    let with = snapshot(&experiments, &[], std::slice::from_ref(&held));

    let units = 100_000_u64;
    let mut held_out = 0_u64;
    let mut ranking_kept_from_held_out = 0_u64;
    for index in 0..units {
        let user = format!("u-{index}");
        let before = assign(&without, &user, "you_may_also_like");
        let after = assign(&with, &user, "you_may_also_like");
        assert_eq!(after.holdouts.len(), 1, "{user}: the request is in scope");
        let member = &after.holdouts[0];
        assert_eq!(&*member.holdout_id, "ranking_holdout");
        assert_eq!(member.unit_type, UnitType::User);
        assert_eq!(member.held_out, held.holds_out(&user));
        if member.held_out {
            held_out += 1;
            assert_eq!(member.group(), "holdout");
            assert!(
                after.assignments.iter().all(|a| &*a.layer != "ranking"),
                "{user} is held out but got {:?}",
                after.assignments
            );
            if before.assignments.iter().any(|a| &*a.layer == "ranking") {
                ranking_kept_from_held_out += 1;
            }
            // The other layer is untouched.
            let diversity = |e: &Evaluation| {
                e.assignments
                    .iter()
                    .find(|a| &*a.layer == "diversity")
                    .cloned()
            };
            assert_eq!(diversity(&after), diversity(&before), "{user}");
            assert!(diversity(&after).is_some(), "{user}: diversity is at 100%");
            let marker: Vec<_> = after
                .assignments
                .iter()
                .filter(|a| a.reason == AssignmentReason::Holdout)
                .collect();
            assert_eq!(marker.len(), 1, "{user}: one HOLDOUT assignment");
            assert_eq!(marker[0].holdout_id.as_deref(), Some("ranking_holdout"));
            assert_eq!(marker[0].revision, held.revision);
            assert!(marker[0].experiment_id.is_empty() && marker[0].variant.is_empty());
            assert!(marker[0].params.is_empty());
            assert_eq!(
                after.primary().map(|a| a.experiment_id.to_string()),
                Some("diversity_a".to_owned()),
                "the primary answer is an experiment, never the holdout"
            );
        } else {
            assert_eq!(member.group(), "rest");
            assert_eq!(
                after.assignments, before.assignments,
                "{user} is not held out: exactly what it got without the holdout"
            );
        }
    }
    assert_eq!(
        ranking_kept_from_held_out, held_out,
        "every held-out unit would have had a ranking experiment"
    );
    let (low, high) = binomial_interval(units, held.share());
    assert!(
        (low..=high).contains(&(held_out as f64)),
        "{held_out} of {units} held out, outside the 99.9% interval [{low:.0}, {high:.0}] of a 10% share"
    );
}

#[test]
fn a_placement_holdout_keeps_every_experiment_of_that_placement_from_its_units() {
    let ranking = running("ranking_a", "ranking", 100, &["you_may_also_like"], &[]);
    let everywhere = running("diversity_a", "diversity", 100, &[], &[]);
    let experiments = [ranking, everywhere];
    let held = holdout("ymal_holdout", 2_000, &[], &["you_may_also_like"]);
    let without = snapshot(&experiments, &[], &[]);
    let with = snapshot(&experiments, &[], std::slice::from_ref(&held));

    let units = 20_000_u64;
    let mut held_out = 0_u64;
    for index in 0..units {
        let user = format!("u-{index}");
        let after = assign(&with, &user, "you_may_also_like");
        let before = assign(&without, &user, "you_may_also_like");
        assert_eq!(after.holdouts.len(), 1, "the placement is named");
        if held.holds_out(&user) {
            held_out += 1;
            assert_eq!(
                after.assignments.len(),
                1,
                "{user}: only the HOLDOUT assignment, no experiment: {:?}",
                after.assignments
            );
            assert_eq!(after.assignments[0].reason, AssignmentReason::Holdout);
            assert!(after.primary().is_none());
        } else {
            assert_eq!(after.assignments, before.assignments, "{user}");
        }
        // Elsewhere the holdout does not apply: same answer as without it,
        // and the request is not in its scope.
        let elsewhere = assign(&with, &user, "home_feed");
        assert_eq!(
            elsewhere.assignments,
            assign(&without, &user, "home_feed").assignments
        );
        assert_eq!(elsewhere.assignments.len(), 1, "diversity runs everywhere");
        assert!(elsewhere.holdouts.is_empty());
    }
    let (low, high) = binomial_interval(units, held.share());
    assert!(
        (low..=high).contains(&(held_out as f64)),
        "{held_out} of {units} held out, outside [{low:.0}, {high:.0}]"
    );
}

#[test]
fn a_held_out_unit_gets_no_shipped_variant_of_a_held_out_layer() {
    let ranking = running("ranking_a", "ranking", 10, &["you_may_also_like"], &[]);
    let shipped = lifecycle::transition(
        &ranking,
        &Transition::Stop {
            ship_variant: Some("treatment".into()),
        },
        change(),
    )
    .expect("stop and ship");
    let held = holdout("ranking_holdout", 5_000, &["ranking"], &[]);
    let with = snapshot(&[shipped], &[], std::slice::from_ref(&held));
    let (mut held_seen, mut rest_seen) = (0, 0);
    for index in 0..1_000 {
        let user = format!("u-{index}");
        let answer = assign(&with, &user, "you_may_also_like");
        let reasons: Vec<_> = answer.assignments.iter().map(|a| a.reason).collect();
        if held.holds_out(&user) {
            held_seen += 1;
            assert_eq!(reasons, [AssignmentReason::Holdout], "{user}");
        } else {
            rest_seen += 1;
            assert_eq!(reasons, [AssignmentReason::Shipped], "{user}");
        }
    }
    assert!(held_seen > 0 && rest_seen > 0);
}

#[test]
fn a_qa_override_wins_over_the_holdout() {
    let experiments = two_layers();
    let held = holdout("ranking_holdout", 5_000, &["ranking"], &[]);
    let user = (0..)
        .map(|index| format!("u-{index}"))
        .find(|user| held.holds_out(user))
        .expect("half the units are held out");
    let forced = QaOverride {
        experiment_id: "ranking_a".into(),
        unit_type: UnitType::User,
        unit_id: user.clone(),
        variant: "treatment".into(),
        expire_time: None,
        reason: String::new(),
        create_time: now(),
        created_by: "qa".into(),
    };
    let with = snapshot(&experiments, &[forced], std::slice::from_ref(&held));
    let answer = assign(&with, &user, "you_may_also_like");
    let ranking_a = answer
        .assignments
        .iter()
        .find(|a| &*a.experiment_id == "ranking_a")
        .expect("the override applies");
    assert_eq!(ranking_a.reason, AssignmentReason::Override);
    assert_eq!(&*ranking_a.variant, "treatment");
    assert!(
        answer
            .assignments
            .iter()
            .all(|a| &*a.experiment_id != "ranking_b"),
        "the other experiment of the layer is still held out"
    );
}

#[test]
fn a_request_outside_the_holdouts_scope_is_not_counted_in_either_group() {
    let ranking = running("ranking_a", "ranking", 100, &["you_may_also_like"], &[]);
    let held = holdout("ranking_holdout", 1_000, &["ranking"], &[]);
    let with = snapshot(&[ranking], &[], std::slice::from_ref(&held));
    for index in 0..100 {
        let user = format!("u-{index}");
        assert!(
            assign(&with, &user, "checkout").holdouts.is_empty(),
            "no experiment of the layer applies on checkout"
        );
        assert_eq!(assign(&with, &user, "you_may_also_like").holdouts.len(), 1);
    }
}

#[test]
fn an_ended_holdout_leaves_the_serving_config_and_deltas_carry_holdouts() {
    let experiments = two_layers();
    let held = holdout("ranking_holdout", 1_000, &["ranking"], &[]);
    let before = ServingConfig::build(7, &experiments, &[], now());
    let with = before.clone().with_holdouts(std::slice::from_ref(&held));
    assert_eq!(with.holdouts.len(), 1);
    assert_eq!(with.holdouts[0].salt, "ranking_holdout:holdout");

    let delta = before.delta_to(&with);
    assert_eq!(delta.upserted_holdouts, with.holdouts);
    assert!(!delta.is_empty());
    let mut applied = before.clone();
    applied.apply(&delta, 7);
    assert_eq!(applied, with);

    let ended = holdout::end(&held, now(), "test").expect("end");
    let after = before.clone().with_holdouts(&[ended]);
    assert!(after.holdouts.is_empty(), "an ended holdout serves nothing");
    let delta = with.delta_to(&after);
    assert_eq!(delta.removed_holdout_ids, ["ranking_holdout"]);
    let mut applied = with.clone();
    applied.apply(&delta, 8);
    assert_eq!(applied.holdouts, []);
}

// === rules ===

fn refused_fields(holdout: &Holdout) -> Vec<String> {
    holdout::validate(holdout)
        .into_iter()
        .map(|v| v.field)
        .collect()
}

#[test]
fn a_holdout_names_at_least_one_layer_or_placement() {
    let mut bad = holdout("ranking_holdout", 1_000, &["ranking"], &[]);
    bad.layers.clear();
    assert_eq!(refused_fields(&bad), ["layers"]);
    let error = holdout::create(&bad, now(), "test").expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("at least one layer or placement")
    );
}

#[test]
fn a_holdouts_share_is_1_to_5000_basis_points() {
    for share in [0, 5_001, 10_000] {
        let mut bad = holdout("ranking_holdout", 1_000, &["ranking"], &[]);
        bad.share_basis_points = share;
        assert_eq!(refused_fields(&bad), ["share_basis_points"], "{share}");
    }
    for share in [1, 5_000] {
        let mut good = holdout("ranking_holdout", 1_000, &["ranking"], &[]);
        good.share_basis_points = share;
        assert_eq!(refused_fields(&good), Vec::<String>::new(), "{share}");
    }
}

#[test]
fn a_holdouts_id_has_the_format_of_an_experiment_id() {
    let mut bad = holdout("ranking_holdout", 1_000, &["ranking"], &[]);
    bad.id = "Ranking Holdout".into();
    assert_eq!(refused_fields(&bad), ["id"]);
}

#[test]
fn duplicate_or_malformed_layers_and_placements_are_refused_by_index() {
    let mut bad = holdout(
        "ranking_holdout",
        1_000,
        &["ranking"],
        &["you_may_also_like"],
    );
    bad.layers = vec!["ranking".into(), "ranking".into(), "Bad Layer".into()];
    bad.placements = vec!["you_may_also_like".into(), "you_may_also_like".into()];
    assert_eq!(
        refused_fields(&bad),
        ["layers[1]", "layers[2]", "placements[1]"]
    );
}

#[test]
fn a_holdouts_salt_and_share_are_fixed_at_creation_and_survive_updates() {
    let held = holdout("ranking_holdout", 1_000, &["ranking"], &[]);
    assert_eq!(held.revision, 1);
    assert_eq!(held.salt, "ranking_holdout:holdout");
    // Another share would move units between the groups: refused.
    let refused = holdout::update(
        &held,
        HoldoutUpdate {
            share_basis_points: Some(2_000),
            ..HoldoutUpdate::default()
        },
        now(),
        "test",
    )
    .expect_err("the share is fixed");
    assert!(
        format!("{refused:?}").contains("share_basis_points"),
        "{refused:?}"
    );
    let wider = holdout::update(
        &held,
        HoldoutUpdate {
            share_basis_points: Some(1_000),
            placements: Some(vec!["home_feed".into()]),
            ..HoldoutUpdate::default()
        },
        now(),
        "test",
    )
    .expect("update");
    assert_eq!(wider.revision, 2);
    assert_eq!(wider.salt, held.salt);
    assert_eq!(wider.share_basis_points, 1_000);
    // The same units are held out.
    for index in 0..10_000 {
        let user = format!("u-{index}");
        assert_eq!(held.holds_out(&user), wider.holds_out(&user), "{user}");
    }
    let ended = holdout::end(&wider, now(), "test").expect("end");
    assert_eq!(ended.status, HoldoutStatus::Ended);
    let again = holdout::update(&ended, HoldoutUpdate::default(), now(), "test")
        .expect_err("an ended holdout changes no more");
    assert!(matches!(again, exp_core::Error::FailedPrecondition(_)));
}
