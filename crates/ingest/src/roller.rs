//! The log's roller: one thread (rolling blocks on reads, Parquet encoding
//! and fsyncs) that turns each sealed segment into Parquet files, in
//! order, and deletes a rolled segment's file once every cursor has read
//! past it. It ends when told to stop or when the writer is gone.

use std::{
    collections::VecDeque,
    fs, io,
    sync::{atomic::Ordering, mpsc as std_mpsc},
    time::Duration,
};

use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::{log::Shared, parquet, wal};

/// How long after a failed roll it is tried again.
const ROLL_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) enum RollCommand {
    /// A sealed segment, by sequence number.
    Segment(u64),
    /// Answered once every segment sealed before it is rolled.
    Barrier(oneshot::Sender<Result<(), String>>),
    /// Roll what is queued, then end.
    Stop,
}

pub(crate) fn run(commands: std_mpsc::Receiver<RollCommand>, shared: &Shared) {
    let mut queue: VecDeque<u64> = VecDeque::new();
    loop {
        // Without a failed roll to retry, the thread sleeps until told.
        let command = if queue.is_empty() {
            commands
                .recv()
                .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected)
        } else {
            commands.recv_timeout(ROLL_RETRY)
        };
        match command {
            Ok(RollCommand::Segment(seq)) => {
                queue.push_back(seq);
                roll_queued(&mut queue, shared);
            }
            Ok(RollCommand::Barrier(reply)) => {
                roll_queued(&mut queue, shared);
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
                roll_queued(&mut queue, shared);
                if !queue.is_empty() {
                    warn!(
                        segments = queue.len(),
                        "stopping with log segments not rolled; they are rolled at the next start"
                    );
                }
                return;
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => roll_queued(&mut queue, shared),
        }
        delete_read_segments(shared);
    }
}

fn roll_queued(queue: &mut VecDeque<u64>, shared: &Shared) {
    while let Some(seq) = queue.front() {
        match roll_segment(*seq, shared) {
            Ok(()) => {
                shared.stats.segments_rolled.fetch_add(1, Ordering::Relaxed);
                if let Some(opened_ms) = shared
                    .state()
                    .segments
                    .get(seq)
                    .map(|entry| entry.id.opened_ms)
                {
                    let opened = std::time::UNIX_EPOCH + Duration::from_millis(opened_ms);
                    let lag = std::time::SystemTime::now()
                        .duration_since(opened)
                        .unwrap_or_default();
                    crate::metrics::roll_lag().record(lag.as_secs_f64(), &[]);
                }
                queue.pop_front();
            }
            Err(error) => {
                warn!(segment = seq, %error, "rolling a log segment into Parquet failed; will retry");
                return;
            }
        }
    }
    delete_read_segments(shared);
}

/// Rolls the durable bytes of segment `seq` (records past them belong to
/// a write that failed and was refused) into Parquet and marks it rolled.
fn roll_segment(seq: u64, shared: &Shared) -> io::Result<()> {
    let Some(entry) = shared.state().segments.get(&seq).cloned() else {
        return Ok(());
    };
    let mut records = wal::SegmentReader::open(&entry.path, entry.durable_len)?;
    parquet::roll(&shared.events_dir, entry.id, records.by_ref())?;
    let corrupt = records.valid_len() < entry.durable_len;
    if corrupt {
        error!(
            segment = %entry.path.display(),
            readable_bytes = records.valid_len(),
            durable_bytes = entry.durable_len,
            "an event log segment does not read back whole; its readable events were rolled and the file will be kept aside"
        );
    }
    if let Some(entry) = shared.state().segments.get_mut(&seq) {
        entry.rolled = true;
        entry.corrupt = corrupt;
    }
    Ok(())
}

/// Deletes the files of rolled segments that every cursor has read past
/// (a corrupt one is renamed `*.wal.corrupt` for an operator instead).
fn delete_read_segments(shared: &Shared) {
    let done: Vec<_> = {
        let mut state = shared.state();
        let slowest = state.slowest_cursor();
        let done: Vec<u64> = state
            .segments
            .values()
            .take_while(|segment| segment.rolled)
            .filter(|segment| slowest.is_none_or(|slowest| slowest >= segment.end()))
            .map(|segment| segment.id.seq)
            .collect();
        done.iter()
            .filter_map(|seq| state.segments.remove(seq))
            .collect()
    };
    if done.is_empty() {
        return;
    }
    for segment in done {
        let removed = if segment.corrupt {
            fs::rename(&segment.path, segment.path.with_extension("wal.corrupt"))
        } else {
            fs::remove_file(&segment.path)
        };
        if let Err(error) = removed
            && error.kind() != io::ErrorKind::NotFound
        {
            warn!(segment = %segment.path.display(), %error, "could not remove a rolled log segment");
        }
    }
    if let Err(error) = wal::sync_dir(&shared.wal_dir) {
        warn!(%error, "could not sync the log directory after removing rolled segments");
    }
}
