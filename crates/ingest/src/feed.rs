//! Exposures made by `Assign` in this process flowing into the event log.
//!
//! Assignment offers its exposures (repeats already suppressed, event ids
//! set) without waiting. They are batched (up to [`FEED_BATCH`] events or
//! [`FEED_BATCH_WAIT`]) and appended in the background; if the log pushes
//! back or fails, the batch is retried a few times with backoff, then
//! dropped and counted.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use exp_proto::v1;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::{Event, EventLog, LogError};

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
    /// Exposures offered by assignment.
    pub offered: AtomicU64,
    /// Exposures written to the log.
    pub written: AtomicU64,
    /// Exposures dropped (queue full, log closed or failing).
    pub dropped: AtomicU64,
}

/// The sending side of the feed; cheap to clone.
#[derive(Debug, Clone)]
pub struct ExposureFeed {
    sender: mpsc::Sender<v1::Exposure>,
    stats: Arc<FeedStats>,
    shutdown: watch::Sender<bool>,
}

impl ExposureFeed {
    /// Starts the background task appending to the log in `slot`, with a
    /// queue of `capacity` exposures.
    pub fn start(slot: LogSlot, capacity: usize) -> (Self, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(FeedStats::default());
        let (shutdown, stop) = watch::channel(false);
        let task = tokio::spawn(forward(receiver, slot, stats.clone(), stop));
        (
            Self {
                sender,
                stats,
                shutdown,
            },
            task,
        )
    }

    /// Offers an exposure; never waits.
    pub fn offer(&self, exposure: v1::Exposure) {
        self.stats.offered.fetch_add(1, Ordering::Relaxed);
        if self.sender.try_send(exposure).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &FeedStats {
        &self.stats
    }

    /// Asks the task to write what is queued now and stop.
    pub fn shut_down(&self) {
        let _ = self.shutdown.send(true);
    }
}

async fn forward(
    mut receiver: mpsc::Receiver<v1::Exposure>,
    slot: LogSlot,
    stats: Arc<FeedStats>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            first = receiver.recv() => first,
            _ = stop.wait_for(|stop| *stop) => None,
        };
        let stopping = first.is_none();
        let mut batch: Vec<Event> = first.into_iter().map(Event::Exposure).collect();
        if stopping {
            while let Ok(exposure) = receiver.try_recv() {
                batch.push(Event::Exposure(exposure));
            }
        } else {
            let deadline = tokio::time::Instant::now() + FEED_BATCH_WAIT;
            let mut received = Vec::with_capacity(FEED_BATCH);
            while batch.len() + received.len() < FEED_BATCH {
                let room = FEED_BATCH - batch.len() - received.len();
                match tokio::time::timeout_at(deadline, receiver.recv_many(&mut received, room))
                    .await
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            batch.extend(received.into_iter().map(Event::Exposure));
        }
        if !batch.is_empty() {
            append_with_retries(&slot, batch, &stats).await;
        }
        if stopping {
            return;
        }
    }
}

async fn append_with_retries(slot: &LogSlot, batch: Vec<Event>, stats: &FeedStats) {
    let count = batch.len() as u64;
    let mut delay = Duration::from_millis(50);
    for _ in 0..RETRIES {
        let result = match slot.get() {
            Some(log) => log.append(batch.clone()).await,
            None => Err(LogError::Io("the event log is not open yet".into())),
        };
        match result {
            Ok(_) => {
                stats.written.fetch_add(count, Ordering::Relaxed);
                return;
            }
            Err(LogError::Closed) => break,
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    warn!(
        exposures = count,
        "dropping assignment exposures: the event log did not take them"
    );
    stats.dropped.fetch_add(count, Ordering::Relaxed);
}
