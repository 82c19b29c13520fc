//! The statistics, each written so that `testdata/make_reference.py`
//! (scipy and statsmodels) computes the same number from the same data.
//!
//! | Comparison | Test | Reference |
//! |---|---|---|
//! | proportions | two-sample z-test, unpooled (Wald) variance | `statsmodels` `test_proportions_2indep(method="wald")`, `confint_proportions_2indep(method="wald")` |
//! | means | Welch's t-test, Welch–Satterthwaite df | `scipy.stats.ttest_ind(equal_var=False)` and its `confidence_interval` |
//! | ratios | delta method on per-unit (numerator, denominator), normal | numpy moments, `scipy.stats.norm` |
//! | concentration | Simpson concentration between units (pairs of impressions across hash groups), grouped jackknife, normal | numpy from the formula, `scipy.stats.norm` |
//! | relative difference | delta method on treatment / control - 1, normal | same |
//! | several treatments | Holm step-down | `statsmodels` `multipletests(method="holm")` |
//! | secondary metrics, false discovery rate | Benjamini-Hochberg step-up | `statsmodels` `multipletests(method="fdr_bh")` |
//! | sequential experiments, always valid | asymptotic confidence sequence (Waudby-Smith et al.; GrowthBook's) | numpy from the formula, p-value by `scipy.optimize.brentq` |
//! | sample ratio | chi-square goodness of fit | `scipy.stats.chisquare` |
//! | guardrail, always valid | mixture SPRT on the relative difference | numpy, closed form |
//! | CUPED (pre-period covariate), pooled θ | OLS of the outcome on the arm indicators and the centred covariate, HC2 standard errors, normal | `statsmodels` `OLS(...).fit(cov_type="HC2")`, delta method on its covariance for the relative difference |
//! | power, sample size, minimum detectable effect | two-sample z-test | `statsmodels` `NormalIndPower().power`, `zt_ind_solve_power` |
//!
//! CUPED lives in `cuped.rs`; the concentration estimator in `simpson.rs`, the confidence
//! sequences and the mSPRT in `sequential.rs`, power and sample size in
//! `power.rs`; all are re-exported here.
//!
//! Sample (co)variances use n - 1. A comparison is computed wherever its
//! method defines it (a positive standard error of the difference), and
//! says why not otherwise ([`NotComputed`]); the relative difference is
//! separately undefined when the control's value is 0 ([`Relative`]), which
//! takes nothing from the absolute difference, its interval or p-value.

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

mod cuped;
mod power;
mod sequential;
mod simpson;

pub use cuped::{CupedFit, CupedUnit};
pub use power::{
    effect_size_for_power, minimum_detectable_effect, nobs1_for_power, normal_ind_power,
};
pub use sequential::{
    SEQUENTIAL_TUNING_PARAMETER, confidence_sequence_half_width, confidence_sequence_p_value,
    msprt_mixture_p_value, msprt_p_value, sequential_rho,
};
pub use simpson::{concentration, jackknife};

/// Running sums of per-unit pairs `(y, x)`: `y` is the unit's value (or a
/// ratio's numerator), `x` a ratio's denominator (1 for the other kinds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    /// Units.
    pub n: f64,
    /// Σ y.
    pub sum_y: f64,
    /// Σ y².
    pub sum_yy: f64,
    /// Σ x.
    pub sum_x: f64,
    /// Σ x².
    pub sum_xx: f64,
    /// Σ x·y.
    pub sum_xy: f64,
}

impl Moments {
    /// Adds one unit.
    pub fn push(&mut self, y: f64, x: f64) {
        self.n += 1.0;
        self.sum_y += y;
        self.sum_yy += y * y;
        self.sum_x += x;
        self.sum_xx += x * x;
        self.sum_xy += x * y;
    }

    /// Moments of the given pairs.
    pub fn of(pairs: impl IntoIterator<Item = (f64, f64)>) -> Self {
        let mut moments = Self::default();
        for (y, x) in pairs {
            moments.push(y, x);
        }
        moments
    }

    /// Mean of `y` over units.
    pub fn mean(&self) -> f64 {
        self.sum_y / self.n
    }

    /// Sample variance of `y` (n - 1).
    pub fn variance_y(&self) -> f64 {
        (self.sum_yy - self.sum_y * self.sum_y / self.n) / (self.n - 1.0)
    }

    fn variance_x(&self) -> f64 {
        (self.sum_xx - self.sum_x * self.sum_x / self.n) / (self.n - 1.0)
    }

    fn covariance(&self) -> f64 {
        (self.sum_xy - self.sum_x * self.sum_y / self.n) / (self.n - 1.0)
    }

    /// Σy / Σx.
    pub fn ratio(&self) -> f64 {
        self.sum_y / self.sum_x
    }
}

/// Why a treatment was not compared with control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotComputed {
    /// The arm is the control itself.
    Control,
    /// An arm has nothing to estimate from: no units, no denominator (a
    /// ratio whose units saw no impressions), no items (concentration).
    NoData,
    /// An arm has fewer than two units (no sample variance), or too few
    /// hash groups with data for the jackknife.
    TooFewUnits,
    /// The difference has a standard error of 0: every unit of both arms
    /// has the same value (0/200 against 0/200), so the method's statistic
    /// is undefined.
    NoVariance,
}

/// A point estimate with its variance (the square of its standard error).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The value.
    pub value: f64,
    /// Variance of the value.
    pub variance: f64,
}

/// Refuses arms with no unit or a single one.
fn enough_units(moments: &Moments) -> Result<(), NotComputed> {
    if moments.n <= 0.0 {
        Err(NotComputed::NoData)
    } else if moments.n < 2.0 {
        Err(NotComputed::TooFewUnits)
    } else {
        Ok(())
    }
}

impl Estimate {
    /// A proportion (units with `y` = 1 among `n`), variance p(1-p)/n.
    pub fn proportion(moments: &Moments) -> Result<Self, NotComputed> {
        enough_units(moments)?;
        let p = moments.mean();
        Ok(Self {
            value: p,
            variance: p * (1.0 - p) / moments.n,
        })
    }

    /// A mean, variance s²/n.
    pub fn mean(moments: &Moments) -> Result<Self, NotComputed> {
        enough_units(moments)?;
        Ok(Self {
            value: moments.mean(),
            variance: moments.variance_y() / moments.n,
        })
    }

    /// A ratio Σy/Σx, variance by the delta method:
    /// (s²_y − 2R·s_xy + R²·s²_x) / (n·x̄²).
    pub fn ratio(moments: &Moments) -> Result<Self, NotComputed> {
        enough_units(moments)?;
        if moments.sum_x == 0.0 {
            return Err(NotComputed::NoData);
        }
        let ratio = moments.ratio();
        let mean_x = moments.sum_x / moments.n;
        let variance = (moments.variance_y() - 2.0 * ratio * moments.covariance()
            + ratio * ratio * moments.variance_x())
            / (moments.n * mean_x * mean_x);
        Ok(Self {
            value: ratio,
            variance: variance.max(0.0),
        })
    }
}

/// The relative difference treatment / control − 1, which a control
/// value of 0 leaves undefined while the absolute difference still is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Relative {
    /// Defined, with its delta-method standard error and normal interval:
    /// Var ≈ Var_t / c² + t²·Var_c / c⁴.
    Defined {
        /// Treatment / control − 1.
        value: f64,
        /// Its standard error.
        standard_error: f64,
        /// Its interval.
        interval: (f64, f64),
    },
    /// The control's value is 0: there is nothing to be relative to.
    ControlIsZero,
}

impl Relative {
    fn of(control: Estimate, treatment: Estimate, alpha: f64) -> Self {
        if control.value == 0.0 {
            return Self::ControlIsZero;
        }
        let c = control.value;
        let t = treatment.value;
        let variance = treatment.variance / (c * c) + t * t * control.variance / (c * c * c * c);
        let value = t / c - 1.0;
        let standard_error = variance.sqrt();
        Self::Defined {
            value,
            standard_error,
            interval: interval(value, standard_error, alpha),
        }
    }

    /// Treatment / control − 1, when defined.
    pub fn value(&self) -> Option<f64> {
        match self {
            Self::Defined { value, .. } => Some(*value),
            Self::ControlIsZero => None,
        }
    }

    /// Its standard error, when defined.
    pub fn standard_error(&self) -> Option<f64> {
        match self {
            Self::Defined { standard_error, .. } => Some(*standard_error),
            Self::ControlIsZero => None,
        }
    }

    /// Its interval, when defined.
    pub fn interval(&self) -> Option<(f64, f64)> {
        match self {
            Self::Defined { interval, .. } => Some(*interval),
            Self::ControlIsZero => None,
        }
    }
}

/// Treatment against control.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Control's value.
    pub control: f64,
    /// Treatment's value.
    pub treatment: f64,
    /// Treatment minus control.
    pub absolute: f64,
    /// Standard error of the absolute difference.
    pub standard_error: f64,
    /// Interval of the absolute difference.
    pub absolute_interval: (f64, f64),
    /// Treatment / control − 1, or why it is undefined.
    pub relative: Relative,
    /// Two-sided p-value of "no difference".
    pub p_value: f64,
}

fn standard_normal() -> Normal {
    Normal::standard()
}

/// The two-sided critical value of the standard normal at `alpha`.
pub fn normal_critical(alpha: f64) -> f64 {
    standard_normal().inverse_cdf(1.0 - alpha / 2.0)
}

/// Two-sided p-value of a standard normal statistic.
pub fn normal_p_value(z: f64) -> f64 {
    2.0 * standard_normal().sf(z.abs())
}

fn interval(center: f64, standard_error: f64, alpha: f64) -> (f64, f64) {
    let half = normal_critical(alpha) * standard_error;
    (center - half, center + half)
}

/// The standard error of a difference of two independent estimates, when
/// it is positive (else the statistic is undefined).
fn difference_standard_error(control: Estimate, treatment: Estimate) -> Result<f64, NotComputed> {
    let standard_error = (control.variance + treatment.variance).sqrt();
    if standard_error > 0.0 && standard_error.is_finite() {
        Ok(standard_error)
    } else {
        Err(NotComputed::NoVariance)
    }
}

/// Normal (z) comparison of two estimates: proportions, ratios, and any
/// estimate with a standard error. Defined whenever the standard error of
/// the difference is positive, whatever the control's value.
pub fn compare_normal(
    control: Estimate,
    treatment: Estimate,
    alpha: f64,
) -> Result<Comparison, NotComputed> {
    let absolute = treatment.value - control.value;
    let standard_error = difference_standard_error(control, treatment)?;
    Ok(Comparison {
        control: control.value,
        treatment: treatment.value,
        absolute,
        standard_error,
        absolute_interval: interval(absolute, standard_error, alpha),
        relative: Relative::of(control, treatment, alpha),
        p_value: normal_p_value(absolute / standard_error),
    })
}

/// Two-sample z-test of proportions, unpooled (Wald) variance: defined as
/// soon as one arm has successes and failures, a control with no success
/// included (as statsmodels' Wald test is).
pub fn compare_proportions(
    control: &Moments,
    treatment: &Moments,
    alpha: f64,
) -> Result<Comparison, NotComputed> {
    compare_normal(
        Estimate::proportion(control)?,
        Estimate::proportion(treatment)?,
        alpha,
    )
}

/// Delta-method comparison of ratio metrics.
pub fn compare_ratios(
    control: &Moments,
    treatment: &Moments,
    alpha: f64,
) -> Result<Comparison, NotComputed> {
    compare_normal(
        Estimate::ratio(control)?,
        Estimate::ratio(treatment)?,
        alpha,
    )
}

/// Welch's t-test of means: Student's t with Welch–Satterthwaite degrees
/// of freedom for the p-value and the absolute interval. Defined whenever
/// the combined standard error is positive (an all-zero control included:
/// the degrees of freedom are then the treatment's n − 1).
pub fn compare_means(
    control: &Moments,
    treatment: &Moments,
    alpha: f64,
) -> Result<Comparison, NotComputed> {
    let c = Estimate::mean(control)?;
    let t = Estimate::mean(treatment)?;
    let absolute = t.value - c.value;
    let standard_error = difference_standard_error(c, t)?;
    let df = (c.variance + t.variance).powi(2)
        / (c.variance.powi(2) / (control.n - 1.0) + t.variance.powi(2) / (treatment.n - 1.0));
    let student = StudentsT::new(0.0, 1.0, df).map_err(|_| NotComputed::NoVariance)?;
    let statistic = absolute / standard_error;
    let half = student.inverse_cdf(1.0 - alpha / 2.0) * standard_error;
    Ok(Comparison {
        control: c.value,
        treatment: t.value,
        absolute,
        standard_error,
        absolute_interval: (absolute - half, absolute + half),
        relative: Relative::of(c, t, alpha),
        p_value: 2.0 * student.sf(statistic.abs()),
    })
}

/// Holm's step-down adjustment of `p_values`, in their order: the i-th
/// smallest is multiplied by (m − i), made monotone, capped at 1. Controls
/// the family-wise error rate for any dependence between the tests.
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|a, b| p_values[*a].total_cmp(&p_values[*b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0_f64;
    for (rank, index) in order.into_iter().enumerate() {
        running = running.max(((m - rank) as f64 * p_values[index]).min(1.0));
        adjusted[index] = running;
    }
    adjusted
}

/// Benjamini-Hochberg's step-up adjustment of `p_values`, in their order:
/// the i-th smallest is multiplied by m / i, made monotone from the
/// largest down, capped at 1. Controls the false discovery rate for
/// independent or positively dependent tests.
pub fn benjamini_hochberg(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|a, b| p_values[*a].total_cmp(&p_values[*b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 1.0_f64;
    for (rank, index) in order.into_iter().enumerate().rev() {
        running = running.min(p_values[index] * m as f64 / (rank + 1) as f64);
        adjusted[index] = running;
    }
    adjusted
}

/// Chi-square goodness of fit of `observed` counts against `weights`
/// (any positive scale): the statistic and its p-value (k − 1 df).
pub fn chi_square_goodness_of_fit(observed: &[u64], weights: &[f64]) -> Option<(f64, f64)> {
    let total: f64 = observed.iter().map(|count| *count as f64).sum();
    let weight_total: f64 = weights.iter().sum();
    if observed.len() < 2 || observed.len() != weights.len() || total == 0.0 {
        return None;
    }
    let statistic: f64 = observed
        .iter()
        .zip(weights)
        .map(|(count, weight)| {
            let expected = total * weight / weight_total;
            (*count as f64 - expected).powi(2) / expected
        })
        .sum();
    let distribution = ChiSquared::new((observed.len() - 1) as f64).ok()?;
    Some((statistic, distribution.sf(statistic)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holm_multiplies_by_rank_and_stays_monotone() {
        let adjusted = holm(&[0.01, 0.04, 0.03]);
        assert_eq!(adjusted, vec![0.03, 0.06, 0.06]);
        assert_eq!(holm(&[0.8, 0.9]), vec![1.0, 1.0]);
    }

    #[test]
    fn benjamini_hochberg_scales_by_m_over_rank_and_stays_monotone_from_the_top() {
        // 0.01·3/1 = 0.03; 0.03·3/2 = 0.045; 0.04·3/3 = 0.04, which caps 0.045.
        let adjusted = benjamini_hochberg(&[0.01, 0.04, 0.03]);
        let expected = [0.03, 0.04, 0.04];
        for (got, want) in adjusted.iter().zip(expected) {
            assert!((got - want).abs() < 1e-15, "{adjusted:?}");
        }
        assert_eq!(benjamini_hochberg(&[0.8, 0.9]), vec![0.9, 0.9]);
        assert_eq!(benjamini_hochberg(&[]), Vec::<f64>::new());
        // Never above Holm's.
        let p = [0.001, 0.2, 0.04, 0.012, 0.5];
        for (bh, holm) in benjamini_hochberg(&p).iter().zip(holm(&p)) {
            assert!(*bh <= holm, "{bh} {holm}");
        }
    }

    #[test]
    fn comparisons_refuse_arms_without_data_units_or_variance_and_say_which() {
        let empty = Moments::default();
        let one = Moments::of([(1.0, 1.0)]);
        let constant = Moments::of([(1.0, 1.0), (1.0, 1.0)]);
        assert_eq!(
            compare_proportions(&empty, &one, 0.05),
            Err(NotComputed::NoData)
        );
        assert_eq!(
            compare_proportions(&one, &constant, 0.05),
            Err(NotComputed::TooFewUnits)
        );
        assert_eq!(
            compare_means(&constant, &constant, 0.05),
            Err(NotComputed::NoVariance)
        );
        let no_denominator = Moments::of([(0.0, 0.0), (0.0, 0.0)]);
        assert_eq!(
            compare_ratios(&no_denominator, &constant, 0.05),
            Err(NotComputed::NoData)
        );
    }
}
