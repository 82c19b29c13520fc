//! What a report says about each comparison with control: computed
//! wherever the method defines it (a control at 0 included), and when
//! not, why; the relative difference undefined on its own when the
//! control's value is 0.

mod common;

use common::{
    START_MICROS, analyzer_for, metric, running_experiment, treatment_metric, user_exposure,
    user_outcome, variant_of,
};
use exp_analysis::{
    Analyzer, GuardrailState,
    report::ComparisonState,
    stats::{NotComputed, Relative},
};
use exp_core::{Experiment, Guardrail, GuardrailAction, metrics::OutcomeType};

/// Exposes `counts[v]` units to variant `v`; their ids, per variant.
fn expose(
    analyzer: &mut Analyzer,
    experiment: &Experiment,
    counts: [usize; 2],
    tag: &str,
) -> [Vec<String>; 2] {
    let mut users: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for index in 0.. {
        if users[0].len() == counts[0] && users[1].len() == counts[1] {
            break;
        }
        let user = format!("{tag}-{index}");
        let variant = variant_of(experiment, &user);
        if users[variant].len() == counts[variant] {
            continue;
        }
        analyzer.exposure(&user_exposure(
            &experiment.id,
            &experiment.variants[variant].name,
            &user,
            START_MICROS,
        ));
        users[variant].push(user);
    }
    users
}

fn add_to_cart(analyzer: &mut Analyzer, user: &str) {
    analyzer.outcome(&user_outcome(
        user,
        START_MICROS + 1,
        OutcomeType::AddToCart,
        &[],
        0.0,
    ));
}

#[test]
fn a_control_without_add_to_carts_still_gets_a_difference_interval_and_p_value() {
    let experiment = running_experiment();
    let mut analyzer = analyzer_for(experiment.clone());
    let users = expose(&mut analyzer, &experiment, [200, 200], "zero");
    for user in &users[1][..10] {
        add_to_cart(&mut analyzer, user);
    }
    let report = analyzer
        .report(&experiment.id, 0.05)
        .expect("the experiment has exposures");
    let result = treatment_metric(&report, "add_to_cart_rate");
    let comparison = result
        .comparison
        .computed()
        .expect("0/200 against 10/200 has a Wald standard error");
    // statsmodels: test_proportions_2indep(10, 200, 0, 200, method="wald")
    // and confint_proportions_2indep(..., method="wald").
    assert!((comparison.absolute - 0.05).abs() < 1e-12, "{comparison:?}");
    assert!((comparison.absolute_interval.0 - 0.019_794_926).abs() < 1e-6);
    assert!((comparison.absolute_interval.1 - 0.080_205_074).abs() < 1e-6);
    assert!((comparison.p_value - 0.001_176_866).abs() < 1e-6);
    assert_eq!(comparison.relative, Relative::ControlIsZero);
    assert_eq!(result.adjusted_p_value, Some(comparison.p_value));
    assert!(result.significant);
    assert_eq!(metric(&report, 0, "add_to_cart_rate").value, Some(0.0));
}

#[test]
fn revenue_against_a_control_without_purchases_is_compared_by_welch() {
    let experiment = running_experiment();
    let mut analyzer = analyzer_for(experiment.clone());
    let users = expose(&mut analyzer, &experiment, [300, 300], "revenue");
    for (index, user) in users[1].iter().take(30).enumerate() {
        analyzer.outcome(&user_outcome(
            user,
            START_MICROS + 1,
            OutcomeType::Purchase,
            &[],
            20.0 + index as f64,
        ));
    }
    let report = analyzer
        .report(&experiment.id, 0.05)
        .expect("the experiment has exposures");
    let comparison = treatment_metric(&report, "revenue_per_session")
        .comparison
        .computed()
        .copied()
        .expect("an all-zero control leaves the treatment's variance");
    assert_eq!(comparison.control, 0.0);
    assert!(comparison.absolute > 0.0 && comparison.absolute_interval.0 > 0.0);
    assert!(comparison.p_value < 0.001, "{comparison:?}");
    assert_eq!(comparison.relative, Relative::ControlIsZero);
}

#[test]
fn a_comparison_that_cannot_be_computed_says_why() {
    let experiment = running_experiment();
    let state = |analyzer: &mut Analyzer, variant: usize, name: &str| {
        let report = analyzer
            .report(&experiment.id, 0.05)
            .expect("the catalog knows the experiment");
        metric(&report, variant, name).comparison
    };
    let not_computed = ComparisonState::NotComputed;

    // No event at all: no data anywhere, and the control is the control.
    let mut analyzer = analyzer_for(experiment.clone());
    assert_eq!(
        state(&mut analyzer, 0, "add_to_cart_rate"),
        not_computed(NotComputed::Control)
    );
    assert_eq!(
        state(&mut analyzer, 1, "add_to_cart_rate"),
        not_computed(NotComputed::NoData)
    );
    let report = analyzer
        .report(&experiment.id, 0.05)
        .expect("the catalog knows the experiment");
    assert_eq!(report.newest_event_micros, None);
    assert_eq!(treatment_metric(&report, "add_to_cart_rate").value, None);

    // One treatment unit: no sample variance.
    let mut analyzer = analyzer_for(experiment.clone());
    expose(&mut analyzer, &experiment, [50, 1], "one");
    assert_eq!(
        state(&mut analyzer, 1, "add_to_cart_rate"),
        not_computed(NotComputed::TooFewUnits)
    );

    // Units but no add-to-cart and no impression anywhere: a zero
    // standard error, and a ratio without a denominator.
    let mut analyzer = analyzer_for(experiment.clone());
    expose(&mut analyzer, &experiment, [50, 50], "none");
    assert_eq!(
        state(&mut analyzer, 1, "add_to_cart_rate"),
        not_computed(NotComputed::NoVariance)
    );
    assert_eq!(
        state(&mut analyzer, 1, "ctr"),
        not_computed(NotComputed::NoData)
    );
}

#[test]
fn a_guardrail_on_a_metric_whose_control_is_zero_is_not_judged_and_shows_no_relative_difference() {
    let mut experiment = running_experiment();
    experiment.metrics.guardrails = vec![Guardrail {
        metric: "add_to_cart_rate".into(),
        threshold: 0.05,
        action: Some(GuardrailAction::Pause),
    }];
    let mut analyzer = analyzer_for(experiment.clone());
    let users = expose(&mut analyzer, &experiment, [200, 200], "guard");
    for user in &users[1][..10] {
        add_to_cart(&mut analyzer, user);
    }
    let report = analyzer
        .report(&experiment.id, 0.05)
        .expect("the experiment has exposures");
    let guardrail = &report.guardrails[0];
    assert_eq!(guardrail.state, GuardrailState::InsufficientData);
    assert_eq!(guardrail.relative_difference, None);
    assert_eq!(guardrail.always_valid_p_value, 1.0);
}
