//! Exposures made by `Assign` in this process flowing into the event log.
//!
//! A dedicated thread (see `expd`'s wiring) drains assignment's exposure
//! queue, filters repeats and turns records into events; it hands them to
//! [`ExposureBatcher::push`], which appends a batch once it holds
//! [`FEED_BATCH`] events or its oldest waited [`FEED_BATCH_WAIT`]. Appends
//! block that thread, never a runtime worker: the runtime that answers
//! requests is not woken once per exposure. If the log pushes back or
//! fails, a batch is retried a few times with backoff, then dropped and
//! counted (assignment never waits for logging).

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use exp_proto::v1;
use tracing::warn;

use crate::{Batch, Event, EventLog, LogError};

/// Most exposures per append.
pub const FEED_BATCH: usize = 1_000;
/// Longest an exposure waits for its batch to fill.
pub const FEED_BATCH_WAIT: Duration = Duration::from_millis(50);
const RETRIES: u32 = 5;

/// Where the event log will be once it is open (opening replays the log
/// and can take a while after a crash).
pub type LogSlot = Arc<OnceLock<Arc<EventLog>>>;

/// Counters of the feed.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Exposures written to the log.
    pub written: AtomicU64,
    /// Exposures dropped (log not open, closed or failing).
    pub dropped: AtomicU64,
}

/// Batches exposures into the log from a thread of its own (not a runtime
/// worker): every call may block for an append.
#[derive(Debug)]
pub struct ExposureBatcher {
    slot: LogSlot,
    runtime: tokio::runtime::Handle,
    batch: Batch,
    oldest: Option<Instant>,
    dropped: Vec<v1::Exposure>,
    stats: Arc<FeedStats>,
}

impl ExposureBatcher {
    /// A batcher appending to the log in `slot`, awaiting appends on
    /// `runtime`.
    pub fn new(slot: LogSlot, runtime: tokio::runtime::Handle) -> Self {
        Self {
            slot,
            runtime,
            batch: Batch::with_capacity(FEED_BATCH),
            oldest: None,
            dropped: Vec::new(),
            stats: Arc::default(),
        }
    }

    /// Adds an exposure (encoding it for the log, on this thread); appends
    /// the batch when it is full.
    pub fn push(&mut self, exposure: v1::Exposure) {
        self.oldest.get_or_insert_with(Instant::now);
        self.batch.push(Event::Exposure(exposure));
        if self.batch.len() >= FEED_BATCH {
            self.flush();
        }
    }

    /// How long the caller may wait for more exposures before the batch is
    /// due (`None` when it is empty).
    pub fn due_in(&self) -> Option<Duration> {
        self.oldest
            .map(|oldest| FEED_BATCH_WAIT.saturating_sub(oldest.elapsed()))
    }

    /// Appends the batch if its oldest exposure has waited long enough.
    pub fn flush_if_due(&mut self) {
        if self.due_in() == Some(Duration::ZERO) {
            self.flush();
        }
    }

    /// Appends what is batched now.
    pub fn flush(&mut self) {
        self.oldest = None;
        if self.batch.is_empty() {
            return;
        }
        let mut batch = std::mem::replace(&mut self.batch, Batch::with_capacity(FEED_BATCH));
        let count = batch.len() as u64;
        let mut delay = Duration::from_millis(50);
        let mut attempts = 0;
        let unwritten = loop {
            attempts += 1;
            let Some(log) = self.slot.get() else {
                if attempts == RETRIES {
                    break batch.into_events();
                }
                std::thread::sleep(delay);
                delay *= 2;
                continue;
            };
            match self.runtime.block_on(log.append_batch(batch)) {
                Ok(_) => {
                    self.stats.written.fetch_add(count, Ordering::Relaxed);
                    return;
                }
                Err(refused) => {
                    if refused.error == LogError::Closed
                        || refused.events.is_empty()
                        || attempts == RETRIES
                    {
                        break refused.events;
                    }
                    std::thread::sleep(delay);
                    delay *= 2;
                    // Encoded again: a rare path (the log pushed back).
                    batch = Batch::from(refused.events);
                }
            }
        };
        warn!(
            exposures = count,
            "dropping assignment exposures: the event log did not take them"
        );
        self.stats.dropped.fetch_add(count, Ordering::Relaxed);
        self.dropped
            .extend(unwritten.into_iter().filter_map(|event| match event {
                Event::Exposure(exposure) => Some(exposure),
                Event::Outcome(_) => None,
            }));
    }

    /// The exposures dropped since the last call, so the caller can forget
    /// them in its repeat filter (the unit's next exposure must pass).
    pub fn take_dropped(&mut self) -> Vec<v1::Exposure> {
        std::mem::take(&mut self.dropped)
    }

    /// Counters so far.
    pub fn stats(&self) -> Arc<FeedStats> {
        self.stats.clone()
    }
}

impl Drop for ExposureBatcher {
    fn drop(&mut self) {
        self.flush();
    }
}
