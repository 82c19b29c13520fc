//! The two event kinds, as the contract defines them. Events are kept as
//! their `experiments.v1` messages from the RPC to the log: the proto
//! encoding is the log's record format, and the Parquet columns are named
//! after the proto fields.

use std::time::{Duration, SystemTime};

use exp_proto::v1;

/// Which dataset an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A unit seeing a variant (`events/exposures`).
    Exposure,
    /// Something a unit did or experienced (`events/outcomes`).
    Outcome,
}

impl EventKind {
    /// Both kinds, in dataset order.
    pub const ALL: [Self; 2] = [Self::Exposure, Self::Outcome];

    /// The dataset directory under `<data-dir>/events`.
    pub fn dataset(self) -> &'static str {
        match self {
            Self::Exposure => "exposures",
            Self::Outcome => "outcomes",
        }
    }

    pub(crate) fn tag(self) -> u8 {
        match self {
            Self::Exposure => 1,
            Self::Outcome => 2,
        }
    }

    pub(crate) fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Self::Exposure),
            2 => Some(Self::Outcome),
            _ => None,
        }
    }
}

/// An exposure or an outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An exposure.
    Exposure(v1::Exposure),
    /// An outcome.
    Outcome(v1::Outcome),
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

    /// When the event happened (validated events always have a time).
    pub fn time(&self) -> SystemTime {
        let timestamp = match self {
            Self::Exposure(exposure) => exposure.timestamp,
            Self::Outcome(outcome) => outcome.timestamp,
        };
        timestamp
            .and_then(|timestamp| SystemTime::try_from(timestamp).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// [`Event::time`] in microseconds since the Unix epoch.
    pub fn time_micros(&self) -> i64 {
        unix_micros(self.time())
    }
}

/// Microseconds since the Unix epoch (0 before it).
pub(crate) fn unix_micros(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The time `micros` microseconds after the Unix epoch.
pub(crate) fn from_unix_micros(micros: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
