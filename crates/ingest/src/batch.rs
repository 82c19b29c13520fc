//! Events on their way into the log, encoded by their caller.

use exp_core::event::Event;

use crate::{
    dedup::{IdDigest, digest},
    wal,
};

/// Events on their way into the log, each with its id digest and its
/// segment record, encoded as they are pushed: by the caller, on its own
/// task, before the batch joins the writer's queue. The writer, the one
/// stage every append waits for, then only checks ids and copies bytes,
/// and callers encode in parallel.
#[derive(Debug, Default)]
pub struct Batch {
    events: Vec<Event>,
    digests: Vec<IdDigest>,
    /// The events' records back to back, as [`wal::encode`] writes them.
    records: Vec<u8>,
    /// Where each event's record ends in `records`.
    ends: Vec<usize>,
}

impl Batch {
    /// An empty batch with room for `events` events.
    pub fn with_capacity(events: usize) -> Self {
        Self {
            events: Vec::with_capacity(events),
            digests: Vec::with_capacity(events),
            records: Vec::new(),
            ends: Vec::with_capacity(events),
        }
    }

    /// Adds `event`, encoding it.
    pub fn push(&mut self, event: impl Into<Event>) {
        let event = event.into();
        self.digests.push(digest(event.kind(), event.event_id()));
        wal::encode(&event, &mut self.records);
        self.ends.push(self.records.len());
        self.events.push(event);
    }

    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events, in order.
    pub fn into_events(self) -> Vec<Event> {
        self.events
    }

    /// Each event's id digest and record, in order.
    pub(crate) fn records(&self) -> impl Iterator<Item = (IdDigest, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.digests
            .iter()
            .zip(starts.zip(&self.ends))
            .map(|(id, (start, end))| (*id, &self.records[start..*end]))
    }
}

impl<E: Into<Event>> FromIterator<E> for Batch {
    fn from_iter<I: IntoIterator<Item = E>>(events: I) -> Self {
        let events = events.into_iter();
        let mut batch = Self::with_capacity(events.size_hint().0);
        for event in events {
            batch.push(event);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::click;

    #[test]
    fn a_batch_holds_each_event_with_its_id_digest_and_its_segment_record() {
        let events: Vec<Event> = vec![click("a").into(), click("b").into()];
        let batch: Batch = events.iter().cloned().collect();
        let records: Vec<(IdDigest, Vec<u8>)> = batch
            .records()
            .map(|(id, record)| (id, record.to_vec()))
            .collect();
        let expected: Vec<(IdDigest, Vec<u8>)> = events
            .iter()
            .map(|event| {
                let mut record = Vec::new();
                wal::encode(event, &mut record);
                (digest(event.kind(), event.event_id()), record)
            })
            .collect();
        assert_eq!(records, expected);
        assert_eq!(batch.into_events(), events);
    }
}
