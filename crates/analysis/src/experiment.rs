//! The state of one experiment: its units (variant, first exposure, hash
//! group), one running sum per [`Measure`] its metrics read for each
//! unit, the item tables of its concentration metrics, and the counters
//! of the exposure sanity checks.
//!
//! Layout: the units are a vector in the order they were first exposed,
//! and their sums one flat vector beside it, so a new unit costs no
//! allocation of its own and a report reads memory in order.

use std::{collections::HashMap, hash::Hasher, sync::Arc, time::SystemTime};

use exp_core::{
    BucketingUnit, Experiment, UnitType, bucketing,
    event::{Exposure, unix_micros},
    metrics::{self, Aggregate, Measure, MetricDefinition, MetricKind, OutcomeType},
};
use siphasher::sip128::{Hasher128, SipHasher13};

use crate::{
    preperiod::day_of,
    recent::{Currency, OutcomeView},
    timeline::History,
};

/// Units are split into this many groups by a hash of their id, for the
/// grouped jackknife of concentration metrics.
pub const JACKKNIFE_GROUPS: usize = 20;

/// Where a metric's name came from in the experiment's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The decision metric.
    Primary,
    /// Reported alongside.
    Secondary,
    /// Must not get worse.
    Guardrail,
}

/// A metric of one experiment with the measures it reads.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedMetric {
    /// The definition's name, shared with the results and timeline
    /// snapshots that carry it.
    pub(crate) name: Arc<str>,
    pub(crate) definition: MetricDefinition,
    pub(crate) role: Role,
    /// Whether a guardrail names it (whatever its role: a guardrail may
    /// watch the primary metric too).
    pub(crate) guardrail: bool,
    pub(crate) numerator: usize,
    pub(crate) denominator: Option<usize>,
    /// Index into the experiment's item-count tables (concentration).
    pub(crate) items: Option<usize>,
}

/// What the per-unit state of an experiment holds: one sum per measure,
/// one item table per concentration metric, and the currency the sums of
/// `value` are in. While it stays the same, metric configs may change
/// without touching the state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layout {
    pub(crate) measures: Vec<Measure>,
    item_tables: Vec<Measure>,
    /// The experiment's currency, when a measure sums `value`.
    pub(crate) currency: Option<Currency>,
    /// The CUPED pre-period in days, when the experiment adjusts and has a
    /// metric that can be (a proportion or a mean): each unit then keeps
    /// one covariate sum per measure beside its sums.
    pub(crate) pre_period_days: Option<u32>,
}

pub(crate) fn layout(experiment: &Experiment) -> (Layout, Vec<ResolvedMetric>) {
    let config = &experiment.metrics;
    let primary = if config.primary_metric.is_empty() {
        metrics::DEFAULT_PRIMARY_METRIC.to_owned()
    } else {
        config.primary_metric.clone()
    };
    let mut names: Vec<(String, Role)> = vec![(primary, Role::Primary)];
    for guardrail in &config.guardrails {
        if !names.iter().any(|(name, _)| *name == guardrail.metric) {
            names.push((guardrail.metric.clone(), Role::Guardrail));
        }
    }
    for name in &config.secondary_metrics {
        if !names.iter().any(|(known, _)| known == name) {
            names.push((name.clone(), Role::Secondary));
        }
    }
    // Validation refuses unknown names; one that slipped through (an old
    // revision) is left out rather than guessed.
    let definitions: Vec<(&MetricDefinition, Role)> = names
        .iter()
        .filter_map(|(name, role)| Some((metrics::resolve(&config.definitions, name)?, *role)))
        .collect();
    // Sorted, so the same measures give the same layout whatever the
    // order or roles of the metrics that read them.
    let mut measures: Vec<Measure> = definitions
        .iter()
        .flat_map(|(definition, _)| {
            std::iter::once(definition.numerator).chain(definition.denominator)
        })
        .collect();
    measures.sort_by_key(measure_key);
    measures.dedup();
    let mut item_tables: Vec<Measure> = definitions
        .iter()
        .filter(|(definition, _)| definition.kind == MetricKind::Concentration)
        .map(|(definition, _)| definition.numerator)
        .collect();
    item_tables.sort_by_key(measure_key);
    item_tables.dedup();
    let position = |list: &[Measure], measure: &Measure| {
        list.iter()
            .position(|known| known == measure)
            .expect("every metric's measures are listed")
    };
    let resolved = definitions
        .iter()
        .map(|(definition, role)| ResolvedMetric {
            name: definition.name.as_str().into(),
            definition: (*definition).clone(),
            role: *role,
            guardrail: config
                .guardrails
                .iter()
                .any(|guardrail| guardrail.metric == definition.name),
            numerator: position(&measures, &definition.numerator),
            denominator: definition
                .denominator
                .map(|denominator| position(&measures, &denominator)),
            items: (definition.kind == MetricKind::Concentration)
                .then(|| position(&item_tables, &definition.numerator)),
        })
        .collect();
    let currency = measures
        .iter()
        .any(|measure| measure.aggregate == Aggregate::ValueSum)
        .then(|| Currency::parse(config.effective_currency()));
    let adjustable = definitions
        .iter()
        .any(|(definition, _)| cuped_applies(definition.kind));
    // Sessions have no past the analysis keeps: an experiment bucketing
    // sessions only has nothing to adjust for.
    let pre_period_days =
        (config.cuped.enabled && adjustable && experiment.bucketing_unit != BucketingUnit::Session)
            .then_some(config.cuped.pre_period_days);
    (
        Layout {
            measures,
            item_tables,
            currency,
            pre_period_days,
        },
        resolved,
    )
}

/// Whether CUPED adjusts metrics of `kind`: those whose per-unit value is
/// the unit's own (proportions and means).
pub(crate) fn cuped_applies(kind: MetricKind) -> bool {
    matches!(kind, MetricKind::Proportion | MetricKind::Mean)
}

fn measure_key(measure: &Measure) -> (u8, bool, u8, bool) {
    (
        measure.outcome_type as u8,
        measure.recommended_only,
        measure.aggregate as u8,
        measure.experiment_placements_only,
    )
}

/// One analysis unit of one experiment (its sums are kept beside it, in
/// [`ExperimentState::sums`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unit {
    pub(crate) first_exposure_micros: i64,
    pub(crate) variant: u16,
    pub(crate) group: u8,
    pub(crate) several_variants: bool,
    /// Whether its CUPED pre-period starts before a day the pre-period
    /// ledger forgot outcomes of for want of room.
    pub(crate) partial_pre_period: bool,
}

/// Everything kept for one experiment.
#[derive(Debug)]
pub(crate) struct ExperimentState {
    pub(crate) experiment: Experiment,
    /// Its index in the analyzer's slots.
    pub(crate) slot: u32,
    /// The revision that drew the variant salt (from its name,
    /// `<id>:variant:<revision>`); exposures served before it are not
    /// checked against the bucketing.
    salt_revision: u64,
    pub(crate) layout: Layout,
    pub(crate) metrics: Vec<ResolvedMetric>,
    /// Exposed units, in the order of their first exposure here.
    pub(crate) units: Vec<Unit>,
    /// One sum per measure of the layout for each unit, unit after unit in
    /// the order of `units`.
    sums: Vec<f64>,
    /// The same over each unit's pre-period, when the layout has one
    /// (CUPED covariates); empty otherwise.
    covariates: Vec<f64>,
    /// Per concentration metric: item -> counts per (variant, group).
    pub(crate) item_counts: Vec<HashMap<String, Box<[u32]>>>,
    pub(crate) exposures_outside_schedule: u64,
    pub(crate) exposures_disagreeing_with_bucketing: u64,
    pub(crate) exposures_checked_against_bucketing: u64,
    pub(crate) exposures: u64,
    /// Outcomes left out of value measures for being in another currency
    /// than the experiment's, per currency, in the order first seen.
    pub(crate) other_currencies: Vec<(Currency, u64)>,
    /// Item impressions counted in a concentration table under an arm
    /// their unit later left for an earlier exposure's.
    pub(crate) items_left_in_previous_arm: f64,
    /// Newest event counted; `None` before the first.
    pub(crate) newest_event_micros: Option<i64>,
    /// Running minimum of the always-valid p-value per (metric, variant,
    /// revision), for the guardrails.
    pub(crate) guardrail_evidence: HashMap<(String, String, u64), f64>,
    /// Its snapshots at the hour boundaries crossed since its first units.
    pub(crate) history: History,
}

impl ExperimentState {
    pub(crate) fn new(experiment: Experiment, slot: u32) -> Self {
        let (layout, metrics) = layout(&experiment);
        let tables = metrics
            .iter()
            .filter(|metric| metric.items.is_some())
            .count();
        Self {
            salt_revision: salt_revision(&experiment),
            experiment,
            slot,
            layout,
            metrics,
            units: Vec::new(),
            sums: Vec::new(),
            covariates: Vec::new(),
            item_counts: (0..tables).map(|_| HashMap::new()).collect(),
            exposures_outside_schedule: 0,
            exposures_disagreeing_with_bucketing: 0,
            exposures_checked_against_bucketing: 0,
            exposures: 0,
            items_left_in_previous_arm: 0.0,
            other_currencies: Vec::new(),
            newest_event_micros: None,
            guardrail_evidence: HashMap::new(),
            history: History::default(),
        }
    }

    /// Takes a new definition of the experiment whose layout is the same.
    pub(crate) fn redefine(&mut self, experiment: Experiment, metrics: Vec<ResolvedMetric>) {
        self.metrics = metrics;
        self.salt_revision = salt_revision(&experiment);
        self.experiment = experiment;
    }

    pub(crate) fn variant_index(&self, name: &str) -> Option<u16> {
        self.experiment
            .variants
            .iter()
            .position(|variant| variant.name == name)
            .map(|index| index as u16)
    }

    /// Each unit with its sums and its covariates (empty without a
    /// pre-period), one per measure of the layout.
    pub(crate) fn units_with_covariates(&self) -> impl Iterator<Item = (&Unit, &[f64], &[f64])> {
        let width = self.layout.measures.len();
        let covariate_width = if self.covariates.is_empty() { 0 } else { width };
        self.units.iter().enumerate().map(move |(index, unit)| {
            (
                unit,
                &self.sums[index * width..(index + 1) * width],
                &self.covariates[index * covariate_width..(index + 1) * covariate_width],
            )
        })
    }

    /// Adds a unit with its sums (and covariates) at zero; its index.
    pub(crate) fn add_unit(&mut self, unit: Unit) -> u32 {
        let index = u32::try_from(self.units.len()).expect("fewer than 2^32 units per experiment");
        self.units.push(unit);
        self.sums
            .resize(self.sums.len() + self.layout.measures.len(), 0.0);
        if self.layout.pre_period_days.is_some() {
            self.covariates
                .resize(self.covariates.len() + self.layout.measures.len(), 0.0);
        }
        index
    }

    /// Sets the covariates of the unit at `index` to 0, then lets `fill`
    /// add to them, given the layout's measures and currency (nothing
    /// without a pre-period).
    pub(crate) fn refill_covariates(
        &mut self,
        index: u32,
        fill: impl FnOnce(&[Measure], Option<Currency>, &mut [f64]),
    ) {
        if self.covariates.is_empty() {
            return;
        }
        let width = self.layout.measures.len();
        let covariates = &mut self.covariates[index as usize * width..(index as usize + 1) * width];
        covariates.fill(0.0);
        fill(&self.layout.measures, self.layout.currency, covariates);
    }

    /// Counts `outcome`, which happened before the first exposure of the
    /// unit at `index` and arrived after the unit was created, in its
    /// covariates when it lies in the unit's pre-period.
    pub(crate) fn apply_pre_period(&mut self, index: u32, outcome: &OutcomeView<'_>) {
        let Some(days) = self.layout.pre_period_days else {
            return;
        };
        let exposure_day = day_of(self.units[index as usize].first_exposure_micros);
        let day = day_of(outcome.time_micros);
        if !(exposure_day - i64::from(days)..exposure_day).contains(&day) {
            return;
        }
        let here = on_placements(&self.experiment.eligibility.placements, outcome);
        let width = self.layout.measures.len();
        let start = index as usize * width;
        for (sum, measure) in self.covariates[start..start + width]
            .iter_mut()
            .zip(&self.layout.measures)
        {
            if let Contribution::Adds(amount) =
                contribution(measure, outcome, here, self.layout.currency)
            {
                *sum += amount;
            }
        }
    }

    /// Takes another exposure of the unit at `index`, to `variant` at
    /// `time_micros`. When it is earlier than the unit's first exposure so
    /// far, it becomes the first: the unit's start moves back and its arm
    /// becomes `variant` (on a tie the exposure that arrived first stays
    /// first). Returns the previous start then, for the caller to count the
    /// recent outcomes between the two.
    ///
    /// What moves with the unit: its per-unit sums (they are read in the
    /// unit's arm at report time), so every proportion, mean and ratio
    /// follows it. What cannot: the item counts of concentration metrics,
    /// filed per (arm, hash group) as they were counted, with no per-unit
    /// record to take back; they stay under the earlier arm, and their
    /// number is kept ([`Self::items_left_in_previous_arm`]) and shown in
    /// the `units_in_several_variants` sanity check. Outcomes before the
    /// previous start that have left the recent window are not counted.
    pub(crate) fn earlier_exposure(
        &mut self,
        index: u32,
        variant: u16,
        time_micros: i64,
    ) -> Option<i64> {
        let unit = &mut self.units[index as usize];
        if unit.variant != variant {
            unit.several_variants = true;
        }
        if time_micros >= unit.first_exposure_micros {
            return None;
        }
        let previous_start = unit.first_exposure_micros;
        unit.first_exposure_micros = time_micros;
        if unit.variant != variant {
            unit.variant = variant;
            let width = self.layout.measures.len();
            let sums = &self.sums[index as usize * width..(index as usize + 1) * width];
            let mut tables_seen = Vec::new();
            for metric in &self.metrics {
                if let Some(table) = metric.items
                    && !tables_seen.contains(&table)
                {
                    tables_seen.push(table);
                    self.items_left_in_previous_arm += sums[metric.numerator];
                }
            }
        }
        Some(previous_start)
    }

    /// Notes an event's time.
    pub(crate) fn saw(&mut self, time_micros: i64) {
        self.newest_event_micros = Some(
            self.newest_event_micros
                .map_or(time_micros, |newest| newest.max(time_micros)),
        );
    }

    /// Counts `outcome` for the unit at `index` if it happened at or after
    /// the unit's first exposure; whether it did.
    pub(crate) fn apply_outcome(&mut self, index: u32, outcome: &OutcomeView<'_>) -> bool {
        let unit = self.units[index as usize];
        if outcome.time_micros < unit.first_exposure_micros {
            return false;
        }
        let here = on_placements(&self.experiment.eligibility.placements, outcome);
        let width = self.layout.measures.len();
        let start = index as usize * width;
        let sums = &mut self.sums[start..start + width];
        let mut other_currency = false;
        for (sum, measure) in sums.iter_mut().zip(&self.layout.measures) {
            match contribution(measure, outcome, here, self.layout.currency) {
                Contribution::Adds(amount) => *sum += amount,
                Contribution::OtherCurrency => other_currency = true,
                Contribution::Nothing => {}
            }
        }
        if other_currency {
            match self
                .other_currencies
                .iter_mut()
                .find(|(currency, _)| *currency == outcome.currency)
            {
                Some((_, count)) => *count += 1,
                None => self.other_currencies.push((outcome.currency, 1)),
            }
        }
        let variants = self.experiment.variants.len();
        let slot = usize::from(unit.variant) * JACKKNIFE_GROUPS + usize::from(unit.group);
        for metric in &self.metrics {
            let Some(table) = metric.items else { continue };
            if !matches(&metric.definition.numerator, outcome, here) {
                continue;
            }
            let counts = &mut self.item_counts[table];
            let mut count = |item: &str| {
                if item.is_empty() {
                    return;
                }
                let entry = match counts.get_mut(item) {
                    Some(entry) => entry,
                    None => counts
                        .entry(item.to_owned())
                        .or_insert_with(|| vec![0; variants * JACKKNIFE_GROUPS].into()),
                };
                entry[slot] += 1;
            };
            if outcome.outcome_type == OutcomeType::Impression {
                outcome.item_ids.iter().for_each(|item| count(item));
            } else {
                count(outcome.item_id);
            }
        }
        self.saw(outcome.time_micros);
        true
    }

    /// Counts an exposure in the schedule and bucketing checks.
    pub(crate) fn check_exposure(&mut self, exposure: &Exposure, time_micros: i64, variant: u16) {
        self.exposures += 1;
        self.saw(time_micros);
        let schedule = &self.experiment.schedule;
        let early = micros(schedule.start_time).is_some_and(|start| time_micros < start);
        let late = micros(schedule.end_time).is_some_and(|end| time_micros >= end);
        if early || late {
            self.exposures_outside_schedule += 1;
        }
        self.check_bucketing(exposure, variant);
    }

    /// Recomputes the variant from the salts. Exposures served before the
    /// revision that drew the variant salt were bucketed with an older
    /// salt and are not checked.
    fn check_bucketing(&mut self, exposure: &Exposure, variant: u16) {
        let Some(randomization) = &self.experiment.randomization else {
            return;
        };
        if exposure.revision < self.salt_revision {
            return;
        }
        self.exposures_checked_against_bucketing += 1;
        let bucket = bucketing::bucket(&randomization.variant_salt, exposure.unit_id());
        let expected = bucketing::variant_index(&self.experiment.variants, bucket);
        if expected != Some(usize::from(variant)) {
            self.exposures_disagreeing_with_bucketing += 1;
        }
    }
}

/// Whether `outcome` happened on one of `placements`, or was attributed to
/// one by its source placement; every outcome is when there are none.
fn on_placements(placements: &[String], outcome: &OutcomeView<'_>) -> bool {
    placements.is_empty()
        || placements.iter().any(|placement| {
            placement == outcome.placement || placement == outcome.source_placement
        })
}

/// Whether `outcome` counts for `measure`; `here` says whether it is on
/// the experiment's placements.
fn matches(measure: &Measure, outcome: &OutcomeView<'_>, here: bool) -> bool {
    measure.outcome_type == outcome.outcome_type
        && (!measure.recommended_only || outcome.from_recommendation)
        && (!measure.experiment_placements_only || here)
}

/// What an outcome does to a measure.
enum Contribution {
    /// Adds this much.
    Adds(f64),
    /// Nothing: it does not match the measure.
    Nothing,
    /// Would add its value, but the value is in another currency than the
    /// experiment's (or in none).
    OtherCurrency,
}

/// What `outcome` adds to `measure`. A sum of `value` adds only amounts in
/// `currency` (the experiment's): adding 10 USD and 1,000 JPY gives a
/// number in no currency. An outcome without a currency and without a
/// value adds 0; one with a value but no currency is in another currency.
fn contribution(
    measure: &Measure,
    outcome: &OutcomeView<'_>,
    here: bool,
    currency: Option<Currency>,
) -> Contribution {
    if !matches(measure, outcome, here) {
        return Contribution::Nothing;
    }
    Contribution::Adds(match measure.aggregate {
        Aggregate::Count => 1.0,
        Aggregate::ValueSum => {
            let no_amount = outcome.currency == Currency::NONE && outcome.value == 0.0;
            if !no_amount && Some(outcome.currency) != currency {
                return Contribution::OtherCurrency;
            }
            outcome.value
        }
        Aggregate::QuantitySum => f64::from(outcome.quantity),
        Aggregate::LatencySum => outcome.latency_ms,
        Aggregate::ItemCount if outcome.outcome_type == OutcomeType::Impression => {
            outcome.item_ids.len() as f64
        }
        Aggregate::ItemCount => 1.0,
    })
}

/// The 128-bit key of a unit id of a type.
pub(crate) fn unit_key(unit_type: UnitType, unit_id: &str) -> u128 {
    let mut hasher = SipHasher13::new_with_keys(0x6578_7064_616e_616c, 0x7973_6973_756e_6974);
    hasher.write_u8(match unit_type {
        UnitType::User => 1,
        UnitType::Session => 2,
    });
    hasher.write(unit_id.as_bytes());
    hasher.finish128().as_u128()
}

fn micros(time: Option<SystemTime>) -> Option<i64> {
    time.map(unix_micros)
}

/// The revision that drew `experiment`'s variant salt: salts are named
/// after it (`<id>:variant:<revision>`); 0 when there is none.
fn salt_revision(experiment: &Experiment) -> u64 {
    experiment
        .randomization
        .as_ref()
        .and_then(|randomization| randomization.variant_salt.rsplit(':').next())
        .and_then(|revision| revision.parse::<u64>().ok())
        .unwrap_or(0)
}
