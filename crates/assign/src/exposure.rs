//! Exposure records: who saw which variant, where and when. Assignment
//! offers them to a bounded queue and never waits: when the queue is full
//! the record is counted as dropped (the event ingest drains the queue).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use exp_core::UnitType;
use tokio::sync::mpsc;

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
}
