//! Log segments: the durable, append-only files events land in before they
//! are rolled into Parquet.
//!
//! A segment is `<data-dir>/events/wal/<seq>-<opened unix ms>.wal`, a
//! sequence of records:
//!
//! ```text
//! u32 LE payload length | u32 LE CRC-32 of payload | payload
//! payload = u8 kind (1 exposure, 2 outcome) | the event's protobuf encoding
//! ```
//!
//! The payload is the event's `experiments.v1` wire encoding (see
//! `exp_proto::events`), so a segment reads back with any protobuf
//! library.
//!
//! A crash can leave a torn last record (short, or failing its CRC); it was
//! never acknowledged, since acknowledgement waits for fsync, and reading
//! stops before it.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use exp_core::event::{Event, EventKind};
use exp_proto::events::{decode_exposure, decode_outcome, encode_exposure, encode_outcome};

const HEADER: usize = 8;
/// Largest payload accepted when reading (an event is far smaller; a
/// larger length is a torn or corrupt record).
const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// The identity of a segment, from its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentId {
    /// Sequence number, increasing.
    pub seq: u64,
    /// When it was opened, in milliseconds since the Unix epoch.
    pub opened_ms: u64,
}

impl SegmentId {
    /// The segment's file name.
    pub fn file_name(self) -> String {
        format!("{:012}-{}.wal", self.seq, self.opened_ms)
    }

    /// Parses a file name made by [`SegmentId::file_name`].
    pub fn parse(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(".wal")?;
        let (seq, opened_ms) = stem.split_once('-')?;
        Some(Self {
            seq: seq.parse().ok()?,
            opened_ms: opened_ms.parse().ok()?,
        })
    }
}

/// Segments in `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<(SegmentId, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(id) = entry.file_name().to_str().and_then(SegmentId::parse) {
            segments.push((id, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Appends one framed record for `event` to `buffer`.
pub fn encode(event: &Event, buffer: &mut Vec<u8>) {
    let start = buffer.len();
    buffer.extend_from_slice(&[0; HEADER]);
    buffer.push(tag(event.kind()));
    match event {
        Event::Exposure(exposure) => encode_exposure(exposure, buffer),
        Event::Outcome(outcome) => encode_outcome(outcome, buffer),
    }
    let payload = &buffer[start + HEADER..];
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    buffer[start..start + 4].copy_from_slice(&length.to_le_bytes());
    buffer[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// The record tag of an event kind.
pub fn tag(kind: EventKind) -> u8 {
    match kind {
        EventKind::Exposure => 1,
        EventKind::Outcome => 2,
    }
}

fn kind_of(tag: u8) -> Option<EventKind> {
    match tag {
        1 => Some(EventKind::Exposure),
        2 => Some(EventKind::Outcome),
        _ => None,
    }
}

/// The complete records of a segment file, and the length they span (a
/// torn tail is left out).
pub fn read(path: &Path) -> io::Result<(Vec<Event>, u64)> {
    read_prefix(path, u64::MAX)
}

/// [`read`], looking no further than the first `limit` bytes (the durable
/// length of a segment whose failed tail could not be cut off).
pub fn read_prefix(path: &Path, limit: u64) -> io::Result<(Vec<Event>, u64)> {
    let mut records = SegmentReader::open(path, limit)?;
    let events = records.by_ref().collect::<io::Result<Vec<_>>>()?;
    Ok((events, records.valid_len()))
}

/// The complete records of a segment, one event at a time through a
/// buffer, so that rolling a segment holds one record in memory rather
/// than the file. Ends at the first torn or corrupt record; an I/O error
/// is yielded once, then the reader ends.
#[derive(Debug)]
pub struct SegmentReader {
    input: io::Take<BufReader<File>>,
    payload: Vec<u8>,
    valid_len: u64,
    ended: bool,
}

impl SegmentReader {
    /// Reads `path`, looking no further than its first `limit` bytes.
    pub fn open(path: &Path, limit: u64) -> io::Result<Self> {
        Self::open_at(path, 0, limit)
    }

    /// Reads `path` from byte `offset` (where a record starts), looking no
    /// further than its first `limit` bytes.
    pub fn open_at(path: &Path, offset: u64, limit: u64) -> io::Result<Self> {
        let mut file = File::open(path)?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))?;
        }
        Ok(Self {
            input: BufReader::with_capacity(256 * 1024, file).take(limit.saturating_sub(offset)),
            payload: Vec::new(),
            valid_len: offset,
            ended: false,
        })
    }

    /// Where the complete records read so far end, in bytes from the start
    /// of the file.
    pub fn valid_len(&self) -> u64 {
        self.valid_len
    }

    fn next_record(&mut self) -> io::Result<Option<Event>> {
        let mut header = [0; HEADER];
        if !fill(&mut self.input, &mut header)? {
            return Ok(None);
        }
        let length = u32::from_le_bytes(header[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap_or_default());
        if length == 0 || length > MAX_PAYLOAD {
            return Ok(None);
        }
        self.payload.resize(length, 0);
        if !fill(&mut self.input, &mut self.payload)? || crc32fast::hash(&self.payload) != crc {
            return Ok(None);
        }
        let payload = &self.payload[1..];
        let event = match kind_of(self.payload[0]) {
            Some(EventKind::Exposure) => decode_exposure(payload).map(Event::Exposure),
            Some(EventKind::Outcome) => decode_outcome(payload).map(Event::Outcome),
            None => return Ok(None),
        };
        let Ok(event) = event else {
            return Ok(None);
        };
        self.valid_len += (HEADER + length) as u64;
        Ok(Some(event))
    }
}

impl Iterator for SegmentReader {
    type Item = io::Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let record = self.next_record().transpose();
        self.ended = !matches!(record, Some(Ok(_)));
        record
    }
}

/// Fills `buffer` from `input`: `false` if the input ends first.
fn fill(input: &mut impl Read, buffer: &mut [u8]) -> io::Result<bool> {
    match input.read_exact(buffer) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
    }
}

/// The segment being appended to.
#[derive(Debug)]
pub struct SegmentWriter {
    /// Its identity.
    pub id: SegmentId,
    /// Its path.
    pub path: PathBuf,
    file: File,
    /// Bytes durably written (fsynced).
    pub synced_len: u64,
    /// Events durably written.
    pub events: usize,
}

impl SegmentWriter {
    /// Creates segment `id` in `dir` and makes its directory entry durable.
    pub fn create(dir: &Path, id: SegmentId) -> io::Result<Self> {
        let path = dir.join(id.file_name());
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        sync_dir(dir)?;
        Ok(Self {
            id,
            path,
            file,
            synced_len: 0,
            events: 0,
        })
    }

    /// Writes `records` (holding `events` events) and fsyncs them. On error
    /// the file is cut back to its last durable length; when even that
    /// fails the error says so and the segment must not be appended to
    /// again.
    pub fn append_durably(&mut self, records: &[u8], events: usize) -> Result<(), AppendError> {
        let written = self
            .file
            .write_all(records)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.synced_len += records.len() as u64;
                self.events += events;
                Ok(())
            }
            Err(error) => {
                let repaired = self
                    .file
                    .set_len(self.synced_len)
                    .and_then(|()| self.file.sync_data());
                Err(AppendError {
                    error,
                    segment_usable: repaired.is_ok(),
                })
            }
        }
    }
}

/// A failed append.
#[derive(Debug)]
pub struct AppendError {
    /// What the file system said.
    pub error: io::Error,
    /// Whether the segment was cut back to its durable length and can take
    /// further appends.
    pub segment_usable: bool,
}

/// Makes the entries of `dir` durable (a new or renamed file survives a
/// crash).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: &str) -> Event {
        Event::Outcome(crate::testing::page_view(id, "s-1"))
    }

    #[test]
    fn segment_names_round_trip_and_sort_by_sequence() {
        let id = SegmentId {
            seq: 7,
            opened_ms: 1_764_000_000_123,
        };
        assert_eq!(id.file_name(), "000000000007-1764000000123.wal");
        assert_eq!(SegmentId::parse(&id.file_name()), Some(id));
        assert_eq!(SegmentId::parse("000000000007.parquet"), None);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_records_before_it_are_read() {
        let dir = tempfile::tempdir().expect("dir");
        let id = SegmentId {
            seq: 1,
            opened_ms: 5,
        };
        let mut writer = SegmentWriter::create(dir.path(), id).expect("create");
        let mut records = Vec::new();
        encode(&outcome("a"), &mut records);
        encode(&outcome("b"), &mut records);
        writer.append_durably(&records, 2).expect("append");
        let durable = writer.synced_len;
        // A crash in the middle of the next record.
        let mut torn = Vec::new();
        encode(&outcome("c"), &mut torn);
        let mut file = OpenOptions::new()
            .append(true)
            .open(&writer.path)
            .expect("open");
        file.write_all(&torn[..torn.len() - 3]).expect("write");
        let (events, valid) = read(&writer.path).expect("read");
        assert_eq!(events, vec![outcome("a"), outcome("b")]);
        assert_eq!(valid, durable);
    }

    #[test]
    fn a_record_with_a_bad_checksum_ends_the_readable_part() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("x.wal");
        let mut records = Vec::new();
        encode(&outcome("a"), &mut records);
        let first = records.len();
        encode(&outcome("b"), &mut records);
        let last = records.len() - 1;
        records[last] ^= 0xff;
        fs::write(&path, &records).expect("write");
        let (events, valid) = read(&path).expect("read");
        assert_eq!(events, vec![outcome("a")]);
        assert_eq!(valid, first as u64);
    }

    #[test]
    fn reading_stops_at_the_limit_even_where_the_file_goes_on() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("x.wal");
        let mut records = Vec::new();
        for id in ["a", "b", "c"] {
            encode(&outcome(id), &mut records);
        }
        fs::write(&path, &records).expect("write");
        let second_ends = (records.len() / 3 * 2) as u64;
        let (events, valid) = read_prefix(&path, second_ends).expect("read");
        assert_eq!(events, vec![outcome("a"), outcome("b")]);
        assert_eq!(valid, second_ends);
        let (events, _) = read_prefix(&path, second_ends - 1).expect("read");
        assert_eq!(
            events,
            vec![outcome("a")],
            "a record cut by the limit is left out"
        );
    }
}
