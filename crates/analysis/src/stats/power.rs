//! Power and sample size of the two-sample z-test, as `statsmodels`'
//! `NormalIndPower` and `zt_ind_solve_power` define them (two-sided, both
//! tails counted): with a standardised effect `d` (difference / standard
//! deviation of one unit), `nobs1` units in control and `ratio * nobs1` in
//! the treatment, the test sees `n = 1 / (1/nobs1 + 1/(ratio * nobs1))`
//! and has power `sf(z - d·√n) + cdf(-z - d·√n)`, `z` the two-sided
//! critical value at `alpha`. The solvers invert it by bisection to the
//! last bits, which `testdata/reference.json` checks against statsmodels.

use statrs::distribution::{ContinuousCDF, Normal};

use super::normal_critical;

/// The probability that a two-sided z-test at `alpha` finds an effect of
/// standardised size `effect_size` significant, with `nobs1` units in
/// control and `ratio * nobs1` in the treatment.
pub fn normal_ind_power(effect_size: f64, nobs1: f64, alpha: f64, ratio: f64) -> f64 {
    let normal = Normal::standard();
    let effective = 1.0 / (1.0 / nobs1 + 1.0 / (nobs1 * ratio));
    let shift = effect_size * effective.sqrt();
    let critical = normal_critical(alpha);
    normal.sf(critical - shift) + normal.cdf(-critical - shift)
}

/// Most times a bracket is widened (by 4 each time): far past any sample
/// size or effect a float can hold.
const MAX_WIDENINGS: usize = 600;

/// Whether `value` is a positive finite number.
fn positive(value: f64) -> bool {
    value > 0.0 && value.is_finite()
}

/// Bisects `reaches` (true at and above the answer) between `low` and
/// `high` until they agree to the last bits.
fn bisect(mut low: f64, mut high: f64, reaches: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..200 {
        let middle = 0.5 * (low + high);
        if middle <= low || middle >= high {
            break;
        }
        if reaches(middle) {
            high = middle;
        } else {
            low = middle;
        }
    }
    0.5 * (low + high)
}

/// The control units (`nobs1`) at which the test has `power` against an
/// effect of standardised size `effect_size`; `None` when there is no
/// finite answer: `effect_size` 0 or not finite, `power` not above `alpha`
/// and below 1, `alpha` too small for a critical value, or an effect too
/// small (or large) for a float's sample size.
pub fn nobs1_for_power(effect_size: f64, alpha: f64, power: f64, ratio: f64) -> Option<f64> {
    let critical = normal_critical(alpha);
    let usable = positive(effect_size.abs())
        && power > alpha
        && power < 1.0
        && positive(ratio)
        && positive(critical);
    if !usable {
        return None;
    }
    // The one-tail approximation is within a factor of 4 of the answer.
    let guess = ((critical + normal_critical(2.0 * (1.0 - power))) / effect_size).powi(2)
        * (1.0 + 1.0 / ratio);
    // An effect so large that the guess underflows needs (about) one unit.
    let guess = if guess == 0.0 {
        f64::MIN_POSITIVE
    } else {
        guess
    };
    if !positive(guess) {
        return None;
    }
    let reaches = |nobs1: f64| normal_ind_power(effect_size, nobs1, alpha, ratio) >= power;
    let (mut low, mut high) = (guess / 4.0, guess * 4.0);
    let mut widenings = 0;
    while reaches(low) && positive(low / 4.0) && widenings < MAX_WIDENINGS {
        low /= 4.0;
        widenings += 1;
    }
    while !reaches(high) && positive(high * 4.0) && widenings < MAX_WIDENINGS {
        high *= 4.0;
        widenings += 1;
    }
    (!reaches(low) && reaches(high)).then(|| bisect(low, high, reaches))
}

/// The smallest standardised effect the test finds with `power` with
/// `nobs1` control units and `ratio * nobs1` treatment units: the minimum
/// detectable effect; `None` when there is no finite answer.
pub fn effect_size_for_power(nobs1: f64, alpha: f64, power: f64, ratio: f64) -> Option<f64> {
    let usable = power > alpha
        && power < 1.0
        && positive(nobs1)
        && positive(ratio)
        && positive(normal_critical(alpha));
    if !usable {
        return None;
    }
    let reaches = |effect: f64| normal_ind_power(effect, nobs1, alpha, ratio) >= power;
    let mut high = 1.0;
    let mut widenings = 0;
    while !reaches(high) && positive(high * 4.0) && widenings < MAX_WIDENINGS {
        high *= 4.0;
        widenings += 1;
    }
    reaches(high).then(|| bisect(0.0, high, reaches))
}

/// The smallest true difference that a two-sided test at `alpha` finds
/// significant with probability `power`, when the difference's estimate
/// has `standard_error`: `(z(1 - alpha/2) + z(power)) * standard_error`
/// (the far tail neglected, as a readout's minimum detectable effect
/// usually is).
pub fn minimum_detectable_effect(standard_error: f64, alpha: f64, power: f64) -> f64 {
    (normal_critical(alpha) + normal_critical(2.0 * (1.0 - power))) * standard_error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_detectable_effect_at_5_percent_and_80_percent_power_is_2_8_standard_errors() {
        // z(0.975) + z(0.8) = 1.959964 + 0.841621 (scipy.stats.norm.ppf).
        let mde = minimum_detectable_effect(0.01, 0.05, 0.8);
        assert!((mde - 0.028_015_85).abs() < 1e-7, "{mde}");
        let stricter = minimum_detectable_effect(0.01, 0.01, 0.9);
        assert!((stricter - 0.038_573_81).abs() < 1e-7, "{stricter}");
    }

    #[test]
    fn the_solvers_invert_the_power_function() {
        let nobs1 = nobs1_for_power(0.1, 0.05, 0.8, 1.0).expect("solvable");
        assert!((normal_ind_power(0.1, nobs1, 0.05, 1.0) - 0.8).abs() < 1e-12);
        let effect = effect_size_for_power(nobs1, 0.05, 0.8, 1.0).expect("solvable");
        assert!((effect - 0.1).abs() < 1e-9, "{effect}");
        assert_eq!(nobs1_for_power(0.0, 0.05, 0.8, 1.0), None);
        assert_eq!(
            nobs1_for_power(0.1, 0.05, 0.04, 1.0),
            None,
            "power below alpha"
        );
    }

    #[test]
    fn inputs_with_no_finite_answer_give_none_and_never_loop() {
        assert_eq!(
            nobs1_for_power(1e-160, 0.05, 0.8, 1.0),
            None,
            "a sample past any float"
        );
        assert_eq!(nobs1_for_power(f64::NAN, 0.05, 0.8, 1.0), None);
        assert_eq!(
            nobs1_for_power(0.1, 1e-17, 0.8, 1.0),
            None,
            "no critical value"
        );
        assert_eq!(nobs1_for_power(0.1, 0.05, 0.8, f64::NAN), None);
        let huge = nobs1_for_power(1e301, 0.05, 0.8, 1.0);
        assert!(huge.is_none_or(|n| n.is_finite()), "{huge:?}");
        assert_eq!(effect_size_for_power(f64::NAN, 0.05, 0.8, 1.0), None);
        assert_eq!(effect_size_for_power(100.0, 1e-17, 0.8, 1.0), None);
        assert!(effect_size_for_power(1e300, 0.05, 0.8, 1.0).is_some_and(|d| d > 0.0));
    }
}
