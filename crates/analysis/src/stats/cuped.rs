//! CUPED (Deng, Xu, Kohavi and Walker, 2013) as the regression it is: the
//! outcome `y` on one indicator per treatment and the unit's pre-period
//! covariate `x` centred on its mean over every unit,
//!
//! y = β₀ + Σⱼ βⱼ·[arm = j] + θ·(x − x̄) + e,
//!
//! fitted by least squares over every arm at once, so θ is pooled across
//! arms (the within-arm slope: Σ(x − x̄ₐ)(y − ȳₐ) / Σ(x − x̄ₐ)²). βⱼ is the
//! adjusted difference (ȳⱼ − ȳ₀) − θ·(x̄ⱼ − x̄₀), β₀ the control's mean
//! adjusted to the covariate's mean, and β₀ + βⱼ the treatment's.
//!
//! Standard errors are heteroskedasticity-robust, HC2 (MacKinnon and
//! White, 1985): Σᵢ wᵢ²·eᵢ² / (1 − hᵢᵢ), where wᵢ is unit i's weight in the
//! coefficient and hᵢᵢ its leverage, 1/nₐ + (xᵢ − x̄ₐ)²/Sxx. Without a
//! covariate (θ = 0, hᵢᵢ = 1/nₐ) that is exactly Welch's variance, so the
//! variance reduction compares like with like, and unequal arms with
//! unequal variances stay covered. Intervals and p-values are normal (not
//! Welch's t: the two differ only at small samples), as statsmodels'
//! `OLS(...).fit(cov_type="HC2")` gives them (`testdata/make_reference.py` checks every number against
//! it); the relative difference βⱼ/β₀ takes its variance by the delta
//! method from the same covariance matrix.
//!
//! The fit needs two passes over the units ([`CupedFit::of`]); what it
//! keeps is enough to compare any treatment at any alpha.

use super::{Comparison, NotComputed, Relative, interval, normal_p_value};

/// Units of every arm that must have a covariate other than 0 (a
/// pre-period) before the fit adjusts at all.
pub const MIN_UNITS_WITH_COVARIATE: f64 = 10.0;

/// One arm's part of a fit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct ArmFit {
    n: f64,
    /// Units whose covariate is not 0.
    with_covariate: f64,
    mean_y: f64,
    mean_x: f64,
    /// Σ eᵢ²/(1 − hᵢᵢ) over the arm's units.
    weighted_residuals: f64,
    /// Σ (xᵢ − x̄ₐ)·eᵢ²/(1 − hᵢᵢ) over the arm's units.
    covariate_weighted_residuals: f64,
}

/// An arm's sums of the first pass, of values less its first unit's.
#[derive(Debug, Clone, Copy, Default)]
struct ShiftedSums {
    shift: (f64, f64),
    n: f64,
    with_covariate: f64,
    y: f64,
    x: f64,
    xx: f64,
    xy: f64,
}

/// A CUPED fit of one metric over every arm of an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct CupedFit {
    arms: Vec<ArmFit>,
    control: usize,
    /// x̄ over every unit.
    mean_x: f64,
    /// Σ (xᵢ − x̄ₐ)² within arms; 0 when the covariate does not vary
    /// within any arm (no unit has a pre-period, say): θ is then 0.
    within_xx: f64,
    /// θ.
    theta: f64,
    /// Σ (xᵢ − x̄ₐ)²·eᵢ²/(1 − hᵢᵢ) over every unit.
    squared_covariate_weighted_residuals: f64,
}

/// A unit of the fit: its arm, outcome and covariate.
pub type CupedUnit = (usize, f64, f64);

impl CupedFit {
    /// Heap bytes a fit takes per arm.
    pub const BYTES_PER_ARM: usize = std::mem::size_of::<ArmFit>();

    /// Fits `units` (an iterator made anew for each of its two passes)
    /// of `arms` arms whose control is `control`. An arm with fewer than
    /// two units is left out of nothing: its comparison is refused
    /// ([`Self::comparison`]) and it still informs θ.
    pub fn of<I>(units: impl Fn() -> I, arms: usize, control: usize) -> Self
    where
        I: Iterator<Item = CupedUnit>,
    {
        // First pass: each arm's sums, shifted by the arm's first unit (so
        // the co-moments lose nothing to cancellation when values are far
        // from 0), then its means and within-arm co-moments.
        let mut fit = vec![ArmFit::default(); arms];
        let mut sums = vec![ShiftedSums::default(); arms];
        for (arm, y, x) in units() {
            let sums = &mut sums[arm];
            if sums.n == 0.0 {
                sums.shift = (y, x);
            }
            let (dy, dx) = (y - sums.shift.0, x - sums.shift.1);
            sums.n += 1.0;
            sums.with_covariate += f64::from(u8::from(x != 0.0));
            sums.y += dy;
            sums.x += dx;
            sums.xx += dx * dx;
            sums.xy += dx * dy;
        }
        let mut comoments = vec![(0.0_f64, 0.0_f64); arms];
        for ((fitted, sums), comoment) in fit.iter_mut().zip(&sums).zip(&mut comoments) {
            if sums.n == 0.0 {
                continue;
            }
            fitted.n = sums.n;
            fitted.with_covariate = sums.with_covariate;
            let (mean_dy, mean_dx) = (sums.y / sums.n, sums.x / sums.n);
            fitted.mean_y = sums.shift.0 + mean_dy;
            fitted.mean_x = sums.shift.1 + mean_dx;
            *comoment = (
                sums.xx - sums.n * mean_dx * mean_dx,
                sums.xy - sums.n * mean_dx * mean_dy,
            );
        }
        let total_n: f64 = fit.iter().map(|arm| arm.n).sum();
        let mean_x = if total_n > 0.0 {
            fit.iter().map(|arm| arm.n * arm.mean_x).sum::<f64>() / total_n
        } else {
            0.0
        };
        let within_xx: f64 = comoments.iter().map(|(xx, _)| xx.max(0.0)).sum();
        let within_xy: f64 = comoments.iter().map(|(_, xy)| xy).sum();
        // A covariate constant within every arm carries nothing; its spread
        // at rounding level must not make a θ of noise.
        let scale = fit
            .iter()
            .map(|arm| arm.mean_x.abs())
            .fold(mean_x.abs(), f64::max)
            .max(1.0);
        let varies = within_xx > 1e-24 * scale * scale * total_n;
        let within_xx = if varies { within_xx } else { 0.0 };
        let theta = if varies { within_xy / within_xx } else { 0.0 };
        // Second pass: residuals, weighted by their leverage (HC2).
        let mut squared = 0.0;
        for (arm, y, x) in units() {
            let fitted = &mut fit[arm];
            let u = x - fitted.mean_x;
            let residual = (y - fitted.mean_y) - theta * u;
            let leverage = 1.0 / fitted.n + if varies { u * u / within_xx } else { 0.0 };
            let weighted = residual * residual / (1.0 - leverage);
            // A lone unit of an arm has leverage 1 and residual 0: it adds
            // nothing (its arm's comparison is refused).
            let weighted = if weighted.is_finite() { weighted } else { 0.0 };
            fitted.weighted_residuals += weighted;
            fitted.covariate_weighted_residuals += u * weighted;
            squared += u * u * weighted;
        }
        Self {
            arms: fit,
            control,
            mean_x,
            within_xx,
            theta,
            squared_covariate_weighted_residuals: squared,
        }
    }

    /// θ: the outcome's change per unit of the covariate, within arms.
    pub fn theta(&self) -> f64 {
        self.theta
    }

    /// Whether the fit is worth reading: the covariate varies within the
    /// arms, and every arm with units has at least
    /// [`MIN_UNITS_WITH_COVARIATE`] with a covariate (a fit on a handful
    /// has a unit of leverage near 1, and an interval that means little).
    /// When it is not, θ may still be computed, and the results read the
    /// unadjusted comparison.
    pub fn applies(&self) -> bool {
        self.within_xx > 0.0
            && self
                .arms
                .iter()
                .all(|arm| arm.n == 0.0 || arm.with_covariate >= MIN_UNITS_WITH_COVARIATE)
    }

    /// The mean of `arm` adjusted to the covariate's mean over every unit:
    /// ȳₐ − θ·(x̄ₐ − x̄) (β₀ for the control); `None` for an arm without
    /// units.
    pub fn adjusted_mean(&self, arm: usize) -> Option<f64> {
        let fitted = self.arms.get(arm).filter(|fitted| fitted.n > 0.0)?;
        Some(fitted.mean_y - self.theta * (fitted.mean_x - self.mean_x))
    }

    /// The adjusted comparison of `treatment` with the control at `alpha`:
    /// the control's adjusted mean β₀, the treatment's β₀ + βⱼ, the
    /// difference βⱼ with its HC2 standard error, normal interval and
    /// p-value, and βⱼ/β₀ by the delta method.
    pub fn comparison(&self, treatment: usize, alpha: f64) -> Result<Comparison, NotComputed> {
        if treatment == self.control {
            return Err(NotComputed::Control);
        }
        let (control, arm) = (&self.arms[self.control], &self.arms[treatment]);
        for n in [control.n, arm.n] {
            if n <= 0.0 {
                return Err(NotComputed::NoData);
            }
            if n < 2.0 {
                return Err(NotComputed::TooFewUnits);
            }
        }
        // Weights: β₀ = Σ [a = 0]/n₀·yᵢ − e·Σ uᵢyᵢ/S with e = x̄₀ − x̄;
        // βⱼ = Σ ([a = j]/nⱼ − [a = 0]/n₀)·yᵢ − d·Σ uᵢyᵢ/S with d = x̄ⱼ − x̄₀.
        let s = self.within_xx;
        let (per_s, per_s2) = if s > 0.0 {
            (1.0 / s, 1.0 / (s * s))
        } else {
            (0.0, 0.0)
        };
        let e = control.mean_x - self.mean_x;
        let d = arm.mean_x - control.mean_x;
        let q = self.squared_covariate_weighted_residuals;
        let (n0, nj) = (control.n, arm.n);
        let (r0, rj) = (control.weighted_residuals, arm.weighted_residuals);
        let (u0, uj) = (
            control.covariate_weighted_residuals,
            arm.covariate_weighted_residuals,
        );
        let var_difference = rj / (nj * nj) + r0 / (n0 * n0)
            - 2.0 * d * per_s * (uj / nj - u0 / n0)
            + d * d * q * per_s2;
        let var_control = r0 / (n0 * n0) - 2.0 * e * u0 / n0 * per_s + e * e * q * per_s2;
        let covariance = -r0 / (n0 * n0) - d * u0 / n0 * per_s - e * uj / nj * per_s
            + e * u0 / n0 * per_s
            + e * d * q * per_s2;
        let standard_error = var_difference.max(0.0).sqrt();
        if !(standard_error > 0.0 && standard_error.is_finite()) {
            return Err(NotComputed::NoVariance);
        }
        let control_mean = control.mean_y - self.theta * e;
        let difference = (arm.mean_y - control.mean_y) - self.theta * d;
        let relative = if control_mean == 0.0 {
            Relative::ControlIsZero
        } else {
            let b0 = control_mean;
            let value = difference / b0;
            let variance = var_difference / (b0 * b0)
                + difference * difference * var_control / (b0 * b0 * b0 * b0)
                - 2.0 * difference * covariance / (b0 * b0 * b0);
            let standard_error = variance.max(0.0).sqrt();
            Relative::Defined {
                value,
                standard_error,
                interval: interval(value, standard_error, alpha),
            }
        };
        Ok(Comparison {
            control: control_mean,
            treatment: control_mean + difference,
            absolute: difference,
            standard_error,
            absolute_interval: interval(difference, standard_error, alpha),
            relative,
            p_value: normal_p_value(difference / standard_error),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_covariate_the_variance_is_welchs() {
        let control = [1.0, 3.0, 2.0, 6.0];
        let treatment = [2.0, 5.0, 9.0];
        let units: Vec<CupedUnit> = control
            .iter()
            .map(|y| (0, *y, 0.0))
            .chain(treatment.iter().map(|y| (1, *y, 0.0)))
            .collect();
        let fit = CupedFit::of(|| units.iter().copied(), 2, 0);
        assert!(!fit.applies());
        let comparison = fit.comparison(1, 0.05).expect("computed");
        let variance = |values: &[f64]| {
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() as f64 - 1.0)
        };
        let welch = variance(&control) / 4.0 + variance(&treatment) / 3.0;
        assert!((comparison.standard_error.powi(2) - welch).abs() < 1e-12);
        assert!((comparison.absolute - (16.0 / 3.0 - 3.0)).abs() < 1e-12);
    }

    #[test]
    fn a_lone_unit_in_an_arm_refuses_its_comparison() {
        let units: Vec<CupedUnit> = vec![(0, 1.0, 1.0), (0, 2.0, 3.0), (1, 5.0, 2.0)];
        let fit = CupedFit::of(|| units.iter().copied(), 2, 0);
        assert_eq!(fit.comparison(1, 0.05), Err(NotComputed::TooFewUnits));
        assert_eq!(fit.comparison(0, 0.05), Err(NotComputed::Control));
    }
}
