//! CUPED: a unit's covariate is its metric over the whole UTC days before
//! the day of its first exposure, as the analyzer gathers it from events;
//! the adjusted comparison narrows intervals by what the covariate
//! explains and keeps them covering the true effect.

mod common;

use common::{
    Rng, START_MICROS, analyzer_for, running_experiment, user_exposure, user_outcome, variant_of,
};
use exp_analysis::{
    report::{ComparisonState, MetricReport},
    stats::{self, CupedFit, CupedUnit, Moments},
};
use exp_core::{Experiment, event::Outcome, metrics::OutcomeType};

const ALPHA: f64 = 0.05;
const DAY_MICROS: i64 = 86_400_000_000;

/// The first exposures' day starts here: `START_MICROS` is 08:00 UTC.
const EXPOSURE_DAY_MICROS: i64 = START_MICROS - 8 * 3_600_000_000;

/// Runs of the simulation.
const RUNS: usize = 1000;

#[test]
fn at_a_pre_period_correlation_of_0_7_intervals_are_over_a_quarter_narrower_and_still_cover() {
    // Per unit: a pre-period value x = 10 + 2z and an outcome
    // y = 10 + effect + 2(0.7z + √0.51·ε): correlation 0.7, so CUPED
    // should leave √(1 − 0.49) = 71% of the width.
    let rho: f64 = 0.7;
    let effect = 0.2;
    let per_arm = 1000;
    let mut rng = Rng(0xC0FFEE);
    let (mut covered, mut covered_unadjusted) = (0, 0);
    let mut width_ratio = 0.0;
    for _ in 0..RUNS {
        let mut units: Vec<CupedUnit> = Vec::with_capacity(2 * per_arm);
        let mut moments = [Moments::default(); 2];
        for arm in [0_usize, 1] {
            for _ in 0..per_arm {
                let z = rng.normal();
                let noise = rng.normal();
                let x = 10.0 + 2.0 * z;
                let y =
                    10.0 + effect * arm as f64 + 2.0 * (rho * z + (1.0 - rho * rho).sqrt() * noise);
                units.push((arm, y, x));
                moments[arm].push(y, 1.0);
            }
        }
        let fit = CupedFit::of(|| units.iter().copied(), 2, 0);
        let adjusted = fit.comparison(1, ALPHA).expect("computed");
        let unadjusted = stats::compare_means(&moments[0], &moments[1], ALPHA).expect("computed");
        let covers = |(low, high): (f64, f64)| low <= effect && effect <= high;
        covered += usize::from(covers(adjusted.absolute_interval));
        covered_unadjusted += usize::from(covers(unadjusted.absolute_interval));
        let width = |(low, high): (f64, f64)| high - low;
        width_ratio += width(adjusted.absolute_interval) / width(unadjusted.absolute_interval);
    }
    let width_ratio = width_ratio / RUNS as f64;
    let coverage = covered as f64 / RUNS as f64;
    let coverage_unadjusted = covered_unadjusted as f64 / RUNS as f64;
    // `--nocapture` shows the figures docs/statistics.md quotes.
    eprintln!(
        "width ratio {width_ratio:.4}, coverage adjusted {coverage:.3}, unadjusted {coverage_unadjusted:.3}"
    );
    assert!(
        width_ratio <= 0.75,
        "adjusted intervals are {width_ratio:.3} of the unadjusted width"
    );
    assert!(
        (0.93..=0.97).contains(&coverage),
        "adjusted coverage {coverage}"
    );
    assert!(
        (0.93..=0.97).contains(&coverage_unadjusted),
        "unadjusted coverage {coverage_unadjusted}"
    );
}

fn purchase(user: &str, time_micros: i64, value: f64) -> Outcome {
    user_outcome(user, time_micros, OutcomeType::Purchase, &[], value)
}

fn metric<'a>(report: &'a exp_analysis::Report, variant: usize, name: &str) -> &'a MetricReport {
    report.variants[variant]
        .metrics
        .iter()
        .find(|metric| metric.metric == name)
        .expect("the metric is reported")
}

/// One simulated user: a propensity to buy, drawn once, shows in its
/// purchases before and after its exposure.
struct User {
    name: String,
    variant: usize,
    exposure_micros: i64,
    /// Revenue after the exposure.
    revenue: f64,
    /// Revenue over the 14 whole days before the exposure's day.
    pre_period_revenue: f64,
    /// Whether it added to cart after the exposure, and how often in its
    /// pre-period.
    added: bool,
    pre_period_carts: f64,
}

/// Feeds `users` users with 30 days of history before their exposures
/// (some outside the pre-period, some on the exposure's own day, some
/// arriving late) and their outcomes after.
fn simulate(
    analyzer: &mut exp_analysis::Analyzer,
    experiment: &Experiment,
    users: usize,
) -> Vec<User> {
    let mut rng = Rng(20261206);
    let mut simulated = Vec::new();
    let mut history: Vec<(i64, Outcome)> = Vec::new();
    let mut late: Vec<Outcome> = Vec::new();
    for index in 0..users {
        let name = format!("cuped-u{index}");
        let propensity = rng.uniform() * 0.3;
        let exposure_micros = START_MICROS + index as i64 * 1_000;
        let mut user = User {
            variant: variant_of(experiment, &name),
            name,
            exposure_micros,
            revenue: 0.0,
            pre_period_revenue: 0.0,
            added: false,
            pre_period_carts: 0.0,
        };
        // Days -30 to -1 before the exposure's day, and its own morning.
        for day in -30_i64..=0 {
            let time = EXPOSURE_DAY_MICROS + day * DAY_MICROS + 3_600_000_000 + index as i64;
            let in_pre_period = (-14..0).contains(&day);
            if rng.bernoulli(propensity) {
                let value = 10.0 + 40.0 * rng.uniform();
                let event = purchase(&user.name, time, value);
                // Every tenth arrives only after the exposure.
                if index % 10 == 0 && in_pre_period {
                    late.push(event);
                } else {
                    history.push((time, event));
                }
                if in_pre_period {
                    user.pre_period_revenue += value;
                }
            }
            if rng.bernoulli(propensity / 2.0) {
                let event = user_outcome(&user.name, time + 1, OutcomeType::AddToCart, &[], 0.0);
                history.push((time + 1, event));
                user.pre_period_carts += f64::from(u8::from(in_pre_period));
            }
        }
        for _ in 0..5 {
            if rng.bernoulli(propensity * if user.variant == 1 { 1.1 } else { 1.0 }) {
                user.revenue += 10.0 + 40.0 * rng.uniform();
            }
        }
        user.added = rng.bernoulli(propensity);
        simulated.push(user);
    }
    history.sort_by_key(|(time, _)| *time);
    for (_, event) in &history {
        analyzer.outcome(event);
    }
    for user in &simulated {
        analyzer.exposure(&user_exposure(
            &experiment.id,
            &experiment.variants[user.variant].name,
            &user.name,
            user.exposure_micros,
        ));
    }
    for event in &late {
        analyzer.outcome(event);
    }
    for user in &simulated {
        if user.revenue > 0.0 {
            analyzer.outcome(&purchase(
                &user.name,
                user.exposure_micros + 10,
                user.revenue,
            ));
        }
        if user.added {
            analyzer.outcome(&user_outcome(
                &user.name,
                user.exposure_micros + 11,
                OutcomeType::AddToCart,
                &[],
                0.0,
            ));
        }
    }
    simulated
}

fn adjusted(result: &MetricReport) -> stats::Comparison {
    *result.comparison.computed().expect("compared")
}

#[test]
fn a_units_covariate_is_its_metric_over_the_whole_days_before_the_day_of_its_first_exposure() {
    let experiment = running_experiment();
    let mut analyzer = analyzer_for(experiment.clone());
    let users = simulate(&mut analyzer, &experiment, 3000);
    let report = analyzer.report(&experiment.id, ALPHA).expect("exposed");
    // The same fit from the covariates the definition gives, computed here.
    for (name, outcome, covariate) in [
        (
            "revenue_per_session",
            Box::new(|user: &User| user.revenue) as Box<dyn Fn(&User) -> f64>,
            Box::new(|user: &User| user.pre_period_revenue) as Box<dyn Fn(&User) -> f64>,
        ),
        (
            "add_to_cart_rate",
            Box::new(|user: &User| f64::from(u8::from(user.added))),
            Box::new(|user: &User| user.pre_period_carts),
        ),
    ] {
        let expected = CupedFit::of(
            || {
                users
                    .iter()
                    .map(|user| (user.variant, outcome(user), covariate(user)))
            },
            2,
            0,
        );
        let expected_comparison = expected.comparison(1, ALPHA).expect("computed");
        let result = metric(&report, 1, name);
        let reported = adjusted(result);
        for (what, got, want) in [
            (
                "difference",
                reported.absolute,
                expected_comparison.absolute,
            ),
            (
                "standard error",
                reported.standard_error,
                expected_comparison.standard_error,
            ),
            (
                "lower bound",
                reported.absolute_interval.0,
                expected_comparison.absolute_interval.0,
            ),
            ("p-value", reported.p_value, expected_comparison.p_value),
        ] {
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{name} {what}: reported {got}, from the definition {want}"
            );
        }
        let cuped = result.cuped.expect("proportions and means are adjusted");
        assert!(cuped.applied);
        assert_eq!(
            cuped.adjusted_value,
            Some(reported.treatment),
            "{name}: the treatment's adjusted mean"
        );
        assert_eq!(cuped.pre_period_days, 14);
        assert!((cuped.theta - expected.theta()).abs() <= 1e-9 * expected.theta().abs().max(1.0));
        let unadjusted = match cuped.unadjusted {
            ComparisonState::Computed(comparison) => comparison,
            ComparisonState::NotComputed(reason) => panic!("{name} unadjusted: {reason:?}"),
        };
        let reduction = cuped.variance_reduction.expect("both computed");
        assert!(
            (reduction - (1.0 - (reported.standard_error / unadjusted.standard_error).powi(2)))
                .abs()
                < 1e-12
        );
        // The propensity shows before and after: revenue strongly, the
        // add-to-cart indicators faintly.
        let floor = if name == "revenue_per_session" {
            0.05
        } else {
            0.01
        };
        assert!(reduction > floor, "{name}: variance reduction {reduction}");
        // The control row carries the fit without a comparison.
        let control = metric(&report, 0, name).cuped.expect("adjusted");
        assert_eq!(
            control.unadjusted,
            ComparisonState::NotComputed(stats::NotComputed::Control)
        );
        assert_eq!(control.adjusted_value, Some(reported.control));
    }
    // Ratios are not adjusted.
    assert!(metric(&report, 1, "ctr").cuped.is_none());
}

#[test]
fn without_any_pre_period_the_comparison_is_the_unadjusted_one_and_says_so() {
    let experiment = running_experiment();
    let mut analyzer = analyzer_for(experiment.clone());
    for index in 0..400 {
        let user = format!("new-u{index}");
        let variant = variant_of(&experiment, &user);
        let time = START_MICROS + index;
        analyzer.exposure(&user_exposure(
            &experiment.id,
            &experiment.variants[variant].name,
            &user,
            time,
        ));
        if index % 7 == 0 {
            analyzer.outcome(&purchase(&user, time + 1, 30.0 + index as f64));
        }
    }
    let report = analyzer.report(&experiment.id, ALPHA).expect("exposed");
    let result = metric(&report, 1, "revenue_per_session");
    let cuped = result.cuped.expect("the experiment adjusts");
    assert!(!cuped.applied, "no unit has a pre-period");
    assert_eq!(cuped.variance_reduction, None);
    assert_eq!(cuped.unadjusted, result.comparison);
}

#[test]
fn an_experiment_with_cuped_off_reports_no_adjustment() {
    let mut experiment = running_experiment();
    experiment.metrics.cuped.enabled = false;
    let mut analyzer = analyzer_for(experiment.clone());
    let users = simulate(&mut analyzer, &experiment, 600);
    assert_eq!(users.len(), 600);
    let report = analyzer.report(&experiment.id, ALPHA).expect("exposed");
    let result = metric(&report, 1, "revenue_per_session");
    assert!(result.cuped.is_none());
    let mut moments = [Moments::default(); 2];
    for user in &users {
        moments[user.variant].push(user.revenue, 1.0);
    }
    let welch = stats::compare_means(&moments[0], &moments[1], ALPHA).expect("computed");
    assert!((adjusted(result).absolute - welch.absolute).abs() < 1e-9);
    assert!((adjusted(result).standard_error - welch.standard_error).abs() < 1e-12);
}

#[test]
fn an_experiment_of_sessions_has_no_pre_period_to_adjust_for() {
    let experiment = Experiment {
        bucketing_unit: exp_core::BucketingUnit::Session,
        ..running_experiment()
    };
    let mut analyzer = analyzer_for(experiment.clone());
    for index in 0..50 {
        let session = format!("s-{index}");
        let mut exposure = user_exposure(&experiment.id, "control", "", START_MICROS);
        exposure.session_id = session;
        exposure.unit_type = exp_core::UnitType::Session;
        analyzer.exposure(&exposure);
    }
    let report = analyzer.report(&experiment.id, ALPHA).expect("exposed");
    assert!(metric(&report, 0, "revenue_per_session").cuped.is_none());
    assert!(
        !report
            .sanity_checks
            .iter()
            .any(|check| check.name == "pre_period_outcomes_kept")
    );
}
