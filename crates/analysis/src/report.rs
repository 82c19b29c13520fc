//! Results of one experiment from its per-unit state: per variant and
//! metric the value, the comparison with control (fixed-horizon or
//! always-valid) and the adjusted p-values ([`crate::results`]), the sample
//! ratio check, the exposure sanity checks and the guardrail states.

use exp_core::GuardrailAction;

pub use crate::results::{
    ComparisonState, CupedReport, IntervalKind, MetricReport, Readout, VariantReport,
};
use crate::{
    analyzer::Analyzer,
    experiment::{ExperimentState, ResolvedMetric},
    results::{MetricStatistics, control_index, exposed_units, variant_reports},
    stats::{self, Comparison, Relative},
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
    /// How the comparisons were read: the kind of their intervals and
    /// p-values, and the correction of the adjusted p-values.
    pub readout: Readout,
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
    let control = control_index(state);
    let (exposed, several) = exposed_units(state);
    let statistics = MetricStatistics::of_experiment(state);
    let variants = variant_reports(state, &exposed, &statistics, alpha);
    let mut guardrails = Vec::new();
    for (position, metric) in state.metrics.iter().enumerate() {
        if !metric.guardrail {
            continue;
        }
        for (index, variant) in variants.iter().enumerate() {
            if index == control {
                continue;
            }
            let enough =
                exposed[control] >= GUARDRAIL_MIN_UNITS && exposed[index] >= GUARDRAIL_MIN_UNITS;
            guardrails.push(guardrail(
                state,
                metric,
                &variant.variant,
                variant.metrics[position].comparison.computed(),
                enough,
                alpha,
            ));
        }
    }
    Report {
        experiment_id: experiment.id.clone(),
        revision: experiment.revision,
        alpha,
        readout: Readout::of(experiment),
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

/// Whether every unit's pre-period was whole: none starts before a day the
/// pre-period ledger forgot outcomes of for want of room
/// ([`crate::preperiod`]), for an experiment that adjusts.
fn pre_period_check(state: &ExperimentState) -> SanityCheck {
    let partial = state
        .units
        .iter()
        .filter(|unit| unit.partial_pre_period)
        .count() as u64;
    SanityCheck {
        name: "pre_period_outcomes_kept",
        passed: partial == 0,
        offending: partial,
        detail: if partial == 0 {
            "every unit's pre-period outcomes were kept for its CUPED covariate".to_owned()
        } else {
            format!(
                "{partial} of {} units have a pre-period that starts before a day the \
                 pre-period ledger forgot outcomes of for want of room (it holds {} MiB across \
                 experiments): their covariates may miss their oldest days, which leaves the \
                 adjustment unbiased but less sharp",
                state.units.len(),
                crate::preperiod::MAX_BYTES >> 20
            )
        },
    }
}

fn sanity_checks(state: &ExperimentState, several: u64) -> Vec<SanityCheck> {
    let mut checks = vec![
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
    ];
    if state.layout.pre_period_days.is_some() {
        checks.push(pre_period_check(state));
    }
    checks
}
