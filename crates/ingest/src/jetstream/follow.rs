//! The stream read in order, as results read the embedded log: a
//! [`StreamCursor`] reads every event once from the start of the stream,
//! and its position is the stream sequence it has read through, the
//! same number `EventService` answered as the batch's position, so a
//! caller can ask results to include its writes.
//!
//! Each cursor has a reader task holding a JetStream ordered consumer
//! (ephemeral, server-side flow control, recreated from the next
//! sequence after a gap or an outage). The task decodes chunks of
//! messages and hands them over a small bounded channel, so a cursor that
//! is not read holds back its consumer rather than memory; the cursor's
//! `read`, called on the blocking pool like the log's, takes what has
//! arrived. A new cursor first learns the stream's last sequence, and its
//! reads wait until they have reached it: a build from the start is not
//! published before it has read what the stream held when it began.
//!
//! The stream may hold an event twice when a retry came after JetStream's
//! duplicate window; each cursor drops repeats of an id within the
//! `--events-dedup-window` (by publish time), as the embedded log does
//! before writing, so results count an event once.

use std::{
    collections::VecDeque,
    io,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use exp_core::event::Event;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{error, warn};

use super::{FIRST_BACKOFF, Nats, SUBJECT_ROOT, back_off, decode};
use crate::{
    Behind, Position, Tip,
    dedup::{SeenIds, digest},
};

/// Most events a chunk holds.
const CHUNK: usize = 8_192;
/// Chunks a reader task decodes ahead of its cursor.
const AHEAD: usize = 4;
/// Arrivals remembered for [`StreamSource::behind`].
const ARRIVALS_KEPT: usize = 4_096;

/// The stream as the source of results.
#[derive(Debug, Clone)]
pub struct StreamSource {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    nats: Arc<Nats>,
    /// The newest sequence a reader has received: readers wake on it.
    tip: watch::Sender<Tip>,
    /// The stream's last sequence as the newest message said it
    /// (its sequence plus the messages pending after it).
    end: Mutex<u64>,
    /// Chunks received: their last sequence and their first message's
    /// publish time, oldest first.
    arrivals: Mutex<VecDeque<(u64, SystemTime)>>,
    dedup_window: Duration,
    /// When the stream was created (Unix nanoseconds), as first seen: a
    /// stream deleted and
    /// made again starts its sequences over, so every reader of the old
    /// one is stopped (its cursor fails, and results are built again).
    created: Mutex<Option<i128>>,
    /// Cancelled when the stream was found made again.
    generation: Mutex<CancellationToken>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
}

impl StreamSource {
    /// Reads the stream `nats` names; cursors drop repeats of an id
    /// within `dedup_window`. Must be made on the runtime its readers run
    /// on; they end at `shutdown`. The stream's last sequence, for
    /// [`StreamSource::behind`], is also read from the stream every
    /// [`END_REFRESH`], so a reader that stalls (a server leaving) shows
    /// as lag rather than as caught up.
    pub fn new(nats: Arc<Nats>, dedup_window: Duration, shutdown: CancellationToken) -> Self {
        let source = Self {
            inner: Arc::new(Inner {
                nats,
                tip: watch::Sender::new(Tip::default()),
                end: Mutex::new(0),
                arrivals: Mutex::new(VecDeque::new()),
                dedup_window,
                created: Mutex::new(None),
                generation: Mutex::new(shutdown.child_token()),
                runtime: tokio::runtime::Handle::current(),
                shutdown,
            }),
        };
        tokio::spawn(refresh_end(source.inner.clone()));
        source
    }

    /// A cursor at the start of the stream (callable from any thread).
    pub fn cursor(&self) -> StreamCursor {
        let (chunks, receiver) = mpsc::channel(AHEAD);
        let (target_sender, target) = oneshot::channel();
        let stop = lock(&self.inner.generation).child_token();
        self.inner.runtime.spawn(read_stream(
            self.inner.clone(),
            chunks,
            target_sender,
            stop.clone(),
        ));
        StreamCursor {
            chunks: receiver,
            target: Target::Waiting(target),
            position: Position::ZERO,
            reached_end: false,
            _stop: stop.drop_guard(),
        }
    }

    /// Wakes readers when new messages have arrived.
    pub fn watch_tip(&self) -> watch::Receiver<Tip> {
        self.inner.tip.subscribe()
    }

    /// Messages after `position`, and when the oldest of them was
    /// published, as far as the readers have seen.
    pub fn behind(&self, position: Position) -> Behind {
        let counted = position.as_u64();
        let end = *lock(&self.inner.end);
        let events = end.saturating_sub(counted);
        let since = (events > 0)
            .then(|| {
                lock(&self.inner.arrivals)
                    .iter()
                    .find(|(last, _)| *last > counted)
                    .map(|(_, published)| *published)
            })
            .flatten();
        Behind { events, since }
    }

    /// The connection.
    pub fn nats(&self) -> &Arc<Nats> {
        &self.inner.nats
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Events of the stream, decoded, with the sequence they reach.
#[derive(Debug)]
struct Chunk {
    /// What the messages held, repeats and undecodable ones left out
    /// (possibly nothing).
    events: Vec<Event>,
    last: u64,
    /// The stream held nothing after the chunk's last message when it
    /// was sent.
    at_end: bool,
}

/// What a cursor must reach before a read may come back empty.
#[derive(Debug)]
enum Target {
    /// Not yet known: the reader asks the stream first.
    Waiting(oneshot::Receiver<u64>),
    /// The stream's last sequence when the cursor was made (0 when it
    /// held no message).
    Known(u64),
}

/// Reads the stream from its start, in order, each event once.
#[derive(Debug)]
pub struct StreamCursor {
    chunks: mpsc::Receiver<Chunk>,
    target: Target,
    position: Position,
    /// A chunk said the stream held nothing after it: reads no longer
    /// wait for the target (its last message may have been deleted).
    reached_end: bool,
    _stop: DropGuard,
}

impl StreamCursor {
    /// The stream sequence read through.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The next events: what has arrived; before the cursor has reached
    /// the stream's end as it was when the cursor was made, waits for
    /// them (so call it on the blocking pool). An error means the reader
    /// stopped (shutdown): start over with a new cursor.
    pub fn read(&mut self) -> io::Result<Vec<Event>> {
        let stopped = || io::Error::other("the stream's reader stopped");
        if let Target::Waiting(_) = self.target {
            let Target::Waiting(target) =
                std::mem::replace(&mut self.target, Target::Known(u64::MAX))
            else {
                return Err(stopped());
            };
            // Until it is known, the target stays out of reach: a reader
            // that stopped leaves this cursor failing, not empty.
            let known = target.blocking_recv().map_err(|_| stopped())?;
            self.target = Target::Known(known);
        }
        let Target::Known(target) = self.target else {
            return Err(stopped());
        };
        // Empty only once caught up: a chunk whose events were all
        // repeats moves the position on, and the next one is read.
        loop {
            let chunk = if self.position.as_u64() < target && !self.reached_end {
                self.chunks.blocking_recv().ok_or_else(stopped)?
            } else {
                match self.chunks.try_recv() {
                    Ok(chunk) => chunk,
                    Err(mpsc::error::TryRecvError::Empty) => return Ok(Vec::new()),
                    Err(mpsc::error::TryRecvError::Disconnected) => return Err(stopped()),
                }
            };
            self.position = Position::from_u64(chunk.last);
            self.reached_end |= chunk.at_end;
            if !chunk.events.is_empty() {
                return Ok(chunk.events);
            }
        }
    }
}

/// How long a pull of a stream reader waits: its heartbeats come every
/// half of it, and two missed ones recreate the consumer.
pub const PULL_EXPIRES: Duration = Duration::from_secs(4);

/// How often the stream's last sequence is read for the lag.
pub const END_REFRESH: Duration = Duration::from_secs(5);

/// Reads the stream's last sequence every [`END_REFRESH`] until shutdown
/// (a metric's sample: nothing waits on it).
async fn refresh_end(source: Arc<Inner>) {
    let mut every = tokio::time::interval(END_REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = source.shutdown.cancelled() => return,
        }
        if let Ok(stream) = source.nats.stream().await {
            let info = stream.cached_info();
            if source.made_again(info.created.unix_timestamp_nanos()) {
                *lock(&source.end) = info.state.last_sequence;
            } else {
                let mut end = lock(&source.end);
                *end = (*end).max(info.state.last_sequence);
            }
        }
    }
}

impl Inner {
    /// Records when the stream was created; if it was made again since
    /// first seen (deleted and created, its sequences starting over),
    /// stops every reader of the old one: their cursors fail, and the
    /// follower builds results again from the new stream's start.
    fn made_again(&self, created_unix_nanos: i128) -> bool {
        let created = created_unix_nanos;
        let mut first = lock(&self.created);
        match *first {
            None => {
                *first = Some(created);
                false
            }
            Some(known) if known == created => false,
            Some(_) => {
                error!(
                    stream = %self.nats.stream_name(),
                    "the event stream was deleted and created again: its sequences start over, \
                     so results are built again from its start"
                );
                *first = Some(created);
                let mut generation = lock(&self.generation);
                generation.cancel();
                *generation = self.shutdown.child_token();
                lock(&self.arrivals).clear();
                self.tip.send_modify(|tip| tip.position = Position::ZERO);
                true
            }
        }
    }
}

/// A cursor's reader: see the module doc.
async fn read_stream(
    source: Arc<Inner>,
    chunks: mpsc::Sender<Chunk>,
    target: oneshot::Sender<u64>,
    stop: CancellationToken,
) {
    let mut target = Some(target);
    let mut last = 0_u64;
    let mut seen = SeenIds::new(source.dedup_window);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let stream = tokio::select! {
            stream = source.nats.stream() => stream,
            () = stop.cancelled() => return,
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                warn!(%error, "results cannot read the event stream yet; retrying");
                if !back_off(&mut backoff, &stop).await {
                    return;
                }
                continue;
            }
        };
        let info = stream.cached_info();
        if source.made_again(info.created.unix_timestamp_nanos()) || stop.is_cancelled() {
            return;
        }
        if let Some(target) = target.take() {
            let state = &info.state;
            let _ = target.send(if state.messages == 0 {
                0
            } else {
                state.last_sequence
            });
        }
        let deliver_policy = if last == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            }
        };
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: format!("{SUBJECT_ROOT}.>"),
                deliver_policy,
                // Pulls of 4 s with heartbeats every 2 s: a consumer lost
                // with its server is recreated after two missed heartbeats,
                // seconds rather than the client's default minute.
                max_expires: PULL_EXPIRES,
                ..Default::default()
            })
            .await;
        let messages = match consumer {
            Ok(consumer) => consumer.messages().await.map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        let mut messages = match messages {
            Ok(messages) => messages.ready_chunks(CHUNK),
            Err(error) => {
                warn!(%error, "results cannot follow the event stream yet; retrying");
                if !back_off(&mut backoff, &stop).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let items = tokio::select! {
                items = messages.next() => items,
                () = stop.cancelled() => return,
            };
            let Some(items) = items else { break };
            let mut chunk = Chunk {
                events: Vec::with_capacity(items.len()),
                last,
                at_end: false,
            };
            let mut first_published = None;
            let mut end = 0;
            let mut failed = false;
            for item in items {
                let message = match item {
                    Ok(message) => message,
                    Err(error) => {
                        warn!(%error, "following the event stream; resuming after sequence {last}");
                        failed = true;
                        break;
                    }
                };
                let Ok(info) = message.info() else { continue };
                let sequence = info.stream_sequence;
                if sequence <= last {
                    continue;
                }
                last = sequence;
                chunk.last = sequence;
                chunk.at_end = info.pending == 0;
                end = end.max(sequence + info.pending);
                let published = SystemTime::UNIX_EPOCH
                    + Duration::from_nanos(
                        u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0),
                    );
                first_published.get_or_insert(published);
                let unix_ms = published
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |since| since.as_millis() as u64);
                match decode(message.subject.as_str(), &message.payload) {
                    Ok(event) => {
                        if seen.insert_if_new(digest(event.kind(), event.event_id()), unix_ms) {
                            chunk.events.push(event);
                        }
                    }
                    Err(reason) => {
                        error!(sequence, subject = %message.subject, %reason, "a message of the event stream that is not an event: skipped");
                    }
                }
                seen.expire(unix_ms);
            }
            if let Some(published) = first_published {
                let reached = chunk.last;
                tokio::select! {
                    sent = chunks.send(chunk) => if sent.is_err() { return },
                    () = stop.cancelled() => return,
                }
                {
                    let mut arrivals = lock(&source.arrivals);
                    if arrivals.back().is_none_or(|(newest, _)| *newest < reached) {
                        arrivals.push_back((reached, published));
                    }
                    if arrivals.len() > ARRIVALS_KEPT {
                        arrivals.pop_front();
                    }
                    let mut known_end = lock(&source.end);
                    *known_end = (*known_end).max(end);
                }
                // Every chunk wakes the readers (not only a new highest
                // sequence: a rebuild's reader may be ahead of the
                // published one).
                source.tip.send_modify(|tip| {
                    tip.position = tip.position.max(Position::from_u64(reached));
                });
                backoff = FIRST_BACKOFF;
            }
            if failed {
                break;
            }
        }
        if !back_off(&mut backoff, &stop).await {
            return;
        }
    }
}
