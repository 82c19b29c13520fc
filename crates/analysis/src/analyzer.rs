//! Per-unit state, maintained as events arrive.
//!
//! For every experiment the analyzer keeps one entry per analysis unit (the
//! id that was bucketed: user or session, as the exposure says): its
//! variant, the time of its first exposure, and one running sum per
//! [`Measure`](exp_core::metrics::Measure) its metrics need
//! ([`crate::experiment`]). An outcome is routed to every exposed unit it
//! belongs to (by user id and by session id) and counts only at or after
//! that unit's first exposure. Results are computed from these per-unit
//! sums in one pass over an experiment's units ([`crate::report`]), never
//! from raw events.
//!
//! One map, from a unit's key to where it is in each experiment it was
//! exposed in (inline for up to two), finds a unit for an exposure or an
//! outcome. Every event first moves the event-time watermark, which
//! records the timelines' hour boundaries ([`crate::timeline`]).
//!
//! Late data: the window of recent outcomes ([`crate::recent`]) is
//! replayed into a unit when it is created, so an outcome that arrives
//! before its unit's exposure in any experiment still counts. The earliest
//! exposure decides a unit's arm and start, whatever the arrival order (as
//! the warehouse's `arg_min(variant, timestamp)`): an exposure older than
//! the unit's first one moves both, and the outcomes of the window between
//! the new start and the old one are counted then
//! (`ExperimentState::earlier_exposure` says what cannot move).
//!
//! Every accepted exposure also counts its unit on its placement, for the
//! last 24 hours of event time, across experiments
//! ([`crate::placement`], which bounds the placements tracked and ignores
//! an exposure far ahead of the others): the daily traffic a plan before
//! launch uses.

use std::collections::HashMap;

use exp_core::{
    Experiment, UnitType,
    event::{Event, Exposure, Outcome, unix_micros},
};
use smallvec::SmallVec;

use crate::{
    experiment::{ExperimentState, JACKKNIFE_GROUPS, Unit, cuped_applies, layout, unit_key},
    placement::PlacementTraffic,
    preperiod::{PrePeriod, PrePeriodWindow, day_of},
    recent::{OutcomeView, RecentOutcomes},
};

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
    recent: RecentOutcomes,
    unattributed: Unattributed,
    /// Units exposed on each placement over the last 24 hours.
    placements: PlacementTraffic,
    /// Every user's outcomes of the last days, for CUPED covariates.
    pre_period: PrePeriod,
    /// The largest event timestamp applied so far, across experiments:
    /// the event time, whose hour boundaries the timelines record.
    pub(crate) watermark_micros: Option<i64>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("experiments", &self.slots)
            .field("recent_outcomes", &self.recent.len())
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
            recent: RecentOutcomes::default(),
            unattributed: Unattributed::default(),
            placements: PlacementTraffic::default(),
            pre_period: PrePeriod::default(),
            watermark_micros: None,
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

    /// Distinct units exposed on `placement`, in any experiment, over the
    /// 24 hours of event time up to the newest exposure counted on any
    /// placement (its UTC hour and the 23 before; [`crate::placement`]);
    /// `None` when none were.
    pub fn placement_daily_units(&self, placement: &str) -> Option<u64> {
        self.placements.daily_units(placement)
    }

    /// Takes in an event of either kind.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Exposure(exposure) => self.exposure(exposure),
            Event::Outcome(outcome) => self.outcome(outcome),
        }
    }

    /// Takes in an exposure.
    pub fn exposure(&mut self, exposure: &Exposure) {
        let time_micros = unix_micros(exposure.timestamp);
        self.advance_watermark(time_micros);
        let unit_id = exposure.unit_id();
        if unit_id.is_empty() {
            self.unattributed.unknown_exposures += 1;
            return;
        }
        if !self.experiments.contains_key(&exposure.experiment_id) {
            let Some(experiment) = (self.catalog)(&exposure.experiment_id) else {
                self.unattributed.unknown_exposures += 1;
                return;
            };
            let slot = self.slots.len() as u32;
            self.slots.push(experiment.id.clone());
            let state = ExperimentState::new(experiment, slot);
            keep_adjusted_kinds(&mut self.pre_period, &state);
            self.experiments.insert(state.experiment.id.clone(), state);
        }
        let Some(state) = self.experiments.get_mut(&exposure.experiment_id) else {
            // The catalog answered for another id than asked.
            self.unattributed.unknown_exposures += 1;
            return;
        };
        let slot = state.slot;
        let Some(variant) = state.variant_index(&exposure.variant) else {
            self.unattributed.unknown_exposures += 1;
            return;
        };
        state.check_exposure(exposure, time_micros, variant);
        let key = unit_key(exposure.unit_type, unit_id);
        self.placements
            .record(&exposure.placement, key, time_micros);
        let memberships = self.memberships.entry(key).or_default();
        if let Some(known) = memberships
            .iter()
            .find(|membership| membership.slot == slot)
        {
            let index = known.index;
            let Some(previous_start) = state.earlier_exposure(index, variant, time_micros) else {
                return;
            };
            if day_of(previous_start) != day_of(time_micros) {
                covariates(&self.pre_period, state, index, exposure.unit_type, key);
            }
            // Every outcome before the previous start was refused for
            // this unit; those since the new one count now.
            for outcome in self.recent.of(key) {
                if (time_micros..previous_start).contains(&outcome.time_micros)
                    && state.apply_outcome(index, &outcome.view())
                {
                    outcome.mark_counted();
                }
            }
            return;
        }
        let index = state.add_unit(Unit {
            first_exposure_micros: time_micros,
            variant,
            group: (key % JACKKNIFE_GROUPS as u128) as u8,
            several_variants: false,
            partial_pre_period: false,
        });
        memberships.push(Membership { slot, index });
        covariates(&self.pre_period, state, index, exposure.unit_type, key);
        for outcome in self.recent.of(key) {
            if state.apply_outcome(index, &outcome.view()) {
                outcome.mark_counted();
            }
        }
    }

    /// Takes in an outcome.
    pub fn outcome(&mut self, outcome: &Outcome) {
        let view = OutcomeView::of(outcome);
        self.advance_watermark(view.time_micros);
        let mut counted = false;
        let mut keys: SmallVec<[u128; 2]> = SmallVec::new();
        for (unit_type, id) in [
            (UnitType::User, &outcome.user_id),
            (UnitType::Session, &outcome.session_id),
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
                        if state.apply_outcome(membership.index, &view) {
                            counted = true;
                        } else if unit_type == UnitType::User {
                            state.apply_pre_period(membership.index, &view);
                        }
                    }
                }
            }
            if unit_type == UnitType::User {
                self.pre_period.record(key, &view);
            }
        }
        self.unattributed.outcomes_without_unit += self.recent.remember(&keys, view, counted);
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
            state.redefine(experiment, metrics);
            keep_adjusted_kinds(&mut self.pre_period, state);
        }
        outcome
    }

    /// Forgets everything but the catalog (before a rebuild).
    pub fn clear(&mut self) {
        self.experiments.clear();
        self.memberships.clear();
        self.slots.clear();
        self.recent.clear();
        self.unattributed = Unattributed::default();
        self.placements.clear();
        self.pre_period.clear();
        self.watermark_micros = None;
    }

    /// Ids of the experiments with state.
    pub fn experiment_ids(&self) -> Vec<String> {
        self.slots.clone()
    }
}

/// Has the ledger keep the outcome types `state`'s adjusted metrics read.
fn keep_adjusted_kinds(ledger: &mut PrePeriod, state: &ExperimentState) {
    if state.layout.pre_period_days.is_none() {
        return;
    }
    for metric in &state.metrics {
        if cuped_applies(metric.definition.kind) {
            ledger.keep(&metric.definition.numerator);
        }
    }
}

/// Sets the covariates of the unit at `index` of `state` from the ledger:
/// its measures over the pre-period before its first exposure's day. A
/// session unit has none (the ledger keeps users only).
fn covariates(
    ledger: &PrePeriod,
    state: &mut ExperimentState,
    index: u32,
    unit_type: UnitType,
    key: u128,
) {
    let Some(days) = state.layout.pre_period_days else {
        return;
    };
    let unit = &mut state.units[index as usize];
    let first_exposure_micros = unit.first_exposure_micros;
    unit.partial_pre_period = unit_type == UnitType::User
        && day_of(first_exposure_micros) - i64::from(days) < ledger.complete_from();
    let placements = ledger.placement_ids(&state.experiment.eligibility.placements);
    state.refill_covariates(index, |measures, currency, sums| {
        if unit_type == UnitType::User {
            let window = PrePeriodWindow {
                key,
                first_exposure_micros,
                days,
                placements: &placements,
            };
            ledger.add_covariates(&window, measures, currency, sums);
        }
    });
}

#[cfg(test)]
mod tests {
    use exp_core::{event::from_unix_micros, examples};

    use super::*;

    const HOUR_MICROS: i64 = 3_600_000_000;
    /// 2027-01-15T08:00:00Z, on an hour boundary.
    const START_MICROS: i64 = 1_800_000_000_000_000;

    /// The seed experiment under another id.
    fn seed_as(id: &str) -> Experiment {
        let mut experiment = examples::seed_experiment();
        experiment.id = id.into();
        experiment
    }

    fn on(experiment: &str, placement: &str, user: &str, time_micros: i64) -> Exposure {
        let experiment = seed_as(experiment);
        Exposure {
            event_id: String::new(),
            experiment_id: experiment.id.clone(),
            variant: experiment.variants[0].name.clone(),
            user_id: user.into(),
            session_id: String::new(),
            unit_type: UnitType::User,
            placement: placement.into(),
            page_type: String::new(),
            revision: 1,
            timestamp: from_unix_micros(time_micros),
        }
    }

    fn purchase(user: &str, time_micros: i64, value: f64) -> Outcome {
        Outcome {
            event_id: String::new(),
            outcome_type: exp_core::metrics::OutcomeType::Purchase,
            user_id: user.into(),
            session_id: String::new(),
            placement: "pdp".into(),
            page_type: String::new(),
            item_id: "sku".into(),
            item_ids: Vec::new(),
            from_recommendation: false,
            source_placement: String::new(),
            value,
            currency: "USD".into(),
            quantity: 1,
            latency_ms: 0.0,
            timestamp: from_unix_micros(time_micros),
            attributes: Default::default(),
        }
    }

    #[test]
    fn an_earlier_exposure_on_another_day_reads_the_covariate_again_for_its_own_pre_period() {
        const DAY: i64 = 24 * HOUR_MICROS;
        // START_MICROS is 08:00 UTC.
        let today = START_MICROS - 8 * HOUR_MICROS;
        let mut analyzer = Analyzer::new(Box::new(|id: &str| Some(seed_as(id))));
        // Purchases 3 and 10 days before today.
        analyzer.outcome(&purchase("moved", today - 3 * DAY, 30.0));
        analyzer.outcome(&purchase("moved", today - 10 * DAY, 70.0));
        // Exposed today: both are in its 14 days.
        analyzer.exposure(&on("exp_a", "pdp", "moved", START_MICROS));
        let revenue = |analyzer: &Analyzer| {
            let state = &analyzer.experiments["exp_a"];
            let measure = state
                .layout
                .measures
                .iter()
                .position(|measure| measure.aggregate == exp_core::metrics::Aggregate::ValueSum)
                .expect("revenue is measured");
            let (unit, sums, covariates) = state.units_with_covariates().next().expect("one unit");
            (
                unit.first_exposure_micros,
                sums[measure],
                covariates[measure],
            )
        };
        assert_eq!(revenue(&analyzer), (START_MICROS, 0.0, 100.0));
        // An exposure of 5 days ago arrives: its pre-period holds the 70 of
        // 10 days ago, and the 30 of 3 days ago is now after the first
        // exposure, an outcome.
        analyzer.exposure(&on("exp_a", "pdp", "moved", START_MICROS - 5 * DAY));
        assert_eq!(revenue(&analyzer), (START_MICROS - 5 * DAY, 30.0, 70.0));
        // A pre-period purchase arriving late (12 days before today) counts
        // once; one of the first exposure's own day does not.
        analyzer.outcome(&purchase("moved", today - 12 * DAY, 5.0));
        analyzer.outcome(&purchase("moved", today - 5 * DAY, 1.0));
        assert_eq!(revenue(&analyzer), (START_MICROS - 5 * DAY, 30.0, 75.0));
    }

    #[test]
    fn a_placements_daily_units_are_its_distinct_units_of_the_last_24_hours_across_experiments() {
        let mut analyzer = Analyzer::new(Box::new(|id: &str| {
            ["pdp_a", "pdp_b", "cart_c"]
                .contains(&id)
                .then(|| seed_as(id))
        }));
        // Thirty hours ago, then dropped: 50 units on the product page.
        for user in 0..50 {
            let user = format!("old-{user}");
            analyzer.exposure(&on("pdp_a", "product_page", &user, START_MICROS));
        }
        let day_later = START_MICROS + 30 * HOUR_MICROS;
        // Event time moves on an hour at a time (an exposure more than two
        // hours ahead of the others is not counted).
        let tick = |analyzer: &mut Analyzer, from: i64, to: i64| {
            for time in (from..=to).step_by(HOUR_MICROS as usize) {
                analyzer.exposure(&on("cart_c", "ticks", "ticker", time));
            }
        };
        tick(&mut analyzer, START_MICROS, day_later - 20 * HOUR_MICROS);
        // In the last day: users 0..100 in experiment a and 60..160 in b,
        // both on the product page (the 40 in both count once, and again
        // exposed an hour later still once), and 0..30 in c on the cart.
        for user in 0..100 {
            let user = format!("u-{user}");
            analyzer.exposure(&on(
                "pdp_a",
                "product_page",
                &user,
                day_later - 20 * HOUR_MICROS,
            ));
            analyzer.exposure(&on(
                "pdp_a",
                "product_page",
                &user,
                day_later - 19 * HOUR_MICROS,
            ));
        }
        tick(&mut analyzer, day_later - 19 * HOUR_MICROS, day_later);
        for user in 60..160 {
            let user = format!("u-{user}");
            analyzer.exposure(&on(
                "pdp_b",
                "product_page",
                &user,
                day_later - 2 * HOUR_MICROS,
            ));
        }
        for user in 0..30 {
            let user = format!("u-{user}");
            analyzer.exposure(&on("cart_c", "cart", &user, day_later));
        }
        assert_eq!(analyzer.placement_daily_units("product_page"), Some(160));
        assert_eq!(analyzer.placement_daily_units("cart"), Some(30));
        assert_eq!(analyzer.placement_daily_units("home"), None, "never seen");
        // A late exposure from before the window does not count.
        analyzer.exposure(&on("pdp_a", "product_page", "late", START_MICROS));
        assert_eq!(analyzer.placement_daily_units("product_page"), Some(160));
        // A day on, the window holds none of them.
        tick(&mut analyzer, day_later, day_later + 24 * HOUR_MICROS);
        analyzer.exposure(&on("cart_c", "cart", "new", day_later + 25 * HOUR_MICROS));
        assert_eq!(analyzer.placement_daily_units("product_page"), None);
        assert_eq!(analyzer.placement_daily_units("cart"), Some(1));
        // One exposure far ahead of the others moves nothing.
        analyzer.exposure(&on(
            "cart_c",
            "cart",
            "clock-off",
            day_later + 100 * HOUR_MICROS,
        ));
        assert_eq!(analyzer.placement_daily_units("cart"), Some(1));
        assert_eq!(analyzer.placement_daily_units("ticks"), Some(1));
    }
}
