//! Always-valid inference: the confidence sequences of sequential
//! experiments, and the mixture sequential probability ratio test of the
//! guardrails.
//!
//! # Confidence sequences
//!
//! An experiment with `sequential` set reads every comparison through the
//! asymptotic confidence sequence of Waudby-Smith et al. ("Time-uniform
//! central limit theory and asymptotic confidence sequences", 2023, eq. 9
//! of arXiv:2103.06476v7), in the form of GrowthBook's `gbstats`
//! (`sequential_interval_halfwidth`, `sequential_rho` and
//! `SequentialTwoSidedTTest.p_value` in `gbstats/frequentist/tests.py`):
//! the half-width formula, ρ from N* and `n` as the units of both arms are
//! exactly gbstats'. For an estimate with standard error `se` from `n`
//! units (both arms together):
//!
//! half-width = se·√n·√( 2(nρ² + 1) / (n²ρ²) · ln(√(nρ² + 1) / α) )
//!
//! with ρ = √( (−2 ln α + ln(−2 ln α + 1)) / N* ), N* the tuning parameter
//! (the experiment's `sequential_tuning_parameter`, 100 to 100,000,000;
//! by default [`SEQUENTIAL_TUNING_PARAMETER`], gbstats' default 5,000):
//! the sequence is narrowest relative to a fixed-horizon interval around
//! n = N*. ρ is fixed by the alpha the results are read at, as in gbstats.
//!
//! The always-valid p-value is the smallest alpha at which the sequence
//! (ρ fixed) excludes zero; solving the half-width for alpha gives gbstats'
//! closed form, p = min(1, √(nρ² + 1) · exp(−nρ²·z² / (2(nρ² + 1)))) with
//! z = estimate / se. So p < alpha exactly when the absolute interval
//! excludes 0.
//!
//! Unlike gbstats' default, which computes the p-value on the relative
//! effect, the p-value here is the absolute difference's: the relative
//! interval gets the same sequence around its own (delta-method) estimate
//! and standard error, so near the boundary the lift's interval can
//! exclude zero while p ≥ alpha (or the reverse). Significance follows the
//! p-value, that is the absolute interval.

use super::{Comparison, Relative};

/// The tuning parameter N* of the confidence sequences: the units (both
/// arms together) at which the sequence is narrowest relative to a
/// fixed-horizon interval. GrowthBook's default.
pub const SEQUENTIAL_TUNING_PARAMETER: f64 = exp_core::DEFAULT_SEQUENTIAL_TUNING_PARAMETER as f64;

/// ρ of the confidence sequence for a two-sided `alpha` and the tuning
/// parameter N*: √((−2 ln α + ln(−2 ln α + 1)) / N*) (gbstats'
/// `sequential_rho`, eq. 161 of arXiv:2103.06476v7).
pub fn sequential_rho(alpha: f64, tuning_parameter: f64) -> f64 {
    let log_alpha = -2.0 * alpha.ln();
    ((log_alpha + (log_alpha + 1.0).ln()) / tuning_parameter).sqrt()
}

/// The half-width of the confidence sequence at `alpha` of an estimate with
/// `standard_error` from `n` units (both arms together), for the mixture's
/// `rho`: se·√n·√(2(nρ² + 1)/(n²ρ²) · ln(√(nρ² + 1)/α)).
pub fn confidence_sequence_half_width(standard_error: f64, n: f64, alpha: f64, rho: f64) -> f64 {
    let rho_squared = rho * rho;
    let spread = n * rho_squared + 1.0;
    standard_error
        * n.sqrt()
        * (2.0 * spread / (n * n * rho_squared) * (spread.sqrt() / alpha).ln()).sqrt()
}

/// The always-valid p-value of "no difference": the smallest alpha at which
/// the confidence sequence (with `rho` fixed) excludes zero,
/// min(1, √(nρ² + 1) · exp(−nρ²·z² / (2(nρ² + 1)))), z = estimate / se
/// (gbstats' `SequentialTwoSidedTTest.p_value`: 1 / its e-value).
pub fn confidence_sequence_p_value(estimate: f64, standard_error: f64, n: f64, rho: f64) -> f64 {
    let tau = n * rho * rho;
    let z = estimate / standard_error;
    let log_p = 0.5 * (tau + 1.0).ln() - tau * z * z / (2.0 * (tau + 1.0));
    log_p.exp().min(1.0)
}

impl Comparison {
    /// The same comparison read as a confidence sequence from `n` units
    /// (both arms together) at `alpha`, with the tuning parameter N*: the
    /// absolute and relative intervals become the sequence's (around the
    /// same estimates, from the same standard errors) and the p-value the
    /// always-valid one.
    pub fn sequential(self, n: f64, alpha: f64, tuning_parameter: f64) -> Self {
        let rho = sequential_rho(alpha, tuning_parameter);
        let half = confidence_sequence_half_width(self.standard_error, n, alpha, rho);
        let relative = match self.relative {
            Relative::Defined {
                value,
                standard_error,
                ..
            } => {
                let half = confidence_sequence_half_width(standard_error, n, alpha, rho);
                Relative::Defined {
                    value,
                    standard_error,
                    interval: (value - half, value + half),
                }
            }
            Relative::ControlIsZero => Relative::ControlIsZero,
        };
        Self {
            absolute_interval: (self.absolute - half, self.absolute + half),
            relative,
            p_value: confidence_sequence_p_value(self.absolute, self.standard_error, n, rho),
            ..self
        }
    }
}

/// The mixture sequential probability ratio test (mSPRT, Johari et al.,
/// "Always valid inference", 2017) with a normal mixture of variance
/// `tau_squared` over the effect: the always-valid p-value of "the true
/// difference is `null`" at one look, given the observed difference and
/// its variance. The running minimum of these over looks is a p-value that
/// stays valid however often it is checked, which a fixed-horizon p-value
/// checked every minute is not.
///
/// Λ = √(V / (V + τ²)) · exp(τ²·(Δ − null)² / (2V·(V + τ²))); p = min(1, 1/Λ).
pub fn msprt_p_value(difference: f64, variance: f64, null: f64, tau_squared: f64) -> f64 {
    if !(variance > 0.0 && tau_squared > 0.0) {
        return 1.0;
    }
    let shift = difference - null;
    let log_lambda = 0.5 * (variance / (variance + tau_squared)).ln()
        + tau_squared * shift * shift / (2.0 * variance * (variance + tau_squared));
    (-log_lambda).exp().min(1.0)
}

/// [`msprt_p_value`] for an equal-weight mixture of several normal
/// mixtures (variances `tau_squares`): the average of their likelihood
/// ratios is itself a mixture likelihood ratio, so the p-value stays
/// always valid, and the test keeps its power for effects far larger than
/// the smallest scale, where one small scale would need far more data.
pub fn msprt_mixture_p_value(
    difference: f64,
    variance: f64,
    null: f64,
    tau_squares: &[f64],
) -> f64 {
    if variance.is_nan() || variance <= 0.0 || tau_squares.is_empty() {
        return 1.0;
    }
    let shift = difference - null;
    let log_lambdas: Vec<f64> = tau_squares
        .iter()
        .filter(|tau_squared| **tau_squared > 0.0)
        .map(|tau_squared| {
            0.5 * (variance / (variance + tau_squared)).ln()
                + tau_squared * shift * shift / (2.0 * variance * (variance + tau_squared))
        })
        .collect();
    if log_lambdas.is_empty() {
        return 1.0;
    }
    // log of the mean likelihood ratio, without overflow.
    let largest = log_lambdas
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let mean = log_lambdas
        .iter()
        .map(|log_lambda| (log_lambda - largest).exp())
        .sum::<f64>()
        / log_lambdas.len() as f64;
    (-(largest + mean.ln())).exp().min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confidence_sequence_is_wider_than_the_fixed_interval_and_excludes_zero_exactly_when_p_is_below_alpha()
     {
        let rho = sequential_rho(0.05, SEQUENTIAL_TUNING_PARAMETER);
        for n in [100.0, 5_000.0, 1e6] {
            let half = confidence_sequence_half_width(0.01, n, 0.05, rho);
            assert!(half > 1.96 * 0.01, "n {n}: {half}");
            // Just outside and just inside the sequence.
            let outside = confidence_sequence_p_value(half * 1.001, 0.01, n, rho);
            let inside = confidence_sequence_p_value(half * 0.999, 0.01, n, rho);
            assert!(outside < 0.05 && inside > 0.05, "n {n}: {outside} {inside}");
        }
        // No difference at all: no evidence.
        assert_eq!(confidence_sequence_p_value(0.0, 0.01, 5_000.0, rho), 1.0);
    }

    #[test]
    fn msprt_evidence_grows_with_a_persistent_difference() {
        let weak = msprt_p_value(0.01, 1e-4, 0.0, 1e-4);
        let strong = msprt_p_value(0.01, 1e-6, 0.0, 1e-4);
        assert!(weak > 0.5, "{weak}");
        assert!(strong < 1e-6, "{strong}");
        assert_eq!(msprt_p_value(0.01, 0.0, 0.0, 1e-4), 1.0);
    }

    #[test]
    fn a_mixture_of_one_scale_is_the_plain_msprt_and_of_several_averages_their_evidence() {
        let single = msprt_p_value(0.02, 1e-4, 0.0, 4e-4);
        let mixed = msprt_mixture_p_value(0.02, 1e-4, 0.0, &[4e-4]);
        assert!((single - mixed).abs() < 1e-12, "{single} {mixed}");
        let scales = [1e-4, 4e-4, 1.6e-3];
        let lambdas: f64 = scales
            .iter()
            .map(|tau_squared| 1.0 / msprt_p_value(0.03, 2e-5, 0.0, *tau_squared))
            .sum();
        let expected = (scales.len() as f64 / lambdas).min(1.0);
        let mixed = msprt_mixture_p_value(0.03, 2e-5, 0.0, &scales);
        assert!(
            (mixed - expected).abs() < 1e-12 * expected.max(1e-300),
            "{mixed} {expected}"
        );
        // A huge effect against a small first scale is still found.
        assert!(msprt_mixture_p_value(8.0, 1.0, 0.05, &[0.0025, 0.04, 0.64, 10.24]) < 0.01);
    }
}
