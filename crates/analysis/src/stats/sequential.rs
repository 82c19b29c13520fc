//! The always-valid p-value of the guardrails: the mixture sequential
//! probability ratio test.

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
