//! Results of one experiment from its per-unit state: per variant and
//! metric the value, the comparison with control, Holm-adjusted p-values
//! across treatments, the sample ratio check, the exposure sanity checks
//! and the guardrail states.

use exp_core::{
    GuardrailAction,
    metrics::{MetricDefinition, MetricKind},
};

use crate::{
    analyzer::Analyzer,
    experiment::{ExperimentState, JACKKNIFE_GROUPS, ResolvedMetric, Role},
    stats::{self, Comparison, Estimate, Moments, NotComputed, Relative},
};

/// p-value under which the sample ratio check flags a mismatch.
pub const SAMPLE_RATIO_ALPHA: f64 = 0.001;

/// Units each arm needs before a guardrail is judged at all.
pub const GUARDRAIL_MIN_UNITS: u64 = 100;

/// Smallest scale of the mSPRT mixture over the relative effect (for a
/// guardrail with a threshold of 0).
pub const MIXTURE_SCALE_FLOOR: f64 = 0.01;

/// Results of one experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The experiment.
    pub experiment_id: String,
    /// Its revision when computed.
    pub revision: u64,
    /// Significance level used.
    pub alpha: f64,
    /// One per variant, control first.
    pub variants: Vec<VariantReport>,
    /// Chi-square of exposed units against the weights.
    pub sample_ratio: Option<SampleRatio>,
    /// Further checks of the exposure data.
    pub sanity_checks: Vec<SanityCheck>,
    /// Every guardrail for every treatment.
    pub guardrails: Vec<GuardrailReport>,
    /// Newest event counted, microseconds since the Unix epoch; `None`
    /// before the first.
    pub newest_event_micros: Option<i64>,
}

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

/// The sample ratio check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRatio {
    /// Chi-square statistic.
    pub chi_square: f64,
    /// Its p-value.
    pub p_value: f64,
    /// p < [`SAMPLE_RATIO_ALPHA`].
    pub mismatch: bool,
}

/// One exposure sanity check.
#[derive(Debug, Clone, PartialEq)]
pub struct SanityCheck {
    /// Check name.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// Offending units or exposures.
    pub offending: u64,
    /// Explanation.
    pub detail: String,
}

/// State of a guardrail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardrailState {
    /// No significant breach.
    Ok,
    /// Significantly worse than control beyond the threshold.
    Breached,
    /// Not judged: an arm has fewer than [`GUARDRAIL_MIN_UNITS`] units,
    /// the difference could not be computed, or the control's value is 0
    /// (the threshold is relative to it).
    InsufficientData,
}

/// One guardrail for one treatment.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardrailReport {
    /// Metric name.
    pub metric: String,
    /// Treatment.
    pub variant: String,
    /// State.
    pub state: GuardrailState,
    /// Observed relative change against control; `None` when it could not
    /// be computed.
    pub relative_difference: Option<f64>,
    /// Configured threshold.
    pub threshold: f64,
    /// Configured action.
    pub action: Option<GuardrailAction>,
    /// Always-valid p-value of "no degradation beyond the threshold": the
    /// running minimum over every look at this revision (1 before any
    /// evidence).
    pub always_valid_p_value: f64,
}

/// One metric in one variant.
#[derive(Debug, Clone, Copy)]
struct Arm {
    /// The metric's value.
    value: Option<f64>,
    /// The value with its variance, or why there is none.
    estimate: Result<Estimate, NotComputed>,
    /// Per-unit moments (empty for concentration).
    moments: Moments,
}

/// Per-variant moments (or concentration estimates) of one metric.
fn metric_estimates(state: &ExperimentState, metric: &ResolvedMetric) -> Vec<Arm> {
    let variants = state.experiment.variants.len();
    if let Some(table) = metric.items {
        return concentration(state, table, variants);
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
    moments
        .into_iter()
        .map(|moments| {
            let (value, estimate) = match metric.definition.kind {
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
            Arm {
                value,
                estimate,
                moments,
            }
        })
        .collect()
}

/// Simpson concentration of item counts per variant between units, with
/// its grouped-jackknife variance over the units' hash groups
/// ([`stats::concentration`]).
fn concentration(state: &ExperimentState, table: usize, variants: usize) -> Vec<Arm> {
    let counts = &state.item_counts[table];
    (0..variants)
        .map(|variant| {
            let base = variant * JACKKNIFE_GROUPS;
            let (value, estimate) = stats::concentration(
                counts
                    .values()
                    .map(|slots| &slots[base..base + JACKKNIFE_GROUPS]),
            );
            Arm {
                value,
                estimate,
                moments: Moments::default(),
            }
        })
        .collect()
}

fn compare(
    definition: &MetricDefinition,
    control: &Arm,
    treatment: &Arm,
    alpha: f64,
) -> Result<Comparison, NotComputed> {
    match definition.kind {
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

impl Analyzer {
    /// Results of `experiment_id` at significance `alpha` (every variant
    /// with no units before its first exposure); `None` when the catalog
    /// does not know it.
    ///
    /// Every report is a look of the guardrails' sequential test, whoever
    /// asks (`GetResults` or the guardrail monitor): it updates the running
    /// minimum of each always-valid p-value for the current revision, so the
    /// value shown never rises within a revision, and more looks never cost
    /// the guarantee (the minimum over any set of looks is still an
    /// always-valid p-value). The p-values do not depend on `alpha`; only
    /// the breach states do.
    pub fn report(&mut self, experiment_id: &str, alpha: f64) -> Option<Report> {
        let Some(state) = self.experiments.get_mut(experiment_id) else {
            let experiment = (self.catalog)(experiment_id)?;
            return Some(build(&ExperimentState::new(experiment, 0), alpha));
        };
        let report = build(state, alpha);
        let revision = state.experiment.revision;
        state
            .guardrail_evidence
            .retain(|(_, _, kept), _| *kept == revision);
        for guardrail in &report.guardrails {
            state.guardrail_evidence.insert(
                (
                    guardrail.metric.clone(),
                    guardrail.variant.clone(),
                    revision,
                ),
                guardrail.always_valid_p_value,
            );
        }
        Some(report)
    }
}

fn build(state: &ExperimentState, alpha: f64) -> Report {
    let experiment = &state.experiment;
    let control = experiment
        .variants
        .iter()
        .position(|variant| variant.name == experiment.control_variant)
        .unwrap_or(0);
    let mut exposed = vec![0_u64; experiment.variants.len()];
    let mut several = 0;
    for unit in &state.units {
        exposed[usize::from(unit.variant)] += 1;
        several += u64::from(unit.several_variants);
    }
    let mut variants: Vec<VariantReport> = experiment
        .variants
        .iter()
        .enumerate()
        .map(|(index, variant)| VariantReport {
            variant: variant.name.clone(),
            is_control: index == control,
            exposed_units: exposed[index],
            metrics: Vec::new(),
        })
        .collect();
    let mut guardrails = Vec::new();
    for metric in &state.metrics {
        let estimates = metric_estimates(state, metric);
        let comparisons: Vec<ComparisonState> = estimates
            .iter()
            .enumerate()
            .map(|(index, estimate)| {
                if index == control {
                    ComparisonState::NotComputed(NotComputed::Control)
                } else {
                    compare(&metric.definition, &estimates[control], estimate, alpha).into()
                }
            })
            .collect();
        let (tested, raw): (Vec<usize>, Vec<f64>) = comparisons
            .iter()
            .enumerate()
            .filter_map(|(index, state)| Some((index, state.computed()?.p_value)))
            .unzip();
        let adjusted = stats::holm(&raw);
        for (index, variant) in variants.iter_mut().enumerate() {
            let adjusted_p_value = tested
                .iter()
                .position(|tested| *tested == index)
                .map(|position| adjusted[position]);
            variant.metrics.push(MetricReport {
                metric: metric.definition.name.clone(),
                role: metric.role,
                value: estimates[index].value,
                comparison: comparisons[index],
                adjusted_p_value,
                significant: adjusted_p_value.is_some_and(|p| p < alpha),
            });
        }
        if metric.guardrail {
            for (index, comparison) in comparisons.iter().enumerate() {
                if index == control {
                    continue;
                }
                let enough = exposed[control] >= GUARDRAIL_MIN_UNITS
                    && exposed[index] >= GUARDRAIL_MIN_UNITS;
                guardrails.push(guardrail(
                    state,
                    metric,
                    &experiment.variants[index].name,
                    comparison.computed(),
                    enough,
                    alpha,
                ));
            }
        }
    }
    Report {
        experiment_id: experiment.id.clone(),
        revision: experiment.revision,
        alpha,
        sample_ratio: sample_ratio(state, &exposed),
        sanity_checks: sanity_checks(state, several),
        variants,
        guardrails,
        newest_event_micros: state.newest_event_micros,
    }
}

/// Judges one guardrail for one treatment with the mSPRT on the relative
/// difference (treatment / control − 1, delta-method variance). The null
/// is "the treatment is worse than control by exactly the threshold"; the
/// mixture over the effect is [`mixture_scales`], fixed by the threshold.
/// Only looks whose estimate lies beyond the null on the harmful side add
/// evidence, so evidence gathered while the treatment looked better can
/// never turn into a breach later; the running minimum over those looks
/// (kept per revision: a resume or any change starts afresh) is the
/// always-valid p-value. A breach needs it below alpha with the current
/// estimate beyond the null. Without a relative difference (no
/// comparison, or a control at 0) or with `enough_units` false there is
/// no look.
fn guardrail(
    state: &ExperimentState,
    metric: &ResolvedMetric,
    variant: &str,
    comparison: Option<&Comparison>,
    enough_units: bool,
    alpha: f64,
) -> GuardrailReport {
    let configured = state
        .experiment
        .metrics
        .guardrails
        .iter()
        .find(|guardrail| guardrail.metric == metric.definition.name);
    let threshold = configured.map_or(0.0, |guardrail| guardrail.threshold);
    let action = configured.and_then(|guardrail| guardrail.action);
    let previous = state
        .guardrail_evidence
        .get(&evidence_key(state, metric, variant))
        .copied()
        .unwrap_or(1.0);
    let relative = comparison.map(|comparison| comparison.relative);
    let (
        Some(Relative::Defined {
            value: relative,
            standard_error,
            ..
        }),
        true,
    ) = (relative, enough_units)
    else {
        return GuardrailReport {
            metric: metric.definition.name.clone(),
            variant: variant.to_owned(),
            state: GuardrailState::InsufficientData,
            relative_difference: relative.and_then(|relative| relative.value()),
            threshold,
            action,
            always_valid_p_value: previous,
        };
    };
    // +1 when a larger value is worse.
    let harmful = if metric.definition.higher_is_better {
        -1.0
    } else {
        1.0
    };
    let null = harmful * threshold;
    let beyond = harmful * (relative - null) > 0.0;
    let look = if beyond {
        stats::msprt_mixture_p_value(
            relative,
            standard_error.powi(2),
            null,
            &mixture_scales(threshold),
        )
    } else {
        1.0
    };
    let always_valid_p_value = previous.min(look);
    GuardrailReport {
        metric: metric.definition.name.clone(),
        variant: variant.to_owned(),
        state: if beyond && always_valid_p_value < alpha {
            GuardrailState::Breached
        } else {
            GuardrailState::Ok
        },
        relative_difference: Some(relative),
        threshold,
        action,
        always_valid_p_value,
    }
}

/// Variances of the mixture over the relative effect: the threshold (at
/// least [`MIXTURE_SCALE_FLOOR`]) and 4, 16 and 64 times it, equally
/// weighted, so a degradation just past the threshold and one many times
/// larger are both caught quickly.
pub fn mixture_scales(threshold: f64) -> [f64; 4] {
    let scale = threshold.max(MIXTURE_SCALE_FLOOR);
    [1.0, 4.0, 16.0, 64.0].map(|factor| (factor * scale).powi(2))
}

/// Evidence is kept per metric, treatment and revision.
pub(crate) fn evidence_key(
    state: &ExperimentState,
    metric: &ResolvedMetric,
    variant: &str,
) -> (String, String, u64) {
    (
        metric.definition.name.clone(),
        variant.to_owned(),
        state.experiment.revision,
    )
}

fn sample_ratio(state: &ExperimentState, exposed: &[u64]) -> Option<SampleRatio> {
    let (observed, weights): (Vec<u64>, Vec<f64>) = state
        .experiment
        .variants
        .iter()
        .zip(exposed)
        .filter(|(variant, _)| variant.weight > 0)
        .map(|(variant, count)| (*count, f64::from(variant.weight)))
        .unzip();
    let (chi_square, p_value) = stats::chi_square_goodness_of_fit(&observed, &weights)?;
    Some(SampleRatio {
        chi_square,
        p_value,
        mismatch: p_value < SAMPLE_RATIO_ALPHA,
    })
}

fn several_variants_detail(state: &ExperimentState, several: u64) -> String {
    let units = state.units.len();
    let mut detail = format!(
        "{several} of {units} units were exposed to more than one variant \
         (each is analysed in the variant of its earliest exposure)"
    );
    if state.items_left_in_previous_arm > 0.0 {
        detail.push_str(&format!(
            "; {} item impressions counted before an earlier exposure arrived stay in the \
             concentration of the variant they were counted in",
            state.items_left_in_previous_arm
        ));
    }
    detail
}

/// Outcomes left out of the value metrics for their currency.
fn other_currencies_check(state: &ExperimentState) -> SanityCheck {
    let offending: u64 = state.other_currencies.iter().map(|(_, count)| count).sum();
    let mut seen = state.other_currencies.clone();
    seen.sort();
    let seen: Vec<String> = seen
        .iter()
        .map(|(currency, count)| format!("{currency} {count}"))
        .collect();
    SanityCheck {
        name: "outcomes_in_other_currencies",
        passed: offending == 0,
        offending,
        detail: if offending == 0 {
            format!(
                "every amount counted is in {}",
                state.experiment.metrics.effective_currency()
            )
        } else {
            format!(
                "{offending} outcomes with an amount in another currency than the experiment's {} \
                 are left out of its value metrics: {}",
                state.experiment.metrics.effective_currency(),
                seen.join(", ")
            )
        },
    }
}

fn sanity_checks(state: &ExperimentState, several: u64) -> Vec<SanityCheck> {
    vec![
        SanityCheck {
            name: "units_in_several_variants",
            passed: several == 0,
            offending: several,
            detail: several_variants_detail(state, several),
        },
        SanityCheck {
            name: "variant_disagrees_with_bucketing",
            passed: state.exposures_disagreeing_with_bucketing == 0,
            offending: state.exposures_disagreeing_with_bucketing,
            detail: format!(
                "{} of {} exposures name a variant other than the one the salts give",
                state.exposures_disagreeing_with_bucketing,
                state.exposures_checked_against_bucketing
            ),
        },
        other_currencies_check(state),
        SanityCheck {
            name: "exposures_outside_schedule",
            passed: state.exposures_outside_schedule == 0,
            offending: state.exposures_outside_schedule,
            detail: format!(
                "{} of {} exposures fall before the start or after the end time",
                state.exposures_outside_schedule, state.exposures
            ),
        },
    ]
}
