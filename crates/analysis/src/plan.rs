//! How many units (and days) an experiment needs before launch: from the
//! metric's baseline in control, the smallest relative change worth
//! finding, alpha, power, the variants' weights and the traffic share,
//! with the two-sample z-test's power ([`crate::stats::nobs1_for_power`],
//! as `statsmodels`' `zt_ind_solve_power`).
//!
//! Each treatment is compared with control, so the units needed are those
//! of the smallest treatment against control: with weights `w_c` and
//! `w_t`, `ratio = w_t / w_c`. With several treatments each comparison is
//! planned at alpha over their number (Holm's first step), so every
//! treatment is powered even when it alone differs. The standardised
//! effect is over control's standard deviation (statsmodels' effect size;
//! for a rate the analysis's unpooled test sees a slightly larger variance,
//! about 2% more units for +5% on 10%). Every arm's count is rounded up;
//! the eligible units that must arrive are their sum over the traffic
//! share.

use exp_core::FieldViolation;

use crate::stats::{effect_size_for_power, nobs1_for_power};

/// The metric in control today.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Baseline {
    /// A proportion (e.g. add-to-cart rate): per-unit variance `p(1-p)`.
    Rate(f64),
    /// A mean with its per-unit variance (e.g. revenue per session).
    Mean {
        /// The mean.
        mean: f64,
        /// The variance of one unit's value.
        variance: f64,
    },
}

impl Baseline {
    fn value(self) -> f64 {
        match self {
            Self::Rate(rate) => rate,
            Self::Mean { mean, .. } => mean,
        }
    }

    fn standard_deviation(self) -> f64 {
        match self {
            Self::Rate(rate) => (rate * (1.0 - rate)).sqrt(),
            Self::Mean { variance, .. } => variance.sqrt(),
        }
    }
}

/// What a plan asks.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    /// The metric in control.
    pub baseline: Baseline,
    /// The smallest change worth finding, relative to the baseline (0.05:
    /// a 5% lift; the proto's `minimum_detectable_effect`).
    pub minimum_detectable_effect: f64,
    /// Significance level.
    pub alpha: f64,
    /// Power wanted.
    pub power: f64,
    /// Variant weights, control first.
    pub weights: Vec<u32>,
    /// Percent of eligible units in the experiment.
    pub traffic_percent: u32,
    /// Eligible units a day, when known.
    pub daily_units: Option<f64>,
}

/// The sample size a plan needs; counts are rounded up (fewer units than
/// computed miss the power).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// The absolute change to detect: relative effect times baseline.
    pub absolute_effect: f64,
    /// The same over one unit's standard deviation.
    pub effect_size: f64,
    /// The significance level of each comparison: alpha over the number
    /// of treatments (Holm's first step, so each treatment is powered even
    /// when it is the only one that differs).
    pub comparison_alpha: f64,
    /// Control units needed.
    pub control_units: u64,
    /// Units needed in the smallest treatment.
    pub units_per_treatment: u64,
    /// Units in the experiment in all: every arm's, rounded up.
    pub total_units: u64,
    /// Eligible units that must arrive (total over the traffic share).
    pub eligible_units: u64,
    /// Days to reach them, when the daily units are known.
    pub days: Option<f64>,
}

/// Largest count a plan answers: beyond it an f64 no longer counts units.
const MAX_UNITS: f64 = 9_007_199_254_740_992.0;

/// The plan of `request`; every input it cannot use, by field name.
pub fn plan(request: &PlanRequest) -> Result<Plan, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    match request.baseline {
        Baseline::Rate(rate) if !(rate > 0.0 && rate < 1.0) => {
            violations.push(FieldViolation::new(
                "baseline_rate",
                format!("must be above 0 and below 1, got {rate}"),
            ))
        }
        Baseline::Mean { mean, variance } => {
            if !mean.is_finite() || mean == 0.0 {
                violations.push(FieldViolation::new(
                    "baseline_mean.mean",
                    format!("must be a finite number other than 0 (the effect is relative to it), got {mean}"),
                ));
            }
            if !(variance.is_finite() && variance > 0.0) {
                violations.push(FieldViolation::new(
                    "baseline_mean.variance",
                    format!("must be above 0, got {variance}"),
                ));
            }
        }
        Baseline::Rate(_) => {}
    }
    if !(request.minimum_detectable_effect.is_finite() && request.minimum_detectable_effect != 0.0)
    {
        violations.push(FieldViolation::new(
            "minimum_detectable_effect",
            format!(
                "must be a relative change other than 0 (0.05 for 5%), got {}",
                request.minimum_detectable_effect
            ),
        ));
    }
    if !(request.alpha > 0.0 && request.alpha <= 0.5) {
        violations.push(FieldViolation::new(
            "alpha",
            format!("must be above 0 and at most 0.5, got {}", request.alpha),
        ));
    }
    if !(request.power > request.alpha && request.power < 1.0) {
        violations.push(FieldViolation::new(
            "power",
            format!("must be above alpha and below 1, got {}", request.power),
        ));
    }
    if request.weights.len() < 2 || request.weights.contains(&0) {
        violations.push(FieldViolation::new(
            "weights",
            "must name control and at least one treatment, each above 0",
        ));
    }
    if let Baseline::Rate(rate) = request.baseline {
        let changed = rate * (1.0 + request.minimum_detectable_effect);
        if rate > 0.0 && rate < 1.0 && !(changed > 0.0 && changed < 1.0) {
            violations.push(FieldViolation::new(
                "minimum_detectable_effect",
                format!("takes the rate {rate} to {changed}, outside 0 to 1"),
            ));
        }
    }
    if !(1..=100).contains(&request.traffic_percent) {
        violations.push(FieldViolation::new(
            "traffic_percent",
            format!("must be 1 to 100, got {}", request.traffic_percent),
        ));
    }
    if let Some(daily) = request.daily_units
        && !(daily.is_finite() && daily > 0.0)
    {
        violations.push(FieldViolation::new(
            "daily_units",
            format!("must be above 0, got {daily}"),
        ));
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    let control_weight = f64::from(request.weights[0]);
    let treatments = request.weights.len() - 1;
    let smallest_treatment = request.weights[1..].iter().copied().min().unwrap_or(1);
    let ratio = f64::from(smallest_treatment) / control_weight;
    let comparison_alpha = request.alpha / treatments as f64;
    let absolute_effect = request.minimum_detectable_effect * request.baseline.value();
    let effect_size = absolute_effect / request.baseline.standard_deviation();
    let too_small = || {
        vec![FieldViolation::new(
            "minimum_detectable_effect",
            format!(
                "{} needs more units than can be counted at this alpha and power",
                request.minimum_detectable_effect
            ),
        )]
    };
    let control = nobs1_for_power(effect_size, comparison_alpha, request.power, ratio)
        .filter(|units| *units <= MAX_UNITS)
        .ok_or_else(too_small)?
        .ceil();
    let arms: Vec<f64> = request.weights[1..]
        .iter()
        .map(|&weight| (control * f64::from(weight) / control_weight).ceil())
        .collect();
    let total = control + arms.iter().sum::<f64>();
    let eligible = (total * 100.0 / f64::from(request.traffic_percent)).ceil();
    if eligible > MAX_UNITS {
        return Err(too_small());
    }
    // Whole, finite and below 2^53: exact as integers.
    let count = |units: f64| units as u64;
    Ok(Plan {
        absolute_effect,
        effect_size,
        comparison_alpha,
        control_units: count(control),
        units_per_treatment: count((control * ratio).ceil()),
        total_units: count(total),
        eligible_units: count(eligible),
        days: request.daily_units.map(|daily| eligible / daily),
    })
}

/// The smallest change, relative to the baseline, that a started
/// experiment's `control_units` and `treatment_units` (its smallest
/// treatment's) can detect now, at the request's alpha (over its
/// treatments) and power; `None` before every arm has units.
pub fn detectable_now(
    request: &PlanRequest,
    control_units: u64,
    treatment_units: u64,
) -> Option<f64> {
    if control_units == 0 || treatment_units == 0 {
        return None;
    }
    let treatments = request.weights.len().saturating_sub(1).max(1);
    let alpha = request.alpha / treatments as f64;
    let ratio = treatment_units as f64 / control_units as f64;
    let effect = effect_size_for_power(control_units as f64, alpha, request.power, ratio)?;
    Some(effect * request.baseline.standard_deviation() / request.baseline.value().abs())
}

/// A day, in seconds.
const DAY_SECONDS: f64 = 86_400.0;

/// Eligible units a day from an experiment's cumulative exposed units at
/// points in time (`(seconds since the epoch, units)`, oldest first, the
/// last being now): the units gained since the earliest point within the
/// last 24 hours, per day, over the traffic share. `None` without two
/// points in that window or a gain.
pub fn observed_daily_units(points: &[(f64, u64)], traffic_percent: u32) -> Option<f64> {
    let &(now, units_now) = points.last()?;
    let &(since, units_then) = points
        .iter()
        .find(|(seconds, _)| *seconds >= now - DAY_SECONDS)?;
    let span = now - since;
    if span <= 0.0 || units_now <= units_then || traffic_percent == 0 {
        return None;
    }
    let exposed_a_day = (units_now - units_then) as f64 / span * DAY_SECONDS;
    Some(exposed_a_day * 100.0 / f64::from(traffic_percent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PlanRequest {
        PlanRequest {
            baseline: Baseline::Rate(0.1),
            minimum_detectable_effect: 0.05,
            alpha: 0.05,
            power: 0.8,
            weights: vec![50, 50],
            traffic_percent: 100,
            daily_units: Some(10_000.0),
        }
    }

    #[test]
    fn a_five_percent_lift_on_a_ten_percent_rate_needs_the_z_tests_sample_size() {
        let planned = plan(&request()).expect("valid");
        // d = 0.005 / 0.3; statsmodels' zt_ind_solve_power gives
        // 56511.80 (testdata/reference.json, the first power case).
        assert_eq!(planned.control_units, 56_512, "{planned:?}");
        assert_eq!(planned.total_units, 2 * planned.control_units);
        let days = planned.days.expect("daily units given");
        assert!((days - planned.eligible_units as f64 / 10_000.0).abs() < 1e-9);
    }

    #[test]
    fn a_smaller_traffic_share_and_a_lopsided_split_need_more_eligible_units() {
        let even = plan(&request()).expect("valid");
        let lopsided = plan(&PlanRequest {
            weights: vec![80, 20],
            traffic_percent: 20,
            ..request()
        })
        .expect("valid");
        assert!(lopsided.total_units > even.total_units);
        assert_eq!(lopsided.eligible_units, lopsided.total_units * 5);
        assert_eq!(
            lopsided.total_units,
            lopsided.control_units + lopsided.units_per_treatment,
            "the total is the arms' rounded counts"
        );
        let three = plan(&PlanRequest {
            weights: vec![50, 25, 25],
            ..request()
        })
        .expect("valid");
        assert_eq!(three.comparison_alpha, 0.025, "two treatments: alpha / 2");
        assert!(three.control_units > even.control_units);
    }

    #[test]
    fn an_effect_too_small_to_count_or_leaving_the_rate_range_is_refused() {
        let tiny = plan(&PlanRequest {
            baseline: Baseline::Rate(1e-300),
            minimum_detectable_effect: 1e-10,
            ..request()
        })
        .expect_err("refused");
        assert_eq!(tiny[0].field, "minimum_detectable_effect");
        let beyond = plan(&PlanRequest {
            baseline: Baseline::Rate(0.9),
            minimum_detectable_effect: 0.5,
            ..request()
        })
        .expect_err("refused");
        assert_eq!(beyond[0].field, "minimum_detectable_effect");
        let huge = plan(&PlanRequest {
            baseline: Baseline::Mean {
                mean: 1e300,
                variance: 1.0,
            },
            minimum_detectable_effect: 10.0,
            ..request()
        });
        assert!(huge.is_ok_and(|planned| planned.control_units >= 1));
    }

    #[test]
    fn a_started_experiment_detects_less_as_its_units_grow_and_the_plans_effect_at_the_planned_units()
     {
        let planned = plan(&request()).expect("valid");
        let at_plan = detectable_now(
            &request(),
            planned.control_units,
            planned.units_per_treatment,
        )
        .expect("units in every arm");
        assert!((at_plan - 0.05).abs() < 1e-4, "{at_plan}");
        let early = detectable_now(&request(), 5_000, 5_000).expect("units");
        assert!(early > 0.15, "{early}");
        assert_eq!(detectable_now(&request(), 5_000, 0), None);
    }

    #[test]
    fn the_observed_daily_units_are_the_last_days_gain_over_the_traffic_share() {
        let hour = 3_600.0;
        // 1,000 units an hour for 30 hours, at 20% of traffic: the window
        // is the last 24 hours: 24,000 exposed, 120,000 eligible.
        let points: Vec<(f64, u64)> = (0..=30)
            .map(|h| (f64::from(h) * hour, 1_000 * h as u64))
            .collect();
        let daily = observed_daily_units(&points, 20).expect("a gain");
        assert!((daily - 120_000.0).abs() < 1e-6, "{daily}");
        // Six hours since the first exposure: scaled to a day.
        let young: Vec<(f64, u64)> = (0..=6)
            .map(|h| (f64::from(h) * hour, 500 * h as u64))
            .collect();
        assert!((observed_daily_units(&young, 100).expect("a gain") - 12_000.0).abs() < 1e-6);
        assert_eq!(observed_daily_units(&[(0.0, 10)], 100), None, "one point");
    }

    #[test]
    fn unusable_inputs_are_named() {
        let refused = plan(&PlanRequest {
            baseline: Baseline::Rate(1.5),
            minimum_detectable_effect: 0.0,
            power: 0.01,
            weights: vec![100],
            traffic_percent: 0,
            daily_units: Some(-1.0),
            ..request()
        })
        .expect_err("refused");
        let fields: Vec<&str> = refused.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "baseline_rate",
                "minimum_detectable_effect",
                "power",
                "weights",
                "traffic_percent",
                "daily_units"
            ]
        );
    }
}
