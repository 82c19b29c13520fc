//! Per-variant results of a metric from its sufficient statistics: the
//! value, the comparison with control and the adjusted p-values.
//!
//! The statistics (`Sufficient`) are what a unit pass yields per
//! variant: the per-unit moments, or the concentration estimate. They are
//! all a comparison needs at any alpha, so the report computes results
//! from the current state's, and the timeline from the ones it kept at
//! each hour boundary, with the same code.
//!
//! How they are read is the experiment's choice ([`Readout`]):
//! fixed-horizon or always-valid intervals and p-values
//! ([`IntervalKind`]), and Holm over each metric's treatments or
//! Benjamini-Hochberg over every secondary metric and treatment for the
//! adjusted p-values (the primary metric and the guardrails always keep
//! Holm over their treatments).

use std::sync::Arc;

use exp_core::{Experiment, MultipleComparisonCorrection, metrics::MetricKind};

use crate::{
    experiment::{ExperimentState, JACKKNIFE_GROUPS, ResolvedMetric, Role, cuped_applies},
    stats::{self, Comparison, CupedFit, CupedUnit, Estimate, Moments, NotComputed},
};

/// One variant.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantReport {
    /// Its name.
    pub variant: String,
    /// Whether it is the control.
    pub is_control: bool,
    /// Exposed units.
    pub exposed_units: u64,
    /// One per metric.
    pub metrics: Vec<MetricReport>,
}

/// One metric of one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricReport {
    /// Metric name.
    pub metric: String,
    /// Its role.
    pub role: Role,
    /// The variant's value; `None` without data (no units, or a ratio
    /// without a denominator).
    pub value: Option<f64>,
    /// Against control, or why not.
    pub comparison: ComparisonState,
    /// The p-value adjusted for multiple comparisons ([`Readout`]): by
    /// Holm across the treatments compared, or, for a secondary metric
    /// under Benjamini-Hochberg, across every secondary metric and
    /// treatment compared; `None` when this one was not compared.
    pub adjusted_p_value: Option<f64>,
    /// Whether the adjusted p-value is below alpha.
    pub significant: bool,
    /// How CUPED adjusted the comparison, when it did: the metric is a
    /// proportion or a mean and the experiment adjusts. `comparison` is
    /// then the adjusted one.
    pub cuped: Option<CupedReport>,
}

/// A CUPED adjustment of one metric for one variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CupedReport {
    /// Whether the comparison is adjusted: false when the covariate does
    /// not vary within the arms (no unit has a pre-period yet, or every
    /// unit the same), and the comparison is then the unadjusted one.
    pub applied: bool,
    /// The comparison without the covariate, read the same way
    /// (fixed-horizon or always-valid).
    pub unadjusted: ComparisonState,
    /// 1 − Var(adjusted difference) / Var(unadjusted difference): the share
    /// of the difference's variance the covariate removed; `None` when
    /// either was not computed. Negative when the covariate only added
    /// noise.
    pub variance_reduction: Option<f64>,
    /// θ, the outcome's change per unit of the covariate within arms,
    /// pooled across arms (the same for every variant).
    pub theta: f64,
    /// The variant's mean adjusted to the covariate's mean over every unit
    /// (β₀ for the control, β₀ + βⱼ for a treatment), when applied.
    pub adjusted_value: Option<f64>,
    /// Whole UTC days before the first exposure's day that make the
    /// covariate.
    pub pre_period_days: u32,
}

/// What a result's intervals and p-values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntervalKind {
    /// Fixed-horizon: the z-test's or Welch's interval and p-value, valid
    /// at one look planned in advance.
    #[default]
    FixedHorizon,
    /// Always valid: the asymptotic confidence sequence and its p-value
    /// ([`crate::stats::confidence_sequence_half_width`]), valid at every
    /// look at once.
    Sequential,
}

/// How an experiment's comparisons are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readout {
    /// Fixed-horizon or always-valid intervals and p-values.
    pub intervals: IntervalKind,
    /// The adjustment of the secondary metrics' p-values.
    pub correction: MultipleComparisonCorrection,
    /// N* of the confidence sequences (sequential only).
    pub tuning_parameter: u32,
}

impl Default for Readout {
    fn default() -> Self {
        Self {
            intervals: IntervalKind::default(),
            correction: MultipleComparisonCorrection::default(),
            tuning_parameter: exp_core::DEFAULT_SEQUENTIAL_TUNING_PARAMETER,
        }
    }
}

impl Readout {
    /// What `experiment` asks for: always-valid intervals when it is
    /// `sequential`, and its multiple-comparison correction.
    pub fn of(experiment: &Experiment) -> Self {
        Self {
            intervals: if experiment.sequential {
                IntervalKind::Sequential
            } else {
                IntervalKind::FixedHorizon
            },
            correction: experiment.multiple_comparison_correction,
            tuning_parameter: experiment.sequential_tuning_parameter,
        }
    }
}

/// Whether a variant was compared with control.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ComparisonState {
    /// Compared: the absolute difference, its interval and p-value, and
    /// the relative difference when the control's value is not 0.
    Computed(Comparison),
    /// Not compared, and why.
    NotComputed(NotComputed),
}

impl ComparisonState {
    /// The comparison, when computed.
    pub fn computed(&self) -> Option<&Comparison> {
        match self {
            Self::Computed(comparison) => Some(comparison),
            Self::NotComputed(_) => None,
        }
    }
}

impl From<Result<Comparison, NotComputed>> for ComparisonState {
    fn from(result: Result<Comparison, NotComputed>) -> Self {
        match result {
            Ok(comparison) => Self::Computed(comparison),
            Err(reason) => Self::NotComputed(reason),
        }
    }
}

/// What one variant's units give one metric, enough to compare it at any
/// alpha.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sufficient {
    /// Per-unit moments: proportions, means, ratios.
    Moments(Moments),
    /// The concentration and its jackknife estimate.
    Concentration {
        value: Option<f64>,
        estimate: Result<Estimate, NotComputed>,
    },
}

/// One metric's statistics in every variant, with what reading them needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricStatistics {
    pub(crate) name: Arc<str>,
    pub(crate) role: Role,
    pub(crate) kind: MetricKind,
    /// One per variant, in the experiment's order.
    pub(crate) arms: Vec<Sufficient>,
    /// The CUPED fit over every arm, when the metric is adjusted.
    pub(crate) cuped: Option<Box<Cuped>>,
}

/// A metric's CUPED fit, with the pre-period it was computed over.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cuped {
    pub(crate) fit: CupedFit,
    pub(crate) pre_period_days: u32,
}

impl MetricStatistics {
    /// The statistics of every metric of `state`, in its order.
    pub(crate) fn of_experiment(state: &ExperimentState) -> Vec<Self> {
        // One buffer for every adjusted metric's (arm, outcome, covariate).
        let mut buffer = Vec::new();
        state
            .metrics
            .iter()
            .map(|metric| {
                let adjusted = state
                    .layout
                    .pre_period_days
                    .filter(|_| cuped_applies(metric.definition.kind));
                let arms = statistics(state, metric, adjusted.map(|_| &mut buffer));
                Self {
                    name: metric.name.clone(),
                    role: metric.role,
                    kind: metric.definition.kind,
                    arms,
                    cuped: adjusted.map(|pre_period_days| {
                        Box::new(Cuped {
                            fit: CupedFit::of(
                                || buffer.iter().copied(),
                                state.experiment.variants.len(),
                                control_index(state),
                            ),
                            pre_period_days,
                        })
                    }),
                }
            })
            .collect()
    }
}

/// The unit's value of `metric` from its sums: a proportion's success as 0
/// or 1, a mean's numerator.
fn unit_value(metric: &ResolvedMetric, sums: &[f64]) -> f64 {
    let numerator = sums[metric.numerator];
    match metric.definition.kind {
        MetricKind::Proportion => f64::from(u8::from(metric.definition.is_success(numerator))),
        _ => numerator,
    }
}

/// Exposed units per variant, and the units exposed to several.
pub(crate) fn exposed_units(state: &ExperimentState) -> (Vec<u64>, u64) {
    let mut exposed = vec![0_u64; state.experiment.variants.len()];
    let mut several = 0;
    for unit in &state.units {
        exposed[usize::from(unit.variant)] += 1;
        several += u64::from(unit.several_variants);
    }
    (exposed, several)
}

/// The control's index among the variants (the first when the name is
/// unknown: validation refuses that).
pub(crate) fn control_index(state: &ExperimentState) -> usize {
    let experiment = &state.experiment;
    experiment
        .variants
        .iter()
        .position(|variant| variant.name == experiment.control_variant)
        .unwrap_or(0)
}

/// One pass over the units: `metric`'s statistics per variant, and, with
/// `cuped`, every unit's (arm, value, covariate) for a CUPED fit, in place
/// of what it held.
pub(crate) fn statistics(
    state: &ExperimentState,
    metric: &ResolvedMetric,
    mut cuped: Option<&mut Vec<CupedUnit>>,
) -> Vec<Sufficient> {
    let variants = state.experiment.variants.len();
    if let Some(table) = metric.items {
        let counts = &state.item_counts[table];
        return (0..variants)
            .map(|variant| {
                let base = variant * JACKKNIFE_GROUPS;
                let (value, estimate) = stats::concentration(
                    counts
                        .values()
                        .map(|slots| &slots[base..base + JACKKNIFE_GROUPS]),
                );
                Sufficient::Concentration { value, estimate }
            })
            .collect();
    }
    let mut moments = vec![Moments::default(); variants];
    if let Some(units) = cuped.as_deref_mut() {
        units.clear();
        units.reserve(state.units.len());
    }
    for (unit, sums, covariates) in state.units_with_covariates() {
        if let Some(units) = cuped.as_deref_mut() {
            // The covariate is the metric's measure over the pre-period
            // (for a proportion its count, not whether it would have been
            // a success: more of the past, the same validity).
            units.push((
                usize::from(unit.variant),
                unit_value(metric, sums),
                covariates[metric.numerator],
            ));
        }
        let numerator = sums[metric.numerator];
        let (y, x) = match metric.definition.kind {
            MetricKind::Proportion => (
                f64::from(u8::from(metric.definition.is_success(numerator))),
                1.0,
            ),
            MetricKind::Ratio => (
                numerator,
                metric.denominator.map_or(1.0, |index| sums[index]),
            ),
            MetricKind::Mean | MetricKind::Concentration => (numerator, 1.0),
        };
        moments[usize::from(unit.variant)].push(y, x);
    }
    moments.into_iter().map(Sufficient::Moments).collect()
}

/// One metric in one variant, ready to compare.
#[derive(Debug, Clone, Copy)]
struct Arm {
    /// The metric's value.
    value: Option<f64>,
    /// The value with its variance, or why there is none.
    estimate: Result<Estimate, NotComputed>,
    /// Per-unit moments (empty for concentration).
    moments: Moments,
}

impl Arm {
    fn of(kind: MetricKind, statistics: &Sufficient) -> Self {
        match *statistics {
            Sufficient::Concentration { value, estimate } => Self {
                value,
                estimate,
                moments: Moments::default(),
            },
            Sufficient::Moments(moments) => {
                let (value, estimate) = match kind {
                    MetricKind::Proportion => (
                        (moments.n > 0.0).then(|| moments.mean()),
                        Estimate::proportion(&moments),
                    ),
                    MetricKind::Mean | MetricKind::Concentration => (
                        (moments.n > 0.0).then(|| moments.mean()),
                        Estimate::mean(&moments),
                    ),
                    MetricKind::Ratio => (
                        (moments.sum_x > 0.0).then(|| moments.ratio()),
                        Estimate::ratio(&moments),
                    ),
                };
                Self {
                    value,
                    estimate,
                    moments,
                }
            }
        }
    }
}

fn compare(
    kind: MetricKind,
    control: &Arm,
    treatment: &Arm,
    alpha: f64,
) -> Result<Comparison, NotComputed> {
    match kind {
        MetricKind::Proportion => {
            stats::compare_proportions(&control.moments, &treatment.moments, alpha)
        }
        MetricKind::Mean => stats::compare_means(&control.moments, &treatment.moments, alpha),
        MetricKind::Ratio => stats::compare_ratios(&control.moments, &treatment.moments, alpha),
        MetricKind::Concentration => {
            stats::compare_normal(control.estimate?, treatment.estimate?, alpha)
        }
    }
}

/// One metric's arms and every variant's comparison with the control, in
/// the experiment's order: fixed-horizon, or read as a confidence sequence
/// from the units of both arms (the per-unit moments' units; the exposed
/// units for a concentration, which has no per-unit moments).
fn comparisons(
    metric: &MetricStatistics,
    control: usize,
    exposed: &[u64],
    alpha: f64,
    readout: Readout,
) -> (Vec<Arm>, Vec<ComparisonState>, Vec<Option<CupedReport>>) {
    let arms: Vec<Arm> = metric
        .arms
        .iter()
        .map(|statistics| Arm::of(metric.kind, statistics))
        .collect();
    let units = |index: usize| match metric.kind {
        MetricKind::Concentration => exposed.get(index).copied().unwrap_or(0) as f64,
        _ => arms[index].moments.n,
    };
    let read = |index: usize, comparison: Result<Comparison, NotComputed>| -> ComparisonState {
        match readout.intervals {
            IntervalKind::FixedHorizon => comparison.into(),
            IntervalKind::Sequential => comparison
                .map(|comparison| {
                    comparison.sequential(
                        units(control) + units(index),
                        alpha,
                        f64::from(readout.tuning_parameter),
                    )
                })
                .into(),
        }
    };
    let (states, adjustments) = arms
        .iter()
        .enumerate()
        .map(|(index, arm)| {
            if index == control {
                let state = ComparisonState::NotComputed(NotComputed::Control);
                let adjustment = metric.cuped.as_ref().map(|cuped| CupedReport {
                    applied: cuped.fit.applies(),
                    adjusted_value: cuped
                        .fit
                        .adjusted_mean(index)
                        .filter(|_| cuped.fit.applies()),
                    unadjusted: state,
                    variance_reduction: None,
                    theta: cuped.fit.theta(),
                    pre_period_days: cuped.pre_period_days,
                });
                return (state, adjustment);
            }
            let unadjusted = compare(metric.kind, &arms[control], arm, alpha);
            let Some(cuped) = &metric.cuped else {
                return (read(index, unadjusted), None);
            };
            let applied = cuped.fit.applies();
            let adjusted = if applied {
                cuped.fit.comparison(index, alpha)
            } else {
                unadjusted
            };
            let variance_reduction = match (&adjusted, &unadjusted) {
                (Ok(adjusted), Ok(unadjusted)) if applied => {
                    Some(1.0 - (adjusted.standard_error / unadjusted.standard_error).powi(2))
                }
                _ => None,
            };
            let adjustment = CupedReport {
                applied,
                adjusted_value: cuped.fit.adjusted_mean(index).filter(|_| applied),
                unadjusted: read(index, unadjusted),
                variance_reduction,
                theta: cuped.fit.theta(),
                pre_period_days: cuped.pre_period_days,
            };
            (read(index, adjusted), Some(adjustment))
        })
        .unzip();
    (arms, states, adjustments)
}

/// The p-values of the comparisons computed, with where they are: (metric,
/// variant) of each.
fn computed_p_values<'a>(
    metrics: impl IntoIterator<Item = (usize, &'a Vec<ComparisonState>)>,
) -> (Vec<(usize, usize)>, Vec<f64>) {
    metrics
        .into_iter()
        .flat_map(|(metric, states)| {
            states
                .iter()
                .enumerate()
                .filter_map(move |(variant, state)| {
                    Some(((metric, variant), state.computed()?.p_value))
                })
        })
        .unzip()
}

/// The adjusted p-value of every comparison computed, by metric then
/// variant: Holm over each metric's treatments; with Benjamini-Hochberg,
/// the secondary metrics instead by Benjamini-Hochberg over every secondary
/// metric and treatment together (the primary metric and the guardrails
/// keep Holm).
fn adjusted_p_values(
    metrics: &[MetricStatistics],
    comparisons: &[Vec<ComparisonState>],
    correction: MultipleComparisonCorrection,
) -> Vec<Vec<Option<f64>>> {
    let pooled = |metric: usize| {
        correction == MultipleComparisonCorrection::BenjaminiHochberg
            && metrics[metric].role == Role::Secondary
    };
    let mut adjusted: Vec<Vec<Option<f64>>> = comparisons
        .iter()
        .map(|states| vec![None; states.len()])
        .collect();
    for (metric, states) in comparisons.iter().enumerate() {
        if pooled(metric) {
            continue;
        }
        let (tested, raw) = computed_p_values([(metric, states)]);
        for ((metric, variant), p) in tested.into_iter().zip(stats::holm(&raw)) {
            adjusted[metric][variant] = Some(p);
        }
    }
    let (tested, raw) = computed_p_values(
        comparisons
            .iter()
            .enumerate()
            .filter(|(metric, _)| pooled(*metric)),
    );
    for ((metric, variant), p) in tested.into_iter().zip(stats::benjamini_hochberg(&raw)) {
        adjusted[metric][variant] = Some(p);
    }
    adjusted
}

/// Every variant's results from exposed units and metric statistics, read
/// the way the experiment says ([`Readout::of`]): per metric the value, the
/// comparison of every treatment with the control, and the adjusted
/// p-values.
pub(crate) fn variant_reports(
    state: &ExperimentState,
    exposed: &[u64],
    metrics: &[MetricStatistics],
    alpha: f64,
) -> Vec<VariantReport> {
    let control = control_index(state);
    let readout = Readout::of(&state.experiment);
    let mut arms = Vec::with_capacity(metrics.len());
    let mut comparisons_by_metric = Vec::with_capacity(metrics.len());
    let mut adjustments = Vec::with_capacity(metrics.len());
    for metric in metrics {
        let (metric_arms, states, cuped) = comparisons(metric, control, exposed, alpha, readout);
        arms.push(metric_arms);
        comparisons_by_metric.push(states);
        adjustments.push(cuped);
    }
    let comparisons = comparisons_by_metric;
    let adjusted = adjusted_p_values(metrics, &comparisons, readout.correction);
    state
        .experiment
        .variants
        .iter()
        .enumerate()
        .map(|(index, variant)| VariantReport {
            variant: variant.name.clone(),
            is_control: index == control,
            exposed_units: exposed.get(index).copied().unwrap_or(0),
            metrics: metrics
                .iter()
                .enumerate()
                .map(|(position, metric)| {
                    let adjusted_p_value = adjusted[position].get(index).copied().flatten();
                    MetricReport {
                        metric: metric.name.to_string(),
                        role: metric.role,
                        value: arms[position].get(index).and_then(|arm| arm.value),
                        comparison: comparisons[position]
                            .get(index)
                            .copied()
                            .unwrap_or(ComparisonState::NotComputed(NotComputed::NoData)),
                        adjusted_p_value,
                        significant: adjusted_p_value.is_some_and(|p| p < alpha),
                        cuped: adjustments[position].get(index).copied().flatten(),
                    }
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, role: Role) -> MetricStatistics {
        MetricStatistics {
            name: name.into(),
            role,
            kind: MetricKind::Proportion,
            arms: Vec::new(),
            cuped: None,
        }
    }

    fn compared(p_value: f64) -> ComparisonState {
        ComparisonState::Computed(Comparison {
            control: 0.1,
            treatment: 0.1,
            absolute: 0.0,
            standard_error: 0.01,
            absolute_interval: (-0.02, 0.02),
            relative: stats::Relative::ControlIsZero,
            p_value,
        })
    }

    const CONTROL: ComparisonState = ComparisonState::NotComputed(NotComputed::Control);

    #[test]
    fn benjamini_hochberg_pools_every_secondary_metric_and_treatment_and_nothing_else() {
        let metrics = [
            metric("add_to_cart_rate", Role::Primary),
            metric("ctr", Role::Secondary),
            metric("bounce_rate", Role::Guardrail),
            metric("conversion_rate", Role::Secondary),
        ];
        // Control and two treatments; one secondary comparison not made.
        let comparisons = vec![
            vec![CONTROL, compared(0.01), compared(0.04)],
            vec![CONTROL, compared(0.012), compared(0.03)],
            vec![CONTROL, compared(0.02), compared(0.6)],
            vec![
                CONTROL,
                ComparisonState::NotComputed(NotComputed::TooFewUnits),
                compared(0.2),
            ],
        ];
        let holm = adjusted_p_values(&metrics, &comparisons, MultipleComparisonCorrection::Holm);
        let bh = adjusted_p_values(
            &metrics,
            &comparisons,
            MultipleComparisonCorrection::BenjaminiHochberg,
        );
        // Holm: each metric over its two treatments.
        assert_eq!(holm[0], vec![None, Some(0.02), Some(0.04)]);
        assert_eq!(holm[3], vec![None, None, Some(0.2)]);
        // Benjamini-Hochberg: the three secondary comparisons made, as one
        // family (0.012, 0.03, 0.2).
        let family = stats::benjamini_hochberg(&[0.012, 0.03, 0.2]);
        assert_eq!(bh[1], vec![None, Some(family[0]), Some(family[1])]);
        assert_eq!(bh[3], vec![None, None, Some(family[2])]);
        // The primary metric and the guardrail keep Holm.
        assert_eq!(bh[0], holm[0]);
        assert_eq!(bh[2], holm[2]);
    }
}
