//! Property tests of experiment validation: arbitrary experiment specs
//! (variants, splits, params, eligibility, schedule, metrics), mostly
//! well formed with a field or two broken, so both the refusing and the
//! accepting paths are walked.
//!
//! `PROPTEST_CASES` sets the number of cases per property (256 by
//! default); each property prints how its cases ended.

use std::time::SystemTime;

use exp_core::{
    Eligibility, Error, Experiment, ParamSchema, QaOverride, Status, UnitType, allocation,
    evaluate::{AssignmentReason, CompiledSnapshot, RequestContext},
    lifecycle::{self, Change, Transition},
    serving::ServingConfig,
    validate,
};
use proptest::{prelude::*, test_runner::TestCaseError};

mod specs;

use specs::*;

// === runner ===

#[path = "../../../../tests/support/fuzz_check.rs"]
mod fuzz_check;

use fuzz_check::check;

// === properties ===

fn change() -> Change<'static> {
    Change {
        now: now(),
        author: "fuzz",
        reason: "fuzz",
    }
}

/// What the store writes and reads back (exp-store keeps experiments as
/// serde JSON).
fn through_the_store(experiment: &Experiment) -> Result<Experiment, TestCaseError> {
    let bytes = serde_json::to_vec(experiment)
        .map_err(|err| TestCaseError::fail(format!("the store cannot encode it: {err}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|err| TestCaseError::fail(format!("the store cannot decode it: {err}")))
}

#[test]
fn validation_never_panics_and_an_accepted_experiment_is_stored_and_served_as_it_is() {
    let schema = ParamSchema::builtin();
    check(
        "experiment_specs",
        (experiment(), afterwards(), unit_id()).prop_flat_map(
            |(experiment, afterwards, qa_unit)| {
                let requests = requests(&experiment.eligibility);
                (Just(experiment), Just(afterwards), requests, Just(qa_unit))
            },
        ),
        |(proposal, afterwards, requests, qa_unit)| {
            let violations = validate::experiment(&proposal, &schema);
            for violation in &violations {
                prop_assert!(!violation.field.is_empty(), "{violation:?}");
            }
            let created = match lifecycle::create(&proposal, &schema, change()) {
                Ok(created) => created,
                Err(Error::InvalidArgument(found)) => {
                    prop_assert_eq!(found, violations);
                    return Ok("refused");
                }
                Err(other) => return Err(TestCaseError::fail(format!("create: {other}"))),
            };
            prop_assert!(violations.is_empty());
            prop_assert_eq!(&through_the_store(&created)?, &created);

            let started = match lifecycle::transition(&created, &Transition::Start, change()) {
                Ok(started) => started,
                // Its end time has passed already.
                Err(Error::FailedPrecondition(_)) => return Ok("accepted, ended before its start"),
                Err(other) => return Err(TestCaseError::fail(format!("start: {other}"))),
            };
            let mut next = started.clone();
            allocation::allocate(&mut next, Some(&created), [&started])
                .map_err(|err| TestCaseError::fail(format!("allocate: {err}")))?;
            let transition = match &afterwards {
                Afterwards::KeepRunning => None,
                Afterwards::Pause if next.status == Status::Running => Some(Transition::Pause),
                Afterwards::Pause => None,
                Afterwards::Stop(ship_variant) => Some(Transition::Stop {
                    ship_variant: ship_variant.clone(),
                }),
            };
            if let Some(transition) = transition {
                match lifecycle::transition(&next, &transition, change()) {
                    Ok(mut moved) => {
                        allocation::allocate(&mut moved, Some(&next), [&next])
                            .map_err(|err| TestCaseError::fail(format!("allocate: {err}")))?;
                        next = moved;
                    }
                    Err(Error::InvalidArgument(_)) => {} // an unknown variant to ship
                    Err(other) => return Err(TestCaseError::fail(format!("{other}"))),
                }
            }
            prop_assert_eq!(&through_the_store(&next)?, &next);

            // A QA override of the first variant, when it is a valid one.
            let qa = QaOverride {
                experiment_id: next.id.clone(),
                unit_type: UnitType::User,
                unit_id: qa_unit.clone(),
                variant: next.variants[0].name.clone(),
                expire_time: None,
                reason: String::new(),
                create_time: now(),
                created_by: "fuzz".into(),
            };
            let overrides: Vec<QaOverride> = validate::qa_override(&qa, &next, now())
                .is_empty()
                .then_some(qa)
                .into_iter()
                .collect();
            let config = ServingConfig::build(7, std::slice::from_ref(&next), &overrides, now());
            let snapshot = CompiledSnapshot::compile(&config);
            let mut times = vec![now()];
            times.extend(next.schedule.start_time);
            times.extend(next.schedule.end_time);
            let mut assigned = false;
            for (user_id, session_id, context) in &requests {
                for &at in &times {
                    assigned |= check_evaluation(
                        &snapshot, &next, &overrides, user_id, session_id, context, at,
                    )?;
                }
                if !overrides.is_empty() {
                    check_evaluation(
                        &snapshot,
                        &next,
                        &overrides,
                        &qa_unit,
                        session_id,
                        context,
                        now(),
                    )?;
                }
            }
            Ok(match (next.status, assigned) {
                (_, true) => "accepted and assigned",
                (Status::Running | Status::Scheduled, false) => "accepted, running, not assigned",
                _ => "accepted, not serving",
            })
        },
    );
}

/// Evaluates one request and checks the answer; whether it assigned.
fn check_evaluation(
    snapshot: &CompiledSnapshot,
    experiment: &Experiment,
    overrides: &[QaOverride],
    user_id: &str,
    session_id: &str,
    context: &RequestContext,
    at: SystemTime,
) -> Result<bool, TestCaseError> {
    let evaluation = match snapshot.evaluate(user_id, session_id, context, at) {
        Ok(evaluation) => evaluation,
        Err(Error::InvalidArgument(violations)) => {
            prop_assert!(!violations.is_empty());
            prop_assert!(
                violations.iter().all(|v| !v.field.is_empty()),
                "{violations:?}"
            );
            return Ok(false);
        }
        Err(other) => return Err(TestCaseError::fail(format!("evaluate: {other}"))),
    };
    let again = snapshot.evaluate(user_id, session_id, context, at);
    prop_assert!(
        again.is_ok_and(|again| again == evaluation),
        "evaluation is deterministic"
    );
    prop_assert_eq!(evaluation.config_version, 7);
    prop_assert!(evaluation.assignments.len() <= 1);
    for assignment in &evaluation.assignments {
        prop_assert_eq!(&*assignment.experiment_id, experiment.id.as_str());
        let variant = experiment.variant(&assignment.variant);
        prop_assert!(variant.is_some(), "{} is no variant", assignment.variant);
        prop_assert_eq!(variant.map(|v| &v.params), Some(&*assignment.params));
        let expected_reason = match assignment.reason {
            AssignmentReason::Override => overrides
                .iter()
                .any(|o| o.unit_id == user_id && *assignment.variant == *o.variant),
            AssignmentReason::Shipped => {
                experiment.status == Status::Stopped
                    && experiment.shipped_variant.as_deref() == Some(&*assignment.variant)
            }
            AssignmentReason::Bucketed => {
                matches!(experiment.status, Status::Running | Status::Scheduled)
            }
            // No holdout in these configs.
            AssignmentReason::Holdout => false,
        };
        prop_assert!(
            expected_reason,
            "{:?} for a {} experiment",
            assignment.reason,
            experiment.status
        );
    }
    // With no targeting, all the traffic and the unit's id present, a
    // running experiment in its schedule takes every unit.
    let in_schedule = experiment
        .schedule
        .start_time
        .is_none_or(|start| start <= at)
        && experiment.schedule.end_time.is_none_or(|end| at < end);
    if experiment.status == Status::Running
        && in_schedule
        && experiment.traffic_percent == 100
        && experiment.eligibility == Eligibility::default()
        && experiment
            .bucketing_unit
            .unit_type(user_id, session_id)
            .is_some()
    {
        prop_assert_eq!(evaluation.assignments.len(), 1, "every unit is in");
    }
    Ok(!evaluation.assignments.is_empty())
}
