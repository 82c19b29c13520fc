//! Reports in their proto form.

use std::time::{Duration, SystemTime};

use exp_analysis::{
    GuardrailState, IntervalKind, Report, Role as MetricRole,
    report::{ComparisonState, VariantReport},
    results::CupedReport,
    stats::{NotComputed, Relative},
    timeline::{PointTime, Timeline},
};
use exp_core::GuardrailAction;
use exp_proto::v1;

fn interval(bounds: (f64, f64), alpha: f64) -> v1::ConfidenceInterval {
    v1::ConfidenceInterval {
        lower: bounds.0,
        upper: bounds.1,
        level: 1.0 - alpha,
    }
}

/// The wire form of an interval kind.
pub fn interval_kind_to_proto(kind: IntervalKind) -> v1::IntervalKind {
    match kind {
        IntervalKind::FixedHorizon => v1::IntervalKind::FixedHorizon,
        IntervalKind::Sequential => v1::IntervalKind::Sequential,
    }
}

/// How far the analysis is behind the log, for a response.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Lag {
    /// The position counted through.
    pub counted_position: u64,
    /// Events committed and not yet counted.
    pub pending_events: u64,
    /// How long the oldest of them has waited, in seconds.
    pub lag_seconds: f64,
}

/// One variant's results: units and every metric against control.
pub fn variant_to_proto(variant: &VariantReport, alpha: f64) -> v1::VariantResult {
    v1::VariantResult {
        variant: variant.variant.clone(),
        is_control: variant.is_control,
        exposed_units: variant.exposed_units,
        metrics: variant
            .metrics
            .iter()
            .map(|metric| {
                let computed = metric.comparison.computed();
                let relative = computed.and_then(|comparison| match comparison.relative {
                    Relative::Defined {
                        value, interval, ..
                    } => Some((value, interval)),
                    Relative::ControlIsZero => None,
                });
                v1::MetricResult {
                    metric: metric.metric.clone(),
                    role: match metric.role {
                        MetricRole::Primary => v1::MetricRole::Primary,
                        MetricRole::Secondary => v1::MetricRole::Secondary,
                        MetricRole::Guardrail => v1::MetricRole::Guardrail,
                    } as i32,
                    value: metric.value.unwrap_or(0.0),
                    value_undefined: metric.value.is_none(),
                    absolute_difference: computed.map_or(0.0, |c| c.absolute),
                    absolute_interval: computed.map(|c| interval(c.absolute_interval, alpha)),
                    relative_difference: relative.map_or(0.0, |(value, _)| value),
                    relative_interval: relative.map(|(_, bounds)| interval(bounds, alpha)),
                    relative_undefined: computed
                        .is_some_and(|c| matches!(c.relative, Relative::ControlIsZero)),
                    p_value: computed.map_or(0.0, |c| c.p_value),
                    standard_error: computed.map_or(0.0, |c| c.standard_error),
                    adjusted_p_value: metric.adjusted_p_value.unwrap_or(0.0),
                    significant: metric.significant,
                    comparison_status: comparison_status(&metric.comparison) as i32,
                    cuped: metric.cuped.map(|cuped| cuped_to_proto(&cuped, alpha)),
                }
            })
            .collect(),
    }
}

/// A CUPED adjustment in its proto form.
fn cuped_to_proto(cuped: &CupedReport, alpha: f64) -> v1::CupedResult {
    let unadjusted = cuped.unadjusted.computed();
    let relative = unadjusted.and_then(|comparison| match comparison.relative {
        Relative::Defined {
            value, interval, ..
        } => Some((value, interval)),
        Relative::ControlIsZero => None,
    });
    v1::CupedResult {
        applied: cuped.applied,
        pre_period_days: cuped.pre_period_days,
        theta: cuped.theta,
        variance_reduction: cuped.variance_reduction.unwrap_or(0.0),
        variance_reduction_undefined: cuped.variance_reduction.is_none(),
        unadjusted_status: comparison_status(&cuped.unadjusted) as i32,
        unadjusted_absolute_difference: unadjusted.map_or(0.0, |c| c.absolute),
        unadjusted_absolute_interval: unadjusted.map(|c| interval(c.absolute_interval, alpha)),
        unadjusted_relative_difference: relative.map_or(0.0, |(value, _)| value),
        unadjusted_relative_interval: relative.map(|(_, bounds)| interval(bounds, alpha)),
        unadjusted_p_value: unadjusted.map_or(0.0, |c| c.p_value),
        unadjusted_standard_error: unadjusted.map_or(0.0, |c| c.standard_error),
        adjusted_value: cuped.adjusted_value.unwrap_or(0.0),
    }
}

fn comparison_status(state: &ComparisonState) -> v1::ComparisonStatus {
    match state {
        ComparisonState::Computed(_) => v1::ComparisonStatus::Computed,
        ComparisonState::NotComputed(NotComputed::Control) => v1::ComparisonStatus::Control,
        ComparisonState::NotComputed(NotComputed::NoData) => v1::ComparisonStatus::NoData,
        ComparisonState::NotComputed(NotComputed::TooFewUnits) => v1::ComparisonStatus::TooFewUnits,
        ComparisonState::NotComputed(NotComputed::NoVariance) => v1::ComparisonStatus::NoVariance,
    }
}

/// The points of a timeline: its boundaries, then now.
pub fn timeline_to_proto(timeline: &Timeline) -> Vec<v1::TimelinePoint> {
    timeline
        .points
        .iter()
        .map(|point| {
            let (time, current) = match point.time {
                PointTime::Boundary(micros) => (micros_to_time(micros), false),
                PointTime::Now(_) => (SystemTime::now(), true),
            };
            v1::TimelinePoint {
                time: Some(time.into()),
                current,
                variants: point
                    .variants
                    .iter()
                    .map(|variant| variant_to_proto(variant, timeline.alpha))
                    .collect(),
                revision: point.revision,
                interval_kind: interval_kind_to_proto(timeline.readout.intervals) as i32,
            }
        })
        .collect()
}

fn micros_to_time(micros: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// The proto form of a report, with how far behind the log it is.
pub fn report_to_proto(report: &Report, lag: Lag) -> v1::GetResultsResponse {
    let alpha = report.alpha;
    v1::GetResultsResponse {
        experiment_id: report.experiment_id.clone(),
        revision: report.revision,
        variants: report
            .variants
            .iter()
            .map(|variant| variant_to_proto(variant, alpha))
            .collect(),
        sample_ratio: report.sample_ratio.map(|check| v1::SampleRatioCheck {
            chi_square: check.chi_square,
            p_value: check.p_value,
            mismatch: check.mismatch,
        }),
        sanity_checks: report
            .sanity_checks
            .iter()
            .map(|check| v1::SanityCheck {
                name: check.name.to_owned(),
                passed: check.passed,
                offending_count: check.offending,
                detail: check.detail.clone(),
            })
            .collect(),
        guardrails: report
            .guardrails
            .iter()
            .map(|guardrail| v1::GuardrailStatus {
                metric: guardrail.metric.clone(),
                variant: guardrail.variant.clone(),
                state: match guardrail.state {
                    GuardrailState::Ok => v1::GuardrailState::Ok,
                    GuardrailState::Breached => v1::GuardrailState::Breached,
                    GuardrailState::InsufficientData => v1::GuardrailState::InsufficientData,
                } as i32,
                // Unset with too little data, which `state` says.
                relative_difference: guardrail.relative_difference.unwrap_or(0.0),
                threshold: guardrail.threshold,
                always_valid_p_value: guardrail.always_valid_p_value,
                action: match guardrail.action {
                    Some(GuardrailAction::Pause) => v1::GuardrailAction::Pause,
                    Some(GuardrailAction::Stop) => v1::GuardrailAction::Stop,
                    None => v1::GuardrailAction::Unspecified,
                } as i32,
            })
            .collect(),
        data_freshness_time: report
            .newest_event_micros
            .map(|micros| micros_to_time(micros).into()),
        multiple_comparison_correction: report.readout.correction.name().into(),
        interval_kind: interval_kind_to_proto(report.readout.intervals) as i32,
        sequential_tuning_parameter: report.readout.tuning_parameter,
        alpha,
        counted_position: lag.counted_position,
        pending_events: lag.pending_events,
        lag_seconds: lag.lag_seconds,
    }
}
