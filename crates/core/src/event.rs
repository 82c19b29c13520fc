//! Events: a unit seeing a variant (an [`Exposure`]) and something a unit
//! did or experienced (an [`Outcome`]).
//!
//! These are the one form an event has inside the service: assignment
//! makes exposures, the event edge converts the wire messages into them
//! once, the event log stores them, the Parquet datasets are their columns
//! and the analysis reads them. Field names are the contract's.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use crate::{UnitType, metrics::OutcomeType};

/// Which dataset an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A unit seeing a variant (`events/exposures`).
    Exposure,
    /// Something a unit did or experienced (`events/outcomes`).
    Outcome,
}

impl EventKind {
    /// Both kinds, in dataset order.
    pub const ALL: [Self; 2] = [Self::Exposure, Self::Outcome];

    /// The dataset's name (its directory under `<data-dir>/events`).
    pub fn dataset(self) -> &'static str {
        match self {
            Self::Exposure => "exposures",
            Self::Outcome => "outcomes",
        }
    }
}

/// A unit seeing a variant of an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    /// The sender's id of the event; a retry reuses it.
    pub event_id: String,
    /// The experiment.
    pub experiment_id: String,
    /// The variant shown.
    pub variant: String,
    /// Logged-in user id; empty when anonymous.
    pub user_id: String,
    /// Session id; may be empty for a logged-in user.
    pub session_id: String,
    /// Which id was bucketed: the analysis unit.
    pub unit_type: UnitType,
    /// Where the variant was shown.
    pub placement: String,
    /// The page type of the request.
    pub page_type: String,
    /// The experiment revision that assigned it.
    pub revision: u64,
    /// When the unit was exposed.
    pub timestamp: SystemTime,
}

impl Exposure {
    /// The bucketed id: the user id for a user unit, else the session id.
    pub fn unit_id(&self) -> &str {
        match self.unit_type {
            UnitType::User => &self.user_id,
            UnitType::Session => &self.session_id,
        }
    }
}

/// Something a unit did or experienced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The sender's id of the event; a retry reuses it.
    pub event_id: String,
    /// What happened (`type` on the wire and in Parquet).
    pub outcome_type: OutcomeType,
    /// Logged-in user id; empty when anonymous.
    pub user_id: String,
    /// Session id.
    pub session_id: String,
    /// Where it happened.
    pub placement: String,
    /// The page type where it happened.
    pub page_type: String,
    /// The item of a click, add-to-cart or purchase.
    pub item_id: String,
    /// The items of an impression.
    pub item_ids: Vec<String>,
    /// Whether the item came from a recommendation.
    pub from_recommendation: bool,
    /// The placement that recommended the item (attribution).
    pub source_placement: String,
    /// Purchase value, in `currency`.
    pub value: f64,
    /// ISO 4217 code of `value`; empty when there is no value.
    pub currency: String,
    /// Number of items.
    pub quantity: u32,
    /// Page load time in milliseconds.
    pub latency_ms: f64,
    /// When it happened.
    pub timestamp: SystemTime,
    /// Free-form attributes.
    pub attributes: BTreeMap<String, String>,
}

/// An exposure or an outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An exposure.
    Exposure(Exposure),
    /// An outcome.
    Outcome(Outcome),
}

impl Event {
    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Exposure(_) => EventKind::Exposure,
            Self::Outcome(_) => EventKind::Outcome,
        }
    }

    /// The sender's id of the event.
    pub fn event_id(&self) -> &str {
        match self {
            Self::Exposure(exposure) => &exposure.event_id,
            Self::Outcome(outcome) => &outcome.event_id,
        }
    }

    /// When the event happened.
    pub fn timestamp(&self) -> SystemTime {
        match self {
            Self::Exposure(exposure) => exposure.timestamp,
            Self::Outcome(outcome) => outcome.timestamp,
        }
    }
}

impl From<Exposure> for Event {
    fn from(exposure: Exposure) -> Self {
        Self::Exposure(exposure)
    }
}

impl From<Outcome> for Event {
    fn from(outcome: Outcome) -> Self {
        Self::Outcome(outcome)
    }
}

/// Microseconds since the Unix epoch; negative before it, saturating.
pub fn unix_micros(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros()).map_or(i64::MIN, |m| -m),
    }
}

/// The time `micros` microseconds after the Unix epoch (before it when
/// negative).
pub fn from_unix_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        SystemTime::UNIX_EPOCH + magnitude
    } else {
        SystemTime::UNIX_EPOCH - magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microseconds_round_trip_on_both_sides_of_the_epoch() {
        for micros in [0, 1, -1, 1_764_000_000_123_456, -86_400_000_000] {
            assert_eq!(unix_micros(from_unix_micros(micros)), micros);
        }
    }

    #[test]
    fn an_exposure_unit_is_the_id_its_unit_type_names() {
        let mut exposure = Exposure {
            event_id: "e-1".into(),
            experiment_id: "reco_ymal_v1".into(),
            variant: "control".into(),
            user_id: "u-1".into(),
            session_id: "s-1".into(),
            unit_type: UnitType::User,
            placement: String::new(),
            page_type: String::new(),
            revision: 1,
            timestamp: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(exposure.unit_id(), "u-1");
        exposure.unit_type = UnitType::Session;
        assert_eq!(exposure.unit_id(), "s-1");
    }
}
