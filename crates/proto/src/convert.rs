//! Conversions between the wire (`v1`) and the domain (`exp_core`).
//!
//! Inputs (`*_from_proto`) validate what the wire cannot express in the
//! domain (unknown enum numbers, non-finite numbers, impossible
//! timestamps) and report it with field paths; domain rules are checked
//! later by `exp_core::validate`. Output-only fields of inputs are ignored.
//! Outputs (`*_to_proto`) cannot fail.

use std::{collections::BTreeMap, time::SystemTime};

use exp_core::{
    AttributeOperator, AttributeRule, BucketRange, BucketingUnit, CupedConfig,
    DEFAULT_PRE_PERIOD_DAYS, DEFAULT_SEQUENTIAL_TUNING_PARAMETER, Eligibility, Experiment,
    FieldViolation, Guardrail, GuardrailAction, LoggedIn, MetricsConfig,
    MultipleComparisonCorrection, Params, QaOverride, Randomization, Revision, RevisionAction,
    Schedule, Status, UnitType, Variant,
    metrics::{Aggregate, Measure, MetricDefinition, MetricKind, OutcomeType},
};
use prost_types::{ListValue, Struct, Timestamp, value::Kind};
use serde_json::{Map, Number, Value};

use crate::v1;

// === experiments ===

/// The domain experiment described by a request. Output-only fields take
/// neutral values; `revision` is kept (it is the base of an update).
pub fn experiment_from_proto(proto: v1::Experiment) -> Result<Experiment, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let variants = variants_from_proto(proto.variants, &mut violations);
    let bucketing_unit = bucketing_unit_from_proto(proto.bucketing_unit, &mut violations);
    let eligibility =
        eligibility_from_proto(proto.eligibility.unwrap_or_default(), &mut violations);
    let schedule = schedule_from_proto(proto.schedule.unwrap_or_default(), &mut violations);
    let metrics = metrics_from_proto(proto.metrics.unwrap_or_default(), &mut violations);
    let multiple_comparison_correction =
        correction_from_proto(proto.multiple_comparison_correction, &mut violations);
    let experiment = Experiment {
        id: proto.id,
        name: proto.name,
        description: proto.description,
        hypothesis: proto.hypothesis,
        owner: proto.owner,
        layer: proto.layer,
        variants,
        control_variant: proto.control_variant,
        traffic_percent: proto.traffic_percent,
        bucketing_unit,
        eligibility,
        schedule,
        status: Status::Draft,
        metrics,
        revision: proto.revision,
        create_time: SystemTime::UNIX_EPOCH,
        update_time: SystemTime::UNIX_EPOCH,
        updated_by: String::new(),
        shipped_variant: None,
        status_reason: String::new(),
        randomization: None,
        allocation: Vec::new(),
        sequential: proto.sequential,
        multiple_comparison_correction,
        sequential_tuning_parameter: if proto.sequential_tuning_parameter == 0 {
            DEFAULT_SEQUENTIAL_TUNING_PARAMETER
        } else {
            proto.sequential_tuning_parameter
        },
    };
    if violations.is_empty() {
        Ok(experiment)
    } else {
        Err(violations)
    }
}

pub(crate) fn variants_from_proto(
    variants: Vec<v1::Variant>,
    violations: &mut Vec<FieldViolation>,
) -> Vec<Variant> {
    variants
        .into_iter()
        .enumerate()
        .map(|(index, variant)| Variant {
            name: variant.name,
            description: variant.description,
            weight: variant.weight,
            params: variant
                .params
                .map(|params| {
                    struct_to_json(&params, &format!("variants[{index}].params"), violations)
                })
                .unwrap_or_default(),
        })
        .collect()
}

pub(crate) fn bucketing_unit_from_proto(
    value: i32,
    violations: &mut Vec<FieldViolation>,
) -> BucketingUnit {
    match v1::BucketingUnit::try_from(value) {
        Ok(v1::BucketingUnit::Unspecified | v1::BucketingUnit::UserOrSession) => {
            BucketingUnit::UserOrSession
        }
        Ok(v1::BucketingUnit::User) => BucketingUnit::User,
        Ok(v1::BucketingUnit::Session) => BucketingUnit::Session,
        Err(_) => {
            violations.push(unknown_enum("bucketing_unit", value));
            BucketingUnit::UserOrSession
        }
    }
}

fn correction_from_proto(
    value: i32,
    violations: &mut Vec<FieldViolation>,
) -> MultipleComparisonCorrection {
    match v1::MultipleComparisonCorrection::try_from(value) {
        Ok(
            v1::MultipleComparisonCorrection::Unspecified | v1::MultipleComparisonCorrection::Holm,
        ) => MultipleComparisonCorrection::Holm,
        Ok(v1::MultipleComparisonCorrection::BenjaminiHochberg) => {
            MultipleComparisonCorrection::BenjaminiHochberg
        }
        Err(_) => {
            violations.push(unknown_enum("multiple_comparison_correction", value));
            MultipleComparisonCorrection::Holm
        }
    }
}

/// The wire form of a multiple-comparison correction.
pub fn correction_to_proto(
    correction: MultipleComparisonCorrection,
) -> v1::MultipleComparisonCorrection {
    match correction {
        MultipleComparisonCorrection::Holm => v1::MultipleComparisonCorrection::Holm,
        MultipleComparisonCorrection::BenjaminiHochberg => {
            v1::MultipleComparisonCorrection::BenjaminiHochberg
        }
    }
}

pub(crate) fn schedule_from_proto(
    schedule: v1::Schedule,
    violations: &mut Vec<FieldViolation>,
) -> Schedule {
    Schedule {
        start_time: optional_time(schedule.start_time, "schedule.start_time", violations),
        end_time: optional_time(schedule.end_time, "schedule.end_time", violations),
    }
}

/// The wire form of an experiment.
pub fn experiment_to_proto(experiment: &Experiment) -> v1::Experiment {
    v1::Experiment {
        id: experiment.id.clone(),
        name: experiment.name.clone(),
        description: experiment.description.clone(),
        hypothesis: experiment.hypothesis.clone(),
        owner: experiment.owner.clone(),
        layer: experiment.layer.clone(),
        variants: experiment.variants.iter().map(variant_to_proto).collect(),
        control_variant: experiment.control_variant.clone(),
        traffic_percent: experiment.traffic_percent,
        bucketing_unit: bucketing_unit_to_proto(experiment.bucketing_unit) as i32,
        eligibility: Some(eligibility_to_proto(&experiment.eligibility)),
        schedule: Some(schedule_to_proto(&experiment.schedule)),
        status: status_to_proto(experiment.status) as i32,
        metrics: Some(metrics_to_proto(&experiment.metrics)),
        revision: experiment.revision,
        create_time: Some(experiment.create_time.into()),
        update_time: Some(experiment.update_time.into()),
        updated_by: experiment.updated_by.clone(),
        shipped_variant: experiment.shipped_variant.clone().unwrap_or_default(),
        status_reason: experiment.status_reason.clone(),
        randomization: experiment
            .randomization
            .as_ref()
            .map(randomization_to_proto),
        allocation: experiment
            .allocation
            .iter()
            .map(bucket_range_to_proto)
            .collect(),
        sequential: experiment.sequential,
        sequential_tuning_parameter: experiment.sequential_tuning_parameter,
        multiple_comparison_correction: correction_to_proto(
            experiment.multiple_comparison_correction,
        ) as i32,
    }
}

/// The wire form of a bucket range.
pub fn bucket_range_to_proto(range: &BucketRange) -> v1::BucketRange {
    v1::BucketRange {
        start: range.start,
        end: range.end,
    }
}

/// The wire form of a variant.
pub fn variant_to_proto(variant: &Variant) -> v1::Variant {
    v1::Variant {
        name: variant.name.clone(),
        description: variant.description.clone(),
        weight: variant.weight,
        params: Some(json_to_struct(&variant.params)),
    }
}

/// The wire form of the salts.
pub fn randomization_to_proto(randomization: &Randomization) -> v1::Randomization {
    v1::Randomization {
        allocation_salt: randomization.allocation_salt.clone(),
        variant_salt: randomization.variant_salt.clone(),
    }
}

/// The wire form of a schedule.
pub fn schedule_to_proto(schedule: &Schedule) -> v1::Schedule {
    v1::Schedule {
        start_time: schedule.start_time.map(Timestamp::from),
        end_time: schedule.end_time.map(Timestamp::from),
    }
}

// === enums ===

/// The wire form of a bucketing unit.
pub fn bucketing_unit_to_proto(unit: BucketingUnit) -> v1::BucketingUnit {
    match unit {
        BucketingUnit::UserOrSession => v1::BucketingUnit::UserOrSession,
        BucketingUnit::User => v1::BucketingUnit::User,
        BucketingUnit::Session => v1::BucketingUnit::Session,
    }
}

/// The wire form of a status.
pub fn status_to_proto(status: Status) -> v1::ExperimentStatus {
    match status {
        Status::Draft => v1::ExperimentStatus::Draft,
        Status::Scheduled => v1::ExperimentStatus::Scheduled,
        Status::Running => v1::ExperimentStatus::Running,
        Status::Paused => v1::ExperimentStatus::Paused,
        Status::Stopped => v1::ExperimentStatus::Stopped,
        Status::Completed => v1::ExperimentStatus::Completed,
        Status::Archived => v1::ExperimentStatus::Archived,
    }
}

/// The domain status of a wire status; `None` for unspecified. `field`
/// names the field for the error of an unknown number.
pub fn status_from_proto(value: i32, field: &str) -> Result<Option<Status>, FieldViolation> {
    Ok(Some(match v1::ExperimentStatus::try_from(value) {
        Ok(v1::ExperimentStatus::Unspecified) => return Ok(None),
        Ok(v1::ExperimentStatus::Draft) => Status::Draft,
        Ok(v1::ExperimentStatus::Scheduled) => Status::Scheduled,
        Ok(v1::ExperimentStatus::Running) => Status::Running,
        Ok(v1::ExperimentStatus::Paused) => Status::Paused,
        Ok(v1::ExperimentStatus::Stopped) => Status::Stopped,
        Ok(v1::ExperimentStatus::Completed) => Status::Completed,
        Ok(v1::ExperimentStatus::Archived) => Status::Archived,
        Err(_) => return Err(unknown_enum(field, value)),
    }))
}

/// The wire form of a unit type.
pub fn unit_type_to_proto(unit_type: UnitType) -> v1::UnitType {
    match unit_type {
        UnitType::User => v1::UnitType::User,
        UnitType::Session => v1::UnitType::Session,
    }
}

/// The domain unit type of a wire one; unspecified is refused.
pub fn unit_type_from_proto(value: i32, field: &str) -> Result<UnitType, FieldViolation> {
    match v1::UnitType::try_from(value) {
        Ok(v1::UnitType::User) => Ok(UnitType::User),
        Ok(v1::UnitType::Session) => Ok(UnitType::Session),
        Ok(v1::UnitType::Unspecified) => Err(FieldViolation::new(
            field,
            "is required: UNIT_TYPE_USER or UNIT_TYPE_SESSION",
        )),
        Err(_) => Err(unknown_enum(field, value)),
    }
}

fn revision_action_to_proto(action: RevisionAction) -> v1::RevisionAction {
    match action {
        RevisionAction::Create => v1::RevisionAction::Create,
        RevisionAction::Update => v1::RevisionAction::Update,
        RevisionAction::Start => v1::RevisionAction::Start,
        RevisionAction::Pause => v1::RevisionAction::Pause,
        RevisionAction::Resume => v1::RevisionAction::Resume,
        RevisionAction::Stop => v1::RevisionAction::Stop,
        RevisionAction::Complete => v1::RevisionAction::Complete,
        RevisionAction::Archive => v1::RevisionAction::Archive,
        RevisionAction::Rollback => v1::RevisionAction::Rollback,
    }
}

pub(crate) fn unknown_enum(field: &str, value: i32) -> FieldViolation {
    FieldViolation::new(field, format!("unknown enum value {value}"))
}

// === eligibility ===

pub(crate) fn eligibility_from_proto(
    proto: v1::Eligibility,
    violations: &mut Vec<FieldViolation>,
) -> Eligibility {
    let logged_in = match v1::LoggedInRequirement::try_from(proto.logged_in) {
        Ok(v1::LoggedInRequirement::Unspecified | v1::LoggedInRequirement::Any) => LoggedIn::Any,
        Ok(v1::LoggedInRequirement::LoggedIn) => LoggedIn::LoggedIn,
        Ok(v1::LoggedInRequirement::Anonymous) => LoggedIn::Anonymous,
        Err(_) => {
            violations.push(unknown_enum("eligibility.logged_in", proto.logged_in));
            LoggedIn::Any
        }
    };
    let attribute_rules = proto
        .attribute_rules
        .into_iter()
        .enumerate()
        .map(|(index, rule)| {
            use v1::AttributeOperator as P;
            let operator = match P::try_from(rule.operator) {
                Ok(P::Unspecified) => None,
                Ok(P::In) => Some(AttributeOperator::In),
                Ok(P::NotIn) => Some(AttributeOperator::NotIn),
                Ok(P::Equals) => Some(AttributeOperator::Equals),
                Ok(P::NotEquals) => Some(AttributeOperator::NotEquals),
                Ok(P::GreaterThan) => Some(AttributeOperator::GreaterThan),
                Ok(P::GreaterThanOrEqual) => Some(AttributeOperator::GreaterThanOrEqual),
                Ok(P::LessThan) => Some(AttributeOperator::LessThan),
                Ok(P::LessThanOrEqual) => Some(AttributeOperator::LessThanOrEqual),
                Ok(P::SemverEqual) => Some(AttributeOperator::SemverEqual),
                Ok(P::SemverGreaterThan) => Some(AttributeOperator::SemverGreaterThan),
                Ok(P::SemverGreaterThanOrEqual) => {
                    Some(AttributeOperator::SemverGreaterThanOrEqual)
                }
                Ok(P::SemverLessThan) => Some(AttributeOperator::SemverLessThan),
                Ok(P::SemverLessThanOrEqual) => Some(AttributeOperator::SemverLessThanOrEqual),
                Ok(P::RegexMatch) => Some(AttributeOperator::RegexMatch),
                Err(_) => {
                    violations.push(unknown_enum(
                        &format!("eligibility.attribute_rules[{index}].operator"),
                        rule.operator,
                    ));
                    None
                }
            };
            AttributeRule {
                attribute: rule.attribute,
                operator,
                values: rule.values,
            }
        })
        .collect();
    Eligibility {
        placements: proto.placements,
        page_types: proto.page_types,
        countries: proto.countries,
        devices: proto.devices,
        logged_in,
        attribute_rules,
    }
}

/// The wire form of eligibility.
pub fn eligibility_to_proto(eligibility: &Eligibility) -> v1::Eligibility {
    v1::Eligibility {
        placements: eligibility.placements.clone(),
        page_types: eligibility.page_types.clone(),
        countries: eligibility.countries.clone(),
        devices: eligibility.devices.clone(),
        logged_in: match eligibility.logged_in {
            LoggedIn::Any => v1::LoggedInRequirement::Any,
            LoggedIn::LoggedIn => v1::LoggedInRequirement::LoggedIn,
            LoggedIn::Anonymous => v1::LoggedInRequirement::Anonymous,
        } as i32,
        attribute_rules: eligibility
            .attribute_rules
            .iter()
            .map(|rule| {
                use AttributeOperator as D;
                use v1::AttributeOperator as P;
                let operator = match rule.operator {
                    None => P::Unspecified,
                    Some(D::In) => P::In,
                    Some(D::NotIn) => P::NotIn,
                    Some(D::Equals) => P::Equals,
                    Some(D::NotEquals) => P::NotEquals,
                    Some(D::GreaterThan) => P::GreaterThan,
                    Some(D::GreaterThanOrEqual) => P::GreaterThanOrEqual,
                    Some(D::LessThan) => P::LessThan,
                    Some(D::LessThanOrEqual) => P::LessThanOrEqual,
                    Some(D::SemverEqual) => P::SemverEqual,
                    Some(D::SemverGreaterThan) => P::SemverGreaterThan,
                    Some(D::SemverGreaterThanOrEqual) => P::SemverGreaterThanOrEqual,
                    Some(D::SemverLessThan) => P::SemverLessThan,
                    Some(D::SemverLessThanOrEqual) => P::SemverLessThanOrEqual,
                    Some(D::RegexMatch) => P::RegexMatch,
                };
                v1::AttributeRule {
                    attribute: rule.attribute.clone(),
                    operator: operator as i32,
                    values: rule.values.clone(),
                }
            })
            .collect(),
    }
}

// === metrics ===

fn metrics_from_proto(
    proto: v1::MetricsConfig,
    violations: &mut Vec<FieldViolation>,
) -> MetricsConfig {
    let guardrails = proto
        .guardrails
        .into_iter()
        .enumerate()
        .map(|(index, guardrail)| {
            let action = match v1::GuardrailAction::try_from(guardrail.action) {
                Ok(v1::GuardrailAction::Unspecified) => None,
                Ok(v1::GuardrailAction::Pause) => Some(GuardrailAction::Pause),
                Ok(v1::GuardrailAction::Stop) => Some(GuardrailAction::Stop),
                Err(_) => {
                    violations.push(unknown_enum(
                        &format!("metrics.guardrails[{index}].action"),
                        guardrail.action,
                    ));
                    None
                }
            };
            Guardrail {
                metric: guardrail.metric,
                threshold: guardrail.threshold,
                action,
            }
        })
        .collect();
    let definitions = proto
        .definitions
        .into_iter()
        .enumerate()
        .filter_map(|(index, definition)| {
            metric_definition_from_proto(
                definition,
                &format!("metrics.definitions[{index}]"),
                violations,
            )
        })
        .collect();
    MetricsConfig {
        primary_metric: proto.primary_metric,
        secondary_metrics: proto.secondary_metrics,
        guardrails,
        definitions,
        currency: proto.currency,
        cuped: proto
            .cuped
            .map_or_else(CupedConfig::default, |cuped| CupedConfig {
                enabled: !cuped.disabled,
                pre_period_days: if cuped.pre_period_days == 0 {
                    DEFAULT_PRE_PERIOD_DAYS
                } else {
                    cuped.pre_period_days
                },
            }),
    }
}

/// The domain definition of a proto one; `None` (with violations) when an
/// enum is unset or unknown.
fn metric_definition_from_proto(
    proto: v1::MetricDefinition,
    path: &str,
    violations: &mut Vec<FieldViolation>,
) -> Option<MetricDefinition> {
    let before = violations.len();
    let kind = match v1::MetricKind::try_from(proto.kind) {
        Ok(v1::MetricKind::Proportion) => Some(MetricKind::Proportion),
        Ok(v1::MetricKind::Mean) => Some(MetricKind::Mean),
        Ok(v1::MetricKind::Ratio) => Some(MetricKind::Ratio),
        Ok(v1::MetricKind::Concentration) => Some(MetricKind::Concentration),
        Ok(v1::MetricKind::Unspecified) => {
            violations.push(FieldViolation::new(
                format!("{path}.kind"),
                "is required: PROPORTION, MEAN, RATIO or CONCENTRATION",
            ));
            None
        }
        Err(_) => {
            violations.push(unknown_enum(&format!("{path}.kind"), proto.kind));
            None
        }
    };
    let numerator = match proto.numerator {
        Some(numerator) => measure_from_proto(numerator, &format!("{path}.numerator"), violations),
        None => {
            violations.push(FieldViolation::new(
                format!("{path}.numerator"),
                "is required",
            ));
            None
        }
    };
    let denominator = proto.denominator.and_then(|denominator| {
        measure_from_proto(denominator, &format!("{path}.denominator"), violations)
    });
    if violations.len() > before {
        return None;
    }
    Some(MetricDefinition {
        name: proto.name,
        description: proto.description,
        kind: kind?,
        numerator: numerator?,
        denominator,
        higher_is_better: proto.higher_is_better,
        success_at_least: proto.success_at_least.max(1),
        success_at_most: (proto.success_at_most > 0).then_some(proto.success_at_most),
    })
}

fn measure_from_proto(
    proto: v1::Measure,
    path: &str,
    violations: &mut Vec<FieldViolation>,
) -> Option<Measure> {
    let outcome_type = match v1::OutcomeType::try_from(proto.outcome_type) {
        Ok(v1::OutcomeType::Unspecified) => {
            violations.push(FieldViolation::new(
                format!("{path}.outcome_type"),
                "is required",
            ));
            None
        }
        Ok(known) => outcome_type_from_proto(known),
        Err(_) => {
            violations.push(unknown_enum(
                &format!("{path}.outcome_type"),
                proto.outcome_type,
            ));
            None
        }
    };
    let aggregate = match v1::MeasureAggregate::try_from(proto.aggregate) {
        Ok(v1::MeasureAggregate::Count) => Some(Aggregate::Count),
        Ok(v1::MeasureAggregate::ValueSum) => Some(Aggregate::ValueSum),
        Ok(v1::MeasureAggregate::QuantitySum) => Some(Aggregate::QuantitySum),
        Ok(v1::MeasureAggregate::LatencySum) => Some(Aggregate::LatencySum),
        Ok(v1::MeasureAggregate::ItemCount) => Some(Aggregate::ItemCount),
        Ok(v1::MeasureAggregate::Unspecified) => {
            violations.push(FieldViolation::new(
                format!("{path}.aggregate"),
                "is required: COUNT, VALUE_SUM, QUANTITY_SUM, LATENCY_SUM or ITEM_COUNT",
            ));
            None
        }
        Err(_) => {
            violations.push(unknown_enum(&format!("{path}.aggregate"), proto.aggregate));
            None
        }
    };
    Some(Measure {
        outcome_type: outcome_type?,
        recommended_only: proto.recommended_only,
        experiment_placements_only: proto.experiment_placements_only,
        aggregate: aggregate?,
    })
}

/// The domain outcome type of a set proto one.
pub fn outcome_type_from_proto(proto: v1::OutcomeType) -> Option<OutcomeType> {
    Some(match proto {
        v1::OutcomeType::Unspecified => return None,
        v1::OutcomeType::Impression => OutcomeType::Impression,
        v1::OutcomeType::Click => OutcomeType::Click,
        v1::OutcomeType::AddToCart => OutcomeType::AddToCart,
        v1::OutcomeType::Purchase => OutcomeType::Purchase,
        v1::OutcomeType::PageView => OutcomeType::PageView,
        v1::OutcomeType::PageLoad => OutcomeType::PageLoad,
    })
}

pub(crate) fn outcome_type_to_proto(outcome_type: OutcomeType) -> v1::OutcomeType {
    match outcome_type {
        OutcomeType::Impression => v1::OutcomeType::Impression,
        OutcomeType::Click => v1::OutcomeType::Click,
        OutcomeType::AddToCart => v1::OutcomeType::AddToCart,
        OutcomeType::Purchase => v1::OutcomeType::Purchase,
        OutcomeType::PageView => v1::OutcomeType::PageView,
        OutcomeType::PageLoad => v1::OutcomeType::PageLoad,
    }
}

fn measure_to_proto(measure: &Measure) -> v1::Measure {
    v1::Measure {
        outcome_type: outcome_type_to_proto(measure.outcome_type) as i32,
        recommended_only: measure.recommended_only,
        experiment_placements_only: measure.experiment_placements_only,
        aggregate: match measure.aggregate {
            Aggregate::Count => v1::MeasureAggregate::Count,
            Aggregate::ValueSum => v1::MeasureAggregate::ValueSum,
            Aggregate::QuantitySum => v1::MeasureAggregate::QuantitySum,
            Aggregate::LatencySum => v1::MeasureAggregate::LatencySum,
            Aggregate::ItemCount => v1::MeasureAggregate::ItemCount,
        } as i32,
    }
}

/// The proto form of a metric definition.
pub fn metric_definition_to_proto(definition: &MetricDefinition) -> v1::MetricDefinition {
    v1::MetricDefinition {
        name: definition.name.clone(),
        description: definition.description.clone(),
        kind: match definition.kind {
            MetricKind::Proportion => v1::MetricKind::Proportion,
            MetricKind::Mean => v1::MetricKind::Mean,
            MetricKind::Ratio => v1::MetricKind::Ratio,
            MetricKind::Concentration => v1::MetricKind::Concentration,
        } as i32,
        numerator: Some(measure_to_proto(&definition.numerator)),
        denominator: definition.denominator.as_ref().map(measure_to_proto),
        higher_is_better: definition.higher_is_better,
        success_at_least: definition.success_at_least,
        success_at_most: definition.success_at_most.unwrap_or(0),
    }
}

fn metrics_to_proto(metrics: &MetricsConfig) -> v1::MetricsConfig {
    v1::MetricsConfig {
        primary_metric: metrics.primary_metric.clone(),
        secondary_metrics: metrics.secondary_metrics.clone(),
        guardrails: metrics
            .guardrails
            .iter()
            .map(|guardrail| v1::Guardrail {
                metric: guardrail.metric.clone(),
                threshold: guardrail.threshold,
                action: match guardrail.action {
                    None => v1::GuardrailAction::Unspecified,
                    Some(GuardrailAction::Pause) => v1::GuardrailAction::Pause,
                    Some(GuardrailAction::Stop) => v1::GuardrailAction::Stop,
                } as i32,
            })
            .collect(),
        definitions: metrics
            .definitions
            .iter()
            .map(metric_definition_to_proto)
            .collect(),
        currency: metrics.currency.clone(),
        cuped: Some(v1::CupedConfig {
            disabled: !metrics.cuped.enabled,
            pre_period_days: metrics.cuped.pre_period_days,
        }),
    }
}

// === overrides and revisions ===

/// The domain override described by a request; `now` and `author` fill
/// the output-only fields.
pub fn qa_override_from_proto(
    proto: v1::QaOverride,
    now: SystemTime,
    author: &str,
) -> Result<QaOverride, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let unit_type = unit_type_from_proto(proto.unit_type, "unit_type")
        .map_err(|violation| violations.push(violation))
        .ok();
    let expire_time = optional_time(proto.expire_time, "expire_time", &mut violations);
    match unit_type {
        Some(unit_type) if violations.is_empty() => Ok(QaOverride {
            experiment_id: proto.experiment_id,
            unit_type,
            unit_id: proto.unit_id,
            variant: proto.variant,
            expire_time,
            reason: proto.reason,
            create_time: now,
            created_by: author.to_owned(),
        }),
        _ => Err(violations),
    }
}

/// The wire form of an override.
pub fn qa_override_to_proto(qa_override: &QaOverride) -> v1::QaOverride {
    v1::QaOverride {
        experiment_id: qa_override.experiment_id.clone(),
        unit_type: unit_type_to_proto(qa_override.unit_type) as i32,
        unit_id: qa_override.unit_id.clone(),
        variant: qa_override.variant.clone(),
        expire_time: qa_override.expire_time.map(Timestamp::from),
        reason: qa_override.reason.clone(),
        create_time: Some(qa_override.create_time.into()),
        created_by: qa_override.created_by.clone(),
    }
}

/// The wire form of a revision.
pub fn revision_to_proto(revision: &Revision) -> v1::ExperimentRevision {
    v1::ExperimentRevision {
        revision: revision.number(),
        experiment: Some(experiment_to_proto(&revision.experiment)),
        action: revision_action_to_proto(revision.action) as i32,
        author: revision.author.clone(),
        create_time: Some(revision.written_at().into()),
        reason: revision.reason.clone(),
        rolled_back_to: revision.rolled_back_to.unwrap_or(0),
    }
}

/// The wire form of a validation problem.
pub fn violation_to_proto(violation: &FieldViolation) -> v1::FieldViolation {
    v1::FieldViolation {
        field: violation.field.clone(),
        description: violation.description.clone(),
    }
}

// === values ===

pub(crate) fn optional_time(
    timestamp: Option<Timestamp>,
    field: &str,
    violations: &mut Vec<FieldViolation>,
) -> Option<SystemTime> {
    let timestamp = timestamp?;
    match SystemTime::try_from(timestamp) {
        Ok(time) if time >= SystemTime::UNIX_EPOCH => Some(time),
        _ => {
            violations.push(FieldViolation::new(
                field,
                "is not a valid timestamp after 1970",
            ));
            None
        }
    }
}

/// A `google.protobuf.Struct` as a JSON object. Non-finite numbers, which
/// JSON cannot hold, are reported at their path.
pub fn struct_to_json(proto: &Struct, path: &str, violations: &mut Vec<FieldViolation>) -> Params {
    proto
        .fields
        .iter()
        .map(|(key, value)| {
            let field = format!("{path}.{key}");
            (key.clone(), value_to_json(value, &field, violations))
        })
        .collect()
}

fn value_to_json(
    value: &prost_types::Value,
    path: &str,
    violations: &mut Vec<FieldViolation>,
) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(flag)) => Value::Bool(*flag),
        Some(Kind::StringValue(text)) => Value::String(text.clone()),
        Some(Kind::NumberValue(number)) => match number_to_json(*number) {
            Some(number) => Value::Number(number),
            None => {
                violations.push(FieldViolation::new(path, "must be a finite number"));
                Value::Null
            }
        },
        Some(Kind::StructValue(inner)) => Value::Object(struct_to_json(inner, path, violations)),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .iter()
                .enumerate()
                .map(|(index, item)| value_to_json(item, &format!("{path}[{index}]"), violations))
                .collect(),
        ),
    }
}

// Whole numbers become JSON integers, so `5` stays `5` in storage and logs.
fn number_to_json(number: f64) -> Option<Number> {
    if number.fract() == 0.0 && number.abs() < 9.0e15 {
        Some(Number::from(number as i64))
    } else {
        Number::from_f64(number)
    }
}

/// A JSON object as a `google.protobuf.Struct`.
pub fn json_to_struct(map: &Map<String, Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(key, value)| (key.clone(), json_to_value(value)))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn json_to_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(flag) => Kind::BoolValue(*flag),
        Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or_default()),
        Value::String(text) => Kind::StringValue(text.clone()),
        Value::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(json_to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_through_struct_keeping_numbers_as_numbers() {
        let params: Params = serde_json::from_str(
            r#"{"model_version": "v3", "rerank_weight_price": 0.2, "diversity_max_per_brand": 3, "flag": true}"#,
        )
        .expect("json");
        let mut violations = Vec::new();
        let back = struct_to_json(&json_to_struct(&params), "params", &mut violations);
        assert!(violations.is_empty());
        assert_eq!(back, params);
    }

    #[test]
    fn non_finite_param_numbers_are_refused_with_their_path() {
        let mut proto = Struct::default();
        proto.fields.insert(
            "rerank_weight_price".into(),
            prost_types::Value {
                kind: Some(Kind::NumberValue(f64::NAN)),
            },
        );
        let mut violations = Vec::new();
        struct_to_json(&proto, "variants[1].params", &mut violations);
        assert_eq!(violations.len(), 1);
        assert_eq!(
            violations[0].field,
            "variants[1].params.rerank_weight_price"
        );
    }

    #[test]
    fn the_metrics_currency_round_trips_through_the_proto() {
        let mut experiment = seed();
        experiment.metrics.currency = "JPY".into();
        let proto = experiment_to_proto(&experiment);
        assert_eq!(
            proto
                .metrics
                .as_ref()
                .map(|metrics| metrics.currency.as_str()),
            Some("JPY")
        );
        let back = experiment_from_proto(proto).expect("valid");
        assert_eq!(back.metrics, experiment.metrics);
    }

    fn seed() -> Experiment {
        exp_core::examples::seed_experiment()
    }

    #[test]
    fn unknown_enum_numbers_are_refused_with_their_path() {
        let proto = v1::Experiment {
            bucketing_unit: 99,
            ..Default::default()
        };
        let violations = experiment_from_proto(proto).expect_err("refused");
        assert_eq!(violations[0].field, "bucketing_unit");
        let proto = v1::Experiment {
            multiple_comparison_correction: 7,
            ..Default::default()
        };
        let violations = experiment_from_proto(proto).expect_err("refused");
        assert_eq!(violations[0].field, "multiple_comparison_correction");
    }

    #[test]
    fn the_tuning_parameter_round_trips_and_0_means_5000() {
        let mut experiment = seed();
        experiment.sequential_tuning_parameter = 20_000;
        let proto = experiment_to_proto(&experiment);
        assert_eq!(proto.sequential_tuning_parameter, 20_000);
        let back = experiment_from_proto(proto.clone()).expect("valid");
        assert_eq!(back.sequential_tuning_parameter, 20_000);
        let unset = v1::Experiment {
            sequential_tuning_parameter: 0,
            ..proto
        };
        let back = experiment_from_proto(unset).expect("valid");
        assert_eq!(back.sequential_tuning_parameter, 5_000);
    }

    #[test]
    fn cuped_round_trips_and_an_unset_config_means_on_over_14_days() {
        let mut experiment = seed();
        experiment.metrics.cuped = CupedConfig {
            enabled: false,
            pre_period_days: 21,
        };
        let proto = experiment_to_proto(&experiment);
        let cuped = proto
            .metrics
            .as_ref()
            .and_then(|metrics| metrics.cuped)
            .expect("always written");
        assert!(cuped.disabled);
        assert_eq!(cuped.pre_period_days, 21);
        let back = experiment_from_proto(proto.clone()).expect("valid");
        assert_eq!(back.metrics.cuped, experiment.metrics.cuped);
        let mut unset = proto;
        if let Some(metrics) = unset.metrics.as_mut() {
            metrics.cuped = None;
        }
        let back = experiment_from_proto(unset.clone()).expect("valid");
        assert_eq!(back.metrics.cuped, CupedConfig::default());
        assert!(back.metrics.cuped.enabled);
        // A config with the days at 0 means 14.
        if let Some(metrics) = unset.metrics.as_mut() {
            metrics.cuped = Some(v1::CupedConfig::default());
        }
        let back = experiment_from_proto(unset).expect("valid");
        assert_eq!(back.metrics.cuped.pre_period_days, 14);
    }

    #[test]
    fn sequential_and_the_correction_round_trip_and_default_to_fixed_horizon_and_holm() {
        let mut experiment = seed();
        experiment.sequential = true;
        experiment.multiple_comparison_correction = MultipleComparisonCorrection::BenjaminiHochberg;
        let proto = experiment_to_proto(&experiment);
        assert!(proto.sequential);
        assert_eq!(
            proto.multiple_comparison_correction,
            v1::MultipleComparisonCorrection::BenjaminiHochberg as i32
        );
        let back = experiment_from_proto(proto).expect("valid");
        assert!(back.sequential);
        assert_eq!(
            back.multiple_comparison_correction,
            MultipleComparisonCorrection::BenjaminiHochberg
        );
        let unset = experiment_from_proto(v1::Experiment::default()).expect("readable");
        assert!(!unset.sequential);
        assert_eq!(
            unset.multiple_comparison_correction,
            MultipleComparisonCorrection::Holm
        );
    }
}
