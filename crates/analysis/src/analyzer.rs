//! Per-unit state, maintained as events arrive.
//!
//! For every experiment the analyzer keeps one entry per analysis unit (the
//! id that was bucketed: user or session, as the exposure says): its
//! variant, the time of its first exposure, and one running sum per
//! [`Measure`] its metrics need. An outcome is routed to every exposed
//! unit it belongs to (by user id and by session id) and counts only at or
//! after that unit's first exposure. Results are computed from these
//! per-unit sums in one pass over an experiment's units
//! ([`crate::report`]), never from raw events.
//!
//! Layout: an experiment's units are a vector in the order they were
//! first exposed, and their sums one flat vector beside it, so a new unit
//! costs no allocation of its own and a report reads memory in order. One
//! map, from a unit's key to where it is in each experiment it was exposed
//! in (inline for up to two), finds a unit for an exposure or an outcome.
//!
//! Late data: the last [`RECENT_OUTCOMES`] outcomes are kept, whatever
//! units they were counted for, and replayed into a unit when it is
//! created, so an outcome that arrives before its unit's exposure in any
//! experiment still counts (as a rebuild from the log, which reads
//! exposures first, would count it). An exposure older than the unit's
//! first one moves the first exposure back, and outcomes already counted
//! stay counted.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hasher,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::SystemTime,
};

use exp_core::{
    Experiment, UnitType, bucketing,
    metrics::{self, Aggregate, Measure, MetricDefinition, MetricKind, OutcomeType},
};
use siphasher::sip128::{Hasher128, SipHasher13};
use smallvec::SmallVec;

/// Outcomes kept for units whose exposure arrives after them.
pub const RECENT_OUTCOMES: usize = 100_000;

/// Units are split into this many groups by a hash of their id, for the
/// grouped jackknife of concentration metrics.
pub const JACKKNIFE_GROUPS: usize = 20;

/// An exposure, as the analyzer reads it.
#[derive(Debug, Clone, Copy)]
pub struct ExposureFact<'a> {
    /// The experiment.
    pub experiment_id: &'a str,
    /// The variant seen.
    pub variant: &'a str,
    /// Which id was bucketed.
    pub unit_type: UnitType,
    /// User id, may be empty.
    pub user_id: &'a str,
    /// Session id, may be empty.
    pub session_id: &'a str,
    /// Experiment revision that served it.
    pub revision: u64,
    /// When, in microseconds since the Unix epoch.
    pub time_micros: i64,
}

impl ExposureFact<'_> {
    /// The bucketed id.
    pub fn unit_id(&self) -> &str {
        match self.unit_type {
            UnitType::User => self.user_id,
            UnitType::Session => self.session_id,
        }
    }
}

/// An outcome, as the analyzer reads it.
#[derive(Debug, Clone, Copy)]
pub struct OutcomeFact<'a> {
    /// Its type.
    pub outcome_type: OutcomeType,
    /// User id, may be empty.
    pub user_id: &'a str,
    /// Session id, may be empty.
    pub session_id: &'a str,
    /// Where it happened.
    pub placement: &'a str,
    /// The placement that recommended its item (attribution).
    pub source_placement: &'a str,
    /// The item of a click, add-to-cart or purchase.
    pub item_id: &'a str,
    /// The items of an impression.
    pub item_ids: &'a [String],
    /// Whether the item came from a recommendation.
    pub from_recommendation: bool,
    /// Purchase value.
    pub value: f64,
    /// Items.
    pub quantity: u32,
    /// Page load latency.
    pub latency_ms: f64,
    /// When, in microseconds since the Unix epoch.
    pub time_micros: i64,
}

impl OutcomeFact<'_> {
    fn owned(&self) -> RecentOutcome {
        RecentOutcome {
            outcome_type: self.outcome_type,
            placement: self.placement.into(),
            source_placement: self.source_placement.into(),
            item_id: self.item_id.into(),
            item_ids: self.item_ids.into(),
            from_recommendation: self.from_recommendation,
            value: self.value,
            quantity: self.quantity,
            latency_ms: self.latency_ms,
            time_micros: self.time_micros,
            counted: AtomicBool::new(false),
        }
    }
}

/// What a unit created later needs of an outcome (its unit keys are where
/// it is filed).
#[derive(Debug)]
struct RecentOutcome {
    outcome_type: OutcomeType,
    placement: Box<str>,
    source_placement: Box<str>,
    item_id: Box<str>,
    item_ids: Box<[String]>,
    from_recommendation: bool,
    value: f64,
    quantity: u32,
    latency_ms: f64,
    time_micros: i64,
    /// Whether it was counted for some unit.
    counted: AtomicBool,
}

impl RecentOutcome {
    fn fact(&self) -> OutcomeFact<'_> {
        OutcomeFact {
            outcome_type: self.outcome_type,
            user_id: "",
            session_id: "",
            placement: &self.placement,
            source_placement: &self.source_placement,
            item_id: &self.item_id,
            item_ids: &self.item_ids,
            from_recommendation: self.from_recommendation,
            value: self.value,
            quantity: self.quantity,
            latency_ms: self.latency_ms,
            time_micros: self.time_micros,
        }
    }
}

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
/// and one item table per concentration metric. While it stays the same,
/// metric configs may change without touching the state.
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    measures: Vec<Measure>,
    item_tables: Vec<Measure>,
}

fn layout(experiment: &Experiment) -> (Layout, Vec<ResolvedMetric>) {
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
    (
        Layout {
            measures,
            item_tables,
        },
        resolved,
    )
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
}

/// Everything kept for one experiment.
#[derive(Debug)]
pub(crate) struct ExperimentState {
    pub(crate) experiment: Experiment,
    /// Its index in the analyzer's slots.
    slot: u32,
    /// The revision that drew the variant salt (from its name,
    /// `<id>:variant:<revision>`); exposures served before it are not
    /// checked against the bucketing.
    salt_revision: u64,
    layout: Layout,
    pub(crate) metrics: Vec<ResolvedMetric>,
    /// Exposed units, in the order of their first exposure here.
    pub(crate) units: Vec<Unit>,
    /// One sum per measure of the layout for each unit, unit after unit in
    /// the order of `units`.
    sums: Vec<f64>,
    /// Per concentration metric: item -> counts per (variant, group).
    pub(crate) item_counts: Vec<HashMap<String, Box<[u32]>>>,
    pub(crate) exposures_outside_schedule: u64,
    pub(crate) exposures_disagreeing_with_bucketing: u64,
    pub(crate) exposures_checked_against_bucketing: u64,
    pub(crate) exposures: u64,
    pub(crate) newest_event_micros: i64,
    /// Running minimum of the always-valid p-value per (metric, variant),
    /// for the guardrail monitor.
    pub(crate) guardrail_evidence: HashMap<(String, String, u64), f64>,
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
            item_counts: (0..tables).map(|_| HashMap::new()).collect(),
            exposures_outside_schedule: 0,
            exposures_disagreeing_with_bucketing: 0,
            exposures_checked_against_bucketing: 0,
            exposures: 0,
            newest_event_micros: 0,
            guardrail_evidence: HashMap::new(),
        }
    }

    fn variant_index(&self, name: &str) -> Option<u16> {
        self.experiment
            .variants
            .iter()
            .position(|variant| variant.name == name)
            .map(|index| index as u16)
    }

    /// Each unit with its sums, one per measure of the layout.
    pub(crate) fn units_with_sums(&self) -> impl Iterator<Item = (&Unit, &[f64])> {
        let width = self.layout.measures.len();
        self.units
            .iter()
            .enumerate()
            .map(move |(index, unit)| (unit, &self.sums[index * width..(index + 1) * width]))
    }

    /// Adds a unit with its sums at zero; its index.
    fn add_unit(&mut self, unit: Unit) -> u32 {
        let index = u32::try_from(self.units.len()).expect("fewer than 2^32 units per experiment");
        self.units.push(unit);
        self.sums
            .resize(self.sums.len() + self.layout.measures.len(), 0.0);
        index
    }

    fn apply_outcome(&mut self, index: u32, outcome: &OutcomeFact<'_>) -> bool {
        let unit = self.units[index as usize];
        if outcome.time_micros < unit.first_exposure_micros {
            return false;
        }
        let here = on_placements(&self.experiment.eligibility.placements, outcome);
        let width = self.layout.measures.len();
        let start = index as usize * width;
        let sums = &mut self.sums[start..start + width];
        for (sum, measure) in sums.iter_mut().zip(&self.layout.measures) {
            if let Some(amount) = contribution(measure, outcome, here) {
                *sum += amount;
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
        self.newest_event_micros = self.newest_event_micros.max(outcome.time_micros);
        true
    }
}

/// Whether `outcome` happened on one of `placements`, or was attributed to
/// one by its source placement; every outcome is when there are none.
fn on_placements(placements: &[String], outcome: &OutcomeFact<'_>) -> bool {
    placements.is_empty()
        || placements.iter().any(|placement| {
            placement == outcome.placement || placement == outcome.source_placement
        })
}

/// Whether `outcome` counts for `measure`; `here` says whether it is on
/// the experiment's placements.
fn matches(measure: &Measure, outcome: &OutcomeFact<'_>, here: bool) -> bool {
    measure.outcome_type == outcome.outcome_type
        && (!measure.recommended_only || outcome.from_recommendation)
        && (!measure.experiment_placements_only || here)
}

/// What `outcome` adds to `measure`, if it matches it.
fn contribution(measure: &Measure, outcome: &OutcomeFact<'_>, here: bool) -> Option<f64> {
    if !matches(measure, outcome, here) {
        return None;
    }
    Some(match measure.aggregate {
        Aggregate::Count => 1.0,
        Aggregate::ValueSum => outcome.value,
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

/// Counters of events the analyzer could not use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unattributed {
    /// Exposures naming an experiment or variant the catalog does not know.
    pub unknown_exposures: u64,
    /// Outcomes that left the recent window without being counted for
    /// any unit (their units were never exposed, or too late).
    pub outcomes_without_unit: u64,
}

/// Looks up an experiment definition by id.
pub type Catalog = Box<dyn Fn(&str) -> Option<Experiment> + Send + Sync>;

/// What [`Analyzer::refresh`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Definitions updated in place.
    Updated,
    /// A metric config changed the measures: per-unit sums no longer fit,
    /// and the caller must rebuild from the log.
    NeedsRebuild,
}

/// Where a unit is: the slot of an experiment it was exposed in, and its
/// index among that experiment's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Membership {
    slot: u32,
    index: u32,
}

/// Per-unit state of every experiment with exposures.
pub struct Analyzer {
    pub(crate) catalog: Catalog,
    pub(crate) experiments: HashMap<String, ExperimentState>,
    /// Unit key -> where the unit is in each experiment it is exposed in.
    memberships: HashMap<u128, SmallVec<[Membership; 2]>>,
    slots: Vec<String>,
    /// The last outcomes, by each unit key they carry.
    recent: HashMap<u128, Vec<Arc<RecentOutcome>>>,
    /// (key, outcome) in arrival order, for eviction.
    recent_order: VecDeque<(u128, Arc<RecentOutcome>)>,
    unattributed: Unattributed,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("experiments", &self.slots)
            .field("recent_outcomes", &self.recent_order.len())
            .field("unattributed", &self.unattributed)
            .finish_non_exhaustive()
    }
}

impl Analyzer {
    /// An empty analyzer that looks experiments up in `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        Self {
            catalog,
            experiments: HashMap::new(),
            memberships: HashMap::new(),
            slots: Vec::new(),
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            unattributed: Unattributed::default(),
        }
    }

    /// Events it could not use.
    pub fn unattributed(&self) -> Unattributed {
        self.unattributed
    }

    /// Exposed units of `experiment_id`.
    pub fn unit_count(&self, experiment_id: &str) -> usize {
        self.experiments
            .get(experiment_id)
            .map_or(0, |state| state.units.len())
    }

    /// Takes in an exposure.
    pub fn exposure(&mut self, exposure: &ExposureFact<'_>) {
        let unit_id = exposure.unit_id();
        if unit_id.is_empty() {
            self.unattributed.unknown_exposures += 1;
            return;
        }
        if !self.experiments.contains_key(exposure.experiment_id) {
            let Some(experiment) = (self.catalog)(exposure.experiment_id) else {
                self.unattributed.unknown_exposures += 1;
                return;
            };
            let slot = self.slots.len() as u32;
            self.slots.push(experiment.id.clone());
            self.experiments.insert(
                experiment.id.clone(),
                ExperimentState::new(experiment, slot),
            );
        }
        let state = self
            .experiments
            .get_mut(exposure.experiment_id)
            .expect("inserted above");
        let slot = state.slot;
        let Some(variant) = state.variant_index(exposure.variant) else {
            self.unattributed.unknown_exposures += 1;
            return;
        };
        state.exposures += 1;
        state.newest_event_micros = state.newest_event_micros.max(exposure.time_micros);
        check_schedule(state, exposure);
        check_bucketing(state, exposure, variant);
        let key = unit_key(exposure.unit_type, unit_id);
        let memberships = self.memberships.entry(key).or_default();
        if let Some(known) = memberships
            .iter()
            .find(|membership| membership.slot == slot)
        {
            let unit = &mut state.units[known.index as usize];
            if unit.variant != variant {
                unit.several_variants = true;
            }
            unit.first_exposure_micros = unit.first_exposure_micros.min(exposure.time_micros);
            return;
        }
        let index = state.add_unit(Unit {
            first_exposure_micros: exposure.time_micros,
            variant,
            group: (key % JACKKNIFE_GROUPS as u128) as u8,
            several_variants: false,
        });
        memberships.push(Membership { slot, index });
        if let Some(earlier) = self.recent.get(&key) {
            for outcome in earlier {
                if state.apply_outcome(index, &outcome.fact()) {
                    outcome.counted.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    /// Takes in an outcome.
    pub fn outcome(&mut self, outcome: &OutcomeFact<'_>) {
        let mut counted = false;
        let mut keys = Vec::with_capacity(2);
        for (unit_type, id) in [
            (UnitType::User, outcome.user_id),
            (UnitType::Session, outcome.session_id),
        ] {
            if id.is_empty() {
                continue;
            }
            let key = unit_key(unit_type, id);
            keys.push(key);
            if let Some(memberships) = self.memberships.get(&key) {
                for membership in memberships {
                    let id = &self.slots[membership.slot as usize];
                    if let Some(state) = self.experiments.get_mut(id) {
                        counted |= state.apply_outcome(membership.index, outcome);
                    }
                }
            }
        }
        self.remember(&keys, outcome, counted);
    }

    /// Keeps `outcome` for units created later, evicting the oldest.
    fn remember(&mut self, keys: &[u128], outcome: &OutcomeFact<'_>, counted: bool) {
        if keys.is_empty() {
            return;
        }
        let recent = Arc::new(outcome.owned());
        recent.counted.store(counted, Ordering::Relaxed);
        for key in keys {
            self.recent.entry(*key).or_default().push(recent.clone());
            self.recent_order.push_back((*key, recent.clone()));
        }
        while self.recent_order.len() > RECENT_OUTCOMES {
            let Some((key, oldest)) = self.recent_order.pop_front() else {
                break;
            };
            if let Some(kept) = self.recent.get_mut(&key) {
                kept.retain(|outcome| !Arc::ptr_eq(outcome, &oldest));
                if kept.is_empty() {
                    self.recent.remove(&key);
                }
            }
            // Counted once, when its last copy leaves.
            if Arc::strong_count(&oldest) == 1 && !oldest.counted.load(Ordering::Relaxed) {
                self.unattributed.outcomes_without_unit += 1;
            }
        }
    }

    /// Re-reads every known experiment from the catalog (metric configs,
    /// variants, schedule, salts). An experiment whose new config needs
    /// other per-unit sums (or other variants) keeps its old config and
    /// state, consistent with each other, and the answer asks the caller to
    /// rebuild from the log.
    pub fn refresh(&mut self) -> Refresh {
        let mut outcome = Refresh::Updated;
        for (id, state) in &mut self.experiments {
            let Some(experiment) = (self.catalog)(id) else {
                continue;
            };
            let (layout, metrics) = layout(&experiment);
            let same_variants = experiment
                .variants
                .iter()
                .map(|variant| &variant.name)
                .eq(state
                    .experiment
                    .variants
                    .iter()
                    .map(|variant| &variant.name));
            if layout != state.layout || !same_variants {
                outcome = Refresh::NeedsRebuild;
                continue;
            }
            state.metrics = metrics;
            state.salt_revision = salt_revision(&experiment);
            state.experiment = experiment;
        }
        outcome
    }

    /// Forgets everything but the catalog (before a rebuild).
    pub fn clear(&mut self) {
        self.experiments.clear();
        self.memberships.clear();
        self.slots.clear();
        self.recent.clear();
        self.recent_order.clear();
        self.unattributed = Unattributed::default();
    }

    /// Ids of the experiments with state.
    pub fn experiment_ids(&self) -> Vec<String> {
        self.slots.clone()
    }
}

fn micros(time: Option<SystemTime>) -> Option<i64> {
    time.map(|time| {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .map(|since| since.as_micros() as i64)
            .unwrap_or(0)
    })
}

fn check_schedule(state: &mut ExperimentState, exposure: &ExposureFact<'_>) {
    let schedule = &state.experiment.schedule;
    let early = micros(schedule.start_time).is_some_and(|start| exposure.time_micros < start);
    let late = micros(schedule.end_time).is_some_and(|end| exposure.time_micros >= end);
    if early || late {
        state.exposures_outside_schedule += 1;
    }
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

/// Recomputes the variant from the salts. Exposures served before the
/// revision that drew the variant salt were bucketed with an older salt
/// and are not checked.
fn check_bucketing(state: &mut ExperimentState, exposure: &ExposureFact<'_>, variant: u16) {
    let Some(randomization) = &state.experiment.randomization else {
        return;
    };
    if exposure.revision < state.salt_revision {
        return;
    }
    state.exposures_checked_against_bucketing += 1;
    let bucket = bucketing::bucket(&randomization.variant_salt, exposure.unit_id());
    let expected = bucketing::variant_index(&state.experiment.variants, bucket);
    if expected != Some(usize::from(variant)) {
        state.exposures_disagreeing_with_bucketing += 1;
    }
}
