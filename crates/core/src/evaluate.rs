//! Assignment: a [`CompiledSnapshot`] of a serving config answers, for a
//! user or session on a placement, which variant of which experiment and
//! which parameters. The server, sidecars and the client SDK all evaluate
//! with this code, so a unit gets the same answer wherever it asks.
//!
//! The snapshot is immutable; evaluation takes no lock, does no I/O, and
//! looks only at the experiments that can apply on the request's
//! placement (indexed at compile time), so its cost grows with the
//! experiments of that placement, not with all experiments.
//!
//! For each candidate experiment, in (layer, id) order:
//!
//! 1. the request must be eligible (placement, page type, country, device,
//!    logged-in status, attribute rules);
//! 2. an unexpired QA override of the user (or session) wins, in any
//!    status the experiment serves in;
//! 3. a unit held out by an active holdout whose scope covers the
//!    experiment (its layer, or the request's placement, is named) gets
//!    neither a shipped nor a bucketed variant;
//! 4. a stopped experiment that shipped a variant gives it to everyone;
//! 5. a running (or scheduled and started by the clock) experiment inside
//!    its schedule buckets the unit: allocation hash in its buckets of the
//!    layer, then the variant hash picks the arm by weight.
//!
//! Holdouts: a request is in a holdout's scope when its placement is
//! named, or an eligible live experiment of a named layer is a candidate;
//! the answer lists every holdout whose scope it fell in with the unit's
//! group ([`HoldoutMembership`]), for exposures of both groups, and adds
//! one `Holdout` assignment per holdout that kept a live experiment from
//! the unit. A unit's group is one hash of its id (the user id, else the
//! session id) under the holdout's salt, computed once per request.

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use regex::Regex;

use crate::{
    Error, allocation,
    bucketing::bucket,
    model::{
        AttributeOperator, BUCKETS, BucketRange, BucketingUnit, LoggedIn, Params, Status, UnitType,
    },
    serving::{ServingConfig, ServingExperiment, ServingHoldout},
    validate::MAX_UNIT_ID_LEN,
};

/// Most attributes a request may carry.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest placement, page type, country, device or attribute key.
pub const MAX_CONTEXT_FIELD_LEN: usize = 256;
/// Longest attribute value.
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 1_024;

/// Where and for whom a recommendation is made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestContext {
    /// Page type, e.g. `product_detail`.
    pub page_type: String,
    /// Placement, e.g. `you_may_also_like`.
    pub placement: String,
    /// ISO country code, e.g. `US`.
    pub country: String,
    /// Device class, e.g. `mobile`.
    pub device: String,
    /// Free-form attributes for attribute rules.
    pub attributes: HashMap<String, String>,
}

/// Why a unit got its variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentReason {
    /// By hashing: a real exposure.
    Bucketed,
    /// By a QA override.
    Override,
    /// The experiment stopped and shipped this variant.
    Shipped,
    /// The unit is held out: a holdout kept the experiments of its scope
    /// from it. Not an experiment's variant.
    Holdout,
}

impl AssignmentReason {
    /// Lower-case name, as in the HTTP answer, metrics and test vectors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bucketed => "bucketed",
            Self::Override => "override",
            Self::Shipped => "shipped",
            Self::Holdout => "holdout",
        }
    }
}

/// One experiment's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// Experiment id.
    pub experiment_id: Arc<str>,
    /// Its layer.
    pub layer: Arc<str>,
    /// The variant.
    pub variant: Arc<str>,
    /// The variant's params.
    pub params: Arc<Params>,
    /// Experiment revision evaluated.
    pub revision: u64,
    /// Why.
    pub reason: AssignmentReason,
    /// Which id decided it.
    pub unit_type: UnitType,
    /// For a `Holdout` assignment, the holdout (experiment id, layer and
    /// variant are then empty and the revision is the holdout's).
    pub holdout_id: Option<Arc<str>>,
}

/// The unit's group in one holdout whose scope the request fell in.
#[derive(Debug, Clone, PartialEq)]
pub struct HoldoutMembership {
    /// Holdout id.
    pub holdout_id: Arc<str>,
    /// Holdout revision evaluated.
    pub revision: u64,
    /// Which id was hashed: the user when the request has a user id.
    pub unit_type: UnitType,
    /// Whether the unit is held out (else it is in the rest).
    pub held_out: bool,
    /// Whether the holdout kept a live experiment from this unit.
    pub withheld: bool,
    index: usize,
}

impl HoldoutMembership {
    /// The group's name in exposures and results: `holdout` or `rest`.
    pub fn group(&self) -> &'static str {
        if self.held_out {
            crate::holdout::HOLDOUT_GROUP
        } else {
            crate::holdout::REST_GROUP
        }
    }
}

/// An experiment of a snapshot, as a flag's answer describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingState {
    /// Experiment id.
    pub id: Arc<str>,
    /// Its layer.
    pub layer: Arc<str>,
    /// Revision compiled.
    pub revision: u64,
    /// Its status.
    pub status: Status,
    /// Whether it hands out variants now: running (or scheduled) inside
    /// its schedule, or stopped with a shipped variant. Otherwise (paused,
    /// a draft, before or after its schedule) only QA overrides answer.
    pub live: bool,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Config version evaluated.
    pub config_version: u64,
    /// The request's unit: user when it has a user id, else session.
    pub unit_type: UnitType,
    /// Every assignment, in (layer, id) order, then one per holdout that
    /// kept an experiment from the unit.
    pub assignments: Vec<Assignment>,
    /// Every holdout whose scope the request fell in, in holdout id order,
    /// with the unit's group.
    pub holdouts: Vec<HoldoutMembership>,
}

impl Evaluation {
    /// The parameters to use: the params of every assignment, merged in
    /// order (running experiments of different layers never set the same
    /// key on one placement: validation refuses it).
    pub fn params(&self) -> Params {
        let mut merged = Params::new();
        for assignment in &self.assignments {
            for (key, value) in assignment.params.iter() {
                merged.insert(key.clone(), value.clone());
            }
        }
        merged
    }

    /// The first assignment of an experiment, if any: the seed's
    /// `experiment_id` and `variant` (a holdout is not an experiment).
    pub fn primary(&self) -> Option<&Assignment> {
        self.assignments
            .iter()
            .find(|a| a.reason != AssignmentReason::Holdout)
    }
}

/// A serving config compiled for evaluation. Immutable: swap a new one in
/// when the config changes.
#[derive(Debug, Default)]
pub struct CompiledSnapshot {
    version: u64,
    experiments: Vec<CompiledExperiment>,
    by_placement: HashMap<String, Vec<usize>>,
    everywhere: Vec<usize>,
    overrides: HashMap<String, Vec<OverrideEntry>>,
    holdouts: Vec<CompiledHoldout>,
    holdouts_by_placement: HashMap<String, Vec<usize>>,
    // Shared by every `Holdout` assignment: they carry no experiment.
    empty_name: Arc<str>,
    empty_params: Arc<Params>,
}

#[derive(Debug)]
struct CompiledHoldout {
    id: Arc<str>,
    revision: u64,
    salt: String,
    share_basis_points: u32,
}

#[derive(Debug)]
struct CompiledExperiment {
    id: Arc<str>,
    layer: Arc<str>,
    revision: u64,
    status: Status,
    bucketing_unit: BucketingUnit,
    variants: Vec<CompiledVariant>,
    eligibility: CompiledEligibility,
    start: Option<SystemTime>,
    end: Option<SystemTime>,
    salts: Option<(String, String)>,
    allocation: Vec<BucketRange>,
    shipped: Option<usize>,
    // Holdouts naming its layer, by index.
    holdouts: Vec<usize>,
}

#[derive(Debug)]
struct CompiledVariant {
    name: Arc<str>,
    upper_bucket: u32,
    params: Arc<Params>,
}

#[derive(Debug)]
struct CompiledEligibility {
    placements: Vec<String>,
    page_types: Vec<String>,
    countries: Vec<String>,
    devices: Vec<String>,
    logged_in: LoggedIn,
    rules: Vec<(String, Condition)>,
}

#[derive(Debug)]
enum Condition {
    In(Vec<String>),
    NotIn(Vec<String>),
    Number(AttributeOperator, f64),
    Semver(AttributeOperator, semver::Version),
    Regex(Regex),
    Never,
}

#[derive(Debug)]
struct OverrideEntry {
    experiment: usize,
    unit_type: UnitType,
    variant: usize,
    expire_time: Option<SystemTime>,
}

// === impl CompiledSnapshot ===

impl CompiledSnapshot {
    /// Compiles `config`. Experiments are ordered by (layer, id), so the
    /// answer's order does not depend on the config's.
    pub fn compile(config: &ServingConfig) -> Self {
        let mut serving: Vec<&ServingExperiment> = config.experiments.iter().collect();
        serving.sort_by(|a, b| (&a.layer, &a.id).cmp(&(&b.layer, &b.id)));
        let mut experiments: Vec<CompiledExperiment> = serving
            .into_iter()
            .map(CompiledExperiment::compile)
            .collect();
        let mut holdout_configs: Vec<&ServingHoldout> = config.holdouts.iter().collect();
        holdout_configs.sort_by(|a, b| a.id.cmp(&b.id));
        let mut holdouts_by_placement: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, holdout) in holdout_configs.iter().enumerate() {
            for experiment in &mut experiments {
                if holdout.layers.iter().any(|l| *l == *experiment.layer) {
                    experiment.holdouts.push(index);
                }
            }
            for placement in &holdout.placements {
                let list = holdouts_by_placement.entry(placement.clone()).or_default();
                if list.last() != Some(&index) {
                    list.push(index);
                }
            }
        }
        let holdouts = holdout_configs
            .into_iter()
            .map(|holdout| CompiledHoldout {
                id: Arc::from(holdout.id.as_str()),
                revision: holdout.revision,
                salt: holdout.salt.clone(),
                share_basis_points: holdout.share_basis_points,
            })
            .collect();

        let mut everywhere = Vec::new();
        let mut by_placement: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, experiment) in experiments.iter().enumerate() {
            if experiment.eligibility.placements.is_empty() {
                everywhere.push(index);
            }
            for placement in &experiment.eligibility.placements {
                let list = by_placement.entry(placement.clone()).or_default();
                if list.last() != Some(&index) {
                    list.push(index);
                }
            }
        }
        for list in by_placement.values_mut() {
            list.extend(everywhere.iter().copied());
            list.sort_unstable();
            list.dedup();
        }

        let mut overrides: HashMap<String, Vec<OverrideEntry>> = HashMap::new();
        for qa in &config.overrides {
            let Some(experiment) = experiments.iter().position(|e| *e.id == *qa.experiment_id)
            else {
                continue;
            };
            let Some(variant) = experiments[experiment]
                .variants
                .iter()
                .position(|v| *v.name == *qa.variant)
            else {
                continue;
            };
            overrides
                .entry(qa.unit_id.clone())
                .or_default()
                .push(OverrideEntry {
                    experiment,
                    unit_type: qa.unit_type,
                    variant,
                    expire_time: qa.expire_time,
                });
        }
        Self {
            version: config.version,
            experiments,
            by_placement,
            everywhere,
            overrides,
            holdouts,
            holdouts_by_placement,
            empty_name: Arc::from(""),
            empty_params: Arc::new(Params::new()),
        }
    }

    /// The config version compiled.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of experiments compiled.
    pub fn len(&self) -> usize {
        self.experiments.len()
    }

    /// Whether no experiment is compiled.
    pub fn is_empty(&self) -> bool {
        self.experiments.is_empty()
    }

    /// What the snapshot holds of experiment `id` at `now`; `None` when it
    /// serves nothing (not in the serving config).
    pub fn experiment(&self, id: &str, now: SystemTime) -> Option<ServingState> {
        let experiment = self.experiments.iter().find(|e| *e.id == *id)?;
        let live = experiment.live(now);
        Some(ServingState {
            id: experiment.id.clone(),
            layer: experiment.layer.clone(),
            revision: experiment.revision,
            status: experiment.status,
            live,
        })
    }

    /// The holdouts of `evaluation` whose scope covers experiment `id` on
    /// `placement` (its layer, or the placement, is named): the holdout
    /// exposures that go with a flag's answer, and, when one holds the unit
    /// out, why the experiment gave it nothing.
    pub fn holdouts_covering<'a>(
        &'a self,
        evaluation: &'a Evaluation,
        id: &str,
        placement: &str,
    ) -> impl Iterator<Item = &'a HoldoutMembership> + 'a {
        let experiment = self.experiments.iter().find(|e| *e.id == *id);
        let on_placement = self.holdouts_by_placement.get(placement);
        evaluation.holdouts.iter().filter(move |m| {
            experiment.is_some_and(|e| e.holdouts.contains(&m.index))
                || on_placement.is_some_and(|list| list.contains(&m.index))
        })
    }

    /// Assigns the unit of a request at `now`. `INVALID_ARGUMENT` when both
    /// ids are empty or an input is too long.
    pub fn evaluate(
        &self,
        user_id: &str,
        session_id: &str,
        context: &RequestContext,
        now: SystemTime,
    ) -> Result<Evaluation, Error> {
        check_request(user_id, session_id, context)?;
        let unit_type = if user_id.is_empty() {
            UnitType::Session
        } else {
            UnitType::User
        };
        let candidates = self
            .by_placement
            .get(context.placement.as_str())
            .unwrap_or(&self.everywhere);
        let user_overrides = (!user_id.is_empty())
            .then(|| self.overrides.get(user_id))
            .flatten();
        let session_overrides = (!session_id.is_empty())
            .then(|| self.overrides.get(session_id))
            .flatten();
        let holdout_unit = match unit_type {
            UnitType::User => user_id,
            UnitType::Session => session_id,
        };
        let placement_holdouts: &[usize] = if self.holdouts.is_empty() {
            &[]
        } else {
            self.holdouts_by_placement
                .get(context.placement.as_str())
                .map_or(&[], Vec::as_slice)
        };
        let mut holdouts = Vec::new();
        for &holdout in placement_holdouts {
            self.enter_holdout(&mut holdouts, holdout, holdout_unit, unit_type);
        }
        let mut assignments = Vec::new();
        for &index in candidates {
            let experiment = &self.experiments[index];
            if !experiment.eligibility.admits(!user_id.is_empty(), context) {
                continue;
            }
            let forced = [
                (user_overrides, UnitType::User),
                (session_overrides, UnitType::Session),
            ]
            .into_iter()
            .find_map(|(entries, unit)| {
                entries?.iter().find(|entry| {
                    entry.experiment == index
                        && entry.unit_type == unit
                        && entry.expire_time.is_none_or(|expiry| expiry > now)
                })
            });
            let mut withheld = false;
            // Without holdouts, evaluation is what it was before them.
            if !self.holdouts.is_empty() && experiment.live(now) {
                for &holdout in experiment.holdouts.iter().chain(placement_holdouts) {
                    let member =
                        self.enter_holdout(&mut holdouts, holdout, holdout_unit, unit_type);
                    // An explicit QA override wins over the holdout.
                    if member.held_out && forced.is_none() {
                        member.withheld = true;
                        withheld = true;
                    }
                }
            }
            if let Some(entry) = forced {
                assignments.push(experiment.assignment(
                    entry.variant,
                    AssignmentReason::Override,
                    entry.unit_type,
                ));
                continue;
            }
            if withheld {
                continue;
            }
            match experiment.status {
                Status::Stopped => {
                    if let Some(shipped) = experiment.shipped {
                        assignments.push(experiment.assignment(
                            shipped,
                            AssignmentReason::Shipped,
                            unit_type,
                        ));
                    }
                }
                Status::Running | Status::Scheduled if experiment.in_schedule(now) => {
                    if let Some((variant, unit)) = experiment.bucket(user_id, session_id) {
                        assignments.push(experiment.assignment(
                            variant,
                            AssignmentReason::Bucketed,
                            unit,
                        ));
                    }
                }
                _ => {}
            }
        }
        holdouts.sort_by_key(|m: &HoldoutMembership| m.index);
        for member in holdouts.iter().filter(|m| m.withheld) {
            assignments.push(Assignment {
                experiment_id: self.empty_name.clone(),
                layer: self.empty_name.clone(),
                variant: self.empty_name.clone(),
                params: self.empty_params.clone(),
                revision: member.revision,
                reason: AssignmentReason::Holdout,
                unit_type: member.unit_type,
                holdout_id: Some(member.holdout_id.clone()),
            });
        }
        Ok(Evaluation {
            config_version: self.version,
            unit_type,
            assignments,
            holdouts,
        })
    }

    /// The unit's membership of holdout `index`, entered in `holdouts`
    /// (and its group hashed) the first time the request meets it.
    fn enter_holdout<'m>(
        &self,
        holdouts: &'m mut Vec<HoldoutMembership>,
        index: usize,
        unit_id: &str,
        unit_type: UnitType,
    ) -> &'m mut HoldoutMembership {
        let position = match holdouts.iter().position(|m| m.index == index) {
            Some(position) => position,
            None => {
                let holdout = &self.holdouts[index];
                holdouts.push(HoldoutMembership {
                    holdout_id: holdout.id.clone(),
                    revision: holdout.revision,
                    unit_type,
                    held_out: bucket(&holdout.salt, unit_id) < holdout.share_basis_points,
                    withheld: false,
                    index,
                });
                holdouts.len() - 1
            }
        };
        &mut holdouts[position]
    }
}

/// Refuses a request without any id, or with inputs beyond the limits.
pub fn check_request(
    user_id: &str,
    session_id: &str,
    context: &RequestContext,
) -> Result<(), Error> {
    let mut violations = Vec::new();
    if user_id.is_empty() && session_id.is_empty() {
        violations.push(crate::FieldViolation::new(
            "user_id",
            "a request needs a user_id or a session_id",
        ));
    }
    for (field, value) in [("user_id", user_id), ("session_id", session_id)] {
        if value.len() > MAX_UNIT_ID_LEN {
            violations.push(crate::FieldViolation::new(
                field,
                format!("must be at most {MAX_UNIT_ID_LEN} bytes"),
            ));
        }
    }
    for (field, value) in [
        ("context.placement", &context.placement),
        ("context.page_type", &context.page_type),
        ("context.country", &context.country),
        ("context.device", &context.device),
    ] {
        if value.len() > MAX_CONTEXT_FIELD_LEN {
            violations.push(crate::FieldViolation::new(
                field,
                format!("must be at most {MAX_CONTEXT_FIELD_LEN} bytes"),
            ));
        }
    }
    for (key, value) in &context.attributes {
        if key.len() > MAX_CONTEXT_FIELD_LEN || value.len() > MAX_ATTRIBUTE_VALUE_LEN {
            violations.push(crate::FieldViolation::new(
                format!("context.attributes[{:?}]", key.chars().take(64).collect::<String>()),
                format!(
                    "keys are at most {MAX_CONTEXT_FIELD_LEN} bytes and values {MAX_ATTRIBUTE_VALUE_LEN}"
                ),
            ));
        }
    }
    if context.attributes.len() > MAX_ATTRIBUTES {
        violations.push(crate::FieldViolation::new(
            "context.attributes",
            format!(
                "at most {MAX_ATTRIBUTES} attributes, got {}",
                context.attributes.len()
            ),
        ));
    }
    Error::check(violations)
}

// === impl CompiledExperiment ===

impl CompiledExperiment {
    fn compile(serving: &ServingExperiment) -> Self {
        let mut upper = 0;
        let variants = serving
            .variants
            .iter()
            .map(|variant| {
                upper += variant.weight * (BUCKETS / 100);
                CompiledVariant {
                    name: Arc::from(variant.name.as_str()),
                    upper_bucket: upper,
                    params: Arc::new(variant.params.clone()),
                }
            })
            .collect::<Vec<_>>();
        let shipped = serving
            .shipped_variant
            .as_ref()
            .and_then(|name| variants.iter().position(|v| *v.name == **name));
        let eligibility = &serving.eligibility;
        Self {
            id: Arc::from(serving.id.as_str()),
            layer: Arc::from(serving.layer.as_str()),
            revision: serving.revision,
            status: serving.status,
            bucketing_unit: serving.bucketing_unit,
            variants,
            eligibility: CompiledEligibility {
                placements: eligibility.placements.clone(),
                page_types: eligibility.page_types.clone(),
                countries: eligibility.countries.clone(),
                devices: eligibility.devices.clone(),
                logged_in: eligibility.logged_in,
                rules: eligibility
                    .attribute_rules
                    .iter()
                    .map(|rule| {
                        (
                            rule.attribute.clone(),
                            Condition::compile(rule.operator, &rule.values),
                        )
                    })
                    .collect(),
            },
            start: serving.schedule.start_time,
            end: serving.schedule.end_time,
            salts: serving
                .randomization
                .as_ref()
                .map(|r| (r.allocation_salt.clone(), r.variant_salt.clone())),
            allocation: serving.allocation.clone(),
            shipped,
            holdouts: Vec::new(),
        }
    }

    /// Whether it hands out variants at `now` (shipped, or bucketing
    /// inside its schedule): what a holdout withholds.
    fn live(&self, now: SystemTime) -> bool {
        match self.status {
            Status::Stopped => self.shipped.is_some(),
            Status::Running | Status::Scheduled => self.in_schedule(now),
            _ => false,
        }
    }

    fn in_schedule(&self, now: SystemTime) -> bool {
        self.start.is_none_or(|start| start <= now) && self.end.is_none_or(|end| now < end)
    }

    fn bucket(&self, user_id: &str, session_id: &str) -> Option<(usize, UnitType)> {
        let unit_type = self.bucketing_unit.unit_type(user_id, session_id)?;
        let unit_id = match unit_type {
            UnitType::User => user_id,
            UnitType::Session => session_id,
        };
        let (allocation_salt, variant_salt) = self.salts.as_ref()?;
        if !allocation::contains(&self.allocation, bucket(allocation_salt, unit_id)) {
            return None;
        }
        let variant_bucket = bucket(variant_salt, unit_id);
        let variant = self
            .variants
            .iter()
            .position(|v| variant_bucket < v.upper_bucket)?;
        Some((variant, unit_type))
    }

    fn assignment(
        &self,
        variant: usize,
        reason: AssignmentReason,
        unit_type: UnitType,
    ) -> Assignment {
        let chosen = &self.variants[variant];
        Assignment {
            experiment_id: self.id.clone(),
            layer: self.layer.clone(),
            variant: chosen.name.clone(),
            params: chosen.params.clone(),
            revision: self.revision,
            reason,
            unit_type,
            holdout_id: None,
        }
    }
}

// === impl CompiledEligibility ===

impl CompiledEligibility {
    fn admits(&self, logged_in: bool, context: &RequestContext) -> bool {
        let any_of = |allowed: &[String], value: &str| {
            allowed.is_empty() || allowed.iter().any(|a| a == value)
        };
        any_of(&self.placements, &context.placement)
            && any_of(&self.page_types, &context.page_type)
            && any_of(&self.countries, &context.country)
            && any_of(&self.devices, &context.device)
            && match self.logged_in {
                LoggedIn::Any => true,
                LoggedIn::LoggedIn => logged_in,
                LoggedIn::Anonymous => !logged_in,
            }
            && self.rules.iter().all(|(attribute, condition)| {
                context
                    .attributes
                    .get(attribute)
                    .is_some_and(|value| condition.holds(value))
            })
    }
}

// === impl Condition ===

impl Condition {
    fn compile(operator: Option<AttributeOperator>, values: &[String]) -> Self {
        use AttributeOperator as Op;
        let first = values.first().map(|v| v.trim()).unwrap_or_default();
        match operator {
            None => Self::Never,
            Some(Op::In | Op::Equals) => Self::In(values.to_vec()),
            Some(Op::NotIn | Op::NotEquals) => Self::NotIn(values.to_vec()),
            Some(op) if op.is_numeric() => first
                .parse::<f64>()
                .map_or(Self::Never, |number| Self::Number(op, number)),
            Some(op) if op.is_semver() => semver::Version::parse(first)
                .map_or(Self::Never, |version| Self::Semver(op, version)),
            Some(Op::RegexMatch) => regex::RegexBuilder::new(first)
                .size_limit(crate::validate::REGEX_SIZE_LIMIT)
                .build()
                .map_or(Self::Never, Self::Regex),
            Some(_) => Self::Never,
        }
    }

    fn holds(&self, value: &str) -> bool {
        use AttributeOperator as Op;
        use std::cmp::Ordering;
        let compare = |op: Op, ordering: Ordering| match op {
            Op::GreaterThan | Op::SemverGreaterThan => ordering == Ordering::Greater,
            Op::GreaterThanOrEqual | Op::SemverGreaterThanOrEqual => ordering != Ordering::Less,
            Op::LessThan | Op::SemverLessThan => ordering == Ordering::Less,
            Op::LessThanOrEqual | Op::SemverLessThanOrEqual => ordering != Ordering::Greater,
            Op::SemverEqual => ordering == Ordering::Equal,
            _ => false,
        };
        match self {
            Self::In(values) => values.iter().any(|v| v == value),
            Self::NotIn(values) => values.iter().all(|v| v != value),
            Self::Number(op, operand) => value
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(|number| number.partial_cmp(operand))
                .is_some_and(|ordering| compare(*op, ordering)),
            Self::Semver(op, operand) => semver::Version::parse(value.trim())
                .is_ok_and(|version| compare(*op, version.cmp(operand))),
            Self::Regex(regex) => regex.is_match(value),
            Self::Never => false,
        }
    }
}
