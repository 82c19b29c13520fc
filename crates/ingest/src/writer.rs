//! The log's writer: one thread, because every group ends in an fsync that
//! blocks it. It takes every batch waiting, checks their ids, writes the
//! new events' records with one write and one fsync, records the commit
//! and answers; it seals a segment after the flush interval and hands it
//! to the roller. It ends when its input closes or on shutdown.

use std::{
    fs,
    sync::{Arc, atomic::Ordering, mpsc as std_mpsc},
    time::{Duration, Instant, SystemTime},
};

use tracing::warn;

use crate::{
    Position,
    dedup::SeenIds,
    log::{
        Appended, Command, Job, LogError, Refused, SegmentEntry, Shared, record_commit, unix_millis,
    },
    roller::RollCommand,
    wal::{SegmentId, SegmentWriter},
};

/// Most events written in one group (one write, one fsync).
const MAX_GROUP_EVENTS: usize = 50_000;

pub(crate) struct Writer {
    shared: Arc<Shared>,
    seen: SeenIds,
    segment: Option<SegmentWriter>,
    opened_at: Instant,
    next_seq: u64,
    flush_interval: Duration,
    roller: std_mpsc::Sender<RollCommand>,
    buffer: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        seen: SeenIds,
        next_seq: u64,
        flush_interval: Duration,
        roller: std_mpsc::Sender<RollCommand>,
    ) -> Self {
        Self {
            shared,
            seen,
            segment: None,
            opened_at: Instant::now(),
            next_seq,
            flush_interval,
            roller,
            buffer: Vec::new(),
        }
    }

    pub(crate) fn run(mut self, commands: std_mpsc::Receiver<Command>) {
        loop {
            // Waits for work; with events in the open segment, at most
            // until its flush interval is up (the seal's deadline).
            let received = match &self.segment {
                Some(segment) if segment.events > 0 => commands
                    .recv_timeout(self.flush_interval.saturating_sub(self.opened_at.elapsed())),
                _ => commands
                    .recv()
                    .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
            };
            let first = match received {
                Ok(command) => command,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    self.seal_if_due();
                    continue;
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    self.stop();
                    return;
                }
            };
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
                self.commit(group);
            }
            if !flushes.is_empty() || shutdown {
                self.seal();
                for reply in flushes {
                    let _ = self.roller.send(RollCommand::Barrier(reply));
                }
            }
            if shutdown {
                self.stop();
                refuse_queued(&commands);
                return;
            }
            self.seal_if_due();
        }
    }

    /// Seals what is open, tells the roller to finish, and closes the tip.
    fn stop(&mut self) {
        self.seal();
        let _ = self.roller.send(RollCommand::Stop);
        self.shared.tip.send_modify(|tip| tip.closed = true);
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
            Ok(self.shared.tip.borrow().position)
        } else {
            let started = Instant::now();
            let written = self.write(now, fresh_events);
            crate::metrics::commit_duration().record(started.elapsed().as_secs_f64(), &[]);
            written
        };
        match written {
            Ok(position) => {
                stats
                    .written
                    .fetch_add(fresh_events as u64, Ordering::Relaxed);
                stats.groups.fetch_add(1, Ordering::Relaxed);
                let duplicates = answers.iter().flatten().filter(|fresh| !**fresh).count();
                stats
                    .duplicates
                    .fetch_add(duplicates as u64, Ordering::Relaxed);
                for (job, fresh) in group.into_iter().zip(answers) {
                    let _ = job.reply.send(Ok(Appended { fresh, position }));
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

    /// Writes the buffered records of `events` events and fsyncs them;
    /// the position reached.
    fn write(&mut self, now: SystemTime, events: usize) -> Result<Position, String> {
        if self
            .segment
            .as_ref()
            .is_some_and(|segment| (segment.events + events) as u64 > Position::MAX_SEGMENT_EVENTS)
        {
            self.seal();
        }
        if self.segment.is_none() {
            let id = SegmentId {
                seq: self.next_seq,
                opened_ms: unix_millis(now),
            };
            let segment = SegmentWriter::create(&self.shared.wal_dir, id)
                .map_err(|err| format!("creating segment {}: {err}", id.file_name()))?;
            self.next_seq += 1;
            self.opened_at = Instant::now();
            self.shared
                .state()
                .segments
                .insert(id.seq, entry_of(&segment));
            self.segment = Some(segment);
        }
        let Some(segment) = self.segment.as_mut() else {
            return Err("no segment".into());
        };
        match segment.append_durably(&self.buffer, events) {
            Ok(()) => {
                let entry = entry_of(segment);
                let position = entry.end();
                record_commit(&self.shared, entry, now);
                Ok(position)
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
        let mut state = self.shared.state();
        if segment.events == 0 {
            state.segments.remove(&segment.id.seq);
            drop(state);
            let _ = fs::remove_file(&segment.path);
            return;
        }
        let mut entry = entry_of(&segment);
        entry.sealed = true;
        state.segments.insert(segment.id.seq, entry);
        drop(state);
        let _ = self.roller.send(RollCommand::Segment(segment.id.seq));
    }
}

/// Answers the appends queued behind a shutdown: refused, their events
/// handed back (a caller such as `Assign`'s exposure stage counts them and
/// knows which they were).
fn refuse_queued(commands: &std_mpsc::Receiver<Command>) {
    while let Ok(command) = commands.try_recv() {
        match command {
            Command::Append(job) => {
                let _ = job.reply.send(Err(Refused {
                    error: LogError::Closed,
                    events: job.batch.into_events(),
                }));
            }
            Command::Flush(reply) => {
                let _ = reply.send(Err("the event log is shut down".into()));
            }
            Command::Shutdown => {}
        }
    }
}

fn entry_of(segment: &SegmentWriter) -> SegmentEntry {
    SegmentEntry {
        id: segment.id,
        path: segment.path.clone(),
        events: segment.events as u64,
        durable_len: segment.synced_len,
        sealed: false,
        rolled: false,
        corrupt: false,
    }
}
