//! The sending task. Each turn it tries the oldest batch the service has
//! not taken yet (when its retry is due), then gathers queued events into
//! batches and sends them, or, while the service is unreachable, holds
//! them behind the others: in memory without a spool (the queue waits),
//! in the spool with one (the queue keeps being drained). It ends when
//! the queue closes and nothing is held, or when `stop` is cancelled:
//! then what it holds goes to the spool, or is counted as dropped.

use std::{
    collections::VecDeque,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use exp_proto::v1::{self, event_service_client::EventServiceClient};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};
use tracing::{info, warn};

use super::{
    EventSenderOptions, SenderStats,
    spool::{Batch, Spool},
};
use crate::token::Bearer;

/// What the queue carries.
#[derive(Debug)]
pub(super) enum Item {
    Exposure(v1::Exposure),
    Outcome(v1::Outcome),
    /// Answered once every event queued before it has been answered.
    Flush(oneshot::Sender<()>),
}

/// The options the task paces itself by.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    max_batch: usize,
    flush_interval: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
}

impl From<&EventSenderOptions> for Timing {
    fn from(options: &EventSenderOptions) -> Self {
        Self {
            max_batch: options.max_batch,
            flush_interval: options.flush_interval,
            min_backoff: options.min_backoff,
            max_backoff: options.max_backoff,
        }
    }
}

/// Runs the sender until the queue closes with nothing held, or `stop`.
pub(super) async fn run(
    mut receiver: mpsc::Receiver<Item>,
    mut courier: Courier,
    mut backlog: Backlog,
    timing: Timing,
    stop: CancellationToken,
) {
    // Flushes waiting for the batches held when they came (the newest
    // one's sequence number) to be answered.
    let mut flushes: Vec<(Option<u64>, oneshot::Sender<()>)> = Vec::new();
    let mut outage: Option<Outage> = None;
    let mut round = Round::default();
    let mut closed = false;
    loop {
        // What the backlog holds is older than anything queued: its
        // oldest batch goes first, once its retry is due.
        if !backlog.is_empty() && Outage::due(outage) {
            match backlog.oldest().await {
                Ok(Some(batch)) => match courier.attempt(&batch, &stop).await {
                    Attempt::Done => {
                        backlog.remove_oldest().await;
                        outage = None;
                    }
                    Attempt::Retry(status) => {
                        outage = Some(Outage::next(outage, &timing, &status));
                    }
                    Attempt::Stopped => break,
                },
                Ok(None) => {}
                // The spool could not be read now: tried again after the
                // same backoff as a failed call.
                Err(reason) => {
                    let status =
                        tonic::Status::unavailable(format!("reading the event spool: {reason}"));
                    outage = Some(Outage::next(outage, &timing, &status));
                }
            }
        }
        answer_flushes(&mut flushes, &backlog);
        if closed || !backlog.takes_more() {
            if backlog.is_empty() {
                // Closed, and every event was answered.
                return;
            }
            if let Some(Outage { retry_at, .. }) = outage {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep_until(retry_at) => {}
                }
            }
            continue;
        }
        // Gather until the interval ends, a batch is full, a flush asks or
        // the queue closes; with a backlog, only what is queued already
        // while it drains, or until its retry is due.
        let until = match (backlog.is_empty(), outage) {
            (true, _) => None,
            (false, Some(outage)) => Some(outage.retry_at),
            (false, None) => Some(Instant::now()),
        };
        if !gather(&mut receiver, &mut round, &timing, until, &stop).await {
            break;
        }
        closed = round.closed;
        // Sent now unless the service failed and its retry is not due:
        // then held behind the backlog, without a call bound to fail.
        let mut hold = Vec::new();
        let mut stopped = false;
        for batch in round.batches(timing.max_batch) {
            if stopped || !Outage::due(outage) {
                hold.push(batch);
                continue;
            }
            match courier.attempt(&batch, &stop).await {
                Attempt::Done => outage = None,
                Attempt::Retry(status) => {
                    outage = Some(Outage::next(outage, &timing, &status));
                    hold.push(batch);
                }
                Attempt::Stopped => {
                    stopped = true;
                    hold.push(batch);
                }
            }
        }
        backlog.hold(hold, courier.stats()).await;
        let newest = backlog.newest_seq();
        flushes.extend(round.flushes.drain(..).map(|reply| (newest, reply)));
        if stopped {
            break;
        }
    }
    // Stopped: nothing more is sent. What is gathered or still queued
    // joins the backlog, which keeps it on disk or counts it as dropped.
    receiver.close();
    while let Some(item) = receiver.recv().await {
        round.take(item);
    }
    let rest = round.batches(timing.max_batch);
    backlog.hold(rest, courier.stats()).await;
    backlog.abandon(courier.stats());
}

/// Answers the flushes whose events have all been answered: nothing is
/// held, or only batches newer than the newest held when they came.
fn answer_flushes(flushes: &mut Vec<(Option<u64>, oneshot::Sender<()>)>, backlog: &Backlog) {
    let oldest = backlog.oldest_seq();
    let answered = |newest_then: &Option<u64>| match (oldest, *newest_then) {
        (Some(oldest), Some(newest)) => oldest > newest,
        _ => true,
    };
    for (_, reply) in flushes.extract_if(.., |(newest_then, _)| answered(newest_then)) {
        let _ = reply.send(());
    }
}

/// Takes queued items into `round` until the flush interval (from the
/// first event) ends, `until` comes, a batch is full, a flush asks or the
/// queue closes. `false`: `stop` was cancelled.
async fn gather(
    receiver: &mut mpsc::Receiver<Item>,
    round: &mut Round,
    timing: &Timing,
    until: Option<Instant>,
    stop: &CancellationToken,
) -> bool {
    let mut deadline = until;
    while !round.full(timing.max_batch) && round.flushes.is_empty() && !round.closed {
        let wait = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => return false,
            item = receiver.recv() => match item {
                Some(item) => {
                    if round.is_empty() {
                        deadline = earliest(deadline, Instant::now() + timing.flush_interval);
                    }
                    round.take(item);
                }
                None => round.closed = true,
            },
            () = wait => break,
        }
    }
    true
}

fn earliest(deadline: Option<Instant>, other: Instant) -> Option<Instant> {
    Some(deadline.map_or(other, |deadline| deadline.min(other)))
}

/// What one gathering took from the queue.
#[derive(Debug, Default)]
struct Round {
    exposures: Vec<v1::Exposure>,
    outcomes: Vec<v1::Outcome>,
    flushes: Vec<oneshot::Sender<()>>,
    closed: bool,
}

impl Round {
    fn take(&mut self, item: Item) {
        match item {
            Item::Exposure(exposure) => self.exposures.push(exposure),
            Item::Outcome(outcome) => self.outcomes.push(outcome),
            Item::Flush(reply) => self.flushes.push(reply),
        }
    }

    fn is_empty(&self) -> bool {
        self.exposures.is_empty() && self.outcomes.is_empty()
    }

    fn full(&self, max_batch: usize) -> bool {
        self.exposures.len() >= max_batch || self.outcomes.len() >= max_batch
    }

    /// The events taken, as batches of at most `max_batch`.
    fn batches(&mut self, max_batch: usize) -> Vec<Batch> {
        let mut batches = Vec::new();
        while !self.exposures.is_empty() {
            let take = self.exposures.len().min(max_batch);
            batches.push(Batch::Exposures(v1::LogExposuresRequest {
                exposures: self.exposures.drain(..take).collect(),
            }));
        }
        while !self.outcomes.is_empty() {
            let take = self.outcomes.len().min(max_batch);
            batches.push(Batch::Outcomes(v1::LogOutcomesRequest {
                outcomes: self.outcomes.drain(..take).collect(),
            }));
        }
        batches
    }
}

/// The last call failed: the backlog's oldest batch waits until
/// `retry_at`.
#[derive(Debug, Clone, Copy)]
struct Outage {
    retry_at: Instant,
    delay: Duration,
}

impl Outage {
    /// Whether a call may be made: no failure, or its retry is due.
    fn due(outage: Option<Self>) -> bool {
        outage.is_none_or(|outage| outage.retry_at <= Instant::now())
    }

    /// After `previous`, a delay twice as long (up to the longest).
    fn next(previous: Option<Self>, timing: &Timing, status: &tonic::Status) -> Self {
        let delay = previous.map_or(timing.min_backoff, |previous| {
            (previous.delay * 2).min(timing.max_backoff)
        });
        warn!(
            code = ?status.code(),
            message = status.message(),
            retry_in = ?delay,
            "sending events failed; retrying"
        );
        Self {
            retry_at: Instant::now() + delay,
            delay,
        }
    }
}

// === impl Backlog ===

/// Batches the service has not taken yet, oldest first, each with a
/// sequence number that grows.
#[derive(Debug)]
pub(super) enum Backlog {
    /// No spool: the batches of the round whose call failed. Nothing more
    /// is taken from the queue until they are sent: the queue is the
    /// bound.
    Memory {
        batches: VecDeque<(u64, Batch)>,
        next_seq: u64,
    },
    /// The spool: batches wait on disk, and the queue keeps being drained
    /// into it.
    Spool(Spool),
}

impl Backlog {
    /// A backlog in memory.
    pub(super) fn memory() -> Self {
        Self::Memory {
            batches: VecDeque::new(),
            next_seq: 0,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::Memory { batches, .. } => batches.is_empty(),
            Self::Spool(spool) => spool.is_empty(),
        }
    }

    /// Whether more events may be taken from the queue while batches are
    /// held.
    fn takes_more(&self) -> bool {
        match self {
            Self::Memory { batches, .. } => batches.is_empty(),
            Self::Spool(_) => true,
        }
    }

    fn oldest_seq(&self) -> Option<u64> {
        match self {
            Self::Memory { batches, .. } => batches.front().map(|(seq, _)| *seq),
            Self::Spool(spool) => spool.oldest().map(|file| file.seq),
        }
    }

    fn newest_seq(&self) -> Option<u64> {
        match self {
            Self::Memory { batches, .. } => batches.back().map(|(seq, _)| *seq),
            Self::Spool(spool) => spool.newest().map(|file| file.seq),
        }
    }

    /// Holds `batches` behind the others; the spool counts what it wrote
    /// and what it could not take.
    async fn hold(&mut self, held: Vec<Batch>, stats: &SenderStats) {
        if held.is_empty() {
            return;
        }
        match self {
            Self::Memory { batches, next_seq } => {
                for batch in held {
                    batches.push_back((*next_seq, batch));
                    *next_seq += 1;
                }
            }
            Self::Spool(spool) => {
                let appended = spool.append(held).await;
                stats.spooled.fetch_add(appended.spooled, Ordering::Relaxed);
                stats
                    .spool_dropped
                    .fetch_add(appended.dropped, Ordering::Relaxed);
            }
        }
    }

    /// The oldest batch (read back from its file, with a spool).
    async fn oldest(&mut self) -> Result<Option<Batch>, String> {
        match self {
            Self::Memory { batches, .. } => Ok(batches.front().map(|(_, batch)| batch.clone())),
            Self::Spool(spool) => Ok(spool.read_oldest().await?.map(|(_, batch)| batch)),
        }
    }

    /// Forgets the oldest batch: the service answered it.
    async fn remove_oldest(&mut self) {
        match self {
            Self::Memory { batches, .. } => {
                batches.pop_front();
            }
            Self::Spool(spool) => spool.remove_oldest().await,
        }
    }

    /// The sender stops: batches in memory are lost (counted), spooled
    /// ones wait for the next sender on the directory.
    fn abandon(self, stats: &SenderStats) {
        match self {
            Self::Memory { batches, .. } => {
                let unsent: u64 = batches.iter().map(|(_, batch)| batch.len() as u64).sum();
                if unsent > 0 {
                    stats.dropped.fetch_add(unsent, Ordering::Relaxed);
                    warn!(
                        unsent,
                        "event sender closed before the service took every event"
                    );
                }
            }
            Self::Spool(spool) if !spool.is_empty() => info!(
                bytes = spool.bytes(),
                "event sender closed before the service took every event; the spool keeps \
                 them for the next start"
            ),
            Self::Spool(_) => {}
        }
    }
}

// === impl Courier ===

/// Makes the calls and counts their answers.
#[derive(Debug)]
pub(super) struct Courier {
    client: EventServiceClient<Channel>,
    bearer: Bearer,
    stats: Arc<SenderStats>,
}

/// How one call went.
#[derive(Debug)]
enum Attempt {
    /// The service answered the batch (or refused it for good): it is
    /// done with.
    Done,
    /// The batch may succeed later.
    Retry(tonic::Status),
    /// `stop` was cancelled during the call.
    Stopped,
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

impl Courier {
    pub(super) fn new(
        client: EventServiceClient<Channel>,
        bearer: Bearer,
        stats: Arc<SenderStats>,
    ) -> Self {
        Self {
            client,
            bearer,
            stats,
        }
    }

    fn stats(&self) -> &SenderStats {
        &self.stats
    }

    /// Sends `batch` once.
    async fn attempt(&mut self, batch: &Batch, stop: &CancellationToken) -> Attempt {
        let call = async {
            match batch {
                Batch::Exposures(request) => self
                    .client
                    .log_exposures(self.bearer.request(request.clone()))
                    .await
                    .map(|answer| Answer::from(answer.into_inner())),
                Batch::Outcomes(request) => self
                    .client
                    .log_outcomes(self.bearer.request(request.clone()))
                    .await
                    .map(|answer| Answer::from(answer.into_inner())),
            }
        };
        let answer = tokio::select! {
            biased;
            () = stop.cancelled() => return Attempt::Stopped,
            answer = call => answer,
        };
        let stats = &self.stats;
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
                if let Some(first) = rejections.first() {
                    stats
                        .rejected
                        .fetch_add(rejections.len() as u64, Ordering::Relaxed);
                    warn!(
                        rejected = rejections.len(),
                        index = first.index,
                        field = %first.field,
                        reason = %first.reason,
                        "the event service refused invalid events"
                    );
                }
                Attempt::Done
            }
            Err(status) if retryable(status.code()) => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                Attempt::Retry(status)
            }
            Err(status) => {
                let events = batch.len() as u64;
                stats.dropped.fetch_add(events, Ordering::Relaxed);
                warn!(
                    code = ?status.code(),
                    message = status.message(),
                    events,
                    "the event service refused a batch; dropped"
                );
                Attempt::Done
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
