#!/usr/bin/env python3
"""Reference values for the statistics of exp-analysis, from scipy and
statsmodels, on data drawn here with a fixed seed (and, for what no library
implements, such as the confidence sequences of sequential experiments,
numpy written from the published formula).

Writes JSON to stdout: each case holds its data and what the reference
libraries compute from it. `cargo test -p exp-analysis` recomputes every
case in Rust and compares to 1e-6; CI regenerates the values with the
pinned libraries below and checks the file against them (`--check`: the
data exactly, computed values to 1e-12 relative: the same pinned
libraries gave results that differ in the last bits on another machine).

    pip install numpy==2.3.5 scipy==1.16.3 statsmodels==0.14.5 pandas==3.1.1
    python3 crates/analysis/testdata/make_reference.py > crates/analysis/testdata/reference.json
    python3 crates/analysis/testdata/make_reference.py --check crates/analysis/testdata/reference.json
"""

import json
import math
import sys

import numpy as np
from scipy import optimize, stats
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, zt_ind_solve_power
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    test_proportions_2indep,
)

ALPHA = 0.05
rng = np.random.default_rng(20261129)
Z = stats.norm.ppf(1 - ALPHA / 2)


def relative(c, var_c, t, var_t):
    """Delta-method interval of t / c - 1; undefined (None, None) when the
    control value is 0."""
    if c == 0:
        return None, None
    rel = t / c - 1
    var = var_t / c**2 + t**2 * var_c / c**4
    half = Z * np.sqrt(var)
    return rel, [rel - half, rel + half]


def proportion_case(n_c, p_c, n_t, p_t):
    control = (rng.random(n_c) < p_c).astype(int)
    treatment = (rng.random(n_t) < p_t).astype(int)
    s_c, s_t = int(control.sum()), int(treatment.sum())
    test = test_proportions_2indep(s_t, n_t, s_c, n_c, method="wald", compare="diff")
    low, high = confint_proportions_2indep(
        s_t, n_t, s_c, n_c, method="wald", compare="diff", alpha=ALPHA
    )
    pc, pt = s_c / n_c, s_t / n_t
    rel, rel_ci = relative(pc, pc * (1 - pc) / n_c, pt, pt * (1 - pt) / n_t)
    return {
        "control": control.tolist(),
        "treatment": treatment.tolist(),
        "absolute": pt - pc,
        "absolute_interval": [low, high],
        "relative": rel,
        "relative_interval": rel_ci,
        "p_value": test.pvalue,
    }


def proportion_counts_case(n_c, s_c, n_t, s_t):
    """Fixed success counts (successes first), e.g. a control with none."""
    control = np.array([1] * s_c + [0] * (n_c - s_c))
    treatment = np.array([1] * s_t + [0] * (n_t - s_t))
    test = test_proportions_2indep(s_t, n_t, s_c, n_c, method="wald", compare="diff")
    low, high = confint_proportions_2indep(
        s_t, n_t, s_c, n_c, method="wald", compare="diff", alpha=ALPHA
    )
    pc, pt = s_c / n_c, s_t / n_t
    rel, rel_ci = relative(pc, pc * (1 - pc) / n_c, pt, pt * (1 - pt) / n_t)
    return {
        "control": control.tolist(),
        "treatment": treatment.tolist(),
        "absolute": pt - pc,
        "absolute_interval": [low, high],
        "relative": rel,
        "relative_interval": rel_ci,
        "p_value": test.pvalue,
    }


def mean_case(n_c, n_t, lift, rng=rng, control_zero=False):
    def revenue(n, scale):
        bought = rng.random(n) < 0.08
        return np.where(bought, rng.lognormal(3.5, 0.9, n) * scale, 0.0).round(2)

    control, treatment = revenue(n_c, 1.0), revenue(n_t, 1.0 + lift)
    if control_zero:
        control = np.zeros(n_c)
    result = stats.ttest_ind(treatment, control, equal_var=False)
    ci = result.confidence_interval(confidence_level=1 - ALPHA)
    rel, rel_ci = relative(
        control.mean(),
        control.var(ddof=1) / n_c,
        treatment.mean(),
        treatment.var(ddof=1) / n_t,
    )
    return {
        "control": control.tolist(),
        "treatment": treatment.tolist(),
        "absolute": treatment.mean() - control.mean(),
        "absolute_interval": [ci.low, ci.high],
        "relative": rel,
        "relative_interval": rel_ci,
        "p_value": result.pvalue,
    }


def ratio_variance(y, x):
    n = len(y)
    r = y.sum() / x.sum()
    cov = np.cov(np.vstack([y, x]), ddof=1)
    return r, (cov[0, 0] - 2 * r * cov[0, 1] + r**2 * cov[1, 1]) / (n * x.mean() ** 2)


def ratio_case(n_c, n_t, ctr_c, ctr_t, rng=rng):
    def units(n, ctr):
        shown = rng.poisson(12, n) + 1
        return rng.binomial(shown, ctr).astype(float), shown.astype(float)

    (y_c, x_c), (y_t, x_t) = units(n_c, ctr_c), units(n_t, ctr_t)
    r_c, v_c = ratio_variance(y_c, x_c)
    r_t, v_t = ratio_variance(y_t, x_t)
    diff, se = r_t - r_c, np.sqrt(v_c + v_t)
    rel, rel_ci = relative(r_c, v_c, r_t, v_t)
    return {
        "control": [y_c.tolist(), x_c.tolist()],
        "treatment": [y_t.tolist(), x_t.tolist()],
        "absolute": diff,
        "absolute_interval": [diff - Z * se, diff + Z * se],
        "relative": rel,
        "relative_interval": rel_ci,
        "p_value": 2 * stats.norm.sf(abs(diff / se)),
    }


def concentration(table):
    """Simpson concentration between units of an item x group table: among
    pairs of impressions from different groups, the share showing the same
    item, (sum_i T_i^2 - sum_ig c_ig^2) / (N^2 - sum_g N_g^2)."""
    c = np.asarray(table, dtype=float)
    item_totals, group_totals = c.sum(axis=1), c.sum(axis=0)
    same_item = (item_totals**2).sum() - (c**2).sum()
    pairs = group_totals.sum() ** 2 - (group_totals**2).sum()
    return float(same_item / pairs)


def jackknife(table):
    """The concentration of an item x group table and its grouped
    jackknife variance (leave one group out)."""
    table = np.asarray(table, dtype=float)
    groups = table.shape[1]
    full = concentration(table)
    rest = np.array([concentration(np.delete(table, g, axis=1)) for g in range(groups)])
    return full, (groups - 1) / groups * ((rest - rest.mean()) ** 2).sum()


def concentration_case(items, groups, skew_c, skew_t, per_group_c=400, per_group_t=400):
    def counts(skew, per_group):
        weights = 1.0 / np.arange(1, items + 1) ** skew
        return rng.multinomial(per_group, weights / weights.sum(), size=groups).T

    c, t = counts(skew_c, per_group_c), counts(skew_t, per_group_t)
    s_c, v_c = jackknife(c)
    s_t, v_t = jackknife(t)
    diff, se = s_t - s_c, np.sqrt(v_c + v_t)
    rel, rel_ci = relative(s_c, v_c, s_t, v_t)
    return {
        "control": c.tolist(),
        "treatment": t.tolist(),
        "control_concentration": s_c,
        "treatment_concentration": s_t,
        "absolute": diff,
        "absolute_interval": [diff - Z * se, diff + Z * se],
        "relative": rel,
        "relative_interval": rel_ci,
        "p_value": 2 * stats.norm.sf(abs(diff / se)),
    }


def srm_case(observed, weights):
    total = sum(observed)
    expected = [total * w / sum(weights) for w in weights]
    result = stats.chisquare(observed, expected)
    return {
        "observed": observed,
        "weights": weights,
        "chi_square": result.statistic,
        "p_value": result.pvalue,
    }


def holm_case(p_values):
    return {
        "p_values": p_values,
        "adjusted": multipletests(p_values, method="holm")[1].tolist(),
    }


def bh_case(p_values):
    return {
        "p_values": p_values,
        "adjusted": multipletests(p_values, method="fdr_bh")[1].tolist(),
    }


# Confidence sequences, from the published formula: the asymptotic
# confidence sequence of Waudby-Smith et al. (2023, arXiv:2103.06476v7,
# eq. 9) in the form GrowthBook documents for its sequential testing
# (docs.growthbook.io/statistics/sequential): for an estimate mu with
# standard error sigma from N units (both arms together),
#     mu +- sigma * sqrt(N) * sqrt(2 (N rho^2 + 1) / (N^2 rho^2) * log(sqrt(N rho^2 + 1) / alpha))
#     rho = sqrt((-2 log(alpha) + log(-2 log(alpha) + 1)) / N*)
# with N* the tuning parameter. The p-value is defined as the smallest alpha
# at which the sequence (rho fixed) excludes zero, found here by root
# finding on that definition rather than by a closed form.


def cs_rho(alpha, tuning_parameter):
    return np.sqrt((-2 * np.log(alpha) + np.log(-2 * np.log(alpha) + 1)) / tuning_parameter)


def cs_half_width(sigma, n, alpha, rho):
    return sigma * np.sqrt(n) * np.sqrt(
        2 * (n * rho**2 + 1) / (n**2 * rho**2) * np.log(np.sqrt(n * rho**2 + 1) / alpha)
    )


def cs_p_value(estimate, sigma, n, rho):
    if cs_half_width(sigma, n, 1.0, rho) >= abs(estimate):
        return 1.0
    # The half-width falls as alpha grows: solve for log(alpha).
    log_alpha = optimize.brentq(
        lambda log_a: np.log(cs_half_width(sigma, n, np.exp(log_a), rho)) - np.log(abs(estimate)),
        -700.0, 0.0, xtol=1e-13, rtol=1e-15, maxiter=500,
    )
    return float(np.exp(log_alpha))


def arm_estimates(kind, case):
    """(n, value, variance of the value) of control and treatment, from the
    case's data."""
    if kind == "concentration":
        return [(None, *jackknife(case[arm])) for arm in ("control", "treatment")]
    out = []
    for arm in ("control", "treatment"):
        if kind == "ratios":
            y, x = (np.asarray(v, dtype=float) for v in case[arm])
            value, variance = ratio_variance(y, x)
            out.append((len(y), value, variance))
        else:
            y = np.asarray(case[arm], dtype=float)
            n = len(y)
            variance = y.mean() * (1 - y.mean()) / n if kind == "proportions" else y.var(ddof=1) / n
            out.append((n, y.mean(), variance))
    return out


def sequential_case(kind, index, alpha, tuning_parameter, units=None):
    """The confidence sequence of the comparison in reference[kind][index];
    `units` (both arms) for a concentration, whose data are item counts."""
    (n_c, c, var_c), (n_t, t, var_t) = arm_estimates(kind, reference[kind][index])
    n = units if units is not None else n_c + n_t
    rho = cs_rho(alpha, tuning_parameter)
    diff, sigma = t - c, np.sqrt(var_c + var_t)
    half = cs_half_width(sigma, n, alpha, rho)
    case = {
        "kind": kind,
        "case": index,
        "alpha": alpha,
        "tuning_parameter": tuning_parameter,
        "units": n,
        "absolute": diff,
        "standard_error": sigma,
        "absolute_interval": [diff - half, diff + half],
        "relative": None,
        "relative_interval": None,
        "p_value": cs_p_value(diff, sigma, n, rho),
    }
    if c != 0:
        rel = t / c - 1
        rel_sigma = np.sqrt(var_t / c**2 + t**2 * var_c / c**4)
        rel_half = cs_half_width(rel_sigma, n, alpha, rho)
        case["relative"] = rel
        case["relative_interval"] = [rel - rel_half, rel + rel_half]
    return case


def msprt_case(difference, variance, null, tau_squared):
    shift = difference - null
    log_lambda = 0.5 * np.log(variance / (variance + tau_squared)) + tau_squared * shift**2 / (
        2 * variance * (variance + tau_squared)
    )
    return {
        "difference": difference,
        "variance": variance,
        "null": null,
        "tau_squared": tau_squared,
        "p_value": float(min(1.0, np.exp(-log_lambda))),
    }


def power_case(effect_size, nobs1, alpha, ratio, power):
    """Power at (effect_size, nobs1), and each of nobs1 and effect_size
    solved for `power` with the other given: nobs1 by statsmodels'
    zt_ind_solve_power, the effect size on statsmodels' power function."""
    return {
        "effect_size": effect_size,
        "nobs1": nobs1,
        "alpha": alpha,
        "ratio": ratio,
        "power_target": power,
        "power": NormalIndPower().power(effect_size, nobs1, alpha, ratio=ratio, alternative="two-sided"),
        "nobs1_for_power": zt_ind_solve_power(
            effect_size=effect_size, nobs1=None, alpha=alpha, power=power, ratio=ratio, alternative="two-sided"
        ),
        # statsmodels' own solver stops with the power up to 3e-5 off the
        # target for small effects; solved here to the last bits on its
        # power function instead.
        "effect_size_for_power": optimize.brentq(
            lambda d: NormalIndPower().power(d, nobs1, alpha, ratio=ratio, alternative="two-sided") - power,
            1e-9, 10.0, xtol=1e-15, rtol=1e-15,
        ),
    }


def floats(value):
    """Plain Python numbers, so json writes them in full precision."""
    if isinstance(value, dict):
        return {key: floats(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [floats(item) for item in value]
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    return value


# Zero controls draw from a generator of their own, so the cases above
# keep their data.
zero_rng = np.random.default_rng(20261206)

reference = {
    "alpha": ALPHA,
    "proportions": [
        proportion_case(3000, 0.10, 3000, 0.12),
        proportion_case(2500, 0.30, 2000, 0.30),
        # No add-to-cart at all in control: still a difference.
        proportion_counts_case(200, 0, 200, 10),
    ],
    "means": [
        mean_case(3000, 3000, 0.15),
        mean_case(1500, 2500, 0.0),
        # No revenue at all in control.
        mean_case(400, 400, 0.0, rng=zero_rng, control_zero=True),
    ],
    "ratios": [
        ratio_case(2000, 2000, 0.05, 0.056),
        ratio_case(1000, 1500, 0.08, 0.08),
        # Impressions but no click in control.
        ratio_case(500, 500, 0.0, 0.05, rng=zero_rng),
    ],
    "concentration": [
        concentration_case(60, 20, 1.0, 1.05),
        # A treatment arm with a tenth of control's impressions.
        concentration_case(500, 20, 1.0, 1.0, per_group_c=400, per_group_t=40),
    ],
    "sample_ratio": [
        srm_case([5012, 4988], [50, 50]),
        srm_case([5200, 4800], [50, 50]),
        srm_case([2011, 2940, 5049], [20, 30, 50]),
    ],
    "holm": [holm_case([0.01, 0.04, 0.03]), holm_case([0.2, 0.001, 0.04, 0.5])],
    "benjamini_hochberg": [
        bh_case([0.01, 0.04, 0.03]),
        bh_case([0.2, 0.001, 0.04, 0.5]),
        # Ties, a 1, and values the step-up lifts to the same adjusted value.
        bh_case([0.012, 0.03, 0.03, 0.9, 1.0, 0.0004, 0.049, 0.2, 0.011]),
        bh_case([0.8, 0.9]),
        bh_case([0.003]),
    ],
    "power": [
        # An add-to-cart rate of 10% and a 5% relative lift: d = 0.005 / 0.3.
        power_case(0.005 / 0.3, 20000, 0.05, 1.0, 0.8),
        power_case(0.2, 150, 0.05, 1.0, 0.9),
        # A 20/80 split (ratio 4), a strict alpha.
        power_case(0.05, 3000, 0.01, 4.0, 0.8),
        power_case(-0.1, 1000, 0.1, 0.5, 0.95),
    ],
    "msprt": [
        msprt_case(0.01, 1e-4, 0.0, 1e-4),
        msprt_case(0.012, 2e-6, 0.002, 4e-6),
        msprt_case(-0.3, 0.01, 0.05, 0.0025),
    ],
}


# Confidence sequences of the comparisons above: different alphas and
# tuning parameters, a control at zero, an A/A whose sequence keeps zero
# (p-value 1), and a concentration with the units it came from.
reference["sequential"] = [
    sequential_case("proportions", 0, 0.05, 5000),
    sequential_case("proportions", 1, 0.05, 5000),
    sequential_case("proportions", 2, 0.05, 5000),
    sequential_case("means", 0, 0.1, 5000),
    sequential_case("means", 1, 0.05, 20000),
    sequential_case("means", 2, 0.05, 5000),
    sequential_case("ratios", 0, 0.01, 5000),
    sequential_case("ratios", 2, 0.05, 1000),
    sequential_case("concentration", 0, 0.05, 5000, units=16000),
]


def cuped_case(sizes, kind, rho, lifts, rng):
    """CUPED of one metric over arms of `sizes` (control first): the outcome
    on one indicator per treatment and the covariate centred on its mean
    over every unit, by statsmodels' OLS with HC2 standard errors (normal
    intervals and p-values, statsmodels' default for a robust covariance).
    The relative difference beta_j / beta_0 takes its variance by the delta
    method from the fit's covariance matrix. `kind` "mean": a skewed value
    whose pre-period correlates about `rho` with it, a third of units
    without any pre-period (covariate 0); "proportion": a success and a
    pre-period success, correlated through a shared propensity."""
    arms, ys, xs = [], [], []
    for arm, (n, lift) in enumerate(zip(sizes, lifts)):
        if kind == "mean":
            latent = rng.normal(size=n)
            pre = np.exp(0.5 * latent) * (rng.random(n) < 2 / 3)
            post = np.exp(
                0.5 * (rho * latent + math.sqrt(1 - rho**2) * rng.normal(size=n))
            ) * (1 + lift)
            y, x = np.round(post, 4), np.round(pre, 4)
        else:
            propensity = rng.beta(1, 6, size=n)
            x = (rng.random(n) < propensity).astype(float)
            y = (rng.random(n) < np.minimum(1, propensity * (1 + lift) * 1.5)).astype(float)
        arms += [arm] * n
        ys += y.tolist()
        xs += x.tolist()
    arm_array, y, x = np.array(arms), np.array(ys), np.array(xs)
    design = [np.ones(len(y))] + [
        (arm_array == j).astype(float) for j in range(1, len(sizes))
    ] + [x - x.mean()]
    fit = OLS(y, np.column_stack(design)).fit(cov_type="HC2")
    cov = fit.cov_params()
    intervals = fit.conf_int(ALPHA)
    b0 = fit.params[0]
    treatments = []
    for j in range(1, len(sizes)):
        bj = fit.params[j]
        if b0 == 0:
            rel, rel_ci = None, None
        else:
            rel = bj / b0
            var = cov[j, j] / b0**2 + bj**2 * cov[0, 0] / b0**4 - 2 * bj * cov[0, j] / b0**3
            half = Z * math.sqrt(var)
            rel_ci = [rel - half, rel + half]
        treatments.append({
            "arm": j,
            "control": b0,
            "treatment": b0 + bj,
            "absolute": bj,
            "standard_error": fit.bse[j],
            "absolute_interval": intervals[j].tolist(),
            "p_value": fit.pvalues[j],
            "relative": rel,
            "relative_interval": rel_ci,
        })
    return {
        "arms": arms,
        "y": ys,
        "x": xs,
        "theta": fit.params[-1],
        "treatments": treatments,
    }


cuped_rng = np.random.default_rng(20261207)
reference["cuped"] = [
    cuped_case([2000, 2000], "mean", 0.7, [0.0, 0.05], cuped_rng),
    # Unequal arms.
    cuped_case([600, 1800], "mean", 0.5, [0.0, -0.03], cuped_rng),
    cuped_case([3000, 3000], "proportion", 0.0, [0.0, 0.1], cuped_rng),
    # Three arms: theta pooled over all three.
    cuped_case([800, 900, 700], "mean", 0.7, [0.0, 0.02, 0.08], cuped_rng),
]


def differences(generated, committed, path=""):
    """Where `committed` differs from `generated`: data exactly, computed
    floats beyond the last few bits (the pinned libraries' results differ
    in the last bits between machines; the Rust tests compare to 1e-6)."""
    if isinstance(generated, dict) and isinstance(committed, dict):
        if generated.keys() != committed.keys():
            return [f"{path or '/'}: keys {sorted(generated)} against {sorted(committed)}"]
        return [d for key in generated for d in differences(generated[key], committed[key], f"{path}.{key}")]
    if isinstance(generated, list) and isinstance(committed, list):
        if len(generated) != len(committed):
            return [f"{path}: {len(generated)} items against {len(committed)}"]
        return [d for i, pair in enumerate(zip(generated, committed)) for d in differences(*pair, f"{path}[{i}]")]
    if isinstance(generated, float) or isinstance(committed, float):
        if isinstance(generated, (int, float)) and isinstance(committed, (int, float)) and math.isclose(
            generated, committed, rel_tol=1e-12, abs_tol=1e-15
        ):
            return []
    elif generated == committed:
        return []
    return [f"{path}: generated {generated!r}, committed {committed!r}"]


text = json.dumps(floats(reference), indent=None, separators=(",", ":"))
generated = json.loads(text)
if len(sys.argv) == 3 and sys.argv[1] == "--check":
    with open(sys.argv[2]) as committed:
        found = differences(generated, json.load(committed))
    for line in found[:20]:
        print(line, file=sys.stderr)
    sys.exit(1 if found else 0)
elif len(sys.argv) != 1:
    sys.exit("usage: make_reference.py [--check reference.json]")
print(text)
