//! The event log of this process as the destination of `Assign`'s
//! exposures (see `exp_assign::feed`).

use std::{sync::Arc, time::Duration};

use exp_assign::feed::ExposureSink;
use exp_core::event::{Event, Exposure};

use tokio::sync::watch;

use crate::{Batch, EventLog, LogError};

/// Where the event log will be once it is open (opening replays the log
/// and can take a while after a crash): `EventService` answers
/// `UNAVAILABLE` meanwhile, and whoever needs the log waits to be woken.
#[derive(Debug, Clone)]
pub struct LogSlot {
    log: Arc<watch::Sender<Option<Arc<EventLog>>>>,
}

impl Default for LogSlot {
    fn default() -> Self {
        Self {
            log: Arc::new(watch::Sender::new(None)),
        }
    }
}

impl LogSlot {
    /// The log, if it is open.
    pub fn get(&self) -> Option<Arc<EventLog>> {
        self.log.borrow().clone()
    }

    /// Puts the opened log in the slot, waking those waiting for it.
    pub fn set(&self, log: Arc<EventLog>) {
        self.log.send_replace(Some(log));
    }

    /// The log, once it is open.
    pub async fn opened(&self) -> Arc<EventLog> {
        let mut receiver = self.log.subscribe();
        loop {
            if let Some(log) = receiver.borrow_and_update().clone() {
                return log;
            }
            // The sender lives as long as this slot: the wait ends when
            // the log is set.
            if receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Attempts at an append before a batch of exposures is handed back.
const ATTEMPTS: u32 = 5;
/// The first wait between attempts; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// How long a batch waits for a log that is still opening.
const OPEN_WAIT: Duration = Duration::from_millis(1_500);

/// Appends exposures to the log in a [`LogSlot`]; a batch that arrives
/// before the log is open waits for it a while, and one the log pushes
/// back is tried again a few times with backoff, then handed back (assignment never waits for
/// logging: meanwhile its queue fills and drops what overflows, counted).
#[derive(Debug, Clone)]
pub struct LogSink {
    slot: LogSlot,
    /// The log did not open within the last wait: the next batches are
    /// handed back at once rather than each waiting as long again (a
    /// stage draining its queue at shutdown must not wait per batch).
    gave_up_waiting: bool,
}

impl LogSink {
    /// Appends to the log in `slot`.
    pub fn new(slot: LogSlot) -> Self {
        Self {
            slot,
            gave_up_waiting: false,
        }
    }
}

impl ExposureSink for LogSink {
    async fn log(&mut self, exposures: Vec<Exposure>) -> Vec<Exposure> {
        // A log still opening (a replay after a crash) is waited for, once,
        // up to as long as the backoff below would have tried.
        let log = match self.slot.get() {
            Some(log) => log,
            None if self.gave_up_waiting => return exposures,
            None => match tokio::time::timeout(OPEN_WAIT, self.slot.opened()).await {
                Ok(log) => log,
                Err(_) => {
                    self.gave_up_waiting = true;
                    return exposures;
                }
            },
        };
        self.gave_up_waiting = false;
        let mut batch: Batch = exposures.into_iter().collect();
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match log.append(batch).await {
                Ok(_) => return Vec::new(),
                Err(refused) if refused.error == LogError::Closed || attempt == ATTEMPTS => {
                    return exposures_of(refused.events);
                }
                Err(refused) => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    batch = refused.events.into_iter().collect();
                }
            }
        }
        exposures_of(batch.into_events())
    }

    async fn close(self) {}
}

fn exposures_of(events: Vec<Event>) -> Vec<Exposure> {
    events
        .into_iter()
        .filter_map(|event| match event {
            Event::Exposure(exposure) => Some(exposure),
            Event::Outcome(_) => None,
        })
        .collect()
}
