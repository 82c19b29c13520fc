//! Conversions of the serving config (ConfigService) and of assignment
//! answers (AssignmentService) between the wire and the domain.

use std::time::SystemTime;

use exp_core::{
    BucketRange, FieldViolation, Randomization, Status, UnitType,
    evaluate::{AssignmentReason, Evaluation, RequestContext},
    serving::{ConfigDelta, ServingConfig, ServingExperiment},
};
use prost_types::Timestamp;

use crate::{
    convert::{
        bucket_range_to_proto, bucketing_unit_from_proto, bucketing_unit_to_proto,
        eligibility_from_proto, eligibility_to_proto, json_to_struct, optional_time,
        qa_override_to_proto, randomization_to_proto, schedule_from_proto, schedule_to_proto,
        status_from_proto, status_to_proto, unit_type_from_proto, unit_type_to_proto,
        variant_to_proto, variants_from_proto,
    },
    holdout::{serving_holdout_from_proto, serving_holdout_to_proto},
    v1,
};

// === serving config ===

/// The wire form of a serving experiment.
pub fn serving_experiment_to_proto(experiment: &ServingExperiment) -> v1::ServingExperiment {
    v1::ServingExperiment {
        id: experiment.id.clone(),
        layer: experiment.layer.clone(),
        revision: experiment.revision,
        status: status_to_proto(experiment.status) as i32,
        variants: experiment.variants.iter().map(variant_to_proto).collect(),
        control_variant: experiment.control_variant.clone(),
        bucketing_unit: bucketing_unit_to_proto(experiment.bucketing_unit) as i32,
        eligibility: Some(eligibility_to_proto(&experiment.eligibility)),
        schedule: Some(schedule_to_proto(&experiment.schedule)),
        randomization: experiment
            .randomization
            .as_ref()
            .map(randomization_to_proto),
        allocation: experiment
            .allocation
            .iter()
            .map(bucket_range_to_proto)
            .collect(),
        shipped_variant: experiment.shipped_variant.clone().unwrap_or_default(),
    }
}

/// The domain form of a received serving experiment.
pub fn serving_experiment_from_proto(
    proto: v1::ServingExperiment,
) -> Result<ServingExperiment, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let status = match status_from_proto(proto.status, "status") {
        Ok(Some(status)) => status,
        Ok(None) => {
            violations.push(FieldViolation::new("status", "is required"));
            Status::Draft
        }
        Err(violation) => {
            violations.push(violation);
            Status::Draft
        }
    };
    let experiment = ServingExperiment {
        id: proto.id,
        layer: proto.layer,
        revision: proto.revision,
        status,
        variants: variants_from_proto(proto.variants, &mut violations),
        control_variant: proto.control_variant,
        bucketing_unit: bucketing_unit_from_proto(proto.bucketing_unit, &mut violations),
        eligibility: eligibility_from_proto(proto.eligibility.unwrap_or_default(), &mut violations),
        schedule: schedule_from_proto(proto.schedule.unwrap_or_default(), &mut violations),
        randomization: proto.randomization.map(|r| Randomization {
            allocation_salt: r.allocation_salt,
            variant_salt: r.variant_salt,
        }),
        allocation: proto
            .allocation
            .into_iter()
            .map(|r| BucketRange {
                start: r.start,
                end: r.end,
            })
            .collect(),
        shipped_variant: (!proto.shipped_variant.is_empty()).then_some(proto.shipped_variant),
    };
    // A config from the wire is compiled as is: weights beyond 100 would
    // overflow the bucket arithmetic, ranges beyond the buckets mean
    // nothing.
    if experiment
        .variants
        .iter()
        .map(|v| u64::from(v.weight))
        .sum::<u64>()
        > 100
    {
        violations.push(FieldViolation::new(
            "variants",
            "weights sum to more than 100",
        ));
    }
    if experiment
        .allocation
        .iter()
        .any(|r| r.start > r.end || r.end > exp_core::BUCKETS)
    {
        violations.push(FieldViolation::new(
            "allocation",
            "a range lies outside 0..10000",
        ));
    }
    if violations.is_empty() {
        Ok(experiment)
    } else {
        Err(violations)
    }
}

/// The wire form of a serving config, stamped with `generated`.
pub fn config_snapshot_to_proto(
    config: &ServingConfig,
    generated: SystemTime,
) -> v1::ConfigSnapshot {
    v1::ConfigSnapshot {
        config_version: config.version,
        experiments: config
            .experiments
            .iter()
            .map(serving_experiment_to_proto)
            .collect(),
        qa_overrides: config.overrides.iter().map(qa_override_to_proto).collect(),
        generate_time: Some(Timestamp::from(generated)),
        holdouts: config
            .holdouts
            .iter()
            .map(serving_holdout_to_proto)
            .collect(),
    }
}

/// The domain form of a received snapshot.
pub fn config_snapshot_from_proto(
    proto: v1::ConfigSnapshot,
) -> Result<ServingConfig, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let experiments = collect(
        proto.experiments,
        "experiments",
        serving_experiment_from_proto,
        &mut violations,
    );
    let overrides = collect(
        proto.qa_overrides,
        "qa_overrides",
        qa_override_from_wire,
        &mut violations,
    );
    let holdouts = collect(
        proto.holdouts,
        "holdouts",
        serving_holdout_from_proto,
        &mut violations,
    );
    if violations.is_empty() {
        Ok(ServingConfig {
            version: proto.config_version,
            experiments,
            overrides,
            holdouts,
        })
    } else {
        Err(violations)
    }
}

/// The wire form of a delta.
pub fn config_delta_to_proto(delta: &ConfigDelta) -> v1::ConfigDelta {
    v1::ConfigDelta {
        upserted_experiments: delta
            .upserted_experiments
            .iter()
            .map(serving_experiment_to_proto)
            .collect(),
        removed_experiment_ids: delta.removed_experiment_ids.clone(),
        upserted_qa_overrides: delta
            .upserted_overrides
            .iter()
            .map(qa_override_to_proto)
            .collect(),
        removed_qa_overrides: delta
            .removed_overrides
            .iter()
            .map(qa_override_to_proto)
            .collect(),
        upserted_holdouts: delta
            .upserted_holdouts
            .iter()
            .map(serving_holdout_to_proto)
            .collect(),
        removed_holdout_ids: delta.removed_holdout_ids.clone(),
    }
}

/// The domain form of a received delta.
pub fn config_delta_from_proto(proto: v1::ConfigDelta) -> Result<ConfigDelta, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let delta = ConfigDelta {
        upserted_experiments: collect(
            proto.upserted_experiments,
            "upserted_experiments",
            serving_experiment_from_proto,
            &mut violations,
        ),
        removed_experiment_ids: proto.removed_experiment_ids,
        upserted_overrides: collect(
            proto.upserted_qa_overrides,
            "upserted_qa_overrides",
            qa_override_from_wire,
            &mut violations,
        ),
        removed_overrides: collect(
            proto.removed_qa_overrides,
            "removed_qa_overrides",
            qa_override_from_wire,
            &mut violations,
        ),
        upserted_holdouts: collect(
            proto.upserted_holdouts,
            "upserted_holdouts",
            serving_holdout_from_proto,
            &mut violations,
        ),
        removed_holdout_ids: proto.removed_holdout_ids,
    };
    if violations.is_empty() {
        Ok(delta)
    } else {
        Err(violations)
    }
}

/// A stored override as sent by a server, output-only fields included.
fn qa_override_from_wire(
    proto: v1::QaOverride,
) -> Result<exp_core::QaOverride, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let unit_type = unit_type_from_proto(proto.unit_type, "unit_type")
        .map_err(|violation| violations.push(violation))
        .ok();
    let expire_time = optional_time(proto.expire_time, "expire_time", &mut violations);
    let create_time = optional_time(proto.create_time, "create_time", &mut violations)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    match unit_type {
        Some(unit_type) if violations.is_empty() => Ok(exp_core::QaOverride {
            experiment_id: proto.experiment_id,
            unit_type,
            unit_id: proto.unit_id,
            variant: proto.variant,
            expire_time,
            reason: proto.reason,
            create_time,
            created_by: proto.created_by,
        }),
        _ => Err(violations),
    }
}

fn collect<P, D>(
    items: Vec<P>,
    field: &str,
    convert: impl Fn(P) -> Result<D, Vec<FieldViolation>>,
    violations: &mut Vec<FieldViolation>,
) -> Vec<D> {
    items
        .into_iter()
        .enumerate()
        .filter_map(|(index, item)| match convert(item) {
            Ok(converted) => Some(converted),
            Err(found) => {
                violations.extend(
                    found
                        .into_iter()
                        .map(|v| v.under(&format!("{field}[{index}]"))),
                );
                None
            }
        })
        .collect()
}

// === assignment ===

/// The domain request context of an `AssignRequest`.
pub fn request_context_from_proto(context: Option<v1::RequestContext>) -> RequestContext {
    let context = context.unwrap_or_default();
    RequestContext {
        page_type: context.page_type,
        placement: context.placement,
        country: context.country,
        device: context.device,
        attributes: context.attributes.into_iter().collect(),
    }
}

/// The wire answer of an evaluation.
pub fn evaluation_to_proto(evaluation: &Evaluation) -> v1::AssignResponse {
    let primary = evaluation.primary();
    v1::AssignResponse {
        experiment_id: primary
            .map(|a| a.experiment_id.to_string())
            .unwrap_or_default(),
        variant: primary.map(|a| a.variant.to_string()).unwrap_or_default(),
        params: Some(json_to_struct(&evaluation.params())),
        assignments: evaluation
            .assignments
            .iter()
            .map(|assignment| v1::Assignment {
                experiment_id: assignment.experiment_id.to_string(),
                variant: assignment.variant.to_string(),
                layer: assignment.layer.to_string(),
                params: Some(json_to_struct(&assignment.params)),
                revision: assignment.revision,
                reason: assignment_reason_to_proto(assignment.reason) as i32,
                unit_type: unit_type_to_proto(assignment.unit_type) as i32,
                holdout_id: assignment
                    .holdout_id
                    .as_deref()
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect(),
        unit_type: unit_type_to_proto(evaluation.unit_type) as i32,
        config_version: evaluation.config_version,
        holdouts: evaluation
            .holdouts
            .iter()
            .map(|membership| v1::HoldoutGroup {
                holdout_id: membership.holdout_id.to_string(),
                group: membership.group().to_owned(),
                revision: membership.revision,
                unit_type: unit_type_to_proto(membership.unit_type) as i32,
            })
            .collect(),
    }
}

/// The wire form of an assignment reason.
pub fn assignment_reason_to_proto(reason: AssignmentReason) -> v1::AssignmentReason {
    match reason {
        AssignmentReason::Bucketed => v1::AssignmentReason::Bucketed,
        AssignmentReason::Override => v1::AssignmentReason::Override,
        AssignmentReason::Shipped => v1::AssignmentReason::Shipped,
        AssignmentReason::Holdout => v1::AssignmentReason::Holdout,
    }
}

/// Lower-case name of a unit type, as in the HTTP answer and logs.
pub fn unit_type_name(unit_type: UnitType) -> &'static str {
    unit_type.as_str()
}
