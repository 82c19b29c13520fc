//! The window of recent outcomes: the last [`RECENT_OUTCOMES`] outcomes,
//! filed under every unit key they carry, replayed into a unit when it is
//! created, so an outcome that arrives before its unit's exposure still
//! counts (as a rebuild from the log, which reads exposures first, would
//! count it).

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use exp_core::{
    event::{Outcome, unix_micros},
    metrics::OutcomeType,
};

/// Outcomes kept for units whose exposure arrives after them.
pub const RECENT_OUTCOMES: usize = 100_000;

/// An ISO 4217 code in three bytes: what the window keeps of an outcome's
/// currency, and what a value measure compares it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Currency([u8; 3]);

impl Currency {
    /// No currency: the outcome carries no amount.
    pub(crate) const NONE: Self = Self([0; 3]);

    /// The code `code`; [`Self::NONE`] when empty, and `???` when it is
    /// not three bytes (ingest refuses those; it never equals a valid
    /// experiment currency).
    pub(crate) fn parse(code: &str) -> Self {
        match code.as_bytes() {
            [] => Self::NONE,
            [a, b, c] => Self([*a, *b, *c]),
            _ => Self(*b"???"),
        }
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == Self::NONE {
            return f.write_str("no currency");
        }
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// What the per-unit sums read of an outcome, borrowed from a domain
/// [`Outcome`] as it arrives or from a [`RecentOutcome`] replayed later:
/// one code path counts both.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutcomeView<'a> {
    pub(crate) outcome_type: OutcomeType,
    pub(crate) placement: &'a str,
    pub(crate) source_placement: &'a str,
    pub(crate) item_id: &'a str,
    pub(crate) item_ids: &'a [String],
    pub(crate) from_recommendation: bool,
    pub(crate) value: f64,
    pub(crate) currency: Currency,
    pub(crate) quantity: u32,
    pub(crate) latency_ms: f64,
    pub(crate) time_micros: i64,
}

impl<'a> OutcomeView<'a> {
    /// The view of an outcome as it arrives.
    pub(crate) fn of(outcome: &'a Outcome) -> Self {
        Self {
            outcome_type: outcome.outcome_type,
            placement: &outcome.placement,
            source_placement: &outcome.source_placement,
            item_id: &outcome.item_id,
            item_ids: &outcome.item_ids,
            from_recommendation: outcome.from_recommendation,
            value: outcome.value,
            currency: Currency::parse(&outcome.currency),
            quantity: outcome.quantity,
            latency_ms: outcome.latency_ms,
            time_micros: unix_micros(outcome.timestamp),
        }
    }
}

/// What a unit created later needs of an outcome: the fields the sums
/// read, without the event id, page type or attributes of the domain
/// [`Outcome`] (its unit keys are where it is filed).
#[derive(Debug)]
pub(crate) struct RecentOutcome {
    outcome_type: OutcomeType,
    placement: Box<str>,
    source_placement: Box<str>,
    item_id: Box<str>,
    item_ids: Box<[String]>,
    from_recommendation: bool,
    value: f64,
    currency: Currency,
    quantity: u32,
    latency_ms: f64,
    pub(crate) time_micros: i64,
    /// Whether it was counted for some unit. Atomic only because the
    /// outcome is shared (`Arc`) between the keys it is filed under and
    /// the analyzer must stay `Sync`; nothing reads it concurrently.
    counted: AtomicBool,
}

impl RecentOutcome {
    fn keep(outcome: OutcomeView<'_>, counted: bool) -> Self {
        Self {
            outcome_type: outcome.outcome_type,
            placement: outcome.placement.into(),
            source_placement: outcome.source_placement.into(),
            item_id: outcome.item_id.into(),
            item_ids: outcome.item_ids.into(),
            from_recommendation: outcome.from_recommendation,
            value: outcome.value,
            currency: outcome.currency,
            quantity: outcome.quantity,
            latency_ms: outcome.latency_ms,
            time_micros: outcome.time_micros,
            counted: AtomicBool::new(counted),
        }
    }

    /// The view the sums read.
    pub(crate) fn view(&self) -> OutcomeView<'_> {
        OutcomeView {
            outcome_type: self.outcome_type,
            placement: &self.placement,
            source_placement: &self.source_placement,
            item_id: &self.item_id,
            item_ids: &self.item_ids,
            from_recommendation: self.from_recommendation,
            value: self.value,
            currency: self.currency,
            quantity: self.quantity,
            latency_ms: self.latency_ms,
            time_micros: self.time_micros,
        }
    }

    /// Notes that it was counted for some unit.
    pub(crate) fn mark_counted(&self) {
        self.counted.store(true, Ordering::Relaxed);
    }
}

/// The last [`RECENT_OUTCOMES`] outcome copies, by unit key.
#[derive(Debug, Default)]
pub(crate) struct RecentOutcomes {
    /// The kept outcomes, by each unit key they carry.
    by_key: HashMap<u128, Vec<Arc<RecentOutcome>>>,
    /// (key, outcome) in arrival order, for eviction.
    order: VecDeque<(u128, Arc<RecentOutcome>)>,
}

impl RecentOutcomes {
    /// The kept outcomes of the unit with `key`, in arrival order.
    pub(crate) fn of(&self, key: u128) -> &[Arc<RecentOutcome>] {
        self.by_key.get(&key).map_or(&[], Vec::as_slice)
    }

    /// Copies kept (one per key an outcome carries).
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Keeps `outcome` under `keys`, evicting the oldest copies past
    /// [`RECENT_OUTCOMES`]; the number of evicted outcomes that were never
    /// counted for any unit.
    pub(crate) fn remember(
        &mut self,
        keys: &[u128],
        outcome: OutcomeView<'_>,
        counted: bool,
    ) -> u64 {
        if keys.is_empty() {
            return 0;
        }
        let recent = Arc::new(RecentOutcome::keep(outcome, counted));
        for key in keys {
            self.by_key.entry(*key).or_default().push(recent.clone());
            self.order.push_back((*key, recent.clone()));
        }
        drop(recent);
        let mut lost = 0;
        while self.order.len() > RECENT_OUTCOMES {
            let Some((key, oldest)) = self.order.pop_front() else {
                break;
            };
            if let Some(kept) = self.by_key.get_mut(&key) {
                kept.retain(|outcome| !Arc::ptr_eq(outcome, &oldest));
                if kept.is_empty() {
                    self.by_key.remove(&key);
                }
            }
            // Counted once, when its last copy leaves.
            if Arc::strong_count(&oldest) == 1 && !oldest.counted.load(Ordering::Relaxed) {
                lost += 1;
            }
        }
        lost
    }

    /// Forgets every outcome.
    pub(crate) fn clear(&mut self) {
        self.by_key.clear();
        self.order.clear();
    }
}
