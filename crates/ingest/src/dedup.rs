//! Event ids seen recently, so a retried event is counted once.
//!
//! Ids are kept as 128-bit SipHash-1-3 digests of (kind, id) in hourly
//! buckets by the time they were logged; a bucket is dropped once it is
//! older than the window. The window is the configured duration plus the
//! hour of bucket granularity, so an id is remembered for at least the
//! configured window (at least 24 h). Memory: about 20 to 40 bytes per id
//! remembered (a hash set of 16-byte digests), e.g. 10 million events a
//! day take 200 to 400 MB.
//!
//! The set lives in memory and is rebuilt at startup from the log
//! segments and the Parquet files written within the window.
//!
//! The writer thread checks every event against it while a group waits
//! for its fsync, so growth must not stall: digests are already uniform,
//! so they are their own hash (no rehashing through SipHash when a table
//! grows), and each hour's ids are split over [`SHARDS`] tables that grow
//! one at a time (a growth step moves 1/16 of the hour's ids, not all).

use std::{
    collections::{HashSet, VecDeque},
    hash::Hasher,
    time::Duration,
};

use exp_core::digest::BuildDigestHasher;
use siphasher::sip128::{Hasher128, SipHasher13};

use exp_core::event::EventKind;

/// A digest of one event id of one kind.
pub type IdDigest = u128;

/// The digest of `event_id` for events of `kind`.
pub fn digest(kind: EventKind, event_id: &str) -> IdDigest {
    let mut hasher = SipHasher13::new();
    hasher.write_u8(crate::wal::tag(kind));
    hasher.write(event_id.as_bytes());
    hasher.finish128().as_u128()
}

/// Tables per hour.
pub const SHARDS: usize = 16;

type IdSet = HashSet<IdDigest, BuildDigestHasher>;

/// The ids first logged in one hour, spread over [`SHARDS`] tables by
/// their top bits.
#[derive(Debug)]
struct Hour {
    hour: u64,
    shards: Vec<IdSet>,
}

impl Hour {
    fn new(hour: u64) -> Self {
        Self {
            hour,
            shards: (0..SHARDS).map(|_| IdSet::default()).collect(),
        }
    }

    fn shard(id: IdDigest) -> usize {
        (id >> 124) as usize % SHARDS
    }

    fn contains(&self, id: IdDigest) -> bool {
        self.shards[Self::shard(id)].contains(&id)
    }

    /// Whether `id` was new to this hour (and is now remembered).
    fn insert(&mut self, id: IdDigest) -> bool {
        self.shards[Self::shard(id)].insert(id)
    }

    fn remove(&mut self, id: IdDigest) {
        self.shards[Self::shard(id)].remove(&id);
    }

    fn len(&self) -> usize {
        self.shards.iter().map(IdSet::len).sum()
    }
}

/// Recently seen event ids in hourly buckets.
#[derive(Debug)]
pub struct SeenIds {
    window_hours: u64,
    /// The hours' ids, oldest first.
    buckets: VecDeque<Hour>,
}

impl SeenIds {
    /// Remembers ids for at least `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window_hours: window.as_secs().div_ceil(3_600) + 1,
            buckets: VecDeque::new(),
        }
    }

    /// Whether `id` was seen within the window.
    pub fn contains(&self, id: IdDigest) -> bool {
        self.buckets.iter().any(|bucket| bucket.contains(id))
    }

    /// Records `id` as logged at `unix_ms`.
    pub fn insert(&mut self, id: IdDigest, unix_ms: u64) {
        let index = self.bucket_of(unix_ms);
        self.buckets[index].insert(id);
    }

    /// Records `id` as logged at `unix_ms` unless it was seen within the
    /// window: whether it was new. One lookup in the hour it goes to
    /// (`contains` then `insert` would take two).
    pub fn insert_if_new(&mut self, id: IdDigest, unix_ms: u64) -> bool {
        let index = self.bucket_of(unix_ms);
        let elsewhere = self
            .buckets
            .iter()
            .enumerate()
            .any(|(other, bucket)| other != index && bucket.contains(id));
        !elsewhere && self.buckets[index].insert(id)
    }

    /// The index of the bucket of the hour of `unix_ms`, added if missing.
    fn bucket_of(&mut self, unix_ms: u64) -> usize {
        let hour = unix_ms / 3_600_000;
        let position = self.buckets.iter().position(|bucket| bucket.hour >= hour);
        match position {
            Some(index) if self.buckets[index].hour == hour => index,
            Some(index) => {
                self.buckets.insert(index, Hour::new(hour));
                index
            }
            None => {
                self.buckets.push_back(Hour::new(hour));
                self.buckets.len() - 1
            }
        }
    }

    /// Forgets `id` (its write failed).
    pub fn remove(&mut self, id: IdDigest) {
        for bucket in &mut self.buckets {
            bucket.remove(id);
        }
    }

    /// Drops the buckets that fell out of the window at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        let hour = now_ms / 3_600_000;
        while let Some(oldest) = self.buckets.front() {
            if oldest.hour + self.window_hours >= hour {
                break;
            }
            self.buckets.pop_front();
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.buckets.iter().map(Hour::len).sum()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The window in whole hours, bucket granularity included.
    pub fn window_hours(&self) -> u64 {
        self.window_hours
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3_600_000;

    #[test]
    fn an_id_is_remembered_for_the_whole_window_then_forgotten() {
        let mut seen = SeenIds::new(Duration::from_secs(24 * 3600));
        let id = digest(EventKind::Outcome, "o-1");
        let logged = 1_000 * HOUR_MS + HOUR_MS - 1;
        seen.insert(id, logged);
        seen.expire(logged + 24 * HOUR_MS);
        assert!(seen.contains(id), "still inside 24 h");
        seen.expire(logged + 26 * HOUR_MS + 1);
        assert!(!seen.contains(id), "forgotten after the window");
        assert!(seen.is_empty());
    }

    #[test]
    fn insert_if_new_refuses_an_id_seen_in_this_hour_or_an_earlier_one() {
        let mut seen = SeenIds::new(Duration::from_secs(24 * 3600));
        assert!(seen.insert_if_new(1, 10 * HOUR_MS));
        assert!(!seen.insert_if_new(1, 10 * HOUR_MS + 5), "same hour");
        assert!(!seen.insert_if_new(1, 11 * HOUR_MS), "an hour later");
        assert!(seen.insert_if_new(2, 11 * HOUR_MS));
        assert_eq!(seen.len(), 2, "a refused id is not remembered twice");
        seen.expire(11 * HOUR_MS + 26 * HOUR_MS);
        assert!(
            seen.insert_if_new(1, 37 * HOUR_MS),
            "new again once forgotten"
        );
    }

    #[test]
    fn the_same_id_of_another_kind_is_another_event() {
        assert_ne!(
            digest(EventKind::Exposure, "e-1"),
            digest(EventKind::Outcome, "e-1")
        );
    }

    #[test]
    fn late_inserts_land_in_their_own_hour_in_order() {
        let mut seen = SeenIds::new(Duration::from_secs(24 * 3600));
        seen.insert(1, 10 * HOUR_MS);
        seen.insert(2, 8 * HOUR_MS);
        seen.insert(3, 9 * HOUR_MS);
        seen.remove(3);
        assert_eq!(seen.len(), 2);
        seen.expire(10 * HOUR_MS + 25 * HOUR_MS);
        assert!(!seen.contains(2));
        assert!(seen.contains(1));
    }
}
