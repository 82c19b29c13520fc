//! Sends exposures and outcomes to `EventService` in the background:
//! batched, retried with exponential backoff, flushed on shutdown.
//!
//! [`EventSender::log_exposure`] and [`EventSender::log_outcome`] never
//! wait: they put the event on a bounded queue (or answer
//! [`QueueFull`]). A task sends what is queued every `flush_interval`, or
//! as soon as `max_batch` events are waiting. A batch the service could
//! not take (unreachable, `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, a timeout) is
//! sent again, unchanged, after a growing delay: the event ids make the
//! retry harmless, so an event is counted once even when the first answer
//! was lost. Events the service refuses as invalid are counted and
//! dropped, never retried. [`EventSender::close`] sends everything queued.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use exp_proto::v1::{self, event_service_client::EventServiceClient};
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, transport::Endpoint};
use tracing::warn;

use crate::{ClientError, token::Bearer};

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
    /// lost).
    pub duplicates: AtomicU64,
    /// Events the service refused as invalid (logged, not retried).
    pub rejected: AtomicU64,
    /// Calls that failed and were retried.
    pub retries: AtomicU64,
    /// Events dropped: refused for a reason a retry cannot fix, or left
    /// unsent when `close` gave up.
    pub dropped: AtomicU64,
}

#[derive(Debug)]
enum Item {
    Exposure(v1::Exposure),
    Outcome(v1::Outcome),
    Flush(oneshot::Sender<()>),
}

/// Batches events to `EventService` in the background.
#[derive(Debug)]
pub struct EventSender {
    queue: mpsc::Sender<Item>,
    stats: Arc<SenderStats>,
    ids: IdSource,
    task: tokio::task::JoinHandle<()>,
}

impl EventSender {
    /// Starts the sender. Must be called inside a Tokio runtime; connects
    /// lazily, so the service may be down at start.
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
        Bearer::new(options.token.as_deref()).map_err(ClientError::Options)?;
        let endpoint = Endpoint::from_shared(options.endpoint.clone())
            .map_err(|err| ClientError::Options(format!("endpoint {:?}: {err}", options.endpoint)))?
            .timeout(options.call_timeout)
            .connect_timeout(options.call_timeout);
        let client = EventServiceClient::new(endpoint.connect_lazy());
        let (queue, receiver) = mpsc::channel(options.queue_capacity);
        let stats = Arc::new(SenderStats::default());
        let task = tokio::spawn(run(receiver, client, options, stats.clone()));
        Ok(Self {
            queue,
            stats,
            ids: IdSource::new(),
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

    /// Waits until every event queued before this call has been answered
    /// by the service (retrying as long as it takes).
    pub async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.queue.send(Item::Flush(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Sends everything queued, waiting at most `deadline`, and stops.
    /// Events still unsent after it are counted as dropped.
    pub async fn close(self, deadline: Duration) -> Arc<SenderStats> {
        let flushed = tokio::time::timeout(deadline, self.flush()).await.is_ok();
        let Self {
            queue, stats, task, ..
        } = self;
        drop(queue);
        if !flushed {
            task.abort();
        }
        let _ = task.await;
        if !flushed {
            let unsent = unsent(&stats);
            stats.dropped.fetch_add(unsent, Ordering::Relaxed);
            warn!(
                unsent,
                "event sender closed before the service took every event"
            );
        }
        stats
    }

    /// Counters so far.
    pub fn stats(&self) -> &SenderStats {
        &self.stats
    }
}

/// Events queued and not answered by the service.
fn unsent(stats: &SenderStats) -> u64 {
    let answered = [
        &stats.accepted,
        &stats.duplicates,
        &stats.rejected,
        &stats.dropped,
    ]
    .iter()
    .map(|counter| counter.load(Ordering::Relaxed))
    .sum::<u64>();
    stats
        .queued
        .load(Ordering::Relaxed)
        .saturating_sub(answered)
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

async fn run(
    mut receiver: mpsc::Receiver<Item>,
    mut client: EventServiceClient<tonic::transport::Channel>,
    options: EventSenderOptions,
    stats: Arc<SenderStats>,
) {
    let mut exposures = Vec::new();
    let mut outcomes = Vec::new();
    let mut flushes = Vec::new();
    loop {
        let deadline = tokio::time::Instant::now() + options.flush_interval;
        let mut closed = false;
        // Gather until the interval ends, a batch is full, or a flush asks.
        while exposures.len() < options.max_batch
            && outcomes.len() < options.max_batch
            && flushes.is_empty()
        {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(Item::Exposure(exposure))) => exposures.push(exposure),
                Ok(Some(Item::Outcome(outcome))) => outcomes.push(outcome),
                Ok(Some(Item::Flush(reply))) => flushes.push(reply),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        while !exposures.is_empty() {
            let take = exposures.len().min(options.max_batch);
            let batch: Vec<v1::Exposure> = exposures.drain(..take).collect();
            send(&mut client, &options, &stats, Batch::Exposures(batch)).await;
        }
        while !outcomes.is_empty() {
            let take = outcomes.len().min(options.max_batch);
            let batch: Vec<v1::Outcome> = outcomes.drain(..take).collect();
            send(&mut client, &options, &stats, Batch::Outcomes(batch)).await;
        }
        for reply in flushes.drain(..) {
            let _ = reply.send(());
        }
        if closed {
            return;
        }
    }
}

enum Batch {
    Exposures(Vec<v1::Exposure>),
    Outcomes(Vec<v1::Outcome>),
}

/// What `LogExposures` and `LogOutcomes` both answer.
struct Answer {
    accepted: u32,
    duplicates: u32,
    rejections: Vec<v1::EventRejection>,
}

impl From<v1::LogExposuresResponse> for Answer {
    fn from(answer: v1::LogExposuresResponse) -> Self {
        Self {
            accepted: answer.accepted_count,
            duplicates: answer.duplicate_count,
            rejections: answer.rejections,
        }
    }
}

impl From<v1::LogOutcomesResponse> for Answer {
    fn from(answer: v1::LogOutcomesResponse) -> Self {
        Self {
            accepted: answer.accepted_count,
            duplicates: answer.duplicate_count,
            rejections: answer.rejections,
        }
    }
}

/// Sends one batch until the service answers it (or refuses it for good).
async fn send(
    client: &mut EventServiceClient<tonic::transport::Channel>,
    options: &EventSenderOptions,
    stats: &SenderStats,
    batch: Batch,
) {
    let size = match &batch {
        Batch::Exposures(events) => events.len(),
        Batch::Outcomes(events) => events.len(),
    } as u64;
    let mut backoff = options.min_backoff;
    // Checked when the sender started.
    let bearer = Bearer::new(options.token.as_deref()).unwrap_or_default();
    loop {
        let answer = match &batch {
            Batch::Exposures(exposures) => client
                .log_exposures(bearer.request(v1::LogExposuresRequest {
                    exposures: exposures.clone(),
                }))
                .await
                .map(|answer| Answer::from(answer.into_inner())),
            Batch::Outcomes(outcomes) => client
                .log_outcomes(bearer.request(v1::LogOutcomesRequest {
                    outcomes: outcomes.clone(),
                }))
                .await
                .map(|answer| Answer::from(answer.into_inner())),
        };
        match answer {
            Ok(Answer {
                accepted,
                duplicates,
                rejections,
            }) => {
                stats
                    .accepted
                    .fetch_add(u64::from(accepted), Ordering::Relaxed);
                stats
                    .duplicates
                    .fetch_add(u64::from(duplicates), Ordering::Relaxed);
                if !rejections.is_empty() {
                    stats
                        .rejected
                        .fetch_add(rejections.len() as u64, Ordering::Relaxed);
                    let first = &rejections[0];
                    warn!(
                        rejected = rejections.len(),
                        index = first.index,
                        field = %first.field,
                        reason = %first.reason,
                        "the event service refused invalid events"
                    );
                }
                return;
            }
            Err(status) if retryable(status.code()) => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                warn!(code = ?status.code(), message = status.message(), retry_in = ?backoff, "sending events failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(options.max_backoff);
            }
            Err(status) => {
                stats.dropped.fetch_add(size, Ordering::Relaxed);
                warn!(code = ?status.code(), message = status.message(), events = size, "the event service refused a batch; dropped");
                return;
            }
        }
    }
}

/// Codes after which the same batch may succeed later.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::Unknown
            | Code::Internal
    )
}
