//! Sends exposures and outcomes to `EventService` in the background:
//! batched, retried with exponential backoff, flushed on shutdown, and
//! (with a spool) kept on disk while the service cannot take them.
//!
//! [`EventSender::log_exposure`] and [`EventSender::log_outcome`] never
//! wait: they put the event on a bounded queue (or answer
//! [`QueueFull`]). A task sends what is queued within `flush_interval` of
//! the first event, or as soon as `max_batch` events are waiting. A batch
//! the service could not take (unreachable, `UNAVAILABLE`,
//! `RESOURCE_EXHAUSTED`, a timeout) is sent again, unchanged, after a
//! growing delay: the event ids make the retry harmless, so an event is
//! counted once even when the first answer was lost. Events the service
//! refuses as invalid are counted and dropped, never retried.
//! [`EventSender::close`] sends everything queued.
//!
//! Without a spool, a batch being retried holds up the queue: what is
//! queued meanwhile waits in memory, `log_*` answers [`QueueFull`] once
//! the queue is full, and what `close` cannot send is dropped (counted).
//!
//! With a spool ([`SpoolOptions`]), a batch whose call failed is written
//! to a file (fsynced) before it is retried; while the service stays
//! unreachable, the queue keeps being drained into the spool, a batch
//! every `flush_interval`; `close` writes whatever is still unsent to it.
//! A sender started on the same directory sends the spooled batches
//! first, oldest first, and deletes each file once the service has
//! answered its batch (or refused it for good). While a backlog drains,
//! each spooled batch is followed by what was queued meanwhile, so a long
//! backlog does not fill the queue; the service does not depend on the
//! order events arrive in. So what was queued survives a restart, and a
//! kill loses only what was queued in the last `flush_interval` (or the
//! call timeout, while a call to an address that does not answer is
//! pending). The spool takes at most `max_bytes`; batches that do not fit
//! are dropped and counted ([`SenderStats::spool_dropped`]).
//!
//! # Layout
//!
//! - [`spool`]: the spool files, their format and their bound.
//! - `delivery`: the sending task: gathering, retries, the backlog.

mod delivery;
pub mod spool;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use exp_proto::v1::{self, event_service_client::EventServiceClient};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

pub use spool::{Batch, SpoolOptions, read_spool};

use crate::{ClientError, token::Bearer};
use delivery::{Backlog, Courier, Item, Timing};

/// Largest batch the service takes (`EventService` refuses more).
pub const MAX_BATCH: usize = 5_000;

/// How the sender batches and retries.
#[derive(Debug, Clone)]
pub struct EventSenderOptions {
    /// gRPC endpoint of an `expd` serving EventService, e.g.
    /// `http://127.0.0.1:50051`.
    pub endpoint: String,
    /// Most events per call, 1 to 5,000.
    pub max_batch: usize,
    /// Longest time an event waits before it is sent.
    pub flush_interval: Duration,
    /// Events queued before `log_*` answers [`QueueFull`].
    pub queue_capacity: usize,
    /// First retry delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Longest a call may take before it is retried.
    pub call_timeout: Duration,
    /// The token to present (`authorization: Bearer`), when the service
    /// has a tokens file: a `data_plane` token.
    pub token: Option<String>,
    /// Where unsent batches wait on disk, so they survive a restart.
    /// `None` (the default): in memory only.
    pub spool: Option<SpoolOptions>,
}

impl Default for EventSenderOptions {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:50051".into(),
            max_batch: 500,
            flush_interval: Duration::from_secs(1),
            queue_capacity: 100_000,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            call_timeout: Duration::from_secs(10),
            token: None,
            spool: None,
        }
    }
}

/// The queue is full: the service has been unreachable for a while or
/// events come faster than it takes them. The event was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event queue is full; the event was not queued")]
pub struct QueueFull;

/// Counters of a sender.
#[derive(Debug, Default)]
pub struct SenderStats {
    /// Events queued by `log_exposure` and `log_outcome`.
    pub queued: AtomicU64,
    /// Events the service wrote.
    pub accepted: AtomicU64,
    /// Events the service already had (a retry whose first answer was
    /// lost, or a spooled batch sent again after a restart).
    pub duplicates: AtomicU64,
    /// Events the service refused as invalid (logged, not retried).
    pub rejected: AtomicU64,
    /// Calls that failed and were retried.
    pub retries: AtomicU64,
    /// Events dropped: refused for a reason a retry cannot fix, or
    /// (without a spool) left unsent when `close` gave up.
    pub dropped: AtomicU64,
    /// Events written to the spool, to be sent later by this sender or,
    /// after a restart, by the next one on the same directory.
    pub spooled: AtomicU64,
    /// Events dropped because the spool could not take them: it was full
    /// ([`SpoolOptions::max_bytes`]) or a write failed. Warned once per
    /// episode.
    pub spool_dropped: AtomicU64,
}

/// Batches events to `EventService` in the background.
#[derive(Debug)]
pub struct EventSender {
    queue: mpsc::Sender<Item>,
    stats: Arc<SenderStats>,
    ids: IdSource,
    /// Cancelled when `close` gives up: the task then spools (or drops)
    /// what it holds and ends.
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl EventSender {
    /// Starts the sender. Must be called inside a Tokio runtime; connects
    /// lazily, so the service may be down at start. With a spool, opens
    /// (creates, locks) its directory now.
    pub fn start(options: EventSenderOptions) -> Result<Self, ClientError> {
        if options.max_batch == 0 || options.max_batch > MAX_BATCH {
            return Err(ClientError::Options(format!(
                "max_batch: must be 1 to {MAX_BATCH}, got {}",
                options.max_batch
            )));
        }
        if options.queue_capacity == 0 {
            return Err(ClientError::Options(
                "queue_capacity: must be at least 1".into(),
            ));
        }
        let bearer = Bearer::new(options.token.as_deref()).map_err(ClientError::Options)?;
        let endpoint = Endpoint::from_shared(options.endpoint.clone())
            .map_err(|err| ClientError::Options(format!("endpoint {:?}: {err}", options.endpoint)))?
            .timeout(options.call_timeout)
            .connect_timeout(options.call_timeout);
        let backlog = match &options.spool {
            None => Backlog::memory(),
            Some(spool) if spool.max_bytes == 0 => {
                return Err(ClientError::Options(
                    "spool.max_bytes: must be at least 1".into(),
                ));
            }
            Some(spool) => spool::Spool::open(spool)
                .map(Backlog::Spool)
                .map_err(|source| ClientError::Spool {
                    dir: spool.dir.clone(),
                    source,
                })?,
        };
        let stats = Arc::new(SenderStats::default());
        let courier = Courier::new(
            EventServiceClient::new(endpoint.connect_lazy()),
            bearer,
            stats.clone(),
        );
        let (queue, receiver) = mpsc::channel(options.queue_capacity);
        let stop = CancellationToken::new();
        let task = tokio::spawn(delivery::run(
            receiver,
            courier,
            backlog,
            Timing::from(&options),
            stop.clone(),
        ));
        Ok(Self {
            queue,
            stats,
            ids: IdSource::new(),
            stop,
            task,
        })
    }

    /// Queues an exposure; an empty `event_id` gets a unique one and a
    /// missing `timestamp` the current time.
    pub fn log_exposure(&self, mut exposure: v1::Exposure) -> Result<(), QueueFull> {
        self.stamp(&mut exposure.event_id, &mut exposure.timestamp);
        self.enqueue(Item::Exposure(exposure))
    }

    /// Queues an outcome; an empty `event_id` gets a unique one and a
    /// missing `timestamp` the current time.
    pub fn log_outcome(&self, mut outcome: v1::Outcome) -> Result<(), QueueFull> {
        self.stamp(&mut outcome.event_id, &mut outcome.timestamp);
        self.enqueue(Item::Outcome(outcome))
    }

    fn stamp(&self, event_id: &mut String, timestamp: &mut Option<prost_types::Timestamp>) {
        if event_id.is_empty() {
            *event_id = self.ids.next();
        }
        timestamp.get_or_insert_with(|| SystemTime::now().into());
    }

    fn enqueue(&self, item: Item) -> Result<(), QueueFull> {
        self.queue.try_send(item).map_err(|_| QueueFull)?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until every event queued before this call (and every batch
    /// a spool held when the sender started) has been answered by the
    /// service, retrying as long as it takes.
    pub async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.queue.send(Item::Flush(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Sends everything queued, waiting at most `deadline`, and stops.
    /// What is still unsent then is written to the spool, if there is one
    /// (and counted in [`SenderStats::spooled`]), else counted as
    /// dropped.
    pub async fn close(self, deadline: Duration) -> Arc<SenderStats> {
        let flushed = tokio::time::timeout(deadline, self.flush()).await.is_ok();
        let Self {
            queue,
            stats,
            stop,
            task,
            ..
        } = self;
        drop(queue);
        if !flushed {
            stop.cancel();
        }
        let _ = task.await;
        stats
    }

    /// Counters so far.
    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }
}

/// Unique event ids for this process: a per-sender prefix from the clock
/// and the process id, then a counter.
#[derive(Debug)]
struct IdSource {
    prefix: String,
    counter: AtomicU64,
}

impl IdSource {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        Self {
            prefix: format!("sdk-{:x}-{nanos:x}", std::process::id()),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }
}
