//! The durable event log: group commit into fsynced segments, event-id
//! deduplication, and a roller that turns sealed segments into Parquet.
//!
//! ```text
//! append() --> [writer thread] --write+fsync--> wal/<seq>-<ms>.wal --seal--> [roller thread] --> events/<kind>/date=/hour=/*.parquet
//!               one fsync per group of           (every flush interval,       then the segment is deleted
//!               every batch waiting              on flush and on shutdown)
//! ```
//!
//! - **Acked means durable.** `append` answers after the fsync that covers
//!   its events. Every batch waiting when the writer is free joins one
//!   group: one write and one fsync, so durability costs a disk flush per
//!   group, not per call.
//! - **Callers encode.** A [`Batch`] digests each event's id and encodes
//!   its segment record on the caller's thread; the writer only checks the
//!   ids and copies the records of the new events.
//! - **Exactly once.** Each event id is checked against the ids seen in the
//!   dedup window (rebuilt at startup from segments and recent Parquet
//!   files) before it is written; a duplicate is answered as such and not
//!   written. Rolling is idempotent (see [`crate::parquet`]).
//! - **Pushback.** At most `max_pending_events` events wait for the writer;
//!   beyond that `append` fails at once with [`LogError::Overloaded`].
//! - **Failures.** A failed write or fsync fails its group (the ids are
//!   forgotten, the segment is cut back to its durable length); the next
//!   group tries again, on a new segment if needed. Nothing acked is lost.

use std::{
    collections::{HashMap, VecDeque},
    fs::{self, OpenOptions},
    io,
    path::{Path, PathBuf},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
        mpsc as std_mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, oneshot};
use tracing::{error, info, warn};

use crate::{
    dedup::{IdDigest, SeenIds, digest},
    event::{Event, EventKind, unix_millis},
    parquet,
    wal::{self, SegmentId, SegmentWriter},
    yielding::{Share, Yielder, set_background_share},
};

/// Most events written in one group (one write, one fsync).
const MAX_GROUP_EVENTS: usize = 50_000;
/// How often a failed roll is retried.
const ROLL_RETRY: Duration = Duration::from_secs(5);

/// How the log is set up.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// `<data-dir>/events`: segments in `wal/`, Parquet datasets beside.
    pub dir: PathBuf,
    /// Longest time an event waits in a segment before it is rolled into
    /// Parquet.
    pub flush_interval: Duration,
    /// Events accepted but not yet written before `append` pushes back.
    pub max_pending_events: usize,
    /// How long an event id is remembered (at least 24 h).
    pub dedup_window: Duration,
}

/// Why an append failed. Nothing of the batch was acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// Too many events wait for the writer; retry shortly.
    #[error("the event log is busy: {pending} events are waiting to be written; retry shortly")]
    Overloaded {
        /// Events waiting.
        pending: usize,
    },
    /// Writing or fsyncing failed (disk full, I/O error).
    #[error("the event log could not write the batch durably: {0}")]
    Io(String),
    /// The log is shutting down.
    #[error("the event log is shut down")]
    Closed,
}

/// Events the log did not write, handed back with the reason.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub error: LogError,
    /// The events, unchanged (empty if they were lost with a closing log).
    pub events: Vec<Event>,
}

/// Counters of the log since it opened.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Events written.
    pub written: AtomicU64,
    /// Events answered as duplicates.
    pub duplicates: AtomicU64,
    /// Groups committed (fsyncs).
    pub groups: AtomicU64,
    /// Failed group writes.
    pub write_failures: AtomicU64,
    /// Segments rolled into Parquet.
    pub segments_rolled: AtomicU64,
}

/// Every event the log holds: rolled into Parquet or still in segments.
#[derive(Debug, Default)]
pub struct Scan {
    /// Events from Parquet files.
    pub rolled: Vec<Event>,
    /// Events still in log segments.
    pub unrolled: Vec<Event>,
}

impl Scan {
    /// All events, rolled first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.rolled.iter().chain(&self.unrolled)
    }
}

/// The durable event log. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct EventLog {
    commands: std_mpsc::Sender<Command>,
    pending: Arc<Semaphore>,
    max_pending: usize,
    shared: Arc<Shared>,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    events_dir: PathBuf,
    wal_dir: PathBuf,
    /// Held for writing while a segment turns into Parquet, so a scan sees
    /// each event exactly once.
    rolling: RwLock<()>,
    /// Held by the writer while a group is written and broadcast.
    committing: std::sync::Mutex<()>,
    /// Durable length of every segment written since open and not yet
    /// rolled (a segment left by a crash was cut to its durable length at
    /// open and is absent). Updated under `committing`.
    durable_lengths: std::sync::Mutex<HashMap<PathBuf, u64>>,
    committed: broadcast::Sender<Committed>,
    stats: LogStats,
}

/// One committed group's new events, as subscribers receive it.
pub type Committed = Arc<Vec<Event>>;

#[derive(Debug)]
enum Command {
    Append(Job),
    Flush(oneshot::Sender<Result<(), String>>),
    Shutdown,
}

#[derive(Debug)]
struct Job {
    batch: Batch,
    reply: oneshot::Sender<Result<Vec<bool>, Refused>>,
    _permit: OwnedSemaphorePermit,
}

/// Events on their way into the log, each with its id digest and its
/// segment record, encoded as they are pushed: by the caller, on its own
/// thread, before the batch joins the writer's queue. The writer, one
/// thread at normal priority that request handlers can wait behind, then
/// only checks ids and copies bytes; and batches are encoded in parallel
/// (the exposure feed's on CPU time no request wants).
#[derive(Debug, Default)]
pub struct Batch {
    events: Vec<Event>,
    digests: Vec<IdDigest>,
    /// The events' records back to back, as [`wal::encode`] writes them.
    records: Vec<u8>,
    /// Where each event's record ends in `records`.
    ends: Vec<usize>,
}

impl Batch {
    /// An empty batch with room for `events` events.
    pub fn with_capacity(events: usize) -> Self {
        Self {
            events: Vec::with_capacity(events),
            digests: Vec::with_capacity(events),
            records: Vec::new(),
            ends: Vec::with_capacity(events),
        }
    }

    /// Adds `event`, encoding it.
    pub fn push(&mut self, event: Event) {
        self.digests.push(digest(event.kind(), event.event_id()));
        wal::encode(&event, &mut self.records);
        self.ends.push(self.records.len());
        self.events.push(event);
    }

    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events, in order.
    pub fn into_events(self) -> Vec<Event> {
        self.events
    }

    /// Each event's id digest and record, in order.
    fn records(&self) -> impl Iterator<Item = (IdDigest, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.digests
            .iter()
            .zip(starts.zip(&self.ends))
            .map(|(id, (start, end))| (*id, &self.records[start..*end]))
    }
}

impl From<Vec<Event>> for Batch {
    fn from(events: Vec<Event>) -> Self {
        let mut batch = Self::with_capacity(events.len());
        for event in events {
            batch.push(event);
        }
        batch
    }
}

#[derive(Debug)]
enum RollCommand {
    /// A sealed segment and its durable length.
    Segment(SegmentId, PathBuf, u64),
    Barrier(oneshot::Sender<Result<(), String>>),
    Stop,
}

impl EventLog {
    /// Opens the log in `options.dir`: cuts torn tails off segments left by
    /// a crash, rebuilds the seen ids, queues leftover segments for rolling
    /// and starts the writer and roller threads. Blocking.
    pub fn open(options: LogOptions) -> io::Result<Self> {
        let started = Instant::now();
        let wal_dir = options.dir.join("wal");
        fs::create_dir_all(&wal_dir)?;
        let now_ms = unix_millis(SystemTime::now());
        let mut seen = SeenIds::new(options.dedup_window.max(Duration::from_secs(24 * 3600)));
        let window_ms = seen.window_hours() * 3_600_000;
        let mut last_seq = 0;
        let mut leftovers = Vec::new();
        for (id, path) in wal::list(&wal_dir)? {
            last_seq = last_seq.max(id.seq);
            let (events, valid) = wal::read(&path)?;
            if fs::metadata(&path)?.len() > valid {
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(valid)?;
                file.sync_all()?;
                warn!(segment = %path.display(), kept = events.len(), "cut a torn tail off an event log segment");
            }
            if events.is_empty() {
                fs::remove_file(&path)?;
                continue;
            }
            for event in &events {
                seen.insert(digest(event.kind(), event.event_id()), id.opened_ms);
            }
            leftovers.push((id, path));
        }
        parquet::remove_temporaries(&options.dir)?;
        let mut files = 0;
        for kind in EventKind::ALL {
            for path in parquet::list(&options.dir, kind)? {
                let name = path.file_name().and_then(|name| name.to_str());
                let Some(id) = name.and_then(parquet::parse_file_name) else {
                    continue;
                };
                last_seq = last_seq.max(id.seq);
                if id.opened_ms + window_ms < now_ms {
                    continue;
                }
                files += 1;
                for event_id in parquet::read_event_ids(&path)? {
                    seen.insert(digest(kind, &event_id), id.opened_ms);
                }
            }
        }
        seen.expire(now_ms);
        info!(
            remembered_ids = seen.len(),
            parquet_files = files,
            leftover_segments = leftovers.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "event log open"
        );

        let (committed, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            events_dir: options.dir.clone(),
            wal_dir: wal_dir.clone(),
            rolling: RwLock::new(()),
            committing: std::sync::Mutex::new(()),
            durable_lengths: std::sync::Mutex::default(),
            committed,
            stats: LogStats::default(),
        });
        let (roll_sender, roll_receiver) = std_mpsc::channel();
        for (id, path) in leftovers {
            let _ = roll_sender.send(RollCommand::Segment(id, path, u64::MAX));
        }
        let roller_shared = shared.clone();
        let roller = std::thread::Builder::new()
            .name("event-roller".into())
            .spawn(move || roller(roll_receiver, roller_shared))?;
        let (commands, command_receiver) = std_mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            seen,
            segment: None,
            opened_at: Instant::now(),
            next_seq: last_seq + 1,
            flush_interval: options.flush_interval,
            roller: roll_sender,
            buffer: Vec::new(),
            yielder: Yielder::default(),
        };
        let writer = std::thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || writer.run(command_receiver))?;
        Ok(Self {
            commands,
            pending: Arc::new(Semaphore::new(options.max_pending_events)),
            max_pending: options.max_pending_events,
            shared,
            threads: std::sync::Mutex::new(vec![writer, roller]),
        })
    }

    /// Writes `events` durably; answers, per event, whether it was new
    /// (`true`) or a duplicate of an id seen in the window (`false`).
    pub async fn append(&self, events: Vec<Event>) -> Result<Vec<bool>, LogError> {
        self.append_or_return(events)
            .await
            .map_err(|refused| refused.error)
    }

    /// [`EventLog::append`], handing the events back when they were not
    /// written, so a caller can retry without keeping a copy.
    pub async fn append_or_return(&self, events: Vec<Event>) -> Result<Vec<bool>, Refused> {
        self.append_batch(Batch::from(events)).await
    }

    /// [`EventLog::append_or_return`] of a batch already encoded.
    pub async fn append_batch(&self, batch: Batch) -> Result<Vec<bool>, Refused> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        let Ok(permit) = self.pending.clone().try_acquire_many_owned(wanted) else {
            let error = LogError::Overloaded {
                pending: self.max_pending - self.pending.available_permits(),
            };
            return Err(Refused {
                error,
                events: batch.into_events(),
            });
        };
        let (reply, answer) = oneshot::channel();
        if let Err(std_mpsc::SendError(command)) = self.commands.send(Command::Append(Job {
            batch,
            reply,
            _permit: permit,
        })) {
            let events = match command {
                Command::Append(job) => job.batch.into_events(),
                _ => Vec::new(),
            };
            return Err(Refused {
                error: LogError::Closed,
                events,
            });
        }
        answer.await.unwrap_or(Err(Refused {
            error: LogError::Closed,
            events: Vec::new(),
        }))
    }

    /// Seals the current segment and waits until every segment is rolled
    /// into Parquet.
    pub async fn flush(&self) -> Result<(), LogError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Flush(reply))
            .map_err(|_| LogError::Closed)?;
        answer
            .await
            .map_err(|_| LogError::Closed)?
            .map_err(LogError::Io)
    }

    /// Writes what is pending, rolls every segment into Parquet and stops
    /// the threads. Blocking; later appends fail with [`LogError::Closed`].
    pub fn close(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// Events written from now on, group by group, after their fsync (for
    /// incremental consumers such as results). A group is on the
    /// subscription before its appends are answered.
    pub fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.shared.committed.subscribe()
    }

    /// Every event held: the Parquet files and the segments not rolled yet,
    /// each event exactly once (rolling waits while a scan runs). Blocking.
    pub fn scan(&self) -> io::Result<Scan> {
        self.scan_then(|| ()).map(|(scan, ())| scan)
    }

    /// A scan and a subscription that continues it exactly: every event is
    /// either in the scan or on the receiver, once. For a consumer that
    /// rebuilds its state from the log and then follows it. Blocking;
    /// commits wait while the unrolled segments are read.
    pub fn scan_and_subscribe(&self) -> io::Result<(Scan, broadcast::Receiver<Committed>)> {
        self.scan_then(|| self.shared.committed.subscribe())
    }

    fn scan_then<T>(&self, before_segments: impl FnOnce() -> T) -> io::Result<(Scan, T)> {
        let _rolling = self
            .shared
            .rolling
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut scan = Scan::default();
        let segments = wal::list(&self.shared.wal_dir)?;
        for kind in EventKind::ALL {
            for path in parquet::list(&self.shared.events_dir, kind)? {
                // Files of a segment still in the log (a crash between its
                // roll and its deletion) are read from the segment.
                let name = path.file_name().and_then(|name| name.to_str());
                let from = name.and_then(parquet::parse_file_name);
                if from.is_some_and(|id| segments.iter().any(|(segment, _)| *segment == id)) {
                    continue;
                }
                scan.rolled.extend(parquet::read_events(&path, kind)?);
            }
        }
        // Under the commit lock only the segments and their durable
        // lengths are noted (listed again: a segment opened since the first
        // listing holds groups committed before the subscription); they are
        // read after it, so appends wait for a listing, not for a read.
        let (then, segments) = {
            let _committing = self
                .shared
                .committing
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let then = before_segments();
            let durable = self
                .shared
                .durable_lengths
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let segments: Vec<(PathBuf, u64)> = wal::list(&self.shared.wal_dir)?
                .into_iter()
                .map(|(_, path)| {
                    let limit = durable.get(&path).copied().unwrap_or(u64::MAX);
                    (path, limit)
                })
                .collect();
            (then, segments)
        };
        for (path, limit) in segments {
            match wal::read_prefix(&path, limit) {
                Ok((events, _)) => scan.unrolled.extend(events),
                // Deleted while listed: an empty segment, or rolled.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        Ok((scan, then))
    }

    /// Counters since the log opened.
    pub fn stats(&self) -> &LogStats {
        &self.shared.stats
    }

    /// The directory of the datasets (`<data-dir>/events`).
    pub fn dir(&self) -> &Path {
        &self.shared.events_dir
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    shared: Arc<Shared>,
    seen: SeenIds,
    segment: Option<SegmentWriter>,
    opened_at: Instant,
    next_seq: u64,
    flush_interval: Duration,
    roller: std_mpsc::Sender<RollCommand>,
    buffer: Vec<u8>,
    /// The writer runs at normal priority (callers of `LogExposures` and
    /// `LogOutcomes` wait for it), so a group of a thousand events would
    /// otherwise hold a request handler on its CPU for a millisecond or
    /// more.
    yielder: Yielder,
}

impl Writer {
    fn run(mut self, commands: std_mpsc::Receiver<Command>) {
        loop {
            let wait = match &self.segment {
                Some(segment) if segment.events > 0 => {
                    self.flush_interval.saturating_sub(self.opened_at.elapsed())
                }
                _ => Duration::from_secs(1),
            };
            let first = match commands.recv_timeout(wait) {
                Ok(command) => command,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    self.seal_if_due();
                    continue;
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    self.seal();
                    let _ = self.roller.send(RollCommand::Stop);
                    return;
                }
            };
            self.yielder.restart();
            let mut group = Vec::new();
            let mut group_events = 0;
            let mut flushes = Vec::new();
            let mut shutdown = false;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append(job) => {
                        group_events += job.batch.len();
                        group.push(job);
                    }
                    Command::Flush(reply) => flushes.push(reply),
                    Command::Shutdown => shutdown = true,
                }
                if group_events < MAX_GROUP_EVENTS && !shutdown {
                    next = commands.try_recv().ok();
                }
            }
            if !group.is_empty() {
                let shared = self.shared.clone();
                // Held across the write and the broadcast, so a reader that
                // takes it sees each group either in the segment or on its
                // subscription, never both and never neither.
                let _committing = shared
                    .committing
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                self.commit(group);
            }
            if !flushes.is_empty() || shutdown {
                self.seal();
                for reply in flushes {
                    let _ = self.roller.send(RollCommand::Barrier(reply));
                }
            }
            if shutdown {
                let _ = self.roller.send(RollCommand::Stop);
                return;
            }
            self.seal_if_due();
        }
    }

    fn commit(&mut self, group: Vec<Job>) {
        let now = SystemTime::now();
        let now_ms = unix_millis(now);
        self.seen.expire(now_ms);
        self.buffer.clear();
        let mut inserted = Vec::new();
        let mut fresh_events = 0;
        let mut answers = Vec::with_capacity(group.len());
        for job in &group {
            let mut fresh = Vec::with_capacity(job.batch.len());
            for (id, record) in job.batch.records() {
                self.yielder.tick();
                if !self.seen.insert_if_new(id, now_ms) {
                    fresh.push(false);
                    continue;
                }
                inserted.push(id);
                self.buffer.extend_from_slice(record);
                fresh_events += 1;
                fresh.push(true);
            }
            answers.push(fresh);
        }
        let shared = self.shared.clone();
        let stats = &shared.stats;
        let written = if fresh_events == 0 {
            Ok(())
        } else {
            self.write(now_ms, fresh_events)
        };
        match written {
            Ok(()) => {
                stats
                    .written
                    .fetch_add(fresh_events as u64, Ordering::Relaxed);
                stats.groups.fetch_add(1, Ordering::Relaxed);
                let duplicates = answers.iter().flatten().filter(|fresh| !**fresh).count();
                stats
                    .duplicates
                    .fetch_add(duplicates as u64, Ordering::Relaxed);
                let broadcast = shared.committed.receiver_count() > 0 && fresh_events > 0;
                let mut committed = Vec::new();
                let mut replies = Vec::with_capacity(group.len());
                for (job, fresh) in group.into_iter().zip(answers) {
                    let Job { batch, reply, .. } = job;
                    let events = batch.into_events();
                    if broadcast && committed.is_empty() && fresh.iter().all(|fresh| *fresh) {
                        // Handed over whole (the usual group: one batch, all
                        // new): the caller gets only the flags.
                        committed = events;
                    } else if broadcast {
                        // Moved, not copied.
                        committed.reserve(fresh_events - committed.len());
                        committed.extend(
                            events
                                .into_iter()
                                .zip(&fresh)
                                .filter(|(_, fresh)| **fresh)
                                .map(|(event, _)| event),
                        );
                    }
                    replies.push((reply, fresh));
                }
                // Broadcast before answering: once an append is answered,
                // its events are on every subscription.
                if broadcast {
                    let _ = shared.committed.send(Arc::new(committed));
                }
                for (reply, fresh) in replies {
                    let _ = reply.send(Ok(fresh));
                }
            }
            Err(error) => {
                stats.write_failures.fetch_add(1, Ordering::Relaxed);
                for id in inserted {
                    self.seen.remove(id);
                }
                warn!(%error, events = fresh_events, "event log write failed; the group was refused");
                for job in group {
                    let _ = job.reply.send(Err(Refused {
                        error: LogError::Io(error.clone()),
                        events: job.batch.into_events(),
                    }));
                }
            }
        }
    }

    fn write(&mut self, now_ms: u64, events: usize) -> Result<(), String> {
        if self.segment.is_none() {
            let id = SegmentId {
                seq: self.next_seq,
                opened_ms: now_ms,
            };
            let segment = SegmentWriter::create(&self.shared.wal_dir, id)
                .map_err(|err| format!("creating segment {}: {err}", id.file_name()))?;
            self.next_seq += 1;
            self.opened_at = Instant::now();
            self.shared
                .durable_lengths
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(segment.path.clone(), 0);
            self.segment = Some(segment);
        }
        let Some(segment) = self.segment.as_mut() else {
            return Err("no segment".into());
        };
        match segment.append_durably(&self.buffer, events) {
            Ok(()) => {
                self.shared
                    .durable_lengths
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(segment.path.clone(), segment.synced_len);
                Ok(())
            }
            Err(failure) => {
                if !failure.segment_usable {
                    self.seal();
                }
                Err(failure.error.to_string())
            }
        }
    }

    fn seal_if_due(&mut self) {
        if self
            .segment
            .as_ref()
            .is_some_and(|segment| segment.events > 0)
            && self.opened_at.elapsed() >= self.flush_interval
        {
            self.seal();
        }
    }

    /// Hands the current segment to the roller (or deletes it when empty).
    fn seal(&mut self) {
        let Some(segment) = self.segment.take() else {
            return;
        };
        if segment.events == 0 {
            let _ = fs::remove_file(&segment.path);
            self.shared
                .durable_lengths
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&segment.path);
            return;
        }
        let _ = self.roller.send(RollCommand::Segment(
            segment.id,
            segment.path,
            segment.synced_len,
        ));
    }
}

fn roller(commands: std_mpsc::Receiver<RollCommand>, shared: Arc<Shared>) {
    // Rolling is background work (about 2 us of CPU per event, in bursts
    // at every flush interval) whose backlog waits on disk: it runs on
    // CPU time request handling does not want.
    set_background_share("event-roller", Share::Leftover);
    let mut queue: VecDeque<(SegmentId, PathBuf, u64)> = VecDeque::new();
    loop {
        let wait = if queue.is_empty() {
            Duration::from_secs(3600)
        } else {
            ROLL_RETRY
        };
        let command = commands.recv_timeout(wait);
        match command {
            Ok(RollCommand::Segment(id, path, durable)) => {
                queue.push_back((id, path, durable));
                roll_queued(&mut queue, &shared);
            }
            Ok(RollCommand::Barrier(reply)) => {
                roll_queued(&mut queue, &shared);
                let _ = reply.send(if queue.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} log segments could not be rolled into Parquet yet",
                        queue.len()
                    ))
                });
            }
            Ok(RollCommand::Stop) | Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                roll_queued(&mut queue, &shared);
                if !queue.is_empty() {
                    warn!(
                        segments = queue.len(),
                        "stopping with log segments not rolled; they are rolled at the next start"
                    );
                }
                return;
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => roll_queued(&mut queue, &shared),
        }
    }
}

fn roll_queued(queue: &mut VecDeque<(SegmentId, PathBuf, u64)>, shared: &Shared) {
    while let Some((id, path, durable)) = queue.front() {
        match roll_segment(*id, path, *durable, shared) {
            Ok(()) => {
                shared.stats.segments_rolled.fetch_add(1, Ordering::Relaxed);
                queue.pop_front();
            }
            Err(error) => {
                warn!(segment = %path.display(), %error, "rolling a log segment into Parquet failed; will retry");
                return;
            }
        }
    }
}

/// Rolls the first `durable` bytes of a segment (records past them belong
/// to a write that failed and was refused) and deletes it. A segment that
/// is gone was rolled already. One whose durable bytes do not all read
/// back is renamed `*.wal.corrupt` instead of deleted.
fn roll_segment(id: SegmentId, path: &Path, durable: u64, shared: &Shared) -> io::Result<()> {
    let _rolling = shared
        .rolling
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut records = match wal::SegmentReader::open(path, durable) {
        Ok(records) => records,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    parquet::roll(&shared.events_dir, id, records.by_ref())?;
    let removed = if durable != u64::MAX && records.valid_len() < durable {
        // Acknowledged records that do not read back (the disk corrupted
        // them): the readable ones are in Parquet; the file is kept aside
        // for an operator, out of the log, instead of deleted.
        let aside = path.with_extension("wal.corrupt");
        error!(
            segment = %aside.display(),
            readable_bytes = records.valid_len(),
            durable_bytes = durable,
            "an event log segment does not read back whole; its readable events were rolled and the file was kept aside"
        );
        fs::rename(path, &aside)
    } else {
        fs::remove_file(path)
    };
    match removed {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    shared
        .durable_lengths
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(path);
    wal::sync_dir(&shared.wal_dir)
}

#[cfg(test)]
mod tests {
    use exp_proto::v1;

    use super::*;

    fn options(dir: &Path) -> LogOptions {
        LogOptions {
            dir: dir.to_owned(),
            flush_interval: Duration::from_secs(3600),
            max_pending_events: 10_000,
            dedup_window: Duration::from_secs(24 * 3600),
        }
    }

    fn click(id: &str) -> Event {
        Event::Outcome(v1::Outcome {
            event_id: id.into(),
            r#type: v1::OutcomeType::Click as i32,
            session_id: "s-1".into(),
            item_id: "sku-1".into(),
            timestamp: Some(SystemTime::now().into()),
            ..Default::default()
        })
    }

    fn ids(scan: &Scan) -> Vec<String> {
        let mut ids: Vec<String> = scan.events().map(|e| e.event_id().to_owned()).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn a_retried_event_is_written_once_and_answered_as_a_duplicate() {
        let dir = tempfile::tempdir().expect("dir");
        let log = EventLog::open(options(dir.path())).expect("open");
        let first = log.append(vec![click("a"), click("b")]).await;
        assert_eq!(first, Ok(vec![true, true]));
        let retry = log.append(vec![click("b"), click("c"), click("c")]).await;
        assert_eq!(retry, Ok(vec![false, true, false]));
        assert_eq!(ids(&log.scan().expect("scan")), ["a", "b", "c"]);
        assert_eq!(log.stats().duplicates.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn flush_rolls_segments_into_parquet_and_a_scan_still_sees_each_event_once() {
        let dir = tempfile::tempdir().expect("dir");
        let log = EventLog::open(options(dir.path())).expect("open");
        log.append(vec![click("a"), click("b")])
            .await
            .expect("append");
        log.flush().await.expect("flush");
        log.append(vec![click("c")]).await.expect("append");
        let scan = log.scan().expect("scan");
        assert_eq!(scan.rolled.len(), 2, "rolled into Parquet");
        assert_eq!(scan.unrolled.len(), 1, "still in the log");
        assert_eq!(ids(&scan), ["a", "b", "c"]);
        assert_eq!(
            parquet::list(dir.path(), EventKind::Outcome)
                .expect("list")
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn ids_are_remembered_across_a_restart_from_segments_and_parquet() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let log = EventLog::open(options(dir.path())).expect("open");
            log.append(vec![click("rolled")]).await.expect("append");
            log.flush().await.expect("flush");
            log.append(vec![click("unrolled")]).await.expect("append");
            // Dropped without close: the second segment stays in the log,
            // as after a crash (rolling it happens at the next open).
            std::mem::forget(log);
        }
        let log = EventLog::open(options(dir.path())).expect("reopen");
        assert_eq!(
            log.append(vec![click("rolled"), click("unrolled"), click("new")])
                .await,
            Ok(vec![false, false, true])
        );
        log.close();
        let reopened = EventLog::open(options(dir.path())).expect("reopen");
        let scan = reopened.scan().expect("scan");
        assert!(scan.unrolled.is_empty(), "close rolls everything");
        assert_eq!(ids(&scan), ["new", "rolled", "unrolled"]);
    }

    #[tokio::test]
    async fn a_torn_tail_left_by_a_crash_is_cut_and_the_acked_events_kept() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let log = EventLog::open(options(dir.path())).expect("open");
            log.append(vec![click("acked")]).await.expect("append");
            std::mem::forget(log);
        }
        let (_, segment) = wal::list(&dir.path().join("wal")).expect("list")[0].clone();
        let mut torn = Vec::new();
        wal::encode(&click("torn"), &mut torn);
        torn.truncate(torn.len() / 2);
        let mut bytes = fs::read(&segment).expect("read");
        bytes.extend_from_slice(&torn);
        fs::write(&segment, bytes).expect("write");
        let log = EventLog::open(options(dir.path())).expect("reopen");
        log.flush().await.expect("flush");
        assert_eq!(ids(&log.scan().expect("scan")), ["acked"]);
        assert_eq!(
            log.append(vec![click("torn")]).await,
            Ok(vec![true]),
            "the torn event was never acked, so it is new"
        );
    }

    #[tokio::test]
    async fn a_batch_beyond_the_pending_limit_is_pushed_back_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let log = EventLog::open(LogOptions {
            max_pending_events: 2,
            ..options(dir.path())
        })
        .expect("open");
        let refused = log.append(vec![click("a"), click("b"), click("c")]).await;
        assert!(
            matches!(refused, Err(LogError::Overloaded { .. })),
            "{refused:?}"
        );
        let batch = vec![click("a"), click("b"), click("c")];
        let handed_back = log
            .append_or_return(batch.clone())
            .await
            .expect_err("refused");
        assert_eq!(handed_back.events, batch, "handed back unchanged");
        assert_eq!(log.append(vec![click("a")]).await, Ok(vec![true]));
    }

    #[tokio::test]
    async fn a_scan_in_the_window_between_a_roll_and_its_deletion_counts_each_event_once() {
        let dir = tempfile::tempdir().expect("dir");
        let log = EventLog::open(options(dir.path())).expect("open");
        log.append(vec![click("a"), click("b")])
            .await
            .expect("append");
        // As if the roller wrote the segment's files and crashed before
        // deleting it.
        let (id, path) = wal::list(&dir.path().join("wal")).expect("list")[0].clone();
        parquet::roll(
            dir.path(),
            id,
            wal::SegmentReader::open(&path, u64::MAX).expect("open"),
        )
        .expect("roll");
        let scan = log.scan().expect("scan");
        assert_eq!(ids(&scan), ["a", "b"]);
        assert_eq!(scan.unrolled.len(), 2, "read from the segment");
    }

    #[tokio::test]
    async fn subscribers_receive_new_events_after_they_are_durable_and_before_the_answer() {
        let dir = tempfile::tempdir().expect("dir");
        let log = EventLog::open(options(dir.path())).expect("open");
        let mut committed = log.subscribe();
        log.append(vec![click("a"), click("a")])
            .await
            .expect("append");
        let events = committed
            .try_recv()
            .expect("on the subscription once answered");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_id(), "a");
    }

    #[tokio::test]
    async fn a_batch_encoded_by_its_caller_is_logged_and_broadcast_without_its_duplicates() {
        let dir = tempfile::tempdir().expect("dir");
        let log = EventLog::open(options(dir.path())).expect("open");
        let mut committed = log.subscribe();
        let mut batch = Batch::with_capacity(2);
        batch.push(click("a"));
        batch.push(click("b"));
        assert_eq!(log.append_batch(batch).await.expect("append"), [true, true]);
        let group = committed.try_recv().expect("broadcast");
        let group_ids: Vec<&str> = group.iter().map(Event::event_id).collect();
        assert_eq!(group_ids, ["a", "b"], "a batch all new goes out whole");
        let mixed = Batch::from(vec![click("b"), click("c"), click("c")]);
        assert_eq!(
            log.append_batch(mixed).await.expect("append"),
            [false, true, false]
        );
        let group = committed.try_recv().expect("broadcast");
        let group_ids: Vec<&str> = group.iter().map(Event::event_id).collect();
        assert_eq!(group_ids, ["c"], "duplicates left out");
        let (_, segment) = wal::list(&dir.path().join("wal")).expect("list")[0].clone();
        let (logged, _) = wal::read(&segment).expect("read");
        let logged_ids: Vec<&str> = logged.iter().map(Event::event_id).collect();
        assert_eq!(logged_ids, ["a", "b", "c"], "each record once, in order");
    }

    #[test]
    fn a_batch_holds_each_event_with_its_id_digest_and_its_segment_record() {
        let events = vec![click("a"), click("b")];
        let batch = Batch::from(events.clone());
        let records: Vec<(IdDigest, Vec<u8>)> = batch
            .records()
            .map(|(id, record)| (id, record.to_vec()))
            .collect();
        let expected: Vec<(IdDigest, Vec<u8>)> = events
            .iter()
            .map(|event| {
                let mut record = Vec::new();
                wal::encode(event, &mut record);
                (digest(event.kind(), event.event_id()), record)
            })
            .collect();
        assert_eq!(records, expected);
        assert_eq!(batch.into_events(), events);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scan_and_its_subscription_hold_every_event_once_while_writes_and_rolls_go_on() {
        let dir = tempfile::tempdir().expect("dir");
        let log = Arc::new(
            EventLog::open(LogOptions {
                flush_interval: Duration::from_millis(20),
                ..options(dir.path())
            })
            .expect("open"),
        );
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                for batch in 0..200 {
                    let events = (0..10).map(|i| click(&format!("e-{batch}-{i}"))).collect();
                    log.append(events).await.expect("append");
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        let scanning = log.clone();
        let (scan, mut receiver) = tokio::task::spawn_blocking(move || {
            scanning.scan_and_subscribe().expect("scan and subscribe")
        })
        .await
        .expect("scan");
        writer.await.expect("writer");
        let mut seen = ids(&scan);
        while let Ok(group) = receiver.try_recv() {
            seen.extend(group.iter().map(|event| event.event_id().to_owned()));
        }
        seen.sort();
        let mut expected: Vec<String> = (0..200)
            .flat_map(|batch| (0..10).map(move |i| format!("e-{batch}-{i}")))
            .collect();
        expected.sort();
        assert_eq!(seen, expected, "every event exactly once");
    }

    #[tokio::test]
    async fn a_segment_whose_durable_records_do_not_read_back_is_kept_aside_after_its_roll() {
        let dir = tempfile::tempdir().expect("dir");
        let log = EventLog::open(options(dir.path())).expect("open");
        log.append(vec![click("a"), click("b")])
            .await
            .expect("append");
        log.append(vec![click("c")]).await.expect("append");
        let (id, path) = wal::list(&dir.path().join("wal")).expect("list")[0].clone();
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).expect("corrupt the last record");
        log.flush().await.expect("flush");
        let aside = path.with_extension("wal.corrupt");
        assert!(aside.exists(), "kept aside");
        assert!(wal::list(&dir.path().join("wal")).expect("list").is_empty());
        let files = parquet::list(dir.path(), EventKind::Outcome).expect("list");
        assert_eq!(files.len(), 1);
        assert_eq!(
            parquet::parse_file_name(files[0].file_name().and_then(|n| n.to_str()).expect("name")),
            Some(id)
        );
        assert_eq!(parquet::read_event_ids(&files[0]).expect("ids"), ["a", "b"]);
    }

    #[tokio::test]
    async fn segments_are_rolled_after_the_flush_interval_without_being_asked() {
        let dir = tempfile::tempdir().expect("dir");
        let log = EventLog::open(LogOptions {
            flush_interval: Duration::from_millis(100),
            ..options(dir.path())
        })
        .expect("open");
        log.append(vec![click("a")]).await.expect("append");
        for _ in 0..100 {
            if log.stats().segments_rolled.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let scan = log.scan().expect("scan");
        assert_eq!((scan.rolled.len(), scan.unrolled.len()), (1, 0));
    }
}
