//! Every statistic against scipy and statsmodels: `testdata/reference.json`
//! holds data and the values `testdata/make_reference.py` computed from it
//! with those libraries (or with numpy from the published formula, where no
//! library has the statistic: the confidence sequences); each is
//! recomputed here and must agree to 1e-6 (Benjamini-Hochberg to 1e-12).
//! A case whose control value is 0 has a `null` relative difference: the
//! comparison must still be computed, with the relative difference
//! undefined.

use exp_analysis::stats::{self, Comparison, Moments, Relative};
use serde_json::Value;

const TOLERANCE: f64 = 1e-6;

fn reference() -> Value {
    let text = include_str!("../testdata/reference.json");
    serde_json::from_str(text).expect("reference.json parses")
}

fn number(value: &Value) -> f64 {
    value.as_f64().expect("a number")
}

fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(number)
        .collect()
}

fn assert_close(what: &str, actual: f64, expected: f64) {
    let scale = expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= TOLERANCE * scale,
        "{what}: computed {actual}, reference {expected}"
    );
}

fn assert_comparison(what: &str, comparison: Comparison, case: &Value) {
    assert_close(
        &format!("{what} absolute"),
        comparison.absolute,
        number(&case["absolute"]),
    );
    let interval = numbers(&case["absolute_interval"]);
    assert_close(
        &format!("{what} absolute lower"),
        comparison.absolute_interval.0,
        interval[0],
    );
    assert_close(
        &format!("{what} absolute upper"),
        comparison.absolute_interval.1,
        interval[1],
    );
    match comparison.relative {
        Relative::Defined {
            value, interval, ..
        } => {
            assert_close(
                &format!("{what} relative"),
                value,
                number(&case["relative"]),
            );
            let relative = numbers(&case["relative_interval"]);
            assert_close(&format!("{what} relative lower"), interval.0, relative[0]);
            assert_close(&format!("{what} relative upper"), interval.1, relative[1]);
        }
        Relative::ControlIsZero => assert!(
            case["relative"].is_null(),
            "{what}: relative undefined, reference {}",
            case["relative"]
        ),
    }
    assert_close(
        &format!("{what} p-value"),
        comparison.p_value,
        number(&case["p_value"]),
    );
}

fn unit_moments(values: &Value) -> Moments {
    Moments::of(numbers(values).into_iter().map(|y| (y, 1.0)))
}

fn ratio_moments(values: &Value) -> Moments {
    let numerators = numbers(&values[0]);
    let denominators = numbers(&values[1]);
    Moments::of(numerators.into_iter().zip(denominators))
}

#[test]
fn proportions_match_statsmodels_wald_test_and_interval() {
    let reference = reference();
    let alpha = number(&reference["alpha"]);
    for (index, case) in reference["proportions"]
        .as_array()
        .expect("reference data is well formed")
        .iter()
        .enumerate()
    {
        let comparison = stats::compare_proportions(
            &unit_moments(&case["control"]),
            &unit_moments(&case["treatment"]),
            alpha,
        )
        .expect("the reference data can be compared");
        assert_comparison(&format!("proportions[{index}]"), comparison, case);
    }
}

#[test]
fn means_match_scipy_welch_t_test_and_interval() {
    let reference = reference();
    let alpha = number(&reference["alpha"]);
    for (index, case) in reference["means"]
        .as_array()
        .expect("an array")
        .iter()
        .enumerate()
    {
        let comparison = stats::compare_means(
            &unit_moments(&case["control"]),
            &unit_moments(&case["treatment"]),
            alpha,
        )
        .expect("the reference data can be compared");
        assert_comparison(&format!("means[{index}]"), comparison, case);
    }
}

#[test]
fn ratios_match_the_delta_method_with_scipy_normal() {
    let reference = reference();
    let alpha = number(&reference["alpha"]);
    for (index, case) in reference["ratios"]
        .as_array()
        .expect("an array")
        .iter()
        .enumerate()
    {
        let comparison = stats::compare_ratios(
            &ratio_moments(&case["control"]),
            &ratio_moments(&case["treatment"]),
            alpha,
        )
        .expect("the reference data can be compared");
        assert_comparison(&format!("ratios[{index}]"), comparison, case);
    }
}

/// The Simpson concentration and its grouped jackknife from an item ×
/// group count table, as the report computes them.
fn concentration_estimate(table: &Value) -> stats::Estimate {
    let rows: Vec<Vec<u32>> = table
        .as_array()
        .expect("an array")
        .iter()
        .map(|row| numbers(row).into_iter().map(|count| count as u32).collect())
        .collect();
    let (value, estimate) = stats::concentration(rows.iter().map(Vec::as_slice));
    let estimate = estimate.expect("reference data is well formed");
    assert_eq!(value, Some(estimate.value));
    estimate
}

#[test]
fn concentration_matches_numpy_between_unit_simpson_and_jackknife() {
    let reference = reference();
    let alpha = number(&reference["alpha"]);
    for (index, case) in reference["concentration"]
        .as_array()
        .expect("reference data is well formed")
        .iter()
        .enumerate()
    {
        let control = concentration_estimate(&case["control"]);
        let treatment = concentration_estimate(&case["treatment"]);
        assert_close(
            "control concentration",
            control.value,
            number(&case["control_concentration"]),
        );
        assert_close(
            "treatment concentration",
            treatment.value,
            number(&case["treatment_concentration"]),
        );
        let comparison = stats::compare_normal(control, treatment, alpha)
            .expect("reference data is well formed");
        assert_comparison(&format!("concentration[{index}]"), comparison, case);
    }
}

#[test]
fn sample_ratio_matches_scipy_chisquare() {
    for case in reference()["sample_ratio"].as_array().expect("an array") {
        let observed: Vec<u64> = numbers(&case["observed"])
            .into_iter()
            .map(|count| count as u64)
            .collect();
        let (statistic, p_value) =
            stats::chi_square_goodness_of_fit(&observed, &numbers(&case["weights"]))
                .expect("reference data is well formed");
        assert_close("chi-square", statistic, number(&case["chi_square"]));
        assert_close("chi-square p-value", p_value, number(&case["p_value"]));
    }
}

#[test]
fn holm_matches_statsmodels_multipletests() {
    for case in reference()["holm"].as_array().expect("an array") {
        let adjusted = stats::holm(&numbers(&case["p_values"]));
        for (actual, expected) in adjusted.iter().zip(numbers(&case["adjusted"])) {
            assert_close("holm", *actual, expected);
        }
    }
}

#[test]
fn benjamini_hochberg_matches_statsmodels_fdr_bh_to_1e_12() {
    for case in reference()["benjamini_hochberg"]
        .as_array()
        .expect("an array")
    {
        let adjusted = stats::benjamini_hochberg(&numbers(&case["p_values"]));
        let expected = numbers(&case["adjusted"]);
        assert_eq!(adjusted.len(), expected.len());
        for (actual, expected) in adjusted.iter().zip(expected) {
            assert!(
                (actual - expected).abs() <= 1e-12,
                "benjamini-hochberg: computed {actual}, statsmodels {expected}"
            );
        }
    }
}

/// The comparison of `reference[kind][index]` at `alpha`, with the units
/// of both arms (`None` for a concentration: its data are item counts).
fn fixed_horizon(
    reference: &Value,
    kind: &str,
    index: usize,
    alpha: f64,
) -> (Comparison, Option<f64>) {
    let case = &reference[kind][index];
    let compared = match kind {
        "proportions" | "means" => {
            let (control, treatment) = (
                unit_moments(&case["control"]),
                unit_moments(&case["treatment"]),
            );
            let comparison = if kind == "means" {
                stats::compare_means(&control, &treatment, alpha)
            } else {
                stats::compare_proportions(&control, &treatment, alpha)
            };
            (comparison, Some(control.n + treatment.n))
        }
        "ratios" => {
            let (control, treatment) = (
                ratio_moments(&case["control"]),
                ratio_moments(&case["treatment"]),
            );
            (
                stats::compare_ratios(&control, &treatment, alpha),
                Some(control.n + treatment.n),
            )
        }
        "concentration" => (
            stats::compare_normal(
                concentration_estimate(&case["control"]),
                concentration_estimate(&case["treatment"]),
                alpha,
            ),
            None,
        ),
        other => panic!("no comparison of kind {other}"),
    };
    (
        compared.0.expect("the reference data can be compared"),
        compared.1,
    )
}

#[test]
fn sequential_intervals_and_p_values_match_the_published_confidence_sequence() {
    let reference = reference();
    for (position, case) in reference["sequential"]
        .as_array()
        .expect("an array")
        .iter()
        .enumerate()
    {
        let kind = case["kind"].as_str().expect("a kind");
        let index = case["case"].as_u64().expect("a case index") as usize;
        let alpha = number(&case["alpha"]);
        let units = number(&case["units"]);
        let (comparison, moments_units) = fixed_horizon(&reference, kind, index, alpha);
        if let Some(moments_units) = moments_units {
            assert_eq!(moments_units, units, "sequential[{position}] units");
        }
        let sequential = comparison.sequential(units, alpha, number(&case["tuning_parameter"]));
        let what = format!("sequential[{position}] ({kind}[{index}], alpha {alpha})");
        assert_close(
            &format!("{what} standard error"),
            sequential.standard_error,
            number(&case["standard_error"]),
        );
        assert_comparison(&what, sequential, case);
        // The same estimate, only a wider interval.
        assert_eq!(sequential.absolute, comparison.absolute);
        assert!(
            sequential.absolute_interval.0 < comparison.absolute_interval.0,
            "{what}: the sequence is wider than the fixed-horizon interval"
        );
    }
}

#[test]
fn msprt_matches_the_closed_form_mixture_likelihood_ratio() {
    for case in reference()["msprt"].as_array().expect("an array") {
        let p_value = stats::msprt_p_value(
            number(&case["difference"]),
            number(&case["variance"]),
            number(&case["null"]),
            number(&case["tau_squared"]),
        );
        assert_close("msprt", p_value, number(&case["p_value"]));
    }
}

#[test]
fn power_and_sample_size_match_statsmodels_normal_ind_power_and_zt_ind_solve_power() {
    for case in reference()["power"].as_array().expect("an array") {
        let (effect, nobs1, alpha, ratio, power) = (
            number(&case["effect_size"]),
            number(&case["nobs1"]),
            number(&case["alpha"]),
            number(&case["ratio"]),
            number(&case["power_target"]),
        );
        assert_close(
            "power",
            stats::normal_ind_power(effect, nobs1, alpha, ratio),
            number(&case["power"]),
        );
        assert_close(
            "nobs1 for power",
            stats::nobs1_for_power(effect, alpha, power, ratio).expect("solvable"),
            number(&case["nobs1_for_power"]),
        );
        let effect_size =
            stats::effect_size_for_power(nobs1, alpha, power, ratio).expect("solvable");
        assert_close(
            "effect size for power",
            effect_size,
            number(&case["effect_size_for_power"]),
        );
        assert_close(
            "power at the effect size solved for",
            stats::normal_ind_power(effect_size, nobs1, alpha, ratio),
            power,
        );
    }
}

#[test]
fn cuped_matches_a_statsmodels_ols_on_the_arm_and_the_centred_covariate_with_hc2() {
    let reference = reference();
    let alpha = number(&reference["alpha"]);
    for (index, case) in reference["cuped"]
        .as_array()
        .expect("an array")
        .iter()
        .enumerate()
    {
        let arms: Vec<usize> = numbers(&case["arms"])
            .into_iter()
            .map(|arm| arm as usize)
            .collect();
        let units: Vec<stats::CupedUnit> = arms
            .iter()
            .zip(numbers(&case["y"]).into_iter().zip(numbers(&case["x"])))
            .map(|(arm, (y, x))| (*arm, y, x))
            .collect();
        let variants = arms.iter().max().expect("units") + 1;
        let fit = stats::CupedFit::of(|| units.iter().copied(), variants, 0);
        assert!(fit.applies());
        assert_close(
            &format!("cuped[{index}] theta"),
            fit.theta(),
            number(&case["theta"]),
        );
        for treatment in case["treatments"].as_array().expect("an array") {
            let arm = number(&treatment["arm"]) as usize;
            let what = format!("cuped[{index}] arm {arm}");
            let comparison = fit
                .comparison(arm, alpha)
                .expect("the reference data can be compared");
            assert_comparison(&what, comparison, treatment);
            assert_close(
                &format!("{what} standard error"),
                comparison.standard_error,
                number(&treatment["standard_error"]),
            );
            assert_close(
                &format!("{what} adjusted control"),
                comparison.control,
                number(&treatment["control"]),
            );
            assert_close(
                &format!("{what} adjusted treatment"),
                comparison.treatment,
                number(&treatment["treatment"]),
            );
        }
    }
}
