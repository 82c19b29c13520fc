//! The serving config: what assignment needs of the experiments and the
//! active holdouts, and nothing of their history. The admin builds it from the store at every
//! config version; watchers receive it whole or as deltas.

use std::{collections::BTreeMap, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    holdout::{Holdout, HoldoutStatus},
    model::{
        BucketRange, BucketingUnit, Eligibility, Experiment, QaOverride, Randomization, Schedule,
        Status, UnitType, Variant,
    },
};

/// An experiment compiled for serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingExperiment {
    /// Experiment id.
    pub id: String,
    /// Effective layer (the id when none is named).
    pub layer: String,
    /// Revision compiled.
    pub revision: u64,
    /// Running, scheduled, paused, stopped (shipped), or draft (QA
    /// overrides only).
    pub status: Status,
    /// Arms with weights and params.
    pub variants: Vec<Variant>,
    /// Control arm.
    pub control_variant: String,
    /// Which id is the unit.
    pub bucketing_unit: BucketingUnit,
    /// Who may enter.
    pub eligibility: Eligibility,
    /// When it runs.
    pub schedule: Schedule,
    /// Salts; `None` for a draft.
    pub randomization: Option<Randomization>,
    /// Allocation buckets held in the layer.
    pub allocation: Vec<BucketRange>,
    /// Variant shipped to everyone, for a stopped experiment.
    pub shipped_variant: Option<String>,
}

impl ServingExperiment {
    /// The serving form of `experiment`, if it serves anything: running,
    /// scheduled and paused experiments, stopped ones that shipped a
    /// variant, and drafts with QA overrides (for QA before launch).
    pub fn of(experiment: &Experiment, has_overrides: bool) -> Option<Self> {
        let serves = match experiment.status {
            Status::Running | Status::Scheduled | Status::Paused => true,
            Status::Stopped => experiment.shipped_variant.is_some(),
            Status::Draft => has_overrides,
            Status::Completed | Status::Archived => false,
        };
        serves.then(|| Self {
            id: experiment.id.clone(),
            layer: experiment.effective_layer().to_owned(),
            revision: experiment.revision,
            status: experiment.status,
            variants: experiment.variants.clone(),
            control_variant: experiment.control_variant.clone(),
            bucketing_unit: experiment.bucketing_unit,
            eligibility: experiment.eligibility.clone(),
            schedule: experiment.schedule.clone(),
            randomization: experiment.randomization.clone(),
            allocation: experiment.allocation.clone(),
            shipped_variant: experiment.shipped_variant.clone(),
        })
    }

    /// Whether the experiment can apply on one of `placements` (an
    /// experiment without placements applies everywhere; an empty filter
    /// takes everything).
    pub fn serves_any_of(&self, placements: &[String]) -> bool {
        placements.is_empty()
            || self.eligibility.placements.is_empty()
            || self
                .eligibility
                .placements
                .iter()
                .any(|p| placements.contains(p))
    }
}

/// An active holdout compiled for serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingHoldout {
    /// Holdout id.
    pub id: String,
    /// Revision compiled.
    pub revision: u64,
    /// Hash salt.
    pub salt: String,
    /// Held-out share in basis points: buckets below it are held out.
    pub share_basis_points: u32,
    /// Layers whose experiments held-out units never get.
    pub layers: Vec<String>,
    /// Placements on which held-out units get no experiment.
    pub placements: Vec<String>,
}

impl ServingHoldout {
    /// The serving form of `holdout`, if it is active.
    pub fn of(holdout: &Holdout) -> Option<Self> {
        (holdout.status == HoldoutStatus::Active).then(|| Self {
            id: holdout.id.clone(),
            revision: holdout.revision,
            salt: holdout.salt.clone(),
            share_basis_points: holdout.share_basis_points,
            layers: holdout.layers.clone(),
            placements: holdout.placements.clone(),
        })
    }
}

/// The whole serving config at one config version.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServingConfig {
    /// The global config version.
    pub version: u64,
    /// Serving experiments, ordered by id.
    pub experiments: Vec<ServingExperiment>,
    /// Unexpired QA overrides of those experiments.
    pub overrides: Vec<QaOverride>,
    /// Active holdouts, ordered by id.
    #[serde(default)]
    pub holdouts: Vec<ServingHoldout>,
}

/// Key of a QA override: experiment, unit type, unit id.
pub type OverrideKey = (String, UnitType, String);

fn override_key(qa_override: &QaOverride) -> OverrideKey {
    (
        qa_override.experiment_id.clone(),
        qa_override.unit_type,
        qa_override.unit_id.clone(),
    )
}

/// What changed between two serving configs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigDelta {
    /// Experiments added or changed.
    pub upserted_experiments: Vec<ServingExperiment>,
    /// Ids of experiments that no longer serve.
    pub removed_experiment_ids: Vec<String>,
    /// Overrides added or changed.
    pub upserted_overrides: Vec<QaOverride>,
    /// Overrides removed.
    pub removed_overrides: Vec<QaOverride>,
    /// Holdouts added or changed.
    pub upserted_holdouts: Vec<ServingHoldout>,
    /// Ids of holdouts that ended or went.
    pub removed_holdout_ids: Vec<String>,
}

impl ConfigDelta {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserted_experiments.is_empty()
            && self.removed_experiment_ids.is_empty()
            && self.upserted_overrides.is_empty()
            && self.removed_overrides.is_empty()
            && self.upserted_holdouts.is_empty()
            && self.removed_holdout_ids.is_empty()
    }
}

impl ServingConfig {
    /// The serving config of `experiments` and `overrides` at `version`;
    /// overrides expired at `now` are left out.
    pub fn build(
        version: u64,
        experiments: &[Experiment],
        overrides: &[QaOverride],
        now: SystemTime,
    ) -> Self {
        // Serving needs who is forced where until when, not who asked why:
        // the config goes to every replica and SDK.
        let active: Vec<QaOverride> = overrides
            .iter()
            .filter(|o| o.is_active_at(now))
            .map(|o| QaOverride {
                reason: String::new(),
                created_by: String::new(),
                ..o.clone()
            })
            .collect();
        let mut serving: Vec<ServingExperiment> = experiments
            .iter()
            .filter_map(|experiment| {
                let has_overrides = active.iter().any(|o| o.experiment_id == experiment.id);
                ServingExperiment::of(experiment, has_overrides)
            })
            .collect();
        serving.sort_by(|a, b| a.id.cmp(&b.id));
        let mut overrides: Vec<QaOverride> = active
            .into_iter()
            .filter(|o| serving.iter().any(|e| e.id == o.experiment_id))
            .collect();
        overrides.sort_by_key(override_key);
        Self {
            version,
            experiments: serving,
            overrides,
            holdouts: Vec::new(),
        }
    }

    /// This config with the active ones of `holdouts`.
    pub fn with_holdouts(mut self, holdouts: &[Holdout]) -> Self {
        self.holdouts = holdouts.iter().filter_map(ServingHoldout::of).collect();
        self.holdouts.sort_by(|a, b| a.id.cmp(&b.id));
        self
    }

    /// Only what can apply on `placements` (everything for an empty list;
    /// every holdout: they are few, and a layer's holdout applies on any
    /// placement).
    pub fn for_placements(&self, placements: &[String]) -> Self {
        if placements.is_empty() {
            return self.clone();
        }
        let experiments: Vec<ServingExperiment> = self
            .experiments
            .iter()
            .filter(|e| e.serves_any_of(placements))
            .cloned()
            .collect();
        let overrides = self
            .overrides
            .iter()
            .filter(|o| experiments.iter().any(|e| e.id == o.experiment_id))
            .cloned()
            .collect();
        Self {
            version: self.version,
            experiments,
            overrides,
            holdouts: self.holdouts.clone(),
        }
    }

    /// What turns `self` into `to`.
    pub fn delta_to(&self, to: &ServingConfig) -> ConfigDelta {
        let before: BTreeMap<&str, &ServingExperiment> = self
            .experiments
            .iter()
            .map(|e| (e.id.as_str(), e))
            .collect();
        let after: BTreeMap<&str, &ServingExperiment> =
            to.experiments.iter().map(|e| (e.id.as_str(), e)).collect();
        let before_overrides: BTreeMap<OverrideKey, &QaOverride> = self
            .overrides
            .iter()
            .map(|o| (override_key(o), o))
            .collect();
        let after_overrides: BTreeMap<OverrideKey, &QaOverride> =
            to.overrides.iter().map(|o| (override_key(o), o)).collect();
        let before_holdouts: BTreeMap<&str, &ServingHoldout> =
            self.holdouts.iter().map(|h| (h.id.as_str(), h)).collect();
        let after_holdouts: BTreeMap<&str, &ServingHoldout> =
            to.holdouts.iter().map(|h| (h.id.as_str(), h)).collect();
        ConfigDelta {
            upserted_experiments: after
                .iter()
                .filter(|(id, e)| before.get(*id) != Some(*e))
                .map(|(_, e)| (*e).clone())
                .collect(),
            removed_experiment_ids: before
                .keys()
                .filter(|id| !after.contains_key(*id))
                .map(|id| (*id).to_owned())
                .collect(),
            upserted_overrides: after_overrides
                .iter()
                .filter(|(key, o)| before_overrides.get(*key) != Some(*o))
                .map(|(_, o)| (*o).clone())
                .collect(),
            removed_overrides: before_overrides
                .iter()
                .filter(|(key, _)| !after_overrides.contains_key(*key))
                .map(|(_, o)| (*o).clone())
                .collect(),
            upserted_holdouts: after_holdouts
                .iter()
                .filter(|(id, h)| before_holdouts.get(*id) != Some(*h))
                .map(|(_, h)| (*h).clone())
                .collect(),
            removed_holdout_ids: before_holdouts
                .keys()
                .filter(|id| !after_holdouts.contains_key(*id))
                .map(|id| (*id).to_owned())
                .collect(),
        }
    }

    /// Applies `delta`, bringing the config to `version`.
    pub fn apply(&mut self, delta: &ConfigDelta, version: u64) {
        self.experiments
            .retain(|e| !delta.removed_experiment_ids.contains(&e.id));
        for upserted in &delta.upserted_experiments {
            match self.experiments.iter_mut().find(|e| e.id == upserted.id) {
                Some(existing) => *existing = upserted.clone(),
                None => self.experiments.push(upserted.clone()),
            }
        }
        self.experiments.sort_by(|a, b| a.id.cmp(&b.id));
        let removed: Vec<OverrideKey> = delta.removed_overrides.iter().map(override_key).collect();
        self.overrides
            .retain(|o| !removed.contains(&override_key(o)));
        for upserted in &delta.upserted_overrides {
            let key = override_key(upserted);
            match self.overrides.iter_mut().find(|o| override_key(o) == key) {
                Some(existing) => *existing = upserted.clone(),
                None => self.overrides.push(upserted.clone()),
            }
        }
        self.overrides.sort_by_key(override_key);
        self.holdouts
            .retain(|h| !delta.removed_holdout_ids.contains(&h.id));
        for upserted in &delta.upserted_holdouts {
            match self.holdouts.iter_mut().find(|h| h.id == upserted.id) {
                Some(existing) => *existing = upserted.clone(),
                None => self.holdouts.push(upserted.clone()),
            }
        }
        self.holdouts.sort_by(|a, b| a.id.cmp(&b.id));
        self.version = version;
    }
}
