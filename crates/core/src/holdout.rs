//! Holdouts: a share of units kept out of every experiment of the layers
//! and placements a holdout names, so the cumulative effect of what those
//! experiments ran and shipped can be measured against the units that got
//! it.
//!
//! A holdout is its own resource, next to experiments: its id shares their
//! namespace (exposures carry one `experiment_id`), its salt is drawn once
//! at creation and never changes (so a unit stays on its side for the
//! holdout's whole life), and a unit is held out when
//! `bucket(salt, unit_id) < share_basis_points`. Which unit: the request's
//! user id when it has one, else its session id.
//!
//! Each function takes the current state and returns the next one,
//! revision bumped; the caller persists it.

use std::{collections::HashMap, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{Error, FieldViolation, bucketing::bucket, model::BUCKETS, validate};

/// Largest share of a holdout, in basis points of the units (half: a
/// holdout bigger than the rest would measure the rest, not itself).
pub const MAX_SHARE_BASIS_POINTS: u32 = BUCKETS / 2;
/// Most layers, and most placements, a holdout names.
pub const MAX_SCOPE_ENTRIES: usize = 100;
/// The variant name of held-out units in exposures and results.
pub const HOLDOUT_GROUP: &str = "holdout";
/// The variant name of the other units of a holdout's scope.
pub const REST_GROUP: &str = "rest";

/// A share of units excluded from every experiment of some layers and
/// placements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holdout {
    /// Immutable slug, in the experiments' namespace, e.g.
    /// `reco_holdout_2027h1`.
    pub id: String,
    /// What is held out and why.
    pub description: String,
    /// Held-out share in basis points of the units (1 to 5,000; 1,000 is
    /// 10%): units whose bucket is below it are held out.
    pub share_basis_points: u32,
    /// The hash salt, `<id>:holdout`, drawn at creation and never changed.
    pub salt: String,
    /// Layers whose experiments held-out units never get.
    pub layers: Vec<String>,
    /// Placements on which held-out units get no experiment.
    pub placements: Vec<String>,
    /// Active or ended.
    pub status: HoldoutStatus,
    /// Revision number of this state, from 1.
    pub revision: u64,
    /// When it was created.
    pub create_time: SystemTime,
    /// When this revision was written.
    pub update_time: SystemTime,
    /// Who wrote this revision.
    pub updated_by: String,
}

/// Whether a holdout holds units out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HoldoutStatus {
    /// Holding units out.
    #[default]
    Active,
    /// Ended: its units get experiments again; its results stay readable.
    Ended,
}

impl HoldoutStatus {
    /// Lower-case name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Ended => "ended",
        }
    }
}

impl Holdout {
    /// Whether `unit_id` is held out.
    pub fn holds_out(&self, unit_id: &str) -> bool {
        bucket(&self.salt, unit_id) < self.share_basis_points
    }

    /// The held-out share as a fraction, e.g. 0.1.
    pub fn share(&self) -> f64 {
        f64::from(self.share_basis_points) / f64::from(BUCKETS)
    }
}

/// What an update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HoldoutUpdate {
    /// New description.
    pub description: Option<String>,
    /// The share: refused unless it is the current one (it is fixed at
    /// creation).
    pub share_basis_points: Option<u32>,
    /// New layers.
    pub layers: Option<Vec<String>>,
    /// New placements.
    pub placements: Option<Vec<String>>,
}

/// The salt of holdout `id`.
pub fn salt(id: &str) -> String {
    format!("{id}:holdout")
}

/// `proposed` created at revision 1, active, with its salt, at `now` by
/// `author`.
pub fn create(proposed: &Holdout, now: SystemTime, author: &str) -> Result<Holdout, Error> {
    Error::check(validate(proposed))?;
    Ok(Holdout {
        salt: salt(&proposed.id),
        status: HoldoutStatus::Active,
        revision: 1,
        create_time: now,
        update_time: now,
        updated_by: author.to_owned(),
        ..proposed.clone()
    })
}

/// `current` with `update` applied: the next revision. An ended holdout
/// changes no more.
pub fn update(
    current: &Holdout,
    update: HoldoutUpdate,
    now: SystemTime,
    author: &str,
) -> Result<Holdout, Error> {
    require_active(current, "update")?;
    let mut next = current.clone();
    if let Some(description) = update.description {
        next.description = description;
    }
    // The share is fixed at creation, as the salt is: a larger share would
    // move units that already got the layer's experiments into the
    // holdout, a smaller one release held-out units into them, and both
    // groups would mix units of the other.
    if let Some(share) = update.share_basis_points
        && share != current.share_basis_points
    {
        return Err(Error::invalid(
            "share_basis_points",
            format!(
                "cannot change after creation ({} now): units already exposed would change \
                 groups; end this holdout and create another with the new share",
                current.share_basis_points
            ),
        ));
    }
    if let Some(layers) = update.layers {
        next.layers = layers;
    }
    if let Some(placements) = update.placements {
        next.placements = placements;
    }
    Error::check(validate(&next))?;
    Ok(stamped(next, now, author))
}

/// `current` ended: its units get experiments again.
pub fn end(current: &Holdout, now: SystemTime, author: &str) -> Result<Holdout, Error> {
    require_active(current, "end")?;
    let mut next = current.clone();
    next.status = HoldoutStatus::Ended;
    Ok(stamped(next, now, author))
}

fn require_active(current: &Holdout, verb: &str) -> Result<(), Error> {
    match current.status {
        HoldoutStatus::Active => Ok(()),
        HoldoutStatus::Ended => Err(Error::FailedPrecondition(format!(
            "cannot {verb} holdout {:?}: it has ended",
            current.id
        ))),
    }
}

fn stamped(mut next: Holdout, now: SystemTime, author: &str) -> Holdout {
    next.revision += 1;
    next.update_time = now;
    next.updated_by = author.to_owned();
    next
}

/// Every rule a holdout obeys, all problems at once, each naming its
/// field.
pub fn validate(holdout: &Holdout) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    if !validate::is_experiment_id(&holdout.id) {
        out.push(FieldViolation::new(
            "id",
            format!(
                "{:?} is not a valid id: use 3 to 64 lowercase letters, digits, '_' or '-', starting with a letter (e.g. reco_holdout_2027h1)",
                holdout.id
            ),
        ));
    }
    if holdout.description.chars().count() > 5000 {
        out.push(FieldViolation::new(
            "description",
            "must be at most 5000 characters",
        ));
    }
    if !(1..=MAX_SHARE_BASIS_POINTS).contains(&holdout.share_basis_points) {
        out.push(FieldViolation::new(
            "share_basis_points",
            format!(
                "must be between 1 and {MAX_SHARE_BASIS_POINTS} (basis points of the units: 1,000 is 10%), got {}",
                holdout.share_basis_points
            ),
        ));
    }
    if holdout.layers.is_empty() && holdout.placements.is_empty() {
        out.push(FieldViolation::new(
            "layers",
            "a holdout names at least one layer or placement",
        ));
    }
    scope_list(
        &mut out,
        "layers",
        &holdout.layers,
        validate::is_experiment_id,
        "is not a valid layer: 3 to 64 lowercase letters, digits, '_' or '-', starting with a letter",
    );
    scope_list(
        &mut out,
        "placements",
        &holdout.placements,
        validate::is_slug,
        "is not a valid placement: 1 to 64 lowercase letters, digits, '_' or '-'",
    );
    out
}

fn scope_list(
    out: &mut Vec<FieldViolation>,
    field: &str,
    values: &[String],
    well_formed: fn(&str) -> bool,
    malformed: &str,
) {
    if values.len() > MAX_SCOPE_ENTRIES {
        out.push(FieldViolation::new(
            field,
            format!("at most {MAX_SCOPE_ENTRIES} entries, got {}", values.len()),
        ));
        return;
    }
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (index, value) in values.iter().enumerate() {
        if !well_formed(value) {
            out.push(FieldViolation::new(
                format!("{field}[{index}]"),
                format!("{value:?} {malformed}"),
            ));
        }
        if let Some(first) = first_index.get(value.as_str()) {
            out.push(FieldViolation::new(
                format!("{field}[{index}]"),
                format!("{value:?} is already {field}[{first}]"),
            ));
        } else {
            first_index.insert(value, index);
        }
    }
}

/// The experiment results read a holdout as: its two groups as variants
/// (`holdout`, the control, and `rest`, weighted by the share in basis
/// points so the sample-ratio check expects the configured split), judged
/// on the catalogue's metrics (add-to-cart rate first), on every
/// placement (what the held-out experiments add up to, site-wide). No
/// salts: the variant is the group the assigner computed, not a variant
/// hash results could check.
pub fn comparison(holdout: &Holdout) -> crate::Experiment {
    use crate::{
        BucketingUnit, Eligibility, Experiment, MetricsConfig, Schedule, Status, Variant,
        metrics::{self, DEFAULT_PRIMARY_METRIC},
    };
    let group = |name: &str, weight: u32, description: &str| Variant {
        name: name.to_owned(),
        description: description.to_owned(),
        weight,
        params: crate::Params::new(),
    };
    Experiment {
        id: holdout.id.clone(),
        name: format!("Holdout {}", holdout.id),
        description: holdout.description.clone(),
        hypothesis: String::new(),
        owner: holdout.updated_by.clone(),
        layer: String::new(),
        variants: vec![
            group(
                HOLDOUT_GROUP,
                holdout.share_basis_points,
                "units held out of the holdout's layers and placements",
            ),
            group(
                REST_GROUP,
                BUCKETS.saturating_sub(holdout.share_basis_points),
                "units of the same scope that get its experiments",
            ),
        ],
        control_variant: HOLDOUT_GROUP.to_owned(),
        traffic_percent: 100,
        bucketing_unit: BucketingUnit::UserOrSession,
        eligibility: Eligibility::default(),
        schedule: Schedule::default(),
        status: match holdout.status {
            HoldoutStatus::Active => Status::Running,
            HoldoutStatus::Ended => Status::Completed,
        },
        metrics: MetricsConfig {
            primary_metric: DEFAULT_PRIMARY_METRIC.to_owned(),
            secondary_metrics: metrics::catalogue()
                .iter()
                .map(|metric| metric.name.clone())
                .filter(|name| name != DEFAULT_PRIMARY_METRIC)
                .collect(),
            ..MetricsConfig::default()
        },
        revision: holdout.revision,
        create_time: holdout.create_time,
        update_time: holdout.update_time,
        updated_by: holdout.updated_by.clone(),
        shipped_variant: None,
        status_reason: String::new(),
        randomization: None,
        allocation: Vec::new(),
        sequential: false,
        multiple_comparison_correction: crate::MultipleComparisonCorrection::default(),
        sequential_tuning_parameter: crate::DEFAULT_SEQUENTIAL_TUNING_PARAMETER,
    }
}
