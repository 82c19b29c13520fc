//! The writer role: partitions of the stream into the same hourly Parquet
//! partitions the embedded log writes, exactly once.
//!
//! Each partition this writer owns (`--writer-partitions`) is read by its
//! own durable pull consumer, `expd-writer-<partition>`, filtered to the
//! partition's subjects; JetStream remembers how far it was acknowledged.
//! A chunk of messages is appended to this process's embedded event log
//! (which deduplicates by event id over its window, fsyncs, then rolls
//! Parquet as it always does), and only then is each of its messages
//! acknowledged. Each one, explicitly: messages delivered to a pull that
//! died with its connection (a killed writer, a NATS server gone) were
//! never appended, and an acknowledgement of everything up to a later
//! message (`AckPolicy::All`) would acknowledge them too, losing them;
//! unacknowledged, they come back after `ack_wait`.
//!
//! - **A crash** between the append and the acknowledgement: JetStream
//!   redelivers the chunk to the partition's consumer, which only this
//!   writer reads, and the log, rebuilt from its segments and recent
//!   Parquet files, answers every event as a duplicate: nothing is written
//!   twice.
//! - **A failed append** (disk full, overload) is retried in place, never
//!   skipped: a later acknowledgement would cover it.
//! - **Several writers** split the [`PARTITIONS`] partitions between them
//!   (`--writer-partitions`), each with its own disk; a partition must
//!   have one writer at a time, since the log that deduplicates it is
//!   that writer's. A claim per partition ([`claim`]) holds to that: a
//!   second writer named for a claimed partition does not write it, and
//!   says so.
//! - **A message that does not decode** is terminated (never redelivered)
//!   and counted: it could only stop the partition.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{
    AckKind,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    context::ConsumerInfoErrorKind,
};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{FIRST_BACKOFF, Nats, PARTITIONS, back_off, claim, decode, partition_subjects};
use crate::{Batch, EventLog, LogError};

/// How a writer reads its partitions.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// The partitions it owns, each below [`PARTITIONS`].
    pub partitions: Vec<u32>,
    /// Most messages appended to the log at once.
    pub chunk: usize,
    /// How long JetStream waits for an acknowledgement before it
    /// redelivers.
    pub ack_wait: Duration,
    /// Where the writer marks the partitions whose consumer it has
    /// (`<data-dir>/writer`).
    pub state_dir: std::path::PathBuf,
    /// The writer's name in the partition claims: the same after a
    /// restart (host and data directory), so it finds its own claims.
    pub owner: String,
}

impl WriterOptions {
    /// Every partition, in chunks of 1,000, redelivered after 10 s,
    /// marked under `state_dir`, claimed as `owner`.
    pub fn new(state_dir: std::path::PathBuf, owner: String) -> Self {
        Self {
            partitions: (0..PARTITIONS).collect(),
            chunk: 1_000,
            ack_wait: Duration::from_secs(10),
            state_dir,
            owner,
        }
    }
}

/// Counters of a writer since it started.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Messages appended (new events and duplicates alike) and
    /// acknowledged.
    pub acknowledged: AtomicU64,
    /// Messages that did not decode, terminated.
    pub undecodable: AtomicU64,
    /// Partitions this writer owns and writes now.
    pub partitions_owned: AtomicU64,
    /// Partitions it is named for that another writer owns (it waits).
    pub partitions_elsewhere: AtomicU64,
}

/// Adds one to a gauge of [`WriterStats`] while it lives.
struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The name of a partition's durable consumer.
pub fn consumer_name(partition: u32) -> String {
    format!("expd-writer-{partition}")
}

/// Runs one task per partition in `options`, until `shutdown`.
pub async fn run(
    nats: Arc<Nats>,
    log: Arc<EventLog>,
    options: WriterOptions,
    stats: Arc<WriterStats>,
    shutdown: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for partition in options.partitions.iter().copied() {
        tasks.spawn(write_partition(
            nats.clone(),
            log.clone(),
            options.clone(),
            partition,
            stats.clone(),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

/// Waits until this writer owns `partition` (see [`claim`]): the claim's
/// bucket, or `None` at shutdown.
async fn own(
    nats: &Nats,
    partition: u32,
    owner: &str,
    stats: &WriterStats,
    shutdown: &CancellationToken,
) -> Option<async_nats::jetstream::kv::Store> {
    let mut backoff = FIRST_BACKOFF;
    let mut told = None;
    let mut elsewhere = None;
    loop {
        let claimed = async {
            let store = claim::bucket(nats).await?;
            let claimed = claim::claim(&store, partition, owner).await?;
            Ok::<_, String>((store, claimed))
        };
        let claimed = tokio::select! {
            claimed = claimed => claimed,
            () = shutdown.cancelled() => return None,
        };
        match claimed {
            Ok((store, claim::Claimed::Owned)) => return Some(store),
            Ok((store, claim::Claimed::OwnedBy(holder))) => {
                if told.as_ref() != Some(&holder) {
                    error!(
                        partition, %holder, bucket = %claim::bucket_name(nats),
                        "another writer owns this partition: not writing it (check \
                         --writer-partitions: one writer per partition; to move a partition, \
                         stop its writer and delete its key, see docs/events-at-scale.md)"
                    );
                    told = Some(holder);
                    elsewhere.get_or_insert_with(|| Counted::new(&stats.partitions_elsewhere));
                }
                // Woken when the claim changes (deleted by an operator).
                let changed = tokio::select! {
                    changed = claim::changed(&store, partition, "") => changed,
                    () = shutdown.cancelled() => return None,
                };
                if let Err(reason) = changed {
                    warn!(partition, %reason, "watching the partition's claim");
                    if !back_off(&mut backoff, shutdown).await {
                        return None;
                    }
                }
            }
            Err(reason) => {
                warn!(partition, %reason, "the writer cannot claim its partition yet; retrying");
                if !back_off(&mut backoff, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Why a partition's consumer cannot be had.
enum ConsumerError {
    /// For now (NATS or the stream not there yet): try again.
    NotYet(String),
    /// Not without an operator: the partition is not written.
    Refused(String),
}

/// The partition's durable consumer: looked up, and checked; created
/// only if this writer never had it (a marker under
/// `WriterOptions::state_dir` says it had). A consumer that disappeared
/// after this writer used it (`nats consumer rm`, the stream made again)
/// is not made again from the stream's start: events older than the log's
/// dedup window would reach Parquet twice.
async fn consumer(
    nats: &Nats,
    partition: u32,
    options: &WriterOptions,
) -> Result<PullConsumer, ConsumerError> {
    let stream = nats
        .stream()
        .await
        .map_err(|err| ConsumerError::NotYet(err.to_string()))?;
    let name = consumer_name(partition);
    let filter = partition_subjects(partition);
    let marker = options
        .state_dir
        .join(format!("{}.{name}", nats.stream_name()));
    match stream.consumer_info(&name).await {
        Ok(info) => {
            let config = &info.config;
            if config.ack_policy != AckPolicy::Explicit || config.filter_subject != filter {
                return Err(ConsumerError::Refused(format!(
                    "consumer {name} exists with ack policy {:?} and filter {:?}, where the writer \
                     needs Explicit and {filter:?} (made by an older expd?): remove it with \
                     `nats consumer rm {} {name}` and restart the writer",
                    config.ack_policy,
                    config.filter_subject,
                    nats.stream_name()
                )));
            }
            let consumer = stream
                .get_consumer(&name)
                .await
                .map_err(|err| ConsumerError::NotYet(format!("consumer {name}: {err}")))?;
            remember(&marker)?;
            Ok(consumer)
        }
        Err(err) if err.kind() == ConsumerInfoErrorKind::NotFound => {
            if marker.exists() {
                return Err(ConsumerError::Refused(format!(
                    "consumer {name} is gone, but this writer wrote partition {partition} from \
                     it: made again it would deliver the stream from its start, and events \
                     older than --events-dedup-window would reach Parquet twice. To write the \
                     partition from the start on purpose, delete {}",
                    marker.display()
                )));
            }
            let consumer = stream
                .create_consumer(pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some(format!("expd writer of partition {partition}")),
                    filter_subject: filter,
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: options.ack_wait,
                    max_ack_pending: (options.chunk * 4) as i64,
                    ..Default::default()
                })
                .await
                .map_err(|err| ConsumerError::NotYet(format!("consumer {name}: {err}")))?;
            remember(&marker)?;
            Ok(consumer)
        }
        Err(err) => Err(ConsumerError::NotYet(format!("consumer {name}: {err}"))),
    }
}

/// Writes the marker that this writer has its partition's consumer.
fn remember(marker: &std::path::Path) -> Result<(), ConsumerError> {
    if marker.exists() {
        return Ok(());
    }
    let written = marker
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(marker, b"this writer has written this partition\n"));
    written.map_err(|err| ConsumerError::NotYet(format!("writing {}: {err}", marker.display())))
}

async fn write_partition(
    nats: Arc<Nats>,
    log: Arc<EventLog>,
    options: WriterOptions,
    partition: u32,
    stats: Arc<WriterStats>,
    shutdown: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    'connect: loop {
        let Some(claims) = own(&nats, partition, &options.owner, &stats, &shutdown).await else {
            return;
        };
        let _owned = Counted::new(&stats.partitions_owned);
        let consumer = tokio::select! {
            consumer = consumer(&nats, partition, &options) => consumer,
            () = shutdown.cancelled() => return,
        };
        let messages = match consumer {
            Err(ConsumerError::Refused(reason)) => {
                error!(partition, %reason, "the writer does not write this partition");
                return;
            }
            Ok(consumer) => {
                // Short pulls with heartbeats, as the results' reader: a
                // pull lost with its server is noticed in seconds.
                consumer
                    .stream()
                    .max_messages_per_batch(options.chunk)
                    .expires(super::follow::PULL_EXPIRES)
                    .heartbeat(super::follow::PULL_EXPIRES / 2)
                    .messages()
                    .await
            }
            Err(ConsumerError::NotYet(reason)) => {
                warn!(partition, %reason, "the writer cannot read its partition yet; retrying");
                if !back_off(&mut backoff, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        let mut messages = match messages {
            Ok(messages) => messages.ready_chunks(options.chunk),
            Err(err) => {
                warn!(partition, error = %err, "the writer cannot pull its partition yet; retrying");
                if !back_off(&mut backoff, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        info!(partition, consumer = %consumer_name(partition), "writing a partition of the event stream");
        // The claim deleted or taken while this writer runs: it stops
        // pulling, and claims the partition again first.
        let disowned = claim::changed(&claims, partition, &options.owner);
        tokio::pin!(disowned);
        loop {
            let chunk = tokio::select! {
                chunk = messages.next() => chunk,
                changed = &mut disowned => {
                    match changed {
                        Ok(()) => error!(partition, "this writer's claim on the partition was deleted or taken: it stops writing it"),
                        Err(reason) => warn!(partition, %reason, "watching the partition's claim; claiming it again"),
                    }
                    if !back_off(&mut backoff, &shutdown).await {
                        return;
                    }
                    continue 'connect;
                }
                () = shutdown.cancelled() => return,
            };
            let Some(chunk) = chunk else {
                warn!(partition, "the partition's pull ended; pulling again");
                if !back_off(&mut backoff, &shutdown).await {
                    return;
                }
                continue 'connect;
            };
            let mut batch = Batch::with_capacity(chunk.len());
            let mut written = Vec::with_capacity(chunk.len());
            for message in chunk {
                let message = match message {
                    Ok(message) => message,
                    Err(err) => {
                        // Missed heartbeats and the like: the pull goes on,
                        // or ends and is started again.
                        warn!(partition, error = %err, "pulling the partition");
                        continue;
                    }
                };
                match decode(message.subject.as_str(), &message.payload) {
                    Ok(event) => {
                        batch.push(event);
                        written.push(message);
                    }
                    Err(reason) => {
                        error!(partition, subject = %message.subject, %reason, "a message that is not an event: terminated");
                        stats.undecodable.fetch_add(1, Ordering::Relaxed);
                        if let Err(err) = message.ack_with(AckKind::Term).await {
                            warn!(partition, error = %err, "terminating an undecodable message");
                        }
                    }
                }
            }
            if written.is_empty() {
                continue;
            }
            let count = batch.len() as u64;
            if !append(&log, batch, partition, &shutdown).await {
                // Shut down (or the log closed) before the chunk was
                // durable: it is not acknowledged, and comes back.
                return;
            }
            backoff = FIRST_BACKOFF;
            for message in written {
                if let Err(err) = message.ack().await {
                    // Redelivered later, and answered as duplicates then.
                    warn!(partition, error = %err, "acknowledging a written message");
                }
            }
            stats.acknowledged.fetch_add(count, Ordering::Relaxed);
        }
    }
}

/// Appends `batch` to the log, retrying until it is durable; `false` if
/// the log closed or the process is shutting down first.
async fn append(
    log: &EventLog,
    mut batch: Batch,
    partition: u32,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match log.append(batch).await {
            Ok(_) => return true,
            Err(refused) if refused.error == LogError::Closed => return false,
            Err(refused) => {
                warn!(partition, error = %refused.error, "the event log did not take a chunk; retrying it");
                batch = refused.events.into_iter().collect();
                if !back_off(&mut backoff, shutdown).await {
                    return false;
                }
            }
        }
    }
}
