//! The sender's spool: batches the service has not taken yet, one file
//! each, in a directory of their own, so they outlive the process.
//!
//! A file is `<seq>.batch` (`seq` grows with every file, zero-padded to 20
//! digits, so names sort in the order the batches were spooled) and holds
//! one request, framed as the event log frames its records:
//!
//! ```text
//! u32 LE payload length | u32 LE CRC-32 of payload | payload
//! payload = u8 kind (1: LogExposuresRequest, 2: LogOutcomesRequest) | the request's protobuf encoding
//! ```
//!
//! A file is written as `<seq>.batch.tmp`, fsynced, renamed and its
//! directory fsynced: a kill leaves a whole file or a temporary one, which
//! the next start removes (its batch was never reported as spooled). A
//! file that does not read back whole (a disk that corrupted it) is renamed
//! `<seq>.batch.corrupt`, warned about, kept for an operator and skipped.
//!
//! The files take at most `max_bytes`: a batch that does not fit is
//! dropped and reported, so the caller can count it. A `LOCK` file, locked
//! while a sender holds the spool, keeps two senders out of one directory.

use std::{
    collections::VecDeque,
    fs::{self, File, TryLockError},
    io::{self, Write},
    path::{Path, PathBuf},
};

use exp_proto::v1;
use prost::Message;
use tracing::{info, warn};

/// Frame header: payload length and CRC-32.
const HEADER: usize = 8;
/// Largest file read back: a batch of 5,000 events is about a megabyte;
/// anything far larger is not one of ours.
const MAX_FILE_BYTES: u64 = 64 << 20;
const EXPOSURES: u8 = 1;
const OUTCOMES: u8 = 2;
const EXTENSION: &str = "batch";
const LOCK: &str = "LOCK";

/// Where a sender keeps what it could not send yet, and how much of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Directory of the spool files, created if missing; one sender at a
    /// time (a second one is refused at start). E.g.
    /// `/var/lib/expd/spool/exposures`.
    pub dir: PathBuf,
    /// Most bytes the spool files may take together. A batch that does
    /// not fit is dropped and counted in
    /// [`SenderStats::spool_dropped`](super::SenderStats::spool_dropped).
    pub max_bytes: u64,
}

/// Events of one kind as one call carries them: the unit the sender
/// sends, retries and spools.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// A `LogExposures` request.
    Exposures(v1::LogExposuresRequest),
    /// A `LogOutcomes` request.
    Outcomes(v1::LogOutcomesRequest),
}

impl Batch {
    /// How many events it carries.
    pub fn len(&self) -> usize {
        match self {
            Self::Exposures(request) => request.exposures.len(),
            Self::Outcomes(request) => request.outcomes.len(),
        }
    }

    /// Whether it carries no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The framed file contents.
    fn encode(&self) -> Vec<u8> {
        let (kind, request) = match self {
            Self::Exposures(request) => (EXPOSURES, request.encode_to_vec()),
            Self::Outcomes(request) => (OUTCOMES, request.encode_to_vec()),
        };
        let length = u32::try_from(1 + request.len()).unwrap_or(u32::MAX);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[kind]);
        crc.update(&request);
        let mut bytes = Vec::with_capacity(HEADER + 1 + request.len());
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(&crc.finalize().to_le_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(&request);
        bytes
    }

    /// Reads back what [`Batch::encode`] wrote; `Err` says why it is not
    /// a whole file.
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let Some((header, payload)) = bytes.split_first_chunk::<HEADER>() else {
            return Err(format!("{} bytes: shorter than its header", bytes.len()));
        };
        let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
        let length = u32::from_le_bytes([l0, l1, l2, l3]) as usize;
        if payload.len() != length {
            return Err(format!(
                "the header says {length} bytes, the file holds {}",
                payload.len()
            ));
        }
        if crc32fast::hash(payload) != u32::from_le_bytes([c0, c1, c2, c3]) {
            return Err("checksum mismatch".into());
        }
        match payload.split_first() {
            Some((&EXPOSURES, request)) => v1::LogExposuresRequest::decode(request)
                .map(Self::Exposures)
                .map_err(|err| err.to_string()),
            Some((&OUTCOMES, request)) => v1::LogOutcomesRequest::decode(request)
                .map(Self::Outcomes)
                .map_err(|err| err.to_string()),
            Some((kind, _)) => Err(format!("unknown kind {kind}")),
            None => Err("empty payload".into()),
        }
    }
}

/// What [`Spool::append`] did with the events it was given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    /// Events now on disk.
    pub spooled: u64,
    /// Events that did not fit, or whose file could not be written.
    pub dropped: u64,
}

/// One spool file still to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpoolFile {
    /// Its place in the order of spooling.
    pub seq: u64,
    /// Its size.
    pub bytes: u64,
}

/// The spool directory as a queue of batches, oldest first. Its I/O runs
/// on the blocking pool; its bookkeeping stays with the sending task.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    files: VecDeque<SpoolFile>,
    bytes: u64,
    next_seq: u64,
    /// Events dropped since the spool last took a batch: `Some` while it
    /// refuses, so the warning is given once per episode.
    refusing: Option<u64>,
    /// Held (and locked) as long as the spool is open.
    _lock: File,
}

impl Spool {
    /// Opens (or creates) the directory, locks it, removes half-written
    /// files and lists the batches an earlier run left, oldest first.
    pub(crate) fn open(options: &SpoolOptions) -> io::Result<Self> {
        let dir = options.dir.clone();
        fs::create_dir_all(&dir)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    "another event sender holds this spool",
                ));
            }
            Err(TryLockError::Error(err)) => return Err(err),
        }
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                fs::remove_file(entry.path())?;
            } else if let Some(seq) = parse_name(name) {
                files.push(SpoolFile {
                    seq,
                    bytes: entry.metadata()?.len(),
                });
            }
        }
        files.sort_by_key(|file| file.seq);
        let bytes = files.iter().map(|file| file.bytes).sum();
        let next_seq = files.last().map_or(0, |file| file.seq + 1);
        if !files.is_empty() {
            info!(
                dir = %dir.display(),
                batches = files.len(),
                bytes,
                "event batches spooled by an earlier run are sent first"
            );
        }
        Ok(Self {
            dir,
            max_bytes: options.max_bytes,
            files: files.into(),
            bytes,
            next_seq,
            refusing: None,
            _lock: lock,
        })
    }

    /// Whether no batch is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The oldest batch's file.
    pub(crate) fn oldest(&self) -> Option<SpoolFile> {
        self.files.front().copied()
    }

    /// The newest batch's file.
    pub(crate) fn newest(&self) -> Option<SpoolFile> {
        self.files.back().copied()
    }

    /// Bytes the files take.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes `batches` as the newest files, in order, each only if it
    /// fits within `max_bytes`; waits until they are on disk.
    pub(crate) async fn append(&mut self, batches: Vec<Batch>) -> Appended {
        let mut appended = Appended::default();
        let mut planned = Vec::new();
        let mut planned_bytes = 0;
        for batch in batches.iter().filter(|batch| !batch.is_empty()) {
            let bytes = batch.encode();
            let size = bytes.len() as u64;
            if self.bytes + planned_bytes + size > self.max_bytes {
                appended.dropped += batch.len() as u64;
                continue;
            }
            planned_bytes += size;
            let seq = self.next_seq;
            self.next_seq += 1;
            planned.push((seq, batch.len() as u64, bytes));
        }
        if planned.is_empty() {
            self.note(appended, None);
            return appended;
        }
        let planned_events: u64 = planned.iter().map(|(_, events, _)| events).sum();
        let dir = self.dir.clone();
        let writing = tokio::task::spawn_blocking(move || {
            let (count, failure) = write_files(&dir, &planned);
            let written: Vec<(SpoolFile, u64)> = planned[..count]
                .iter()
                .map(|(seq, events, bytes)| {
                    let file = SpoolFile {
                        seq: *seq,
                        bytes: bytes.len() as u64,
                    };
                    (file, *events)
                })
                .collect();
            (written, failure)
        });
        let (written, failure) = match writing.await {
            Ok(outcome) => outcome,
            Err(err) => (Vec::new(), Some(io::Error::other(err))),
        };
        for (file, events) in written {
            self.bytes += file.bytes;
            self.files.push_back(file);
            appended.spooled += events;
        }
        if failure.is_some() {
            appended.dropped += planned_events - appended.spooled;
        }
        self.note(appended, failure);
        appended
    }

    /// Warns when the spool starts refusing events (full, or a write
    /// failed), and says when it takes them again.
    fn note(&mut self, appended: Appended, failure: Option<io::Error>) {
        match (&mut self.refusing, appended.dropped) {
            (None, 0) => {}
            (None, dropped) => {
                warn!(
                    dir = %self.dir.display(),
                    dropped,
                    bytes = self.bytes,
                    max_bytes = self.max_bytes,
                    error = failure.map(|err| err.to_string()),
                    "the event spool is full or cannot be written: events that do not fit are \
                     dropped until it takes them again"
                );
                self.refusing = Some(dropped);
            }
            (Some(total), 0) if appended.spooled > 0 => {
                info!(
                    dir = %self.dir.display(),
                    dropped = *total,
                    "the event spool takes events again"
                );
                self.refusing = None;
            }
            (Some(total), dropped) => *total += dropped,
        }
    }

    /// Reads the oldest batch. A file that does not decode (torn, or not
    /// a batch) is set aside as `*.corrupt` (warned about) and the next
    /// one read; a file the disk cannot read now (too many open files, an
    /// I/O error) stays, and the error is answered so the caller retries
    /// later.
    pub(crate) async fn read_oldest(&mut self) -> Result<Option<(SpoolFile, Batch)>, String> {
        while let Some(file) = self.oldest() {
            let path = self.path(file.seq);
            let reading = path.clone();
            let read = tokio::task::spawn_blocking(move || read_file(&reading))
                .await
                .unwrap_or_else(|err| Err(Unreadable::Io(err.to_string())));
            match read {
                Ok(batch) => return Ok(Some((file, batch))),
                Err(Unreadable::Io(reason)) => {
                    return Err(format!("{}: {reason}", path.display()));
                }
                Err(Unreadable::Corrupt(reason)) => {
                    let aside = path.with_extension(format!("{EXTENSION}.corrupt"));
                    let moved = {
                        let (from, to) = (path.clone(), aside.clone());
                        tokio::task::spawn_blocking(move || fs::rename(from, to)).await
                    };
                    warn!(
                        file = %path.display(),
                        kept_as = %aside.display(),
                        set_aside = matches!(moved, Ok(Ok(()))),
                        reason,
                        "skipping an event spool file that does not read back whole"
                    );
                    self.forget(file);
                }
            }
        }
        Ok(None)
    }

    /// Deletes the oldest file: its batch was answered. A file that cannot
    /// be deleted is only resent at the next start (a duplicate the
    /// service recognises).
    pub(crate) async fn remove_oldest(&mut self) {
        let Some(file) = self.oldest() else { return };
        let path = self.path(file.seq);
        let removing = path.clone();
        let removed = tokio::task::spawn_blocking(move || fs::remove_file(removing)).await;
        if let Ok(Err(err)) = removed
            && err.kind() != io::ErrorKind::NotFound
        {
            warn!(file = %path.display(), error = %err, "cannot delete a sent event spool file");
        }
        self.forget(file);
    }

    fn forget(&mut self, file: SpoolFile) {
        if self.files.front() == Some(&file) {
            self.files.pop_front();
            self.bytes = self.bytes.saturating_sub(file.bytes);
        }
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(file_name(seq))
    }
}

fn file_name(seq: u64) -> String {
    format!("{seq:020}.{EXTENSION}")
}

fn parse_name(name: &str) -> Option<u64> {
    let seq = name.strip_suffix(EXTENSION)?.strip_suffix('.')?;
    (seq.len() == 20 && seq.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| seq.parse().ok())
        .flatten()
}

/// Writes each `(seq, _, bytes)` durably, in order; stops at the first
/// failure. Answers how many were written, and the failure.
fn write_files(dir: &Path, files: &[(u64, u64, Vec<u8>)]) -> (usize, Option<io::Error>) {
    let mut written = 0;
    for (seq, _, bytes) in files {
        let path = dir.join(file_name(*seq));
        let temporary = path.with_extension(format!("{EXTENSION}.tmp"));
        let result = (|| {
            let mut file = File::create(&temporary)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&temporary, &path)
        })();
        if let Err(err) = result {
            let _ = fs::remove_file(&temporary);
            return (written, Some(err));
        }
        written += 1;
    }
    // The renames are durable once the directory is.
    if written > 0
        && let Err(err) = File::open(dir).and_then(|dir| dir.sync_all())
    {
        return (written, Some(err));
    }
    (written, None)
}

/// Why a spool file was not read.
enum Unreadable {
    /// The disk did not give its bytes: worth another try.
    Io(String),
    /// Its bytes are not a batch: never worth another try.
    Corrupt(String),
}

fn read_file(path: &Path) -> Result<Batch, Unreadable> {
    let size = fs::metadata(path)
        .map_err(|err| Unreadable::Io(err.to_string()))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(Unreadable::Corrupt(format!(
            "{size} bytes: larger than any batch"
        )));
    }
    let bytes = fs::read(path).map_err(|err| Unreadable::Io(err.to_string()))?;
    Batch::decode(&bytes).map_err(Unreadable::Corrupt)
}

/// The batches a spool directory holds, oldest first, for a look at what
/// a stopped (or running) sender has not sent yet. Files that do not read
/// back whole, or that a running sender removes meanwhile, are left out.
pub fn read_spool(dir: &Path) -> io::Result<Vec<Batch>> {
    let mut seqs: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|entry| entry.ok()?.file_name().to_str().and_then(parse_name))
        .collect();
    seqs.sort_unstable();
    Ok(seqs
        .into_iter()
        .filter_map(|seq| read_file(&dir.join(file_name(seq))).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposures(ids: &[&str]) -> Batch {
        Batch::Exposures(v1::LogExposuresRequest {
            exposures: ids
                .iter()
                .map(|id| v1::Exposure {
                    event_id: (*id).into(),
                    experiment_id: "reco_ymal_v1".into(),
                    variant: "treatment".into(),
                    user_id: format!("user-{id}"),
                    ..Default::default()
                })
                .collect(),
        })
    }

    fn outcomes(ids: &[&str]) -> Batch {
        Batch::Outcomes(v1::LogOutcomesRequest {
            outcomes: ids
                .iter()
                .map(|id| v1::Outcome {
                    event_id: (*id).into(),
                    r#type: v1::OutcomeType::PageView as i32,
                    session_id: "s-1".into(),
                    ..Default::default()
                })
                .collect(),
        })
    }

    fn options(dir: &Path, max_bytes: u64) -> SpoolOptions {
        SpoolOptions {
            dir: dir.to_owned(),
            max_bytes,
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name != LOCK)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_batch_reads_back_as_written_and_a_cut_or_flipped_frame_does_not() {
        let batch = exposures(&["e-1", "e-2"]);
        let bytes = batch.encode();
        assert_eq!(Batch::decode(&bytes), Ok(batch));
        assert!(Batch::decode(&bytes[..bytes.len() - 1]).is_err(), "torn");
        assert!(Batch::decode(&bytes[..3]).is_err(), "torn in its header");
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert_eq!(Batch::decode(&flipped), Err("checksum mismatch".to_owned()));
    }

    #[tokio::test]
    async fn batches_come_back_oldest_first_across_a_reopen_and_leave_once_removed() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(&options(dir.path(), 1 << 20)).expect("open");
        let first = exposures(&["e-1", "e-2"]);
        let second = outcomes(&["o-1"]);
        let appended = spool.append(vec![first.clone(), second.clone()]).await;
        assert_eq!(
            appended,
            Appended {
                spooled: 3,
                dropped: 0
            }
        );
        drop(spool);

        let mut reopened = Spool::open(&options(dir.path(), 1 << 20)).expect("reopen");
        assert_eq!(
            read_spool(dir.path()).expect("read"),
            [first.clone(), second.clone()]
        );
        let third = exposures(&["e-3"]);
        reopened.append(vec![third.clone()]).await;
        let mut sent = Vec::new();
        while let Some((_, batch)) = reopened.read_oldest().await.expect("readable") {
            sent.push(batch);
            reopened.remove_oldest().await;
        }
        assert_eq!(sent, [first, second, third]);
        assert!(reopened.is_empty());
        assert_eq!(reopened.bytes(), 0);
        assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    }

    #[tokio::test]
    async fn a_torn_file_is_set_aside_with_a_warning_and_the_next_one_is_read() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(&options(dir.path(), 1 << 20)).expect("open");
        let kept = outcomes(&["o-2"]);
        spool.append(vec![outcomes(&["o-1"]), kept.clone()]).await;
        drop(spool);
        // A crash of the disk, not of the process: the rename was durable,
        // the contents were not.
        let torn = dir.path().join(file_name(0));
        let bytes = fs::read(&torn).expect("read");
        fs::write(&torn, &bytes[..bytes.len() / 2]).expect("tear");
        // A kill while writing leaves a temporary file.
        fs::write(dir.path().join("00000000000000000002.batch.tmp"), b"half").expect("tmp");

        let mut reopened = Spool::open(&options(dir.path(), 1 << 20)).expect("reopen");
        let (file, batch) = reopened
            .read_oldest()
            .await
            .expect("readable")
            .expect("a whole batch");
        assert_eq!((file.seq, batch), (1, kept));
        assert_eq!(
            files(dir.path()),
            [
                "00000000000000000000.batch.corrupt",
                "00000000000000000001.batch"
            ]
        );
        assert_eq!(
            reopened.bytes(),
            file.bytes,
            "the torn file is out of the bound"
        );
    }

    #[tokio::test]
    async fn a_file_the_disk_cannot_read_now_is_kept_and_read_once_it_can() {
        let dir = tempfile::tempdir().expect("dir");
        let mut spool = Spool::open(&options(dir.path(), 1 << 20)).expect("open");
        let batch = exposures(&["e-1"]);
        spool.append(vec![batch.clone()]).await;
        // Its bytes out of reach for a while (a directory in its place:
        // reading it fails as an I/O error would).
        let path = dir.path().join(file_name(0));
        let bytes = fs::read(&path).expect("read");
        fs::remove_file(&path).expect("remove");
        fs::create_dir(&path).expect("in its place");
        let failed = spool.read_oldest().await.expect_err("not readable now");
        assert!(failed.contains(&file_name(0)), "{failed}");
        assert!(!spool.is_empty(), "still held");
        assert!(
            !files(dir.path())
                .iter()
                .any(|name| name.ends_with(".corrupt")),
            "{:?}",
            files(dir.path())
        );
        fs::remove_dir(&path).expect("remove");
        fs::write(&path, bytes).expect("back");
        let (_, read) = spool
            .read_oldest()
            .await
            .expect("readable again")
            .expect("the batch");
        assert_eq!(read, batch);
    }

    #[tokio::test]
    async fn a_batch_that_does_not_fit_is_dropped_and_counted_and_the_next_that_fits_is_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let small = exposures(&["e-1"]);
        let size = small.encode().len() as u64;
        let mut spool = Spool::open(&options(dir.path(), 2 * size + 1)).expect("open");
        let appended = spool
            .append(vec![
                small.clone(),
                exposures(&["e-2", "e-3", "e-4"]),
                exposures(&["e-5"]),
            ])
            .await;
        assert_eq!(
            appended,
            Appended {
                spooled: 2,
                dropped: 3
            }
        );
        assert_eq!(spool.bytes(), 2 * size);
        assert_eq!(spool.refusing, Some(3), "one warning for the episode");
        let full = spool.append(vec![exposures(&["e-6"])]).await;
        assert_eq!(full.dropped, 1);
        assert_eq!(spool.refusing, Some(4));

        spool
            .read_oldest()
            .await
            .expect("readable")
            .expect("oldest");
        spool.remove_oldest().await;
        let again = spool.append(vec![exposures(&["e-7"])]).await;
        assert_eq!(again.spooled, 1);
        assert_eq!(spool.refusing, None, "the episode is over");
    }

    #[test]
    fn a_second_sender_cannot_open_a_spool_in_use() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = Spool::open(&options(dir.path(), 1 << 20)).expect("open");
        let refused = Spool::open(&options(dir.path(), 1 << 20)).expect_err("locked");
        assert_eq!(refused.kind(), io::ErrorKind::ResourceBusy);
        drop(spool);
        Spool::open(&options(dir.path(), 1 << 20)).expect("free again");
    }
}
