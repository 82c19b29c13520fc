//! Sequential experiments: their confidence sequences stay valid however
//! often the results are read, still find a real effect, and are what a
//! report of a sequential experiment shows.
//!
//! The simulations look at the per-unit moments of both arms after every
//! batch of units, as reports do, with the comparison code reports use;
//! each run draws from a seeded generator, so every run sees the same data.

mod common;

use common::{Arm, CONTROL, Rng, analyzer_for, running_experiment, simulate, treatment_metric};
use exp_analysis::{
    IntervalKind, Report,
    report::ComparisonState,
    stats::{self, Comparison, Moments, SEQUENTIAL_TUNING_PARAMETER},
};
use exp_core::{Experiment, MultipleComparisonCorrection};

const ALPHA: f64 = 0.05;
/// Looks at each run.
const LOOKS: usize = 30;
/// Units each arm gains between two looks: 6,000 per arm at the last look.
const UNITS_PER_LOOK: usize = 200;
/// Runs of each A/A simulation.
const RUNS: usize = 1000;

/// A unit's revenue: a purchase 8% of the time, of an exponential amount
/// (mean 50): a skewed metric, with most units at zero.
fn revenue(rng: &mut Rng) -> f64 {
    if rng.bernoulli(0.08) {
        rng.exponential(50.0)
    } else {
        0.0
    }
}

/// One metric of a simulated run: how a unit's value is drawn in each arm,
/// and how the arms are compared.
#[derive(Clone, Copy)]
enum Metric {
    /// Add-to-cart as a proportion, with the arms' rates.
    Rate(f64, f64),
    /// Revenue per unit (Welch), the treatment's amounts scaled.
    Revenue(f64),
}

impl Metric {
    fn draw(self, rng: &mut Rng, treatment: bool) -> f64 {
        match self {
            Self::Rate(control, lifted) => f64::from(u8::from(rng.bernoulli(if treatment {
                lifted
            } else {
                control
            }))),
            Self::Revenue(scale) => revenue(rng) * if treatment { scale } else { 1.0 },
        }
    }

    fn compare(self, control: &Moments, treatment: &Moments) -> Option<Comparison> {
        match self {
            Self::Rate(..) => stats::compare_proportions(control, treatment, ALPHA),
            Self::Revenue(_) => stats::compare_means(control, treatment, ALPHA),
        }
        .ok()
    }
}

/// The first look (1-based) at which the interval excluded zero, for
/// fixed-horizon intervals and for sequential ones built at
/// `sequence_alpha` (`ALPHA` as reports do; another only to show the test
/// can fail), in one run of `LOOKS` looks.
fn first_rejections(
    rng: &mut Rng,
    metric: Metric,
    sequence_alpha: f64,
) -> (Option<usize>, Option<usize>) {
    let mut arms = [Moments::default(), Moments::default()];
    let (mut fixed, mut sequential) = (None, None);
    let excludes_zero = |comparison: &Comparison| {
        let (lower, upper) = comparison.absolute_interval;
        lower > 0.0 || upper < 0.0
    };
    for look in 1..=LOOKS {
        for (index, arm) in arms.iter_mut().enumerate() {
            for _ in 0..UNITS_PER_LOOK {
                arm.push(metric.draw(rng, index == 1), 1.0);
            }
        }
        let Some(comparison) = metric.compare(&arms[0], &arms[1]) else {
            continue;
        };
        if fixed.is_none() && excludes_zero(&comparison) {
            fixed = Some(look);
        }
        let always_valid = comparison.sequential(
            arms[0].n + arms[1].n,
            sequence_alpha,
            SEQUENTIAL_TUNING_PARAMETER,
        );
        if sequential.is_none() && excludes_zero(&always_valid) {
            // The p-value says the same as the interval.
            assert!(always_valid.p_value < sequence_alpha, "{always_valid:?}");
            sequential = Some(look);
        }
    }
    (fixed, sequential)
}

/// Over `runs` runs: the share that ever excluded zero with fixed-horizon
/// intervals and with sequential ones built at `sequence_alpha`, and the
/// sequential runs' first rejecting looks.
fn ever_rejected(
    seed: u64,
    runs: usize,
    metric: Metric,
    sequence_alpha: f64,
) -> (f64, f64, Vec<usize>) {
    let mut rng = Rng(seed);
    let (mut fixed, mut sequential, mut looks) = (0, 0, Vec::new());
    for _ in 0..runs {
        let (fixed_look, sequential_look) = first_rejections(&mut rng, metric, sequence_alpha);
        fixed += usize::from(fixed_look.is_some());
        if let Some(look) = sequential_look {
            sequential += 1;
            looks.push(look);
        }
    }
    (
        fixed as f64 / runs as f64,
        sequential as f64 / runs as f64,
        looks,
    )
}

#[test]
fn a_a_runs_looked_at_30_times_rarely_ever_exclude_zero_with_sequential_intervals() {
    for (name, seed, metric) in [
        ("add-to-cart rate", 31, Metric::Rate(0.10, 0.10)),
        ("revenue per unit", 37, Metric::Revenue(1.0)),
    ] {
        let (fixed, sequential, _) = ever_rejected(seed, RUNS, metric, ALPHA);
        eprintln!(
            "A/A {name}, {RUNS} runs of {LOOKS} looks: ever excluded zero: \
             sequential {sequential:.3}, fixed-horizon {fixed:.3}"
        );
        // Nominal at most 5%; over 1,000 runs a rate of 5% has a standard
        // error of 0.7 points.
        assert!(
            sequential <= 0.055,
            "{name}: the sequential intervals excluded zero at some look in {sequential:.3} of runs"
        );
        // 30 looks are far from continuous monitoring, so the sequence is
        // well inside its bound (1.0% and 1.5% measured with these seeds):
        // a sequence at 3 times alpha would pass the bound above (below),
        // not this one.
        assert!(
            sequential <= 0.025,
            "{name}: the sequential intervals excluded zero at some look in {sequential:.3} of runs, \
             more than the 1.0% to 1.5% measured"
        );
        // The same looks at fixed-horizon intervals: the peeking problem.
        assert!(
            fixed > 0.15,
            "{name}: fixed-horizon intervals excluded zero at some look in only {fixed:.3} of runs"
        );
    }
}

#[test]
fn a_sequence_built_at_three_times_alpha_fails_the_a_a_test_so_the_test_can_fail() {
    // The negative control of the A/A test above: the same runs, the
    // sequence built at 0.15 instead of 0.05 (5.1% measured for rates).
    let (_, sequential, _) = ever_rejected(31, RUNS, Metric::Rate(0.10, 0.10), 3.0 * ALPHA);
    eprintln!("A/A add-to-cart rate, the sequence at 3 alpha: ever excluded zero {sequential:.3}");
    assert!(
        sequential > 0.035,
        "a sequence at 3 alpha excluded zero at some look in only {sequential:.3} of runs: \
         the A/A test could not tell it from a valid one"
    );
}

#[test]
fn a_real_lift_is_still_found_by_the_last_look_in_most_runs() {
    // 10% against 12.5% add-to-cart: 4.3 standard errors at the last look.
    let (fixed, sequential, mut looks) = ever_rejected(41, 300, Metric::Rate(0.10, 0.125), ALPHA);
    looks.sort_unstable();
    let median = looks.get(looks.len() / 2).copied().unwrap_or(0);
    eprintln!(
        "10% -> 12.5% add-to-cart, 300 runs of {LOOKS} looks of {UNITS_PER_LOOK} units per arm: \
         found by the last look in {sequential:.3} of runs (median first look {median}), \
         fixed-horizon at some look in {fixed:.3}"
    );
    assert!(
        sequential >= 0.8,
        "the sequential intervals found the lift in only {sequential:.3} of runs"
    );
}

/// A report of `experiment` on 2,000 simulated users drawn from `seed`.
fn report(experiment: &Experiment, seed: u64) -> Report {
    let mut analyzer = analyzer_for(experiment.clone());
    let treatment = Arm {
        add_to_cart: 0.13,
        ..CONTROL
    };
    simulate(
        &mut analyzer,
        experiment,
        &mut Rng(seed),
        2000,
        [CONTROL, treatment],
        "u",
    );
    analyzer
        .report(&experiment.id, ALPHA)
        .expect("the experiment has exposures")
}

#[test]
fn a_sequential_experiment_reports_every_metric_as_the_confidence_sequence_of_its_comparison() {
    let fixed_experiment = running_experiment();
    let sequential_experiment = Experiment {
        sequential: true,
        ..fixed_experiment.clone()
    };
    let fixed = report(&fixed_experiment, 5);
    let sequential = report(&sequential_experiment, 5);
    assert_eq!(fixed.readout.intervals, IntervalKind::FixedHorizon);
    assert_eq!(sequential.readout.intervals, IntervalKind::Sequential);
    let units = (fixed.variants[0].exposed_units + fixed.variants[1].exposed_units) as f64;
    for metric in &fixed.variants[1].metrics {
        let name = &metric.metric;
        let shown = treatment_metric(&sequential, name);
        let (ComparisonState::Computed(fixed_comparison), ComparisonState::Computed(comparison)) =
            (metric.comparison, shown.comparison)
        else {
            panic!("{name}: both reports compare it");
        };
        let expected = fixed_comparison.sequential(units, ALPHA, SEQUENTIAL_TUNING_PARAMETER);
        assert_eq!(comparison, expected, "{name}");
        assert!(
            comparison.absolute_interval.1 - comparison.absolute_interval.0
                > fixed_comparison.absolute_interval.1 - fixed_comparison.absolute_interval.0,
            "{name}: the sequence is wider"
        );
        // One treatment: Holm leaves its p-value as it is.
        assert_eq!(shown.adjusted_p_value, Some(comparison.p_value), "{name}");
        assert_eq!(shown.significant, comparison.p_value < ALPHA, "{name}");
    }
    // The guardrails' own sequential test is unchanged.
    assert_eq!(fixed.guardrails, sequential.guardrails);
}

#[test]
fn an_experiments_own_tuning_parameter_sets_its_sequences() {
    let default = Experiment {
        sequential: true,
        ..running_experiment()
    };
    let tuned = Experiment {
        sequential_tuning_parameter: 50_000,
        ..default.clone()
    };
    let at_default = report(&default, 5);
    let at_tuned = report(&tuned, 5);
    assert_eq!(at_tuned.readout.tuning_parameter, 50_000);
    let units = (at_tuned.variants[0].exposed_units + at_tuned.variants[1].exposed_units) as f64;
    let name = "revenue_per_session";
    let (ComparisonState::Computed(default_comparison), ComparisonState::Computed(comparison)) = (
        treatment_metric(&at_default, name).comparison,
        treatment_metric(&at_tuned, name).comparison,
    ) else {
        panic!("both compare {name}");
    };
    let width =
        |comparison: &Comparison| comparison.absolute_interval.1 - comparison.absolute_interval.0;
    let half = stats::confidence_sequence_half_width(
        comparison.standard_error,
        units,
        ALPHA,
        stats::sequential_rho(ALPHA, 50_000.0),
    );
    assert!((width(&comparison) - 2.0 * half).abs() < 1e-12);
    // 2,000 units, far below N* = 50,000: wider than at N* = 5,000.
    assert!(width(&comparison) > width(&default_comparison) * 1.1);
}

#[test]
fn benjamini_hochberg_adjusts_the_secondary_metrics_together_and_leaves_the_others_to_holm() {
    let holm_experiment = running_experiment();
    let bh_experiment = Experiment {
        multiple_comparison_correction: MultipleComparisonCorrection::BenjaminiHochberg,
        ..holm_experiment.clone()
    };
    let holm = report(&holm_experiment, 9);
    let bh = report(&bh_experiment, 9);
    assert_eq!(holm.readout.correction, MultipleComparisonCorrection::Holm);
    assert_eq!(
        bh.readout.correction,
        MultipleComparisonCorrection::BenjaminiHochberg
    );
    let secondary = &holm_experiment.metrics.secondary_metrics;
    let raw: Vec<f64> = secondary
        .iter()
        .map(|name| {
            treatment_metric(&bh, name)
                .comparison
                .computed()
                .expect("compared")
                .p_value
        })
        .collect();
    let expected = stats::benjamini_hochberg(&raw);
    for (name, expected) in secondary.iter().zip(expected) {
        assert_eq!(
            treatment_metric(&bh, name).adjusted_p_value,
            Some(expected),
            "{name}"
        );
    }
    // The primary metric and the guardrail (bounce rate): Holm over the
    // one treatment, as under Holm.
    for name in ["add_to_cart_rate", "bounce_rate"] {
        assert_eq!(
            treatment_metric(&bh, name).adjusted_p_value,
            treatment_metric(&holm, name).adjusted_p_value,
            "{name}"
        );
    }
}
