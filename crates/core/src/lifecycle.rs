//! How an experiment changes: creation, status transitions, updates (with
//! the rules for what may change in each status), rollback, and the
//! traffic capacity of a layer. Each function takes the current state and
//! returns the next one, revision bumped; the caller persists it.
//!
//! What may change, by status (docs/experiments.md's table says the same):
//!
//! | fields | draft, scheduled | running, paused | stopped, completed | archived |
//! |---|---|---|---|---|
//! | name, description, hypothesis, owner, metrics, variant descriptions | yes | yes | yes | no |
//! | traffic_percent (ramp), eligibility, variant params, schedule.end_time | yes | yes | no | no |
//! | schedule.start_time | yes | no | no | no |
//! | variant weights | yes | with `rerandomize` | no | no |
//! | layer, bucketing_unit, variant names, control_variant | yes | no | no | no |

use std::time::SystemTime;

use crate::{
    Error, FieldViolation, ParamSchema,
    model::{Experiment, Randomization, Status},
    validate,
};

/// A status change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// DRAFT -> RUNNING, or SCHEDULED when the start time is ahead.
    Start,
    /// RUNNING -> PAUSED.
    Pause,
    /// PAUSED -> RUNNING.
    Resume,
    /// SCHEDULED | RUNNING | PAUSED | COMPLETED -> STOPPED, optionally
    /// shipping a variant.
    Stop {
        /// Variant to give every eligible unit from now on.
        ship_variant: Option<String>,
    },
    /// DRAFT | STOPPED | COMPLETED -> ARCHIVED.
    Archive,
    /// SCHEDULED -> RUNNING, by the schedule at the start time.
    Activate,
    /// RUNNING | PAUSED -> COMPLETED, by the schedule at the end time.
    Complete,
}

impl Transition {
    /// The verb, for messages.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Stop { .. } => "stop",
            Self::Archive => "archive",
            Self::Activate => "activate",
            Self::Complete => "complete",
        }
    }

    /// The statuses the transition may leave from.
    pub fn allowed_from(&self) -> &'static [Status] {
        use Status::*;
        match self {
            Self::Start => &[Draft],
            Self::Pause => &[Running],
            Self::Resume => &[Paused],
            Self::Stop { .. } => &[Scheduled, Running, Paused, Completed],
            Self::Archive => &[Draft, Stopped, Completed],
            Self::Activate => &[Scheduled],
            Self::Complete => &[Running, Paused],
        }
    }
}

/// Who changes what, when, and why.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// Now, from the injected clock.
    pub now: SystemTime,
    /// Identity recorded in `updated_by`.
    pub author: &'a str,
    /// Why, recorded in the revision.
    pub reason: &'a str,
}

/// Top-level fields an update may name in its mask.
pub const EDITABLE_FIELDS: &[&str] = &[
    "name",
    "description",
    "hypothesis",
    "owner",
    "layer",
    "variants",
    "control_variant",
    "traffic_percent",
    "bucketing_unit",
    "eligibility",
    "schedule",
    "schedule.start_time",
    "schedule.end_time",
    "metrics",
    "sequential",
    "multiple_comparison_correction",
    "sequential_tuning_parameter",
];

/// Fields the server owns; naming them in a mask is an error.
pub const OUTPUT_ONLY_FIELDS: &[&str] = &[
    "id",
    "status",
    "revision",
    "create_time",
    "update_time",
    "updated_by",
    "shipped_variant",
    "status_reason",
    "randomization",
];

/// Builds revision 1 of a new experiment from a proposal.
pub fn create(
    proposed: &Experiment,
    schema: &ParamSchema,
    change: Change<'_>,
) -> Result<Experiment, Error> {
    Error::check(validate::experiment(proposed, schema))?;
    let mut created = proposed.clone();
    created.status = Status::Draft;
    created.revision = 1;
    created.create_time = change.now;
    created.update_time = change.now;
    created.updated_by = change.author.to_owned();
    created.shipped_variant = None;
    created.status_reason = String::new();
    created.randomization = None;
    Ok(created)
}

/// Applies a status transition to `current`.
pub fn transition(
    current: &Experiment,
    transition: &Transition,
    change: Change<'_>,
) -> Result<Experiment, Error> {
    if !transition.allowed_from().contains(&current.status) {
        let from: Vec<&str> = transition
            .allowed_from()
            .iter()
            .map(|s| s.as_str())
            .collect();
        return Err(Error::FailedPrecondition(format!(
            "cannot {} experiment {:?}: it is {}; only a {} experiment can be {}",
            transition.verb(),
            current.id,
            current.status,
            from.join(" or "),
            past_tense(transition),
        )));
    }
    let mut next = current.clone();
    match transition {
        Transition::Start => {
            if let Some(end) = current.schedule.end_time
                && end <= change.now
            {
                return Err(Error::FailedPrecondition(
                    "cannot start: schedule.end_time has already passed; move it later first"
                        .into(),
                ));
            }
            next.randomization = Some(randomization(current, current.revision + 1));
            next.status = match current.schedule.start_time {
                Some(start) if start > change.now => Status::Scheduled,
                _ => Status::Running,
            };
        }
        Transition::Pause => next.status = Status::Paused,
        Transition::Resume => next.status = Status::Running,
        Transition::Stop { ship_variant } => {
            let mut violations = Vec::new();
            if change.reason.trim().is_empty() {
                violations.push(FieldViolation::new(
                    "reason",
                    "is required to stop an experiment",
                ));
            }
            if let Some(ship) = ship_variant
                && current.variant(ship).is_none()
            {
                violations.push(FieldViolation::new(
                    "ship_variant",
                    format!("{ship:?} is not a variant of {}", current.id),
                ));
            }
            Error::check(violations)?;
            next.status = Status::Stopped;
            next.shipped_variant = ship_variant.clone();
        }
        Transition::Archive => next.status = Status::Archived,
        Transition::Activate => {
            if current
                .schedule
                .start_time
                .is_some_and(|start| start > change.now)
            {
                return Err(Error::FailedPrecondition("start_time not reached".into()));
            }
            next.status = Status::Running;
        }
        Transition::Complete => {
            if current.schedule.end_time.is_none_or(|end| end > change.now) {
                return Err(Error::FailedPrecondition("end_time not reached".into()));
            }
            next.status = Status::Completed;
        }
    }
    next.status_reason = change.reason.to_owned();
    Ok(bump(current, next, change))
}

fn past_tense(transition: &Transition) -> &'static str {
    match transition {
        Transition::Start => "started",
        Transition::Pause => "paused",
        Transition::Resume => "resumed",
        Transition::Stop { .. } => "stopped",
        Transition::Archive => "archived",
        Transition::Activate => "activated",
        Transition::Complete => "completed",
    }
}

/// The salts of an experiment randomised at revision `revision`. The
/// allocation salt belongs to the layer, so experiments of one layer share
/// one bucket space and take disjoint parts of it; the variant salt is the
/// experiment's own and changes only with a re-randomisation.
pub fn randomization(experiment: &Experiment, revision: u64) -> Randomization {
    Randomization {
        allocation_salt: format!("{}:allocation", experiment.effective_layer()),
        variant_salt: format!("{}:variant:{revision}", experiment.id),
    }
}

/// An update of `current` to `proposed`, restricted to `mask` (top-level
/// paths; empty means every editable field).
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    /// The experiment as the editor wants it; its revision is the one the
    /// edit was based on.
    pub proposed: &'a Experiment,
    /// Fields to take from `proposed`.
    pub mask: &'a [String],
    /// Allow a weight change on a started experiment by re-randomising.
    pub rerandomize: bool,
}

/// Applies an update. Refuses a stale base revision, a change the status
/// forbids, and anything `validate::experiment` refuses.
pub fn update(
    current: &Experiment,
    update: Update<'_>,
    schema: &ParamSchema,
    change: Change<'_>,
) -> Result<Experiment, Error> {
    if update.proposed.revision == 0 {
        return Err(Error::invalid(
            "revision",
            format!(
                "is required: the revision the edit is based on (the current one is {})",
                current.revision
            ),
        ));
    }
    if update.proposed.revision != current.revision {
        return Err(Error::StaleRevision {
            based_on: update.proposed.revision,
            current: current.revision,
        });
    }
    let merged = merge(current, update.proposed, update.mask)?;
    Error::check(validate::experiment(&merged, schema))?;
    check_change_rules(current, &merged, update.rerandomize, change.now)?;

    let mut next = merged;
    let started = next.randomization.is_some();
    if started && (update.rerandomize || next.layer != current.layer) {
        let mut salts = randomization(&next, current.revision + 1);
        if !update.rerandomize {
            // Only the layer moved (allowed before serving): keep the arm hash.
            if let Some(old) = &current.randomization {
                salts.variant_salt = old.variant_salt.clone();
            }
        }
        next.randomization = Some(salts);
    }
    Ok(bump(current, next, change))
}

/// Restores the configuration of `target` (an older revision) on top of
/// `current`, keeping the status, salts and output-only fields. The change
/// rules of the current status apply, as to any update.
pub fn rollback(
    current: &Experiment,
    target: &Experiment,
    rerandomize: bool,
    schema: &ParamSchema,
    change: Change<'_>,
) -> Result<Experiment, Error> {
    let mut proposed = target.clone();
    proposed.revision = current.revision;
    update(
        current,
        Update {
            proposed: &proposed,
            mask: &[],
            rerandomize,
        },
        schema,
        change,
    )
}

fn merge(
    current: &Experiment,
    proposed: &Experiment,
    mask: &[String],
) -> Result<Experiment, Error> {
    let mut violations = Vec::new();
    for (index, path) in mask.iter().enumerate() {
        if OUTPUT_ONLY_FIELDS.contains(&path.as_str()) {
            violations.push(FieldViolation::new(
                format!("update_mask.paths[{index}]"),
                format!("{path:?} is output only and cannot be updated"),
            ));
        } else if !EDITABLE_FIELDS.contains(&path.as_str()) {
            violations.push(FieldViolation::new(
                format!("update_mask.paths[{index}]"),
                format!(
                    "{path:?} is not a field; editable: {}",
                    EDITABLE_FIELDS.join(", ")
                ),
            ));
        }
    }
    Error::check(violations)?;
    if proposed.id != current.id {
        return Err(Error::invalid("id", "is immutable"));
    }

    let all = mask.is_empty();
    let take = |field: &str| all || mask.iter().any(|path| path == field);
    let mut merged = current.clone();
    if take("name") {
        merged.name.clone_from(&proposed.name);
    }
    if take("description") {
        merged.description.clone_from(&proposed.description);
    }
    if take("hypothesis") {
        merged.hypothesis.clone_from(&proposed.hypothesis);
    }
    if take("owner") {
        merged.owner.clone_from(&proposed.owner);
    }
    if take("layer") {
        merged.layer.clone_from(&proposed.layer);
    }
    if take("variants") {
        merged.variants.clone_from(&proposed.variants);
    }
    if take("control_variant") {
        merged.control_variant.clone_from(&proposed.control_variant);
    }
    if take("traffic_percent") {
        merged.traffic_percent = proposed.traffic_percent;
    }
    if take("bucketing_unit") {
        merged.bucketing_unit = proposed.bucketing_unit;
    }
    if take("eligibility") {
        merged.eligibility.clone_from(&proposed.eligibility);
    }
    if take("schedule") {
        merged.schedule.clone_from(&proposed.schedule);
    }
    if take("schedule.start_time") {
        merged.schedule.start_time = proposed.schedule.start_time;
    }
    if take("schedule.end_time") {
        merged.schedule.end_time = proposed.schedule.end_time;
    }
    if take("metrics") {
        merged.metrics.clone_from(&proposed.metrics);
    }
    if take("sequential") {
        merged.sequential = proposed.sequential;
    }
    if take("multiple_comparison_correction") {
        merged.multiple_comparison_correction = proposed.multiple_comparison_correction;
    }
    if take("sequential_tuning_parameter") {
        merged.sequential_tuning_parameter = proposed.sequential_tuning_parameter;
    }
    Ok(merged)
}

fn check_change_rules(
    current: &Experiment,
    next: &Experiment,
    rerandomize: bool,
    now: SystemTime,
) -> Result<(), Error> {
    use Status::*;
    let status = current.status;
    if status == Archived {
        return Err(Error::FailedPrecondition(format!(
            "experiment {:?} is archived and read-only",
            current.id
        )));
    }
    // A scheduled experiment whose start time has passed already assigns
    // (evaluation goes by the clock), even before the scheduler marks it
    // running: it is live.
    let started_by_clock =
        status == Scheduled && current.schedule.start_time.is_none_or(|start| start <= now);
    let not_served_yet = status == Draft || (status == Scheduled && !started_by_clock);
    let live = matches!(status, Running | Paused) || started_by_clock;
    let mut refused: Vec<&str> = Vec::new();

    let names = |e: &Experiment| {
        e.variants
            .iter()
            .map(|v| v.name.clone())
            .collect::<Vec<_>>()
    };
    let weights = |e: &Experiment| e.variants.iter().map(|v| v.weight).collect::<Vec<_>>();
    let params = |e: &Experiment| {
        e.variants
            .iter()
            .map(|v| v.params.clone())
            .collect::<Vec<_>>()
    };

    if !not_served_yet {
        if next.layer != current.layer {
            refused.push("layer");
        }
        if next.bucketing_unit != current.bucketing_unit {
            refused.push("bucketing_unit");
        }
        if names(next) != names(current) {
            refused.push("variants (names or count)");
        }
        if next.control_variant != current.control_variant {
            refused.push("control_variant");
        }
        if next.schedule.start_time != current.schedule.start_time {
            refused.push("schedule.start_time");
        }
    }
    if !not_served_yet && !live {
        if next.traffic_percent != current.traffic_percent {
            refused.push("traffic_percent");
        }
        if next.eligibility != current.eligibility {
            refused.push("eligibility");
        }
        if params(next) != params(current) {
            refused.push("variants[].params");
        }
        if next.schedule.end_time != current.schedule.end_time {
            refused.push("schedule.end_time");
        }
        if weights(next) != weights(current) {
            refused.push("variants[].weight");
        }
    }
    if !refused.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "experiment {:?} is {status}: these fields can no longer change: {}",
            current.id,
            refused.join(", ")
        )));
    }
    if live && weights(next) != weights(current) && !rerandomize {
        return Err(Error::FailedPrecondition(format!(
            "experiment {:?} is {status}: changing variant weights moves units between arms; \
             set rerandomize to re-randomise every unit (results restart from the new revision)",
            current.id
        )));
    }
    if live
        && let Some(end) = next.schedule.end_time
        && Some(end) != current.schedule.end_time
        && end <= now
    {
        return Err(Error::invalid("schedule.end_time", "must be in the future"));
    }
    Ok(())
}

fn bump(current: &Experiment, mut next: Experiment, change: Change<'_>) -> Experiment {
    next.revision = current.revision + 1;
    next.update_time = change.now;
    next.updated_by = change.author.to_owned();
    next
}

/// Refuses `candidate` when, together with the other traffic-holding
/// experiments of its layer, it would take more than 100% of the layer.
/// `others` may include `candidate` itself (by id): it is skipped.
pub fn check_layer_capacity<'a>(
    candidate: &Experiment,
    others: impl IntoIterator<Item = &'a Experiment>,
) -> Result<(), Error> {
    if !candidate.status.holds_traffic() {
        return Ok(());
    }
    let layer = candidate.effective_layer();
    let holders: Vec<&Experiment> = others
        .into_iter()
        .filter(|other| {
            other.id != candidate.id
                && other.status.holds_traffic()
                && other.effective_layer() == layer
        })
        .collect();
    let taken: u32 = holders.iter().map(|other| other.traffic_percent).sum();
    if taken + candidate.traffic_percent <= 100 {
        return Ok(());
    }
    let held: Vec<String> = holders
        .iter()
        .map(|other| format!("{} {}%", other.id, other.traffic_percent))
        .collect();
    Err(Error::invalid(
        "traffic_percent",
        format!(
            "layer {layer:?} would exceed 100% of traffic: {}% is free ({}), {}% asked",
            100u32.saturating_sub(taken),
            held.join(", "),
            candidate.traffic_percent
        ),
    ))
}

/// Refuses `candidate` when it serves and sets a parameter that a serving
/// experiment of another layer also sets on a placement they share: a unit
/// in both would get one of two values depending on merge order.
/// Experiments of one layer never meet on a unit, so they may share keys.
pub fn check_param_conflicts<'a>(
    candidate: &Experiment,
    others: impl IntoIterator<Item = &'a Experiment>,
) -> Result<(), Error> {
    let serves = |e: &Experiment| {
        e.status.holds_traffic() || (e.status == Status::Stopped && e.shipped_variant.is_some())
    };
    if !serves(candidate) {
        return Ok(());
    }
    let placements_meet = |a: &Experiment, b: &Experiment| {
        let (a, b) = (&a.eligibility.placements, &b.eligibility.placements);
        a.is_empty() || b.is_empty() || a.iter().any(|p| b.contains(p))
    };
    let mut violations = Vec::new();
    for other in others {
        // Two bucketed experiments of one layer never meet on a unit; a
        // shipped one meets everyone, whatever its layer.
        let exclusive = other.effective_layer() == candidate.effective_layer()
            && other.status.holds_traffic()
            && candidate.status.holds_traffic();
        if other.id == candidate.id
            || !serves(other)
            || exclusive
            || !placements_meet(candidate, other)
        {
            continue;
        }
        for (index, variant) in candidate.variants.iter().enumerate() {
            for key in variant.params.keys() {
                if other.variants.iter().any(|v| v.params.contains_key(key)) {
                    violations.push(FieldViolation::new(
                        format!("variants[{index}].params.{key}"),
                        format!(
                            "experiment {:?} (layer {:?}) also sets {key} on a placement this one runs on; \
                             put both in one layer, or let only one set it",
                            other.id,
                            other.effective_layer()
                        ),
                    ));
                }
            }
        }
    }
    Error::check(violations)
}
