//! Amounts add up in one currency: a value metric counts the outcomes in
//! the experiment's currency, and the others are left out and shown.

mod common;

use std::sync::{Arc, Mutex};

use common::{START_MICROS, check, metric, running_experiment, user_exposure, user_outcome};
use exp_analysis::{Analyzer, Refresh};
use exp_core::{Experiment, metrics::OutcomeType};

fn purchase(user: &str, value: f64, currency: &str) -> exp_core::event::Outcome {
    let mut outcome = user_outcome(user, START_MICROS + 1, OutcomeType::Purchase, &[], value);
    outcome.currency = currency.into();
    outcome
}

/// An analyzer over `experiment`, whose definition the test may change.
fn shared_analyzer(experiment: &Experiment) -> (Analyzer, Arc<Mutex<Experiment>>) {
    let shared = Arc::new(Mutex::new(experiment.clone()));
    let catalog = shared.clone();
    let analyzer = Analyzer::new(Box::new(move |id| {
        let experiment = catalog.lock().expect("catalog lock").clone();
        (experiment.id == id).then_some(experiment)
    }));
    (analyzer, shared)
}

#[test]
fn revenue_adds_up_the_experiments_currency_only_and_the_others_are_a_sanity_check() {
    let mut experiment = running_experiment();
    experiment.metrics.currency = String::new(); // USD
    let (mut analyzer, _) = shared_analyzer(&experiment);
    let control = &experiment.variants[0].name;
    for (user, purchases) in [
        ("usd-only", vec![(10.0, "USD")]),
        ("both", vec![(5.0, "USD"), (1_000.0, "JPY")]),
        ("yen-only", vec![(2_000.0, "JPY"), (30.0, "EUR")]),
    ] {
        analyzer.exposure(&user_exposure(&experiment.id, control, user, START_MICROS));
        for (value, currency) in purchases {
            analyzer.outcome(&purchase(user, value, currency));
        }
    }
    let report = analyzer
        .report(&experiment.id, 0.05)
        .expect("the experiment has exposures");
    // (10 + 5 + 0) / 3 units.
    assert_eq!(metric(&report, 0, "revenue_per_session").value, Some(5.0));
    // A purchase in another currency is still a purchase.
    assert_eq!(metric(&report, 0, "conversion_rate").value, Some(1.0));
    let other = check(&report, "outcomes_in_other_currencies");
    assert!(!other.passed);
    assert_eq!(other.offending, 3);
    assert!(
        other.detail.contains("EUR 1") && other.detail.contains("JPY 2"),
        "{}",
        other.detail
    );
}

#[test]
fn an_experiment_in_yen_counts_yen_and_a_currency_change_asks_for_a_rebuild() {
    let mut experiment = running_experiment();
    experiment.metrics.currency = "JPY".into();
    let (mut analyzer, shared) = shared_analyzer(&experiment);
    let control = &experiment.variants[0].name;
    analyzer.exposure(&user_exposure(&experiment.id, control, "u", START_MICROS));
    analyzer.outcome(&purchase("u", 1_000.0, "JPY"));
    analyzer.outcome(&purchase("u", 10.0, "USD"));
    let report = analyzer
        .report(&experiment.id, 0.05)
        .expect("the experiment has exposures");
    assert_eq!(
        metric(&report, 0, "revenue_per_session").value,
        Some(1_000.0)
    );
    assert_eq!(check(&report, "outcomes_in_other_currencies").offending, 1);

    shared.lock().expect("catalog lock").metrics.currency = "USD".into();
    assert_eq!(analyzer.refresh(), Refresh::NeedsRebuild);
}
