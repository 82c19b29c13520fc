//! How many units (and days) an experiment needs before launch: from the
//! metric's baseline in control, the smallest relative change worth
//! finding, alpha, power, the variants' weights and the traffic share,
//! with the two-sample z-test's power ([`crate::stats::nobs1_for_power`],
//! as `statsmodels`' `zt_ind_solve_power`).
//!
//! Each treatment is compared with control, so the units needed are those
//! of the smallest treatment against control: with weights `w_c` and
//! `w_t`, `ratio = w_t / w_c`, control needs `nobs1` and the experiment
//! `nobs1 * sum(weights) / w_c`; the eligible units that must arrive are
//! that over the traffic share.

use exp_core::FieldViolation;

use crate::stats::nobs1_for_power;

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
    /// The smallest relative change worth finding (0.05: a 5% lift).
    pub relative_effect: f64,
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

/// The sample size a plan needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// The absolute change to detect: relative effect times baseline.
    pub absolute_effect: f64,
    /// The same over one unit's standard deviation.
    pub effect_size: f64,
    /// Control units needed (not rounded).
    pub control_units: f64,
    /// Units needed in each treatment at the smallest treatment weight.
    pub units_per_treatment: f64,
    /// Units in the experiment in all.
    pub total_units: f64,
    /// Eligible units that must arrive (total over the traffic share).
    pub eligible_units: f64,
    /// Days to reach them, when the daily units are known.
    pub days: Option<f64>,
}

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
    if !(request.relative_effect.is_finite() && request.relative_effect != 0.0) {
        violations.push(FieldViolation::new(
            "minimum_detectable_effect",
            format!(
                "must be a relative change other than 0 (0.05 for 5%), got {}",
                request.relative_effect
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
    let smallest_treatment = request.weights[1..].iter().copied().min().unwrap_or(1);
    let ratio = f64::from(smallest_treatment) / control_weight;
    let absolute_effect = request.relative_effect * request.baseline.value();
    let effect_size = absolute_effect / request.baseline.standard_deviation();
    let control_units = nobs1_for_power(effect_size, request.alpha, request.power, ratio)
        .ok_or_else(|| {
            vec![FieldViolation::new(
                "minimum_detectable_effect",
                "gives no sample size at this alpha and power",
            )]
        })?;
    let weight_sum: f64 = request.weights.iter().map(|&w| f64::from(w)).sum();
    let total_units = control_units * weight_sum / control_weight;
    let eligible_units = total_units * 100.0 / f64::from(request.traffic_percent);
    Ok(Plan {
        absolute_effect,
        effect_size,
        control_units,
        units_per_treatment: control_units * ratio,
        total_units,
        eligible_units,
        days: request.daily_units.map(|daily| eligible_units / daily),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PlanRequest {
        PlanRequest {
            baseline: Baseline::Rate(0.1),
            relative_effect: 0.05,
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
        assert!(
            (planned.control_units - 56_511.795_667).abs() < 1e-3,
            "{planned:?}"
        );
        assert!((planned.total_units - 2.0 * planned.control_units).abs() < 1e-6);
        assert!(
            (planned.days.expect("daily units given") - planned.total_units / 10_000.0).abs()
                < 1e-9
        );
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
        assert!((lopsided.eligible_units - lopsided.total_units * 5.0).abs() < 1e-6);
        assert!((lopsided.units_per_treatment - lopsided.control_units / 4.0).abs() < 1e-6);
    }

    #[test]
    fn unusable_inputs_are_named() {
        let refused = plan(&PlanRequest {
            baseline: Baseline::Rate(1.5),
            relative_effect: 0.0,
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
