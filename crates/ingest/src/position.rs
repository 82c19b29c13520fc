//! Positions in the event log.

use std::fmt;

/// Where the log is: every event of the segments before `segment`, and the
/// first `events` events of `segment`. Positions grow as the log does and
/// survive restarts (segments are numbered for good), so a position a
/// client was given stays meaningful; the numbers in between are not
/// counts of events (a segment's number grows by one whatever it holds).
///
/// On the wire a position is the `u64` [`Position::as_u64`] gives: the
/// segment number in the high 40 bits, the events in the low 24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(u64);

impl Position {
    /// The start of the log: no event.
    pub const ZERO: Self = Self(0);
    /// Bits of the event count.
    const EVENT_BITS: u32 = 24;
    /// Most events a segment holds; the writer starts a new segment
    /// before a group would go past it.
    pub const MAX_SEGMENT_EVENTS: u64 = (1 << Self::EVENT_BITS) - 1;

    /// The position after the first `events` events of segment `segment`.
    pub fn new(segment: u64, events: u64) -> Self {
        Self((segment << Self::EVENT_BITS) | events.min(Self::MAX_SEGMENT_EVENTS))
    }

    /// The segment.
    pub fn segment(self) -> u64 {
        self.0 >> Self::EVENT_BITS
    }

    /// Events of the segment before the position.
    pub fn events(self) -> u64 {
        self.0 & Self::MAX_SEGMENT_EVENTS
    }

    /// The wire form.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// A position from its wire form.
    pub fn from_u64(value: u64) -> Self {
        Self(value)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (segment {}, event {})",
            self.0,
            self.segment(),
            self.events()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_segment_then_event_and_round_trip_through_the_wire() {
        let early = Position::new(7, Position::MAX_SEGMENT_EVENTS);
        let later = Position::new(8, 0);
        assert!(Position::ZERO < early && early < later);
        assert_eq!((later.segment(), later.events()), (8, 0));
        assert_eq!(Position::from_u64(early.as_u64()), early);
        assert_eq!(early.events(), Position::MAX_SEGMENT_EVENTS);
    }
}
