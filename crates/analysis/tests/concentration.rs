//! The inventory-balance guardrail on a long-tail catalogue: an A/A
//! experiment does not breach it more often than alpha, whatever the
//! split between the arms, and a treatment that piles impressions onto
//! the best sellers does.

mod common;

use common::{
    Rng, START_MICROS, analyzer_for, running_experiment, treatment_metric, user_exposure,
    user_outcome, variant_of,
};
use exp_analysis::{Analyzer, GuardrailState, Report};
use exp_core::{Experiment, Guardrail, GuardrailAction, lifecycle, metrics::OutcomeType};

const METRIC: &str = "inventory_exposure_balance";

/// A catalogue whose item popularity follows Zipf's law: item `i` (from 1)
/// is shown with a weight of 1 / i^exponent, so a few best sellers take
/// much of the traffic and a long tail is rarely shown.
struct Catalogue {
    items: Vec<String>,
    cumulative: Vec<f64>,
}

impl Catalogue {
    fn zipf(size: usize, exponent: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=size)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(exponent);
                total
            })
            .collect::<Vec<f64>>()
            .into_iter()
            .map(|sum| sum / total)
            .collect();
        Self {
            items: (0..size).map(|item| format!("sku-{item}")).collect(),
            cumulative,
        }
    }

    /// One item drawn by popularity.
    fn draw(&self, rng: &mut Rng) -> &String {
        let u = rng.uniform();
        let index = self.cumulative.partition_point(|sum| *sum < u);
        &self.items[index.min(self.items.len() - 1)]
    }
}

/// How an arm recommends: each slot of a list is one of the top
/// `best_sellers` items with probability `pile`, else drawn by popularity.
#[derive(Clone, Copy)]
struct Recommender {
    pile: f64,
    best_sellers: usize,
}

const AS_USUAL: Recommender = Recommender {
    pile: 0.0,
    best_sellers: 0,
};

/// The experiment with `weights` for (control, treatment) and the
/// inventory balance as its only metric, guarded at `threshold`.
fn balance_experiment(weights: [u32; 2], threshold: f64) -> Experiment {
    let mut experiment = running_experiment();
    experiment.variants[0].weight = weights[0];
    experiment.variants[1].weight = weights[1];
    experiment.randomization = Some(lifecycle::randomization(&experiment, 2));
    experiment.metrics.primary_metric = METRIC.into();
    experiment.metrics.secondary_metrics.clear();
    experiment.metrics.guardrails = vec![Guardrail {
        metric: METRIC.into(),
        threshold,
        action: Some(GuardrailAction::Pause),
    }];
    experiment
}

/// Feeds `units` users: each sees one to four lists of six recommended
/// items; a list shown again (a reload, a back button) is the same list.
fn feed(
    analyzer: &mut Analyzer,
    experiment: &Experiment,
    catalogue: &Catalogue,
    arms: [Recommender; 2],
    rng: &mut Rng,
    units: usize,
    tag: &str,
) {
    for index in 0..units {
        let user = format!("{tag}-{index}");
        let variant = variant_of(experiment, &user);
        let arm = arms[variant];
        analyzer.exposure(&user_exposure(
            &experiment.id,
            &experiment.variants[variant].name,
            &user,
            START_MICROS,
        ));
        let mut impression =
            user_outcome(&user, START_MICROS + 1, OutcomeType::Impression, &[], 0.0);
        let lists = 1 + rng.next_u64() % 4;
        for list in 0..lists {
            if list == 0 || !rng.bernoulli(0.3) {
                impression.item_ids.clear();
                for _ in 0..6 {
                    let item = if rng.bernoulli(arm.pile) {
                        &catalogue.items[(rng.next_u64() % arm.best_sellers as u64) as usize]
                    } else {
                        catalogue.draw(rng)
                    };
                    impression.item_ids.push(item.clone());
                }
            }
            analyzer.outcome(&impression);
        }
    }
}

/// Runs `runs` experiments of `looks` looks of `units_per_look` new units
/// each; how many breached the guardrail at some look.
fn breaches(
    experiment: &Experiment,
    catalogue: &Catalogue,
    arms: [Recommender; 2],
    runs: usize,
    looks: usize,
    units_per_look: usize,
    seed: u64,
) -> (usize, Vec<f64>) {
    let mut rng = Rng(seed);
    let mut breached = 0;
    let mut last_relative = Vec::new();
    for run in 0..runs {
        let mut analyzer = analyzer_for(experiment.clone());
        let mut alarmed = false;
        let mut report: Option<Report> = None;
        for look in 0..looks {
            feed(
                &mut analyzer,
                experiment,
                catalogue,
                arms,
                &mut rng,
                units_per_look,
                &format!("r{run}-{look}"),
            );
            let looked = analyzer
                .report(&experiment.id, 0.05)
                .expect("the experiment has exposures");
            alarmed |= looked.guardrails[0].state == GuardrailState::Breached;
            report = Some(looked);
        }
        if let Some(relative) = report
            .as_ref()
            .and_then(|report| report.guardrails[0].relative_difference)
        {
            last_relative.push(relative);
        }
        breached += usize::from(alarmed);
    }
    (breached, last_relative)
}

#[test]
fn an_a_a_experiment_breaches_the_inventory_balance_guardrail_at_most_at_alpha_whatever_the_split()
{
    let catalogue = Catalogue::zipf(2_000, 1.0);
    let runs = 200;
    let mut too_many = Vec::new();
    for (weights, seed) in [([90, 10], 23), ([70, 30], 29), ([50, 50], 31)] {
        // Threshold 0: the A/A truth is exactly the null, the hardest case.
        let experiment = balance_experiment(weights, 0.0);
        let (breached, relative) = breaches(
            &experiment,
            &catalogue,
            [AS_USUAL, AS_USUAL],
            runs,
            20,
            400,
            seed,
        );
        let mean = relative.iter().sum::<f64>() / relative.len().max(1) as f64;
        eprintln!(
            "A/A {}/{}: breached in {breached} of {runs} runs, mean relative difference at the last look {:+.2}%",
            weights[0],
            weights[1],
            mean * 100.0
        );
        // Alpha 5%: 200 runs tell 5% from 10% by about 2.4 standard errors.
        if breached > 12 {
            too_many.push(format!(
                "{}/{}: {breached} of {runs}",
                weights[0], weights[1]
            ));
        }
    }
    assert!(
        too_many.is_empty(),
        "A/A experiments breached too often: {too_many:?}"
    );
}

#[test]
fn a_treatment_that_piles_impressions_onto_best_sellers_breaches_the_guardrail() {
    let catalogue = Catalogue::zipf(2_000, 1.0);
    // A fifth of the slots go to the ten best sellers.
    let piling = Recommender {
        pile: 0.2,
        best_sellers: 10,
    };
    for weights in [[90, 10], [50, 50]] {
        let experiment = balance_experiment(weights, 0.05);
        let mut analyzer = analyzer_for(experiment.clone());
        let mut rng = Rng(37);
        let mut breached_at = None;
        for look in 0..20 {
            feed(
                &mut analyzer,
                &experiment,
                &catalogue,
                [AS_USUAL, piling],
                &mut rng,
                500,
                &format!("pile{look}"),
            );
            let report = analyzer
                .report(&experiment.id, 0.05)
                .expect("the experiment has exposures");
            if report.guardrails[0].state == GuardrailState::Breached {
                let balance = treatment_metric(&report, METRIC);
                eprintln!(
                    "{}/{}: piling breached at look {look}: {:?}",
                    weights[0], weights[1], balance.comparison
                );
                breached_at = Some(look);
                break;
            }
        }
        let breached_at = breached_at.unwrap_or_else(|| {
            panic!(
                "{}/{}: piling onto best sellers never breached",
                weights[0], weights[1]
            )
        });
        assert!(breached_at < 10, "breached only at look {breached_at}");
    }
}

#[test]
fn a_variant_that_shows_fewer_items_has_a_higher_concentration() {
    let mut experiment = running_experiment();
    experiment.metrics.guardrails = vec![Guardrail {
        metric: METRIC.into(),
        threshold: 0.05,
        action: Some(GuardrailAction::Pause),
    }];
    let mut analyzer = analyzer_for(experiment.clone());
    let mut rng = Rng(17);
    let catalogue: Vec<String> = (0..200).map(|item| format!("sku-{item}")).collect();
    for index in 0..4_000 {
        let user = format!("c-u{index}");
        let variant = variant_of(&experiment, &user);
        analyzer.exposure(&user_exposure(
            &experiment.id,
            &experiment.variants[variant].name,
            &user,
            START_MICROS,
        ));
        // Control spreads over all 200 items; treatment over the first 20.
        let spread = if variant == 0 { 200 } else { 20 };
        let shown: Vec<String> = (0..4)
            .map(|_| catalogue[(rng.next_u64() % spread) as usize].clone())
            .collect();
        analyzer.outcome(&user_outcome(
            &user,
            START_MICROS + 1,
            OutcomeType::Impression,
            &shown,
            0.0,
        ));
    }
    let report = analyzer
        .report(&experiment.id, 0.05)
        .expect("the experiment has exposures");
    let balance = treatment_metric(&report, METRIC);
    let comparison = balance
        .comparison
        .computed()
        .copied()
        .expect("enough data to compare");
    // The chance two units are shown the same item: 1/200 when every
    // item is equally likely, 1/20 with 20 of them.
    assert!((comparison.control - 0.005).abs() < 0.001, "{comparison:?}");
    assert!(
        (comparison.treatment - 0.05).abs() < 0.005,
        "{comparison:?}"
    );
    assert!(balance.significant, "{balance:?}");
    assert_eq!(report.guardrails[0].state, GuardrailState::Breached);
}
