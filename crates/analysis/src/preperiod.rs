//! The pre-period ledger: what each user did on each of the last
//! [`MAX_PRE_PERIOD_DAYS`] whole UTC days of event time, across
//! experiments, read when a user is first exposed in an experiment to give
//! its CUPED covariate: the sums of the experiment's measures over the
//! whole days before the day of that exposure ([`crate::experiment`]).
//!
//! Outcomes carrying a user id are kept, summed per (user, UTC day,
//! outcome type, recommended or not, placement, source placement,
//! currency): the count, value, quantity, latency and items, which is all
//! any [`Measure`] reads. Only the outcome types a CUPED-adjusted metric
//! reads are kept: those of the catalogue's proportions and means
//! (add-to-cart, purchase, page view), and those of the proportions and
//! means an experiment the analysis has seen defines for itself (kept
//! from then on, and across rebuilds from the log). Impressions, clicks
//! and page loads, most of the traffic, feed only ratios and
//! concentrations, which CUPED does not adjust. Sessions have no past to
//! speak of and are not kept: a session unit's covariate is 0, and CUPED
//! then changes nothing.
//!
//! Bounds, so a busy site cannot exhaust memory:
//! - the ledger counts its own bytes, a 64-byte hash-table slot per (user,
//!   day) and 40 bytes per further kind of outcome that day (as the entry
//!   lists grow, by powers of two), and holds at most [`MAX_BYTES`]
//!   (256 MiB) by that count; a hash table's spare room adds up to as much
//!   again for its slots between two of its growths, so the resident cost
//!   stays under about 512 MiB. Past the bound the oldest day is forgotten
//!   whole (the newest days serve the pre-periods of the units being
//!   exposed now); an outcome of a day no newer than the oldest kept, or
//!   of a day that alone fills the ledger, is refused. Both are counted
//!   ([`PrePeriod::forgotten_user_days`]), and a unit whose pre-period
//!   starts before the newest day something was forgotten from is marked
//!   as possibly incomplete ([`PrePeriod::complete_from`]);
//! - outcomes are told apart by placement only for the types a measure
//!   restricted to the experiment's placements reads (none of the
//!   catalogue's proportions and means is), and at most [`MAX_PLACEMENTS`]
//!   placements are; outcomes on the others count only for measures that
//!   are not restricted;
//! - days older than [`RETAINED_DAYS`] before the newest are dropped:
//!   the longest pre-period, [`MAX_PRE_PERIOD_DAYS`], and the 7 days an
//!   exposure may arrive late.

use std::collections::{BTreeMap, HashMap};

use exp_core::{
    MAX_PRE_PERIOD_DAYS,
    metrics::{self, Aggregate, Measure, OutcomeType},
};
use smallvec::SmallVec;

use crate::{
    experiment::cuped_applies,
    recent::{Currency, OutcomeView},
};

/// Most bytes kept, by the ledger's own count.
pub const MAX_BYTES: usize = 256 << 20;

/// Most placements told apart.
pub const MAX_PLACEMENTS: usize = 1_024;

/// Days kept before the newest: the longest pre-period and the days an
/// exposure may arrive late (event ingest refuses events older than 7
/// days).
pub const RETAINED_DAYS: u32 = MAX_PRE_PERIOD_DAYS + 7;

/// What a (user, day) costs: its slot in the day's hash table.
const SLOT_BYTES: usize = 64;

/// What each entry past a user-day's first costs.
const ENTRY_BYTES: usize = 40;

const DAY_MICROS: i64 = 86_400_000_000;

/// The placement id of every placement past [`MAX_PLACEMENTS`]: equal to
/// none an experiment names.
const OTHER_PLACEMENT: u16 = u16::MAX;

/// The placement id of outcomes whose placement is not told apart: equal
/// to none an experiment names.
const ANY_PLACEMENT: u16 = u16::MAX - 1;

/// The UTC day of a time, in days since the Unix epoch.
pub(crate) fn day_of(time_micros: i64) -> i64 {
    time_micros.div_euclid(DAY_MICROS)
}

/// Sums of one user's outcomes of one kind on one day, in 40 bytes: the
/// counts saturate at 2³² − 1 a day, latencies add up in single precision
/// (a mean over a day's page loads, good to about 7 digits).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    value: f64,
    latency: f32,
    count: u32,
    quantity: u32,
    items: u32,
    outcome_type: OutcomeType,
    from_recommendation: bool,
    placement: u16,
    source_placement: u16,
    currency: Currency,
}

impl Entry {
    fn same_kind(&self, other: &Self) -> bool {
        self.outcome_type == other.outcome_type
            && self.from_recommendation == other.from_recommendation
            && self.placement == other.placement
            && self.source_placement == other.source_placement
            && self.currency == other.currency
    }
}

/// The placements a covariate is restricted to, as ledger ids; `None`
/// when it is not (an experiment on every placement).
pub(crate) type PlacementIds = Option<SmallVec<[u16; 4]>>;

/// Whose pre-period, and which: the whole `days` UTC days before the day
/// of `first_exposure_micros`, of the user with `key`, on `placements`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PrePeriodWindow<'a> {
    pub(crate) key: u128,
    pub(crate) first_exposure_micros: i64,
    pub(crate) days: u32,
    pub(crate) placements: &'a PlacementIds,
}

/// One day of the ledger.
#[derive(Debug, Default)]
struct Day {
    users: HashMap<u64, SmallVec<[Entry; 1]>>,
    /// Its bytes by the ledger's count.
    bytes: usize,
}

/// Every user's outcomes of the last days, per day.
#[derive(Debug)]
pub(crate) struct PrePeriod {
    days: BTreeMap<i64, Day>,
    /// The outcome types kept, a bit per [`OutcomeType`].
    kinds: u8,
    /// The outcome types told apart by placement.
    placement_kinds: u8,
    max_bytes: usize,
    bytes: usize,
    newest_day: Option<i64>,
    placements: HashMap<Box<str>, u16>,
    forgotten_user_days: u64,
    /// The first day from which nothing was forgotten for want of room.
    complete_from: i64,
}

impl Default for PrePeriod {
    fn default() -> Self {
        Self::with_room_for(MAX_BYTES)
    }
}

impl PrePeriod {
    /// An empty ledger of at most `max_bytes` by its count.
    fn with_room_for(max_bytes: usize) -> Self {
        let mut kinds = 0;
        let mut placement_kinds = 0;
        for metric in metrics::catalogue() {
            if cuped_applies(metric.kind) {
                kinds |= kind_bit(metric.numerator.outcome_type);
                if metric.numerator.experiment_placements_only {
                    placement_kinds |= kind_bit(metric.numerator.outcome_type);
                }
            }
        }
        Self {
            days: BTreeMap::new(),
            kinds,
            placement_kinds,
            max_bytes,
            bytes: 0,
            newest_day: None,
            placements: HashMap::new(),
            forgotten_user_days: 0,
            complete_from: i64::MIN,
        }
    }

    /// Keeps outcomes `measure` reads from now on, told apart by placement
    /// when it is restricted to the experiment's placements.
    pub(crate) fn keep(&mut self, measure: &Measure) {
        self.kinds |= kind_bit(measure.outcome_type);
        if measure.experiment_placements_only {
            self.placement_kinds |= kind_bit(measure.outcome_type);
        }
    }

    /// Keeps `outcome` of the user with `key`, if it is of a type kept.
    pub(crate) fn record(&mut self, key: u128, outcome: &OutcomeView<'_>) {
        let bit = kind_bit(outcome.outcome_type);
        if self.kinds & bit == 0 {
            return;
        }
        let key = short_key(key);
        let day = day_of(outcome.time_micros);
        match self.newest_day {
            Some(newest) if day <= newest => {
                if day < newest - i64::from(RETAINED_DAYS) {
                    return;
                }
            }
            _ => self.advance(day),
        }
        let (placement, source_placement) = if self.placement_kinds & bit == 0 {
            (ANY_PLACEMENT, ANY_PLACEMENT)
        } else {
            (
                self.placement_id(outcome.placement),
                self.placement_id(outcome.source_placement),
            )
        };
        let entry = Entry {
            outcome_type: outcome.outcome_type,
            from_recommendation: outcome.from_recommendation,
            placement,
            source_placement,
            currency: outcome.currency,
            count: 1,
            value: outcome.value,
            quantity: outcome.quantity,
            latency: outcome.latency_ms as f32,
            items: if outcome.outcome_type == OutcomeType::Impression {
                u32::try_from(outcome.item_ids.len()).unwrap_or(u32::MAX)
            } else {
                1
            },
        };
        // Adding to a kept entry costs nothing.
        if let Some(kept) = self
            .days
            .get_mut(&day)
            .and_then(|kept| kept.users.get_mut(&key))
            .and_then(|entries| entries.iter_mut().find(|kept| kept.same_kind(&entry)))
        {
            kept.count = kept.count.saturating_add(entry.count);
            kept.value += entry.value;
            kept.quantity = kept.quantity.saturating_add(entry.quantity);
            kept.latency += entry.latency;
            kept.items = kept.items.saturating_add(entry.items);
            return;
        }
        let kept = self.days.get(&day).and_then(|kept| kept.users.get(&key));
        let cost = match kept {
            None => SLOT_BYTES,
            Some(entries) if entries.len() < entries.capacity() => 0,
            Some(entries) => {
                let grown = (entries.len() + 1).next_power_of_two();
                let heap = |capacity: usize| {
                    if capacity > 1 {
                        capacity * ENTRY_BYTES
                    } else {
                        0
                    }
                };
                heap(grown) - heap(entries.capacity())
            }
        };
        let new_user_day = kept.is_none();
        while self.bytes + cost > self.max_bytes {
            match self.days.first_key_value() {
                Some((&oldest, _)) if oldest < day => self.forget_oldest_day(),
                _ => {
                    // Refused: this day is the oldest, or alone fills the
                    // ledger.
                    self.forgotten_user_days += u64::from(new_user_day);
                    self.complete_from = self.complete_from.max(day + 1);
                    return;
                }
            }
        }
        let kept = self.days.entry(day).or_default();
        kept.bytes += cost;
        self.bytes += cost;
        kept.users.entry(key).or_default().push(entry);
    }

    /// Moves the newest day to `day`, dropping the days too old to be in
    /// any pre-period of a unit exposed from then on.
    fn advance(&mut self, day: i64) {
        self.newest_day = Some(day);
        let oldest_kept = day - i64::from(RETAINED_DAYS);
        while let Some((&oldest, _)) = self.days.first_key_value() {
            if oldest >= oldest_kept {
                break;
            }
            if let Some((_, dropped)) = self.days.pop_first() {
                self.bytes -= dropped.bytes;
            }
        }
    }

    /// Forgets the oldest day for want of room.
    fn forget_oldest_day(&mut self) {
        if let Some((oldest, forgotten)) = self.days.pop_first() {
            self.bytes -= forgotten.bytes;
            self.forgotten_user_days += forgotten.users.len() as u64;
            self.complete_from = self.complete_from.max(oldest + 1);
        }
    }

    /// The first day from which no outcome was forgotten or refused for
    /// want of room: a pre-period starting before it may miss outcomes.
    pub(crate) fn complete_from(&self) -> i64 {
        self.complete_from
    }

    fn placement_id(&mut self, placement: &str) -> u16 {
        if let Some(id) = self.placements.get(placement) {
            return *id;
        }
        if self.placements.len() >= MAX_PLACEMENTS {
            return OTHER_PLACEMENT;
        }
        let id = self.placements.len() as u16;
        self.placements.insert(placement.into(), id);
        id
    }

    /// The ledger ids of `placements`; `None` for none (every placement).
    pub(crate) fn placement_ids(&self, placements: &[String]) -> PlacementIds {
        if placements.is_empty() {
            return None;
        }
        Some(
            placements
                .iter()
                .filter_map(|placement| self.placements.get(placement.as_str()).copied())
                .collect(),
        )
    }

    /// Adds to `sums` (one per measure of `measures`) what the user of
    /// `window` did over its pre-period, counted as the experiment counts
    /// it: on the window's placements for measures restricted to them, and
    /// amounts in `currency` only.
    pub(crate) fn add_covariates(
        &self,
        window: &PrePeriodWindow<'_>,
        measures: &[Measure],
        currency: Option<Currency>,
        sums: &mut [f64],
    ) {
        let PrePeriodWindow {
            key,
            first_exposure_micros,
            days,
            placements,
        } = *window;
        let key = short_key(key);
        let exposure_day = day_of(first_exposure_micros);
        for (_, kept) in self
            .days
            .range(exposure_day - i64::from(days)..exposure_day)
        {
            let Some(entries) = kept.users.get(&key) else {
                continue;
            };
            for entry in entries {
                let here = placements.as_ref().is_none_or(|ids| {
                    ids.contains(&entry.placement) || ids.contains(&entry.source_placement)
                });
                for (sum, measure) in sums.iter_mut().zip(measures) {
                    *sum += contribution(measure, entry, here, currency);
                }
            }
        }
    }

    /// (User, day) pairs forgotten or refused for want of room.
    #[cfg(test)]
    fn forgotten_user_days(&self) -> u64 {
        self.forgotten_user_days
    }

    /// (User, day) pairs kept.
    #[cfg(test)]
    fn user_days(&self) -> usize {
        self.days.values().map(|kept| kept.users.len()).sum()
    }

    /// Forgets every outcome (the types kept stay).
    pub(crate) fn clear(&mut self) {
        *self = Self {
            kinds: self.kinds,
            placement_kinds: self.placement_kinds,
            ..Self::with_room_for(self.max_bytes)
        };
    }
}

/// The ledger's key of a unit key: its two halves folded (the unit key is
/// a SipHash-128; two of 2,000,000 users share a folded key with a chance
/// of about 1 in 10 million).
fn short_key(key: u128) -> u64 {
    (key >> 64) as u64 ^ key as u64
}

fn kind_bit(outcome_type: OutcomeType) -> u8 {
    1 << (outcome_type as u8)
}

/// What the sums of `entry` add to `measure`, as
/// `experiment::contribution` counts an outcome: amounts in another
/// currency add nothing.
fn contribution(measure: &Measure, entry: &Entry, here: bool, currency: Option<Currency>) -> f64 {
    if measure.outcome_type != entry.outcome_type
        || (measure.recommended_only && !entry.from_recommendation)
        || (measure.experiment_placements_only && !here)
    {
        return 0.0;
    }
    match measure.aggregate {
        Aggregate::Count => f64::from(entry.count),
        Aggregate::ValueSum => {
            let no_amount = entry.currency == Currency::NONE && entry.value == 0.0;
            if no_amount || Some(entry.currency) == currency {
                entry.value
            } else {
                0.0
            }
        }
        Aggregate::QuantitySum => f64::from(entry.quantity),
        Aggregate::LatencySum => f64::from(entry.latency),
        Aggregate::ItemCount => f64::from(entry.items),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(outcome_type: OutcomeType, time_micros: i64) -> OutcomeView<'static> {
        OutcomeView {
            outcome_type,
            placement: "pdp",
            source_placement: "",
            item_id: "sku",
            item_ids: &[],
            from_recommendation: false,
            value: 0.0,
            currency: Currency::NONE,
            quantity: 1,
            latency_ms: 0.0,
            time_micros,
        }
    }

    fn count(outcome_type: OutcomeType) -> Measure {
        Measure {
            outcome_type,
            recommended_only: false,
            aggregate: Aggregate::Count,
            experiment_placements_only: false,
        }
    }

    const DAY_100: i64 = 100 * DAY_MICROS;

    #[test]
    fn an_entry_takes_40_bytes_and_a_user_day_slot_64() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
        assert_eq!(std::mem::size_of::<(u64, SmallVec<[Entry; 1]>)>(), 64);
    }

    fn clicks_on(placements_only: bool) -> Measure {
        Measure {
            experiment_placements_only: placements_only,
            ..count(OutcomeType::Click)
        }
    }

    #[test]
    fn only_the_outcome_types_adjusted_metrics_read_are_kept() {
        let mut ledger = PrePeriod::default();
        for outcome_type in [
            OutcomeType::Impression,
            OutcomeType::Click,
            OutcomeType::PageLoad,
        ] {
            ledger.record(1, &view(outcome_type, DAY_100));
        }
        assert_eq!(ledger.user_days(), 0);
        for outcome_type in [
            OutcomeType::AddToCart,
            OutcomeType::Purchase,
            OutcomeType::PageView,
        ] {
            ledger.record(1, &view(outcome_type, DAY_100));
        }
        assert_eq!(ledger.user_days(), 1);
        assert_eq!(ledger.days[&100].users[&short_key(1)].len(), 3);
        // A slot, and a list of 4 entries grown from 1: 64 + 4 x 40.
        assert_eq!(ledger.bytes, 64 + 160);
        // A metric of an experiment reads clicks: kept from then on, and
        // after a clear.
        ledger.keep(&clicks_on(false));
        ledger.clear();
        ledger.record(2, &view(OutcomeType::Click, DAY_100));
        assert_eq!(ledger.user_days(), 1);
    }

    #[test]
    fn outcomes_are_told_apart_by_placement_only_for_a_measure_restricted_to_placements() {
        let mut ledger = PrePeriod::default();
        ledger.keep(&clicks_on(false));
        let window = |placements| PrePeriodWindow {
            key: 1,
            first_exposure_micros: DAY_100 + DAY_MICROS,
            days: 14,
            placements,
        };
        ledger.record(1, &view(OutcomeType::Click, DAY_100));
        let on_pdp = ledger.placement_ids(&["pdp".to_owned()]);
        let mut sums = [0.0; 2];
        ledger.add_covariates(
            &window(&on_pdp),
            &[clicks_on(false), clicks_on(true)],
            None,
            &mut sums,
        );
        // Not told apart: it counts for the unrestricted measure only.
        assert_eq!(sums, [1.0, 0.0]);
        ledger.keep(&clicks_on(true));
        ledger.record(1, &view(OutcomeType::Click, DAY_100 + 1));
        let on_pdp = ledger.placement_ids(&["pdp".to_owned()]);
        let on_cart = ledger.placement_ids(&["cart".to_owned()]);
        let mut sums = [0.0; 2];
        ledger.add_covariates(
            &window(&on_pdp),
            &[clicks_on(false), clicks_on(true)],
            None,
            &mut sums,
        );
        assert_eq!(sums, [2.0, 1.0]);
        let mut sums = [0.0; 2];
        ledger.add_covariates(
            &window(&on_cart),
            &[clicks_on(false), clicks_on(true)],
            None,
            &mut sums,
        );
        assert_eq!(sums, [2.0, 0.0]);
    }

    #[test]
    fn a_covariate_sums_the_whole_days_before_the_exposure_day_only() {
        let mut ledger = PrePeriod::default();
        ledger.keep(&clicks_on(false));
        let key = 7;
        // Days 85 (outside 14 days), 86, 99, and the exposure day 100.
        for day in [85, 86, 99, 100] {
            ledger.record(key, &view(OutcomeType::AddToCart, day * DAY_MICROS + 5));
        }
        ledger.record(key, &view(OutcomeType::Click, 99 * DAY_MICROS));
        let measures = [count(OutcomeType::AddToCart), count(OutcomeType::Click)];
        let mut sums = [0.0; 2];
        let window = |key, first_exposure_micros| PrePeriodWindow {
            key,
            first_exposure_micros,
            days: 14,
            placements: &None,
        };
        ledger.add_covariates(
            &window(key, DAY_100 + 3_600_000_000),
            &measures,
            None,
            &mut sums,
        );
        assert_eq!(
            sums,
            [2.0, 1.0],
            "days 86 and 99; not 85 nor the exposure day"
        );
        let mut other = [0.0; 2];
        ledger.add_covariates(&window(8, DAY_100), &measures, None, &mut other);
        assert_eq!(other, [0.0, 0.0], "a user without a past has 0");
    }

    #[test]
    fn days_older_than_the_longest_pre_period_and_a_week_leave_as_time_moves_on() {
        let mut ledger = PrePeriod::default();
        ledger.keep(&clicks_on(false));
        ledger.record(1, &view(OutcomeType::Click, DAY_100));
        // A gap of 20 days keeps day 100 (within 35).
        ledger.record(2, &view(OutcomeType::Click, DAY_100 + 20 * DAY_MICROS));
        assert_eq!(ledger.user_days(), 2);
        for day in 121..=136 {
            ledger.record(3, &view(OutcomeType::Click, day * DAY_MICROS));
        }
        // Day 136 keeps days 101 to 136: day 100 is gone, not forgotten.
        assert_eq!(
            ledger.days.first_key_value().map(|(day, _)| *day),
            Some(120)
        );
        assert_eq!(ledger.forgotten_user_days(), 0);
        // An outcome older than that is not kept.
        ledger.record(4, &view(OutcomeType::Click, DAY_100));
        assert!(!ledger.days.contains_key(&100));
    }

    #[test]
    fn a_full_ledger_forgets_its_oldest_day_whole_and_refuses_what_is_older() {
        // Room for four user-days of one outcome each.
        let mut ledger = PrePeriod::with_room_for(4 * SLOT_BYTES);
        ledger.keep(&clicks_on(false));
        for user in 0..3 {
            ledger.record(user, &view(OutcomeType::Click, DAY_100));
        }
        ledger.record(9, &view(OutcomeType::Click, DAY_100 + DAY_MICROS));
        assert_eq!(ledger.user_days(), 4);
        assert_eq!(ledger.complete_from(), i64::MIN);
        // A late outcome of day 99, older than every kept day: refused,
        // and day 100 stays.
        ledger.record(50, &view(OutcomeType::Click, DAY_100 - DAY_MICROS));
        assert_eq!(ledger.user_days(), 4);
        assert_eq!(ledger.forgotten_user_days(), 1);
        assert_eq!(ledger.complete_from(), 100);
        // A fifth user-day of day 101: day 100 (three users) goes.
        ledger.record(10, &view(OutcomeType::Click, DAY_100 + DAY_MICROS));
        assert_eq!(ledger.user_days(), 2);
        assert_eq!(ledger.forgotten_user_days(), 4);
        assert_eq!(ledger.complete_from(), 101);
        // Another outcome of a kept kind takes no room.
        ledger.record(10, &view(OutcomeType::Click, DAY_100 + DAY_MICROS + 1));
        assert_eq!(ledger.bytes, 2 * SLOT_BYTES);
        // One day alone filling the ledger takes no new user.
        for user in 20..24 {
            ledger.record(user, &view(OutcomeType::Click, DAY_100 + DAY_MICROS));
        }
        assert_eq!(ledger.user_days(), 4);
        assert_eq!(ledger.forgotten_user_days(), 6);
        assert_eq!(ledger.complete_from(), 102);
        assert!(ledger.bytes <= 4 * SLOT_BYTES);
    }
}
