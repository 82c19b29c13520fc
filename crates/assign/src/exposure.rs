//! Exposure records: who saw which variant, where and when. Assignment
//! offers them to a bounded queue and never waits (a full queue drops the
//! record and counts it). Whoever drains the queue (event ingest in
//! process, or the forwarder to a remote one) passes the records through a
//! [`RepeatFilter`] first: a repeat of a unit's exposure to the same
//! variant within [`REPEAT_WINDOW`] is suppressed (a moka cache keyed by
//! experiment, variant, unit type and unit id), so a user refreshing a
//! page does not write a thousand exposures. The filter runs there, not on
//! the request path, because a cache insert costs microseconds.

use std::{
    hash::{BuildHasher, Hasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use exp_core::{UnitType, digest::BuildDigestHasher, event::Exposure};
use moka::{policy::EvictionPolicy, sync::Cache};
use siphasher::sip128::{Hasher128, SipHasher13};
use tokio::sync::mpsc;

/// How long a unit's exposure to a variant suppresses its repeats.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(3600);
/// Most (experiment, variant, unit) keys remembered; the least recently
/// used go first. At 10,000 new keys a second that is 100 s: past that
/// rate, capacity rather than [`REPEAT_WINDOW`] bounds how long a repeat
/// is suppressed.
pub const REPEAT_CAPACITY: u64 = 1_000_000;

/// One exposure of a unit to a variant by a bucketed assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposureRecord {
    /// Experiment id.
    pub experiment_id: Arc<str>,
    /// Variant shown.
    pub variant: Arc<str>,
    /// User id, if any.
    pub user_id: String,
    /// Session id, if any.
    pub session_id: String,
    /// Which id was the unit.
    pub unit_type: UnitType,
    /// Placement of the request.
    pub placement: String,
    /// Page type of the request.
    pub page_type: String,
    /// Experiment revision that assigned it.
    pub revision: u64,
    /// When.
    pub timestamp: SystemTime,
}

impl ExposureRecord {
    /// The unit's id.
    pub fn unit_id(&self) -> &str {
        match self.unit_type {
            UnitType::User => &self.user_id,
            UnitType::Session => &self.session_id,
        }
    }

    /// The record as an exposure event, with an event id derived from the
    /// experiment, variant, unit and time (the same record always gets the
    /// same id, so a resend is a harmless duplicate).
    pub fn into_exposure(self) -> Exposure {
        let micros = self
            .timestamp
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_micros());
        let event_id = format!(
            "assign-{:032x}",
            digest(
                EVENT_ID_KEYS,
                &[
                    &self.experiment_id,
                    &self.variant,
                    self.unit_type.as_str(),
                    self.unit_id(),
                    &micros.to_string(),
                ]
            )
        );
        Exposure {
            event_id,
            experiment_id: self.experiment_id.to_string(),
            variant: self.variant.to_string(),
            unit_type: self.unit_type,
            user_id: self.user_id,
            session_id: self.session_id,
            placement: self.placement,
            page_type: self.page_type,
            revision: self.revision,
            timestamp: self.timestamp,
        }
    }
}

/// Keys of exposure event ids: fixed, so a record's id is the same in
/// every process that sends it.
const EVENT_ID_KEYS: (u64, u64) = (0, 0);

fn digest(keys: (u64, u64), parts: &[&str]) -> u128 {
    let mut hasher = SipHasher13::new_with_keys(keys.0, keys.1);
    for part in parts {
        hasher.write(part.as_bytes());
        hasher.write_u8(0xff);
    }
    hasher.finish128().as_u128()
}

/// The sending side of the exposure queue.
#[derive(Debug, Clone)]
pub struct ExposureQueue {
    sender: mpsc::Sender<ExposureRecord>,
    offered: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl ExposureQueue {
    /// A queue of `capacity` records and its receiving end.
    pub fn bounded(capacity: usize) -> (Self, mpsc::Receiver<ExposureRecord>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (
            Self {
                sender,
                offered: Arc::default(),
                dropped: Arc::default(),
            },
            receiver,
        )
    }

    /// Offers a record without waiting; a full or closed queue drops it.
    pub fn offer(&self, record: ExposureRecord) {
        self.offered.fetch_add(1, Ordering::Relaxed);
        if self.sender.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records offered so far.
    pub fn offered(&self) -> u64 {
        self.offered.load(Ordering::Relaxed)
    }

    /// Records dropped because the queue was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The counters alone, for metrics: unlike the queue, they do not
    /// keep it open.
    pub fn counters(&self) -> QueueCounters {
        QueueCounters {
            offered: self.offered.clone(),
            dropped: self.dropped.clone(),
        }
    }
}

/// The counters of an [`ExposureQueue`].
#[derive(Debug, Clone)]
pub struct QueueCounters {
    offered: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl QueueCounters {
    /// Records offered so far.
    pub fn offered(&self) -> u64 {
        self.offered.load(Ordering::Relaxed)
    }

    /// Records dropped because the queue was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Lets through the first exposure of a unit to a variant per
/// [`REPEAT_WINDOW`]; cheap to clone (one shared cache).
#[derive(Debug, Clone)]
pub struct RepeatFilter {
    /// Digests of (experiment, variant, unit type, unit id), which the
    /// cache takes as their own hash: once the filter is full every insert
    /// evicts, and moka's table is rebuilt from time to time
    /// (`BucketArray::rehash`); hashing every key through SipHash again
    /// made those rebuilds most of the filter's cost.
    recent: Cache<u128, (), BuildDigestHasher>,
    /// The digests' keys, drawn for each filter: unit ids come from
    /// outside, and ids that collide in the cache's table cannot be chosen
    /// without them.
    keys: (u64, u64),
    repeats: Arc<AtomicU64>,
}

impl Default for RepeatFilter {
    fn default() -> Self {
        Self::with_capacity(REPEAT_CAPACITY)
    }
}

impl RepeatFilter {
    /// A filter remembering at most `capacity` keys.
    pub fn with_capacity(capacity: u64) -> Self {
        Self {
            recent: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(REPEAT_WINDOW)
                // Not moka's default TinyLFU: once full of units seen once,
                // it mostly refuses a new key until the key has been seen
                // more often than the one it would evict, so a new unit's
                // first refresh would be logged again. A repeat window asks
                // for recency.
                .eviction_policy(EvictionPolicy::lru())
                .build_with_hasher(BuildDigestHasher::default()),
            keys: {
                let random = RandomState::new();
                (random.hash_one(0_u8), random.hash_one(1_u8))
            },
            repeats: Arc::default(),
        }
    }

    /// Applies the cache's pending evictions now (moka otherwise applies
    /// them in batches as it goes), for tests and benches that look at what
    /// the filter holds.
    pub fn run_pending_tasks(&self) {
        self.recent.run_pending_tasks();
    }

    /// Keys remembered, as of the last applied maintenance.
    pub fn entry_count(&self) -> u64 {
        self.recent.entry_count()
    }

    /// Whether `record` is the first of its unit and variant in the window
    /// (and remembers it).
    pub fn is_first(&self, record: &ExposureRecord) -> bool {
        let key = digest(
            self.keys,
            &[
                &record.experiment_id,
                &record.variant,
                record.unit_type.as_str(),
                record.unit_id(),
            ],
        );
        let first = self.recent.entry(key).or_insert(()).is_fresh();
        if !first {
            self.repeats.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// Forgets the exposure of `exposure`'s unit to its variant (it was
    /// not logged after all), so the next one passes.
    pub fn forget(&self, exposure: &Exposure) {
        self.recent.invalidate(&digest(
            self.keys,
            &[
                &exposure.experiment_id,
                &exposure.variant,
                exposure.unit_type.as_str(),
                exposure.unit_id(),
            ],
        ));
    }

    /// Records suppressed as repeats so far.
    pub fn repeats(&self) -> u64 {
        self.repeats.load(Ordering::Relaxed)
    }
}
