//! Reading the log: a [`Cursor`] hands out every event once, in log order,
//! a bounded chunk at a time, and says how far it has read.
//!
//! From the start, a cursor first reads the Parquet files of the segments
//! whose files are gone, hour partition by hour partition (an hour's
//! exposures, then its outcomes), one record batch at a time; then every
//! segment still on disk from its file, up to its durable length; then
//! whatever is committed while it reads. Its position is registered with
//! the log, which keeps a segment's file until every cursor has read past
//! it, so a slow reader never loses its place.

use std::{
    collections::BTreeSet,
    io,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use exp_core::event::{Event, EventKind};
use tracing::warn;

use crate::{
    Position,
    log::Shared,
    parquet::{self, FileEvents},
    wal::SegmentReader,
};

/// Most events one [`Cursor::read`] hands out from a segment.
pub const READ_CHUNK: usize = 8_192;

/// A reader of the log. Dropping it releases the segments it held.
#[derive(Debug)]
pub struct Cursor {
    shared: Arc<Shared>,
    /// This cursor's position, as the roller sees it.
    mark: Arc<AtomicU64>,
    position: Position,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    /// The Parquet files of segments deleted before the cursor started.
    Rolled(RolledFiles),
    /// Segment files, from `seq` at byte `offset` (`events` read there).
    Segments { seq: u64, offset: u64, events: u64 },
}

#[derive(Debug)]
struct RolledFiles {
    /// Why the files could not be listed: the first read fails with it.
    listing_failed: Option<io::Error>,
    /// Left to read, in order, with the segment each came from.
    files: std::vec::IntoIter<(u64, EventKind, PathBuf)>,
    reading: Option<(u64, FileEvents)>,
    /// The newest segment read so far, and the events read of it: the
    /// position once every file is read.
    newest: Option<(u64, u64)>,
    /// Where the segment files start.
    first_segment: u64,
}

impl Cursor {
    pub(crate) fn from_start(shared: Arc<Shared>) -> Self {
        let mark = Arc::new(AtomicU64::new(Position::ZERO.as_u64()));
        // Registered first: from here on no segment file is deleted. The
        // segments deleted before are a prefix of the log: every one is
        // numbered below the first segment still held (or, with none held,
        // at most the tip's), and its Parquet files are complete. A
        // segment rolled after this point is read from its file, so its
        // Parquet files are left out of the listing.
        let (live, rolled_below) = {
            let mut state = shared.state();
            state.cursors.push(Arc::downgrade(&mark));
            let live: BTreeSet<u64> = state.segments.keys().copied().collect();
            let bound = live
                .first()
                .copied()
                .unwrap_or_else(|| shared.tip.borrow().position.segment() + 1);
            (live, bound)
        };
        let first_segment = live.first().copied().unwrap_or(rolled_below);
        let (files, listing_failed) = match rolled_files(&shared, rolled_below) {
            Ok(files) => (files, None),
            Err(error) => (Vec::new(), Some(error)),
        };
        Self {
            shared,
            mark,
            position: Position::ZERO,
            phase: Phase::Rolled(RolledFiles {
                listing_failed,
                files: files.into_iter(),
                reading: None,
                newest: None,
                first_segment,
            }),
        }
    }

    pub(crate) fn from_position(shared: Arc<Shared>, position: Position) -> io::Result<Self> {
        if position == Position::ZERO {
            return Ok(Self::from_start(shared));
        }
        let mark = Arc::new(AtomicU64::new(position.as_u64()));
        let held = {
            let mut state = shared.state();
            let tip = shared.tip.borrow().position;
            let held = state.segments.contains_key(&position.segment()) || position >= tip;
            if held {
                state.cursors.push(Arc::downgrade(&mark));
            }
            held
        };
        if !held {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "position {position} is in a segment already rolled and deleted; read from the start"
                ),
            ));
        }
        let mut cursor = Self {
            shared,
            mark,
            position,
            phase: Phase::Segments {
                seq: position.segment(),
                offset: 0,
                events: 0,
            },
        };
        // Skips the segment's events before the position.
        while let Phase::Segments { seq, events, .. } = cursor.phase
            && seq == position.segment()
            && events < position.events()
        {
            let wanted = usize::try_from(position.events() - events).unwrap_or(usize::MAX);
            if cursor.read_segment(wanted.min(READ_CHUNK))?.is_none() {
                break;
            }
        }
        cursor.position = position;
        Ok(cursor)
    }

    /// Every event before this position has been handed out. While the
    /// Parquet files are read it stays at the start; it moves past them
    /// when they are all read.
    pub fn position(&self) -> Position {
        self.position
    }

    /// Whether the cursor is still reading the Parquet files of deleted
    /// segments (a rebuild from the start).
    pub fn replaying(&self) -> bool {
        matches!(self.phase, Phase::Rolled(_))
    }

    /// The next events, at most about [`READ_CHUNK`] (a record batch of a
    /// Parquet file, or up to `READ_CHUNK` records of a segment); empty when
    /// the cursor has read everything committed. Blocking (reads files).
    pub fn read(&mut self) -> io::Result<Vec<Event>> {
        loop {
            match &mut self.phase {
                Phase::Rolled(rolled) => {
                    if let Some(chunk) = rolled.next_chunk()? {
                        if !chunk.is_empty() {
                            return Ok(chunk);
                        }
                        continue;
                    }
                    let end = rolled.end();
                    let first_segment = rolled.first_segment;
                    self.advance(end);
                    self.phase = Phase::Segments {
                        seq: first_segment,
                        offset: 0,
                        events: 0,
                    };
                }
                Phase::Segments { .. } => match self.read_segment(READ_CHUNK)? {
                    Some(events) if !events.is_empty() => return Ok(events),
                    Some(_) => continue,
                    None => return Ok(Vec::new()),
                },
            }
        }
    }

    /// Reads up to `max` records of the current segment. `Some(empty)`
    /// when it moved to the next segment, `None` when there is nothing
    /// more to read now.
    fn read_segment(&mut self, max: usize) -> io::Result<Option<Vec<Event>>> {
        let Phase::Segments {
            seq,
            offset,
            events,
        } = &mut self.phase
        else {
            return Ok(None);
        };
        let Some(segment) = self
            .shared
            .state()
            .segments
            .range(*seq..)
            .next()
            .map(|(_, s)| s.clone())
        else {
            return Ok(None);
        };
        if segment.id.seq != *seq {
            (*seq, *offset, *events) = (segment.id.seq, 0, 0);
        }
        if *offset < segment.durable_len {
            let mut reader = SegmentReader::open_at(&segment.path, *offset, segment.durable_len)?;
            let read: Vec<Event> = reader.by_ref().take(max).collect::<io::Result<_>>()?;
            if !read.is_empty() {
                *offset = reader.valid_len();
                *events += read.len() as u64;
                let reached = Position::new(*seq, *events);
                self.advance(reached);
                return Ok(Some(read));
            }
            // Durable bytes that do not read back (the disk corrupted
            // them): the rest of the segment is skipped.
            warn!(
                segment = %segment.path.display(),
                offset = *offset,
                durable_bytes = segment.durable_len,
                "a log segment does not read back past this offset; skipping the rest of it"
            );
            *offset = segment.durable_len;
            *events = segment.events;
        }
        if segment.sealed {
            let end = segment.end();
            *seq += 1;
            (*offset, *events) = (0, 0);
            self.advance(end);
            return Ok(Some(Vec::new()));
        }
        Ok(None)
    }

    fn advance(&mut self, position: Position) {
        self.position = self.position.max(position);
        self.mark.store(self.position.as_u64(), Ordering::Release);
    }
}

impl RolledFiles {
    /// The next record batch of the files, `None` once all are read.
    fn next_chunk(&mut self) -> io::Result<Option<Vec<Event>>> {
        if let Some(error) = self.listing_failed.take() {
            return Err(io::Error::new(
                error.kind(),
                format!("listing the event files to read: {error}"),
            ));
        }
        loop {
            if let Some((seq, reading)) = &mut self.reading {
                match reading.next() {
                    Some(chunk) => {
                        let chunk = chunk?;
                        let read = chunk.len() as u64;
                        self.newest = match self.newest {
                            Some((newest, rows)) if newest == *seq => Some((newest, rows + read)),
                            Some((newest, rows)) if newest > *seq => Some((newest, rows)),
                            _ => Some((*seq, read)),
                        };
                        return Ok(Some(chunk));
                    }
                    None => self.reading = None,
                }
            }
            let Some((seq, kind, path)) = self.files.next() else {
                return Ok(None);
            };
            self.reading = Some((seq, FileEvents::open(&path, kind)?));
        }
    }

    /// The position after the files: the newest segment's events.
    fn end(&self) -> Position {
        self.newest
            .map_or(Position::ZERO, |(seq, rows)| Position::new(seq, rows))
    }
}

/// The Parquet files of segments numbered below `below`, in the order a
/// rebuild reads them: by hour partition, an hour's exposures before its
/// outcomes, then by segment.
fn rolled_files(shared: &Shared, below: u64) -> io::Result<Vec<(u64, EventKind, PathBuf)>> {
    let mut files = Vec::new();
    for kind in EventKind::ALL {
        for path in parquet::list(&shared.events_dir, kind)? {
            let name = path.file_name().and_then(|name| name.to_str());
            let Some(id) = name.and_then(parquet::parse_file_name) else {
                continue;
            };
            if id.seq >= below {
                continue;
            }
            let partition = path
                .parent()
                .and_then(|hour| Some((hour.parent()?.file_name()?, hour.file_name()?)))
                .map(|(date, hour)| {
                    format!("{}/{}", date.to_string_lossy(), hour.to_string_lossy())
                })
                .unwrap_or_default();
            files.push((partition, kind, id.seq, path));
        }
    }
    files.sort();
    Ok(files
        .into_iter()
        .map(|(_, kind, seq, path)| (seq, kind, path))
        .collect())
}
