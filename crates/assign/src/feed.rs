//! Exposures leaving assignment: one stage, the same in every process
//! that serves `Assign`. It reads the exposure queue, lets only the first
//! exposure of a unit to a variant through ([`RepeatFilter`]), turns the
//! records into exposure events and hands them, a batch at a time, to an
//! [`ExposureSink`]: the event log of this process, or (an assign replica,
//! a sidecar) the SDK's sender to the admin's `EventService`.
//!
//! The stage is a task woken by the queue. After the first exposure of a
//! quiet spell it waits [`LINGER`] for a batch to build up, so a busy queue
//! costs one wake-up per batch, not one per request. It ends when its
//! input closes: every `Assign` handler is gone, or `stop` is cancelled
//! (once requests have drained), which closes the queue to new records;
//! either way it hands on what the queue holds, then closes its sink.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use exp_core::event::Exposure;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{ExposureRecord, RepeatFilter};

/// How long the stage lets exposures gather after the first of a quiet
/// spell.
pub const LINGER: Duration = Duration::from_millis(10);
/// Most exposures handed to the sink at once.
pub const MAX_BATCH: usize = 1_000;

/// Where filtered exposures go.
pub trait ExposureSink: Send + 'static {
    /// Logs `exposures`; those it could not take are handed back (the
    /// stage counts them as dropped and forgets them in its filter, so a
    /// unit's next exposure passes).
    fn log(&mut self, exposures: Vec<Exposure>) -> impl Future<Output = Vec<Exposure>> + Send;

    /// Delivers what the sink still holds, once the stage has ended.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// Counters of the stage.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Exposures handed to the sink and taken.
    pub logged: AtomicU64,
    /// Exposures the sink handed back.
    pub dropped: AtomicU64,
}

/// Runs the stage until `records` closes or `stop` is cancelled; see the
/// module doc.
pub async fn forward_exposures(
    mut records: mpsc::Receiver<ExposureRecord>,
    mut sink: impl ExposureSink,
    filter: RepeatFilter,
    stats: Arc<FeedStats>,
    stop: CancellationToken,
) {
    let mut pending = Vec::with_capacity(MAX_BATCH);
    let mut closed = false;
    loop {
        if records.is_empty() {
            let first = tokio::select! {
                record = records.recv() => record,
                () = stop.cancelled(), if !closed => {
                    // No new record from here on; the ones queued remain.
                    records.close();
                    closed = true;
                    continue;
                }
            };
            let Some(first) = first else {
                break;
            };
            pending.push(first);
            if !closed {
                tokio::select! {
                    () = tokio::time::sleep(LINGER) => {}
                    () = stop.cancelled() => {}
                }
            }
        }
        while pending.len() < MAX_BATCH {
            match records.try_recv() {
                Ok(record) => pending.push(record),
                Err(_) => break,
            }
        }
        let exposures: Vec<Exposure> = pending
            .drain(..)
            .filter(|record| filter.is_first(record))
            .map(ExposureRecord::into_exposure)
            .collect();
        if exposures.is_empty() {
            continue;
        }
        let offered = exposures.len() as u64;
        let refused = sink.log(exposures).await;
        stats
            .logged
            .fetch_add(offered - refused.len() as u64, Ordering::Relaxed);
        if !refused.is_empty() {
            warn!(
                exposures = refused.len(),
                "dropping assignment exposures: their destination did not take them"
            );
            stats
                .dropped
                .fetch_add(refused.len() as u64, Ordering::Relaxed);
            for exposure in &refused {
                filter.forget(exposure);
            }
        }
    }
    sink.close().await;
}

/// A replica's or sidecar's sink: the SDK's sender to its admin's
/// `EventService` (batches, retries with the same ids, sends what it
/// holds when closed, and with a spool keeps on disk what the admin
/// could not take); its counters are logged when it closes.
#[derive(Debug)]
pub struct RemoteSink {
    sender: exp_client::EventSender,
    /// How long closing waits for the last batches.
    close_within: Duration,
}

impl RemoteSink {
    /// Sends through `sender`; closing waits at most `close_within`.
    pub fn new(sender: exp_client::EventSender, close_within: Duration) -> Self {
        Self {
            sender,
            close_within,
        }
    }
}

impl ExposureSink for RemoteSink {
    async fn log(&mut self, exposures: Vec<Exposure>) -> Vec<Exposure> {
        exposures
            .into_iter()
            .filter(|exposure| {
                self.sender
                    .log_exposure(exp_proto::events::exposure_to_proto(exposure))
                    .is_err()
            })
            .collect()
    }

    async fn close(self) {
        let stats = self.sender.close(self.close_within).await;
        let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        info!(
            accepted = count(&stats.accepted),
            duplicates = count(&stats.duplicates),
            rejected = count(&stats.rejected),
            dropped = count(&stats.dropped),
            spooled = count(&stats.spooled),
            spool_dropped = count(&stats.spool_dropped),
            "exposure sender closed"
        );
    }
}

/// A process with neither an event log nor a config source to send to:
/// exposures are filtered, counted as logged, and dropped here, so the
/// queue never fills up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

impl ExposureSink for Discard {
    async fn log(&mut self, _exposures: Vec<Exposure>) -> Vec<Exposure> {
        Vec::new()
    }

    async fn close(self) {}
}
