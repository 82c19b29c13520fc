//! How events become units and sums: the sanity checks, late exposures,
//! outcomes shared between experiments, placements and attribution, and
//! metric configs that ask for a rebuild.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use common::{
    CONTROL, Rng, START_MICROS, analyzer_for, check, running_experiment, simulate, user_exposure,
    user_outcome, variant_of,
};
use exp_analysis::Analyzer;
use exp_core::{
    Experiment, Guardrail, GuardrailAction, event::Outcome, lifecycle, metrics::OutcomeType,
};

#[test]
fn sanity_checks_count_units_in_two_variants_wrong_variants_and_exposures_outside_the_schedule() {
    let mut experiment = running_experiment();
    let start = SystemTime::UNIX_EPOCH + Duration::from_micros(START_MICROS as u64);
    experiment.schedule.start_time = Some(start);
    let mut analyzer = analyzer_for(experiment.clone());
    simulate(
        &mut analyzer,
        &experiment,
        &mut Rng(9),
        500,
        [CONTROL, CONTROL],
        "ok",
    );
    let report = analyzer
        .report(&experiment.id, 0.05)
        .expect("the experiment has exposures");
    assert!(
        report.sanity_checks.iter().all(|check| check.passed),
        "{:?}",
        report.sanity_checks
    );

    // One unit shown the other variant too, one exposure naming the wrong
    // variant for its unit, one exposure before the start time.
    let exposure = |user: &str, variant: usize, time_micros: i64| {
        user_exposure(
            "reco_ymal_v1",
            ["control", "treatment"][variant],
            user,
            time_micros,
        )
    };
    let right = variant_of(&experiment, "ok-u1");
    analyzer.exposure(&exposure("ok-u1", 1 - right, START_MICROS + 10));
    let stranger = variant_of(&experiment, "stranger");
    analyzer.exposure(&exposure("stranger", 1 - stranger, START_MICROS + 10));
    let early = variant_of(&experiment, "early");
    analyzer.exposure(&exposure("early", early, START_MICROS - 1));

    let report = analyzer
        .report(&experiment.id, 0.05)
        .expect("the experiment has exposures");
    assert_eq!(check(&report, "units_in_several_variants").offending, 1);
    assert_eq!(
        check(&report, "variant_disagrees_with_bucketing").offending,
        2
    );
    assert_eq!(check(&report, "exposures_outside_schedule").offending, 1);
    assert!(!check(&report, "exposures_outside_schedule").passed);
}

#[test]
fn outcomes_count_only_from_the_first_exposure_and_wait_for_a_late_exposure() {
    let experiment = running_experiment();
    let mut analyzer = analyzer_for(experiment.clone());
    let user = "late-unit";
    let variant = variant_of(&experiment, user);
    let add_to_cart =
        |time_micros| user_outcome(user, time_micros, OutcomeType::AddToCart, &[], 0.0);
    // Arrives before its exposure, happened after it: counted.
    analyzer.outcome(&add_to_cart(START_MICROS + 5));
    analyzer.exposure(&user_exposure(
        &experiment.id,
        &experiment.variants[variant].name,
        user,
        START_MICROS,
    ));
    let value = |analyzer: &mut Analyzer| {
        analyzer
            .report(&experiment.id, 0.05)
            .expect("the experiment has exposures")
            .variants[variant]
            .metrics[0]
            .value
            .expect("present in the simulation")
    };
    assert_eq!(value(&mut analyzer), 1.0);

    // A second unit whose only add-to-cart happened before its exposure.
    let other = "early-cart";
    let other_variant = variant_of(&experiment, other);
    analyzer.exposure(&user_exposure(
        &experiment.id,
        &experiment.variants[other_variant].name,
        other,
        START_MICROS + 100,
    ));
    analyzer.outcome(&user_outcome(
        other,
        START_MICROS + 50,
        OutcomeType::AddToCart,
        &[],
        0.0,
    ));
    let report = analyzer
        .report(&experiment.id, 0.05)
        .expect("the experiment has exposures");
    let carts: f64 = report
        .variants
        .iter()
        .map(|variant| variant.metrics[0].value.unwrap_or(0.0) * variant.exposed_units as f64)
        .sum();
    assert_eq!(carts, 1.0, "only the post-exposure add-to-cart counts");
}

#[test]
fn an_outcome_counts_once_in_every_experiment_its_unit_is_exposed_in() {
    let experiments: Vec<Experiment> = ["exp_a", "exp_b", "exp_c"]
        .into_iter()
        .map(|id| {
            let mut experiment = running_experiment();
            experiment.id = id.into();
            experiment.randomization = Some(lifecycle::randomization(&experiment, 2));
            experiment
        })
        .collect();
    let catalog = experiments.clone();
    let mut analyzer = Analyzer::new(Box::new(move |id| {
        catalog
            .iter()
            .find(|experiment| experiment.id == id)
            .cloned()
    }));
    let shopper = "shopper";
    // In the first experiment only, in the other arm from the shopper's,
    // and exposed first: the shopper's place there differs from its place
    // in the others.
    let bystander = (0..)
        .map(|index| format!("bystander-{index}"))
        .find(|id| variant_of(&experiments[0], id) != variant_of(&experiments[0], shopper))
        .expect("some id lands in the other arm");
    analyzer.exposure(&user_exposure(
        &experiments[0].id,
        &experiments[0].variants[variant_of(&experiments[0], &bystander)].name,
        &bystander,
        START_MICROS,
    ));
    // The shopper is in all three (more than a unit's inline places),
    // exposed twice to each.
    for experiment in &experiments {
        for time_micros in [START_MICROS, START_MICROS + 1] {
            analyzer.exposure(&user_exposure(
                &experiment.id,
                &experiment.variants[variant_of(experiment, shopper)].name,
                shopper,
                time_micros,
            ));
        }
    }
    analyzer.outcome(&user_outcome(
        shopper,
        START_MICROS + 10,
        OutcomeType::Purchase,
        &[],
        7.0,
    ));
    for (experiment, units) in experiments.iter().zip([2, 1, 1]) {
        assert_eq!(
            analyzer.unit_count(&experiment.id),
            units,
            "{}",
            experiment.id
        );
        let report = analyzer
            .report(&experiment.id, 0.05)
            .expect("the experiment has exposures");
        let shopper_arm = variant_of(experiment, shopper);
        for (arm, variant) in report.variants.iter().enumerate() {
            let revenue = variant
                .metrics
                .iter()
                .find(|metric| metric.metric == "revenue_per_session")
                .expect("a secondary metric of the seed")
                .value
                .unwrap_or(0.0)
                * variant.exposed_units as f64;
            let expected = if arm == shopper_arm { 7.0 } else { 0.0 };
            assert_eq!(revenue, expected, "{}, arm {arm}", experiment.id);
        }
    }
}

#[test]
fn a_metric_config_that_changes_the_measures_asks_for_a_rebuild() {
    let experiment = running_experiment();
    let shared = Arc::new(Mutex::new(experiment.clone()));
    let catalog = shared.clone();
    let mut analyzer = Analyzer::new(Box::new(move |id| {
        let experiment = catalog.lock().expect("catalog lock").clone();
        (experiment.id == id).then_some(experiment)
    }));
    simulate(
        &mut analyzer,
        &experiment,
        &mut Rng(19),
        100,
        [CONTROL, CONTROL],
        "rebuild",
    );
    // Moving a metric between roles measures nothing new.
    {
        let mut current = shared.lock().expect("catalog lock");
        current
            .metrics
            .secondary_metrics
            .retain(|name| name != "ctr");
        current.metrics.guardrails.push(Guardrail {
            metric: "ctr".into(),
            threshold: 0.1,
            action: Some(GuardrailAction::Pause),
        });
    }
    assert_eq!(analyzer.refresh(), exp_analysis::Refresh::Updated);
    // A metric reading a measure nobody summed so far does.
    shared
        .lock()
        .expect("catalog lock")
        .metrics
        .secondary_metrics = vec!["page_load_time".into()];
    assert_eq!(analyzer.refresh(), exp_analysis::Refresh::NeedsRebuild);
}

#[test]
fn ctr_counts_recommendations_of_the_experiments_placements_and_add_to_carts_anywhere() {
    let experiment = running_experiment();
    let mut analyzer = analyzer_for(experiment.clone());
    let user = "placed";
    let variant = variant_of(&experiment, user);
    analyzer.exposure(&user_exposure(
        &experiment.id,
        &experiment.variants[variant].name,
        user,
        START_MICROS,
    ));
    let shown: Vec<String> = vec!["sku-1".into(), "sku-2".into()];
    let base = user_outcome(user, START_MICROS + 1, OutcomeType::Click, &[], 0.0);
    for outcome in [
        // Two items shown here, two on the home feed.
        Outcome {
            outcome_type: OutcomeType::Impression,
            item_ids: shown.clone(),
            ..base.clone()
        },
        Outcome {
            outcome_type: OutcomeType::Impression,
            item_ids: shown.clone(),
            placement: "home_feed".into(),
            source_placement: "home_feed".into(),
            ..base.clone()
        },
        // A click here; a click on the product page attributed here; a
        // click on the home feed's recommendations.
        base.clone(),
        Outcome {
            placement: "product_detail".into(),
            ..base.clone()
        },
        Outcome {
            placement: "home_feed".into(),
            source_placement: "home_feed".into(),
            ..base.clone()
        },
        // An add-to-cart on the cart page still counts for the unit.
        Outcome {
            outcome_type: OutcomeType::AddToCart,
            placement: "cart".into(),
            source_placement: String::new(),
            from_recommendation: false,
            ..base.clone()
        },
    ] {
        analyzer.outcome(&outcome);
    }
    let report = analyzer
        .report(&experiment.id, 0.05)
        .expect("the experiment has exposures");
    let value = |name: &str| {
        report.variants[variant]
            .metrics
            .iter()
            .find(|metric| metric.metric == name)
            .and_then(|metric| metric.value)
            .expect("a value")
    };
    assert_eq!(
        value("ctr"),
        1.0,
        "2 clicks attributed here / 2 items shown here"
    );
    assert_eq!(value("add_to_cart_rate"), 1.0);
}

/// Exposed units per variant after feeding `exposures` in that order.
fn arm_counts(experiment: &Experiment, exposures: &[exp_core::event::Exposure]) -> Vec<u64> {
    let mut analyzer = analyzer_for(experiment.clone());
    for exposure in exposures {
        analyzer.exposure(exposure);
    }
    analyzer
        .report(&experiment.id, 0.05)
        .expect("the experiment has exposures")
        .variants
        .iter()
        .map(|variant| variant.exposed_units)
        .collect()
}

#[test]
fn the_earliest_exposure_decides_a_units_arm_whatever_the_arrival_order() {
    let experiment = running_experiment();
    // 220 units each shown both variants: the first 120 control first,
    // the other 100 treatment first, a minute apart.
    let mut exposures = Vec::new();
    for index in 0..220 {
        let user = format!("both-{index}");
        let first = usize::from(index >= 120);
        for (offset, variant) in [(0, first), (60_000_000, 1 - first)] {
            exposures.push(user_exposure(
                &experiment.id,
                &experiment.variants[variant].name,
                &user,
                START_MICROS + offset,
            ));
        }
    }
    let in_order = arm_counts(&experiment, &exposures);
    exposures.reverse();
    let reversed = arm_counts(&experiment, &exposures);
    assert_eq!(in_order, vec![120, 100]);
    assert_eq!(reversed, in_order, "arrival order decided the arm");
}

#[test]
fn an_earlier_exposure_arriving_late_moves_the_unit_and_counts_its_outcomes_since() {
    let mut experiment = running_experiment();
    experiment
        .metrics
        .secondary_metrics
        .push("inventory_exposure_balance".into());
    let mut analyzer = analyzer_for(experiment.clone());
    let user = "moved";
    let treatment = &experiment.variants[1].name;
    let control = &experiment.variants[0].name;
    analyzer.exposure(&user_exposure(
        &experiment.id,
        treatment,
        user,
        START_MICROS + 100,
    ));
    // Before the treatment exposure: refused for now, kept in the window.
    analyzer.outcome(&user_outcome(
        user,
        START_MICROS + 50,
        OutcomeType::AddToCart,
        &[],
        0.0,
    ));
    // Two items shown after the treatment exposure: filed under the
    // treatment's item counts.
    let shown: Vec<String> = vec!["sku-1".into(), "sku-2".into()];
    analyzer.outcome(&user_outcome(
        user,
        START_MICROS + 150,
        OutcomeType::Impression,
        &shown,
        0.0,
    ));
    // The control exposure happened first.
    analyzer.exposure(&user_exposure(&experiment.id, control, user, START_MICROS));
    let report = analyzer
        .report(&experiment.id, 0.05)
        .expect("the experiment has exposures");
    let units: Vec<u64> = report
        .variants
        .iter()
        .map(|variant| variant.exposed_units)
        .collect();
    assert_eq!(units, vec![1, 0]);
    assert_eq!(
        common::metric(&report, 0, "add_to_cart_rate").value,
        Some(1.0),
        "the add-to-cart after the control exposure counts"
    );
    let several = check(&report, "units_in_several_variants");
    assert_eq!(several.offending, 1);
    // What cannot move with the unit is said.
    assert!(
        several.detail.contains("2 item impressions"),
        "{}",
        several.detail
    );
}
