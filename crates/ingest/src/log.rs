//! The durable event log: group commit into fsynced segments, event-id
//! deduplication, positions, cursors that read it from the start or from a
//! position, and a roller that turns sealed segments into Parquet.
//!
//! ```text
//! append() --> [writer] --write+fsync--> wal/<seq>-<ms>.wal --seal--> [roller] --> events/<kind>/date=/hour=/*.parquet
//!               one fsync per group of     |                              then the segment is deleted, once
//!               every batch waiting        |                              every cursor has read past it
//!                                          v
//!                          cursors: Parquet files of deleted segments, then the segments, then new commits
//! ```
//!
//! - **Acked means durable.** `append` answers after the fsync that covers
//!   its events, with the [`Position`] the log reached. Every batch waiting
//!   when the writer is free joins one group: one write and one fsync.
//! - **Callers encode** (see [`Batch`]): the writer only checks ids and
//!   copies records.
//! - **Exactly once.** Each event id is checked against the ids seen in the
//!   dedup window (rebuilt at startup from segments and recent Parquet
//!   files) before it is written; a duplicate is answered as such and not
//!   written. Rolling is idempotent (see [`crate::parquet`]).
//! - **Readers are cursors.** A [`Cursor`] reads every event once, in log
//!   order: the Parquet files of segments already deleted, then each
//!   segment from its file, then what is committed while it reads. A
//!   segment's file is kept until every cursor has read past it, so a
//!   reader that falls behind catches up from disk, never by a rebuild.
//!   [`EventLog::watch_tip`] wakes readers when a group commits.
//! - **Pushback.** At most `max_pending_events` events wait for the writer;
//!   beyond that `append` fails at once with [`LogError::Overloaded`].
//! - **Failures.** A failed write or fsync fails its group (the ids are
//!   forgotten, the segment is cut back to its durable length); the next
//!   group tries again, on a new segment if needed. Nothing acked is lost.

use std::{
    collections::{BTreeMap, VecDeque},
    fs::{self, OpenOptions},
    io,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicU64, Ordering},
        mpsc as std_mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use exp_core::event::{Event, EventKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tracing::{info, warn};

use crate::{
    Batch, Position,
    cursor::Cursor,
    dedup::{SeenIds, digest},
    parquet, roller,
    wal::{self, SegmentId},
    writer::Writer,
};

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

/// A batch the log did not write, handed back with the reason.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub error: LogError,
    /// The events, unchanged (empty if they were lost with a closing log).
    pub events: Vec<Event>,
}

/// What an append wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Per event of the batch: new (`true`), or a duplicate of an id seen
    /// in the window (`false`).
    pub fresh: Vec<bool>,
    /// The log's position once the batch was durable: a reader that has
    /// read through it has read every event of the batch (a duplicate's
    /// first copy included).
    pub position: Position,
}

/// The newest committed position, and whether the log has closed (no
/// position comes after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tip {
    /// Every committed event is at or before it.
    pub position: Position,
    /// The writer has stopped.
    pub closed: bool,
}

/// Events committed after a position, for a reader to say how far behind
/// it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Behind {
    /// Events in segments after the position.
    pub events: u64,
    /// When the oldest of them was committed (`None`: none).
    pub since: Option<SystemTime>,
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

/// Group commits remembered for [`EventLog::behind`].
const COMMITS_KEPT: usize = 4_096;

/// A segment file in `wal/`.
#[derive(Debug, Clone)]
pub(crate) struct SegmentEntry {
    pub(crate) id: SegmentId,
    pub(crate) path: PathBuf,
    /// Durable events.
    pub(crate) events: u64,
    /// Durable bytes: readers look no further.
    pub(crate) durable_len: u64,
    /// No more events will be written to it.
    pub(crate) sealed: bool,
    /// In Parquet; the file waits for cursors to read past it.
    pub(crate) rolled: bool,
    /// Its durable bytes did not all read back when it was rolled: kept
    /// aside as `*.wal.corrupt` instead of deleted.
    pub(crate) corrupt: bool,
}

impl SegmentEntry {
    /// The position after its last durable event.
    pub(crate) fn end(&self) -> Position {
        Position::new(self.id.seq, self.events)
    }
}

/// What the writer, the roller and the cursors share, under one lock.
#[derive(Debug, Default)]
pub(crate) struct LogState {
    /// Every segment file in `wal/`, by sequence number.
    pub(crate) segments: BTreeMap<u64, SegmentEntry>,
    /// Recent group commits: the position each reached and when.
    pub(crate) commits: VecDeque<(Position, SystemTime)>,
    /// Each open cursor's position: segments are kept until all have read
    /// past them.
    pub(crate) cursors: Vec<Weak<AtomicU64>>,
}

impl LogState {
    /// The position every open cursor has read through (`None` without
    /// cursors); forgets cursors that were dropped.
    pub(crate) fn slowest_cursor(&mut self) -> Option<Position> {
        self.cursors.retain(|cursor| cursor.strong_count() > 0);
        self.cursors
            .iter()
            .filter_map(Weak::upgrade)
            .map(|mark| Position::from_u64(mark.load(Ordering::Acquire)))
            .min()
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) events_dir: PathBuf,
    pub(crate) wal_dir: PathBuf,
    state: Mutex<LogState>,
    pub(crate) tip: watch::Sender<Tip>,
    pub(crate) stats: LogStats,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, LogState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug)]
pub(crate) enum Command {
    Append(Job),
    Flush(oneshot::Sender<Result<(), String>>),
    Shutdown,
}

#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) batch: Batch,
    pub(crate) reply: oneshot::Sender<Result<Appended, Refused>>,
    pub(crate) _permit: OwnedSemaphorePermit,
}

/// The durable event log. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct EventLog {
    commands: std_mpsc::Sender<Command>,
    pending: Arc<Semaphore>,
    max_pending: usize,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl EventLog {
    /// Opens the log in `options.dir`: cuts torn tails off segments left by
    /// a crash, rebuilds the seen ids, queues leftover segments for rolling
    /// and starts the writer and roller threads (both block on the disk).
    /// Blocking.
    pub fn open(options: LogOptions) -> io::Result<Self> {
        let started = Instant::now();
        let wal_dir = options.dir.join("wal");
        fs::create_dir_all(&wal_dir)?;
        let now_ms = unix_millis(SystemTime::now());
        let mut seen = SeenIds::new(options.dedup_window.max(Duration::from_secs(24 * 3600)));
        let window_ms = seen.window_hours() * 3_600_000;
        let mut state = LogState::default();
        for (id, path) in wal::list(&wal_dir)? {
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
            state.segments.insert(
                id.seq,
                SegmentEntry {
                    id,
                    path,
                    events: events.len() as u64,
                    durable_len: valid,
                    sealed: true,
                    rolled: false,
                    corrupt: false,
                },
            );
        }
        parquet::remove_temporaries(&options.dir)?;
        // The newest rolled segment, for the tip when no segment is left.
        let mut newest_rolled: Option<(u64, Vec<PathBuf>)> = None;
        let mut files = 0;
        for kind in EventKind::ALL {
            for path in parquet::list(&options.dir, kind)? {
                let name = path.file_name().and_then(|name| name.to_str());
                let Some(id) = name.and_then(parquet::parse_file_name) else {
                    continue;
                };
                match &mut newest_rolled {
                    Some((seq, paths)) if *seq == id.seq => paths.push(path.clone()),
                    Some((seq, _)) if *seq > id.seq => {}
                    _ => newest_rolled = Some((id.seq, vec![path.clone()])),
                }
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
        let newest_rolled = newest_rolled.filter(|(seq, _)| !state.segments.contains_key(seq));
        let rolled_tip = match &newest_rolled {
            Some((seq, paths)) => {
                let mut rows = 0;
                for path in paths {
                    rows += parquet::FileEvents::rows(path)?;
                }
                Position::new(*seq, rows)
            }
            None => Position::ZERO,
        };
        let tip = state
            .segments
            .values()
            .next_back()
            .map_or(rolled_tip, SegmentEntry::end)
            .max(rolled_tip);
        let next_seq = tip.segment() + 1;
        info!(
            remembered_ids = seen.len(),
            parquet_files = files,
            leftover_segments = state.segments.len(),
            %tip,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "event log open"
        );

        let leftovers: Vec<u64> = state.segments.keys().copied().collect();
        let (tip, _) = watch::channel(Tip {
            position: tip,
            closed: false,
        });
        let shared = Arc::new(Shared {
            events_dir: options.dir.clone(),
            wal_dir: wal_dir.clone(),
            state: Mutex::new(state),
            tip,
            stats: LogStats::default(),
        });
        let (roll_sender, roll_receiver) = std_mpsc::channel();
        for seq in leftovers {
            let _ = roll_sender.send(roller::RollCommand::Segment(seq));
        }
        let roller_shared = shared.clone();
        let roller = std::thread::Builder::new()
            .name("event-roller".into())
            .spawn(move || roller::run(roll_receiver, &roller_shared))?;
        let (commands, command_receiver) = std_mpsc::channel();
        let writer = Writer::new(
            shared.clone(),
            seen,
            next_seq,
            options.flush_interval,
            roll_sender,
        );
        let writer = std::thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || writer.run(command_receiver))?;
        Ok(Self {
            commands,
            pending: Arc::new(Semaphore::new(options.max_pending_events)),
            max_pending: options.max_pending_events,
            shared,
            threads: Mutex::new(vec![writer, roller]),
        })
    }

    /// Writes `batch` durably; answers, per event, whether it was new, and
    /// the position the log reached. A refused batch is handed back, so a
    /// caller can retry without keeping a copy.
    pub async fn append(&self, batch: Batch) -> Result<Appended, Refused> {
        if batch.is_empty() {
            return Ok(Appended {
                fresh: Vec::new(),
                position: self.tip(),
            });
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

    /// The newest committed position.
    pub fn tip(&self) -> Position {
        self.shared.tip.borrow().position
    }

    /// The tip as it moves: changed after every commit, before its appends
    /// are answered.
    pub fn watch_tip(&self) -> watch::Receiver<Tip> {
        self.shared.tip.subscribe()
    }

    /// A cursor over every event of the log, from the start.
    pub fn cursor(&self) -> Cursor {
        Cursor::from_start(self.shared.clone())
    }

    /// A cursor over the events after `position`, which must lie in a
    /// segment the log still holds as a file, or at the tip; earlier
    /// positions are read with [`EventLog::cursor`].
    pub fn cursor_from(&self, position: Position) -> io::Result<Cursor> {
        Cursor::from_position(self.shared.clone(), position)
    }

    /// Events committed after `position`, and since when the oldest of them
    /// waits (as far as the last [`COMMITS_KEPT`] commits tell; older
    /// ones count as the oldest remembered).
    pub fn behind(&self, position: Position) -> Behind {
        let state = self.shared.state();
        let events = state
            .segments
            .range(position.segment()..)
            .map(|(seq, segment)| {
                if *seq == position.segment() {
                    segment.events.saturating_sub(position.events())
                } else {
                    segment.events
                }
            })
            .sum();
        let since = state
            .commits
            .iter()
            .find(|(committed, _)| *committed > position)
            .map(|(_, at)| *at);
        Behind { events, since }
    }

    /// Events accepted and waiting for the writer.
    pub fn pending_events(&self) -> usize {
        self.max_pending - self.pending.available_permits()
    }

    /// Bytes of the log's directory on disk: held segments and Parquet
    /// files (a walk of the directory).
    pub fn disk_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(metadata) if metadata.is_dir() => walk(&entry.path()),
                    Ok(metadata) => metadata.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(self.dir())
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

/// Records a commit: the segment's new durable length, the commit time,
/// and the tip (woken readers see it before the appends are answered).
pub(crate) fn record_commit(shared: &Shared, entry: SegmentEntry, at: SystemTime) {
    let position = entry.end();
    {
        let mut state = shared.state();
        state.segments.insert(entry.id.seq, entry);
        state.commits.push_back((position, at));
        if state.commits.len() > COMMITS_KEPT {
            state.commits.pop_front();
        }
    }
    shared
        .tip
        .send_modify(|tip| tip.position = tip.position.max(position));
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
