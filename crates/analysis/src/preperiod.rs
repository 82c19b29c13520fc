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
//! - at most [`MAX_USER_DAYS`] (user, day) pairs; past that the oldest day
//!   is forgotten whole (the newest days serve the pre-periods of the
//!   units being exposed now), and a day that alone fills the ledger takes
//!   no new user. Both are counted ([`PrePeriod::forgotten_user_days`]).
//!   A user-day costs a 64-byte slot of a hash table (with its spare
//!   room, 73 to 146 bytes), plus 40 bytes per further kind of outcome
//!   that day: 2,000,000 of them take 150 to 300 MB;
//! - at most [`MAX_PLACEMENTS`] placements are told apart; outcomes on
//!   the others count only for measures that are not restricted to the
//!   experiment's placements;
//! - an outcome more than a day ahead of the newest day moves nothing and
//!   is not kept (a client clock in the future must not empty the
//!   ledger), unless [`AHEAD_IN_A_ROW`] in a row are: traffic resumed
//!   after a pause.

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

/// Most (user, day) pairs kept.
pub const MAX_USER_DAYS: usize = 2_000_000;

/// Most placements told apart.
pub const MAX_PLACEMENTS: usize = 1_024;

/// Outcomes more than a day ahead in a row that move the ledger on.
pub const AHEAD_IN_A_ROW: u32 = 16;

const DAY_MICROS: i64 = 86_400_000_000;

/// The placement id of every placement past [`MAX_PLACEMENTS`]: equal to
/// none an experiment names.
const OTHER_PLACEMENT: u16 = u16::MAX;

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

/// Every user's outcomes of the last days, per day.
#[derive(Debug)]
pub(crate) struct PrePeriod {
    days: BTreeMap<i64, HashMap<u64, SmallVec<[Entry; 1]>>>,
    /// The outcome types kept, a bit per [`OutcomeType`].
    kinds: u8,
    max_user_days: usize,
    user_days: usize,
    newest_day: Option<i64>,
    ahead_in_a_row: u32,
    placements: HashMap<Box<str>, u16>,
    forgotten_user_days: u64,
}

impl Default for PrePeriod {
    fn default() -> Self {
        Self::with_room_for(MAX_USER_DAYS)
    }
}

impl PrePeriod {
    /// An empty ledger of at most `max_user_days` (user, day) pairs.
    fn with_room_for(max_user_days: usize) -> Self {
        let mut kinds = 0;
        for metric in metrics::catalogue() {
            if cuped_applies(metric.kind) {
                kinds |= kind_bit(metric.numerator.outcome_type);
            }
        }
        Self {
            days: BTreeMap::new(),
            kinds,
            max_user_days,
            user_days: 0,
            newest_day: None,
            ahead_in_a_row: 0,
            placements: HashMap::new(),
            forgotten_user_days: 0,
        }
    }

    /// Keeps outcomes of `outcome_type` from now on.
    pub(crate) fn keep(&mut self, outcome_type: OutcomeType) {
        self.kinds |= kind_bit(outcome_type);
    }

    /// Keeps `outcome` of the user with `key`, if it is of a type kept.
    pub(crate) fn record(&mut self, key: u128, outcome: &OutcomeView<'_>) {
        if self.kinds & kind_bit(outcome.outcome_type) == 0 {
            return;
        }
        let key = short_key(key);
        let day = day_of(outcome.time_micros);
        match self.newest_day {
            Some(newest) if day > newest + 1 => {
                self.ahead_in_a_row += 1;
                if self.ahead_in_a_row < AHEAD_IN_A_ROW {
                    return;
                }
                self.advance(day);
            }
            Some(newest) if day > newest => {
                self.ahead_in_a_row = 0;
                self.advance(day);
            }
            Some(newest) => {
                self.ahead_in_a_row = 0;
                if day < newest - i64::from(MAX_PRE_PERIOD_DAYS) {
                    return;
                }
            }
            None => self.advance(day),
        }
        let entry = Entry {
            outcome_type: outcome.outcome_type,
            from_recommendation: outcome.from_recommendation,
            placement: self.placement_id(outcome.placement),
            source_placement: self.placement_id(outcome.source_placement),
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
        if !self
            .days
            .get(&day)
            .is_some_and(|users| users.contains_key(&key))
        {
            if self.user_days >= self.max_user_days {
                self.forget_oldest_day_but(day);
            }
            if self.user_days >= self.max_user_days {
                self.forgotten_user_days += 1;
                return;
            }
            self.user_days += 1;
        }
        let entries = self.days.entry(day).or_default().entry(key).or_default();
        match entries.iter_mut().find(|kept| kept.same_kind(&entry)) {
            Some(kept) => {
                kept.count = kept.count.saturating_add(entry.count);
                kept.value += entry.value;
                kept.quantity = kept.quantity.saturating_add(entry.quantity);
                kept.latency += entry.latency;
                kept.items = kept.items.saturating_add(entry.items);
            }
            None => entries.push(entry),
        }
    }

    /// Moves the newest day to `day`, forgetting the days too old to be in
    /// any pre-period of a unit exposed from then on.
    fn advance(&mut self, day: i64) {
        self.newest_day = Some(day);
        self.ahead_in_a_row = 0;
        let oldest_kept = day - i64::from(MAX_PRE_PERIOD_DAYS);
        while let Some((&oldest, _)) = self.days.first_key_value() {
            if oldest >= oldest_kept {
                break;
            }
            if let Some((_, users)) = self.days.pop_first() {
                self.user_days -= users.len();
            }
        }
    }

    /// Forgets the oldest day, unless it is `day`.
    fn forget_oldest_day_but(&mut self, day: i64) {
        if let Some((&oldest, _)) = self.days.first_key_value()
            && oldest != day
            && let Some((_, users)) = self.days.pop_first()
        {
            self.user_days -= users.len();
            self.forgotten_user_days += users.len() as u64;
        }
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
        for (_, users) in self
            .days
            .range(exposure_day - i64::from(days)..exposure_day)
        {
            let Some(entries) = users.get(&key) else {
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
    pub(crate) fn forgotten_user_days(&self) -> u64 {
        self.forgotten_user_days
    }

    /// (User, day) pairs kept.
    #[cfg(test)]
    fn user_days(&self) -> usize {
        self.user_days
    }

    /// Forgets every outcome (the types kept stay).
    pub(crate) fn clear(&mut self) {
        *self = Self {
            kinds: self.kinds,
            ..Self::with_room_for(self.max_user_days)
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
        assert_eq!(ledger.days[&100][&short_key(1)].len(), 3);
        // A metric of an experiment reads clicks: kept from then on, and
        // after a clear.
        ledger.keep(OutcomeType::Click);
        ledger.clear();
        ledger.record(2, &view(OutcomeType::Click, DAY_100));
        assert_eq!(ledger.user_days(), 1);
    }

    #[test]
    fn a_covariate_sums_the_whole_days_before_the_exposure_day_only() {
        let mut ledger = PrePeriod::default();
        ledger.keep(OutcomeType::Click);
        let key = 7;
        // Days 85 (outside 14 days), 86, 99, and the exposure day 100,
        // while other users come every day.
        for day in 85..=100 {
            ledger.record(1, &view(OutcomeType::AddToCart, day * DAY_MICROS));
            if [85, 86, 99, 100].contains(&day) {
                ledger.record(key, &view(OutcomeType::AddToCart, day * DAY_MICROS + 5));
            }
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
    fn the_oldest_days_leave_as_time_moves_on_and_a_far_future_clock_moves_nothing() {
        let mut ledger = PrePeriod::default();
        ledger.keep(OutcomeType::Click);
        ledger.record(1, &view(OutcomeType::Click, DAY_100));
        ledger.record(2, &view(OutcomeType::Click, DAY_100 + 20 * DAY_MICROS));
        assert_eq!(ledger.user_days(), 1, "20 days ahead is not kept");
        for day in 101..=129 {
            ledger.record(3, &view(OutcomeType::Click, day * DAY_MICROS));
        }
        // Day 129 keeps days 101 to 129: day 100 is gone.
        assert_eq!(ledger.user_days(), 29);
        assert_eq!(
            ledger.days.first_key_value().map(|(day, _)| *day),
            Some(101)
        );
    }

    #[test]
    fn a_full_ledger_forgets_its_oldest_day_whole_and_counts_it() {
        let mut ledger = PrePeriod::with_room_for(4);
        ledger.keep(OutcomeType::Click);
        for user in 0..3 {
            ledger.record(user, &view(OutcomeType::Click, DAY_100));
        }
        ledger.record(9, &view(OutcomeType::Click, DAY_100 + DAY_MICROS));
        assert_eq!(ledger.user_days(), 4);
        // A fifth user-day: day 100 (three users) goes.
        ledger.record(10, &view(OutcomeType::Click, DAY_100 + DAY_MICROS));
        assert_eq!(ledger.user_days(), 2);
        assert_eq!(ledger.forgotten_user_days(), 3);
        // A known user-day takes no room.
        ledger.record(10, &view(OutcomeType::AddToCart, DAY_100 + DAY_MICROS));
        assert_eq!(ledger.user_days(), 2);
        // One day alone filling the ledger takes no new user.
        for user in 20..24 {
            ledger.record(user, &view(OutcomeType::Click, DAY_100 + DAY_MICROS));
        }
        assert_eq!(ledger.user_days(), 4);
        assert_eq!(ledger.forgotten_user_days(), 5);
    }
}
