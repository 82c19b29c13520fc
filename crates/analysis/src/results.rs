//! Per-variant results of a metric from its sufficient statistics: the
//! value, the comparison with control and the Holm-adjusted p-values.
//!
//! The statistics (`Sufficient`) are what a unit pass yields per
//! variant: the per-unit moments, or the concentration estimate. They are
//! all a comparison needs at any alpha, so the report computes results
//! from the current state's, and the timeline from the ones it kept at
//! each hour boundary, with the same code.

use std::sync::Arc;

use exp_core::metrics::MetricKind;

use crate::{
    experiment::{ExperimentState, JACKKNIFE_GROUPS, ResolvedMetric, Role},
    stats::{self, Comparison, Estimate, Moments, NotComputed},
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
    /// Holm-adjusted p-value across the treatments compared; `None` when
    /// this one was not.
    pub adjusted_p_value: Option<f64>,
    /// Whether the adjusted p-value is below alpha.
    pub significant: bool,
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
}

impl MetricStatistics {
    /// The statistics of every metric of `state`, in its order.
    pub(crate) fn of_experiment(state: &ExperimentState) -> Vec<Self> {
        state
            .metrics
            .iter()
            .map(|metric| Self {
                name: metric.name.clone(),
                role: metric.role,
                kind: metric.definition.kind,
                arms: statistics(state, metric),
            })
            .collect()
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

/// One pass over the units: `metric`'s statistics per variant.
pub(crate) fn statistics(state: &ExperimentState, metric: &ResolvedMetric) -> Vec<Sufficient> {
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
    for (unit, sums) in state.units_with_sums() {
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

/// The metric's result in every variant: its value, the comparison of
/// every treatment with the control, and Holm's adjustment across the
/// treatments compared.
pub(crate) fn metric_results(
    metric: &MetricStatistics,
    control: usize,
    alpha: f64,
) -> Vec<MetricReport> {
    let arms: Vec<Arm> = metric
        .arms
        .iter()
        .map(|statistics| Arm::of(metric.kind, statistics))
        .collect();
    let comparisons: Vec<ComparisonState> = arms
        .iter()
        .enumerate()
        .map(|(index, arm)| {
            if index == control {
                ComparisonState::NotComputed(NotComputed::Control)
            } else {
                compare(metric.kind, &arms[control], arm, alpha).into()
            }
        })
        .collect();
    let (tested, raw): (Vec<usize>, Vec<f64>) = comparisons
        .iter()
        .enumerate()
        .filter_map(|(index, state)| Some((index, state.computed()?.p_value)))
        .unzip();
    let adjusted = stats::holm(&raw);
    arms.iter()
        .zip(comparisons)
        .enumerate()
        .map(|(index, (arm, comparison))| {
            let adjusted_p_value = tested
                .iter()
                .position(|tested| *tested == index)
                .map(|position| adjusted[position]);
            MetricReport {
                metric: metric.name.to_string(),
                role: metric.role,
                value: arm.value,
                comparison,
                adjusted_p_value,
                significant: adjusted_p_value.is_some_and(|p| p < alpha),
            }
        })
        .collect()
}

/// Every variant's results from exposed units and metric statistics.
pub(crate) fn variant_reports(
    state: &ExperimentState,
    exposed: &[u64],
    metrics: &[MetricStatistics],
    alpha: f64,
) -> Vec<VariantReport> {
    let control = control_index(state);
    let mut variants: Vec<VariantReport> = state
        .experiment
        .variants
        .iter()
        .enumerate()
        .map(|(index, variant)| VariantReport {
            variant: variant.name.clone(),
            is_control: index == control,
            exposed_units: exposed.get(index).copied().unwrap_or(0),
            metrics: Vec::with_capacity(metrics.len()),
        })
        .collect();
    for metric in metrics {
        for (variant, result) in variants
            .iter_mut()
            .zip(metric_results(metric, control, alpha))
        {
            variant.metrics.push(result);
        }
    }
    variants
}
