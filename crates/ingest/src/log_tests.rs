//! The event log against a real directory: acknowledgements, positions,
//! cursors, rolls, restarts and failures.

use std::time::{Duration, SystemTime};

use exp_core::event::Event;

use super::*;
use crate::{
    testing::{click, exposure, page_view},
    wal::SegmentReader,
};

fn options(dir: &Path) -> LogOptions {
    LogOptions {
        dir: dir.to_owned(),
        flush_interval: Duration::from_secs(3600),
        max_pending_events: 10_000,
        dedup_window: Duration::from_secs(24 * 3600),
    }
}

fn clicks(ids: &[&str]) -> Batch {
    ids.iter().map(|id| click(id)).collect()
}

/// Every event a cursor hands out until it has read all that is
/// committed.
fn drain(cursor: &mut Cursor) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let events = cursor.read().expect("read");
        if events.is_empty() {
            return ids;
        }
        ids.extend(events.iter().map(|event| event.event_id().to_owned()));
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn a_retried_event_is_written_once_and_answered_as_a_duplicate() {
    let dir = tempfile::tempdir().expect("dir");
    let log = EventLog::open(options(dir.path())).expect("open");
    let first = log.append(clicks(&["a", "b"])).await.expect("append");
    assert_eq!(first.fresh, [true, true]);
    let retry = log.append(clicks(&["b", "c", "c"])).await.expect("append");
    assert_eq!(retry.fresh, [false, true, false]);
    assert_eq!(sorted(drain(&mut log.cursor())), ["a", "b", "c"]);
    assert_eq!(log.stats().duplicates.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn an_append_answers_the_position_its_events_reached_and_a_cursor_reads_through_it() {
    let dir = tempfile::tempdir().expect("dir");
    let log = EventLog::open(options(dir.path())).expect("open");
    assert_eq!(log.tip(), Position::ZERO);
    let first = log.append(clicks(&["a", "b"])).await.expect("append");
    let second = log.append(clicks(&["c"])).await.expect("append");
    assert!(Position::ZERO < first.position && first.position < second.position);
    assert_eq!(log.tip(), second.position);
    let only_duplicates = log.append(clicks(&["a"])).await.expect("append");
    assert_eq!(
        only_duplicates.position, second.position,
        "a batch of duplicates is answered with the tip: its first copies are at or before it"
    );
    let mut cursor = log.cursor();
    assert_eq!(drain(&mut cursor), ["a", "b", "c"]);
    assert_eq!(cursor.position(), second.position);
    assert_eq!(log.behind(cursor.position()).events, 0);
}

#[tokio::test]
async fn the_tip_moves_before_an_append_is_answered() {
    let dir = tempfile::tempdir().expect("dir");
    let log = EventLog::open(options(dir.path())).expect("open");
    let mut tip = log.watch_tip();
    tip.borrow_and_update();
    let appended = log.append(clicks(&["a"])).await.expect("append");
    assert!(tip.has_changed().expect("open"), "readers were woken");
    assert_eq!(tip.borrow_and_update().position, appended.position);
}

#[tokio::test]
async fn a_cursor_from_the_start_reads_rolled_files_then_segments_each_event_once() {
    let dir = tempfile::tempdir().expect("dir");
    let log = EventLog::open(options(dir.path())).expect("open");
    log.append(clicks(&["a", "b"])).await.expect("append");
    log.flush().await.expect("flush");
    let last = log.append(clicks(&["c"])).await.expect("append");
    assert_eq!(
        parquet::list(dir.path(), EventKind::Outcome)
            .expect("list")
            .len(),
        1,
        "rolled into Parquet"
    );
    let mut cursor = log.cursor();
    assert!(cursor.replaying());
    assert_eq!(cursor.read().expect("read").len(), 2, "the rolled file");
    assert_eq!(drain(&mut cursor), ["c"], "then the segment");
    assert!(!cursor.replaying());
    assert_eq!(cursor.position(), last.position);
}

#[tokio::test]
async fn positions_and_ids_survive_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let (rolled, unrolled) = {
        let log = EventLog::open(options(dir.path())).expect("open");
        let rolled = log.append(clicks(&["rolled"])).await.expect("append");
        log.flush().await.expect("flush");
        let unrolled = log.append(clicks(&["unrolled"])).await.expect("append");
        // Dropped without close: the second segment stays in the log,
        // as after a crash (rolling it happens at the next open).
        std::mem::forget(log);
        (rolled.position, unrolled.position)
    };
    let log = EventLog::open(options(dir.path())).expect("reopen");
    assert_eq!(log.tip(), unrolled, "the tip is where it was");
    let again = log
        .append(clicks(&["rolled", "unrolled", "new"]))
        .await
        .expect("append");
    assert_eq!(again.fresh, [false, false, true]);
    assert!(again.position > unrolled && unrolled > rolled);
    log.close();
    let reopened = EventLog::open(options(dir.path())).expect("reopen");
    assert_eq!(
        reopened.tip(),
        again.position,
        "from the Parquet files alone"
    );
    let mut cursor = reopened.cursor();
    assert_eq!(sorted(drain(&mut cursor)), ["new", "rolled", "unrolled"]);
    assert_eq!(cursor.position(), again.position);
}

#[tokio::test]
async fn a_torn_tail_left_by_a_crash_is_cut_and_the_acked_events_kept() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let log = EventLog::open(options(dir.path())).expect("open");
        log.append(clicks(&["acked"])).await.expect("append");
        std::mem::forget(log);
    }
    let (_, segment) = wal::list(&dir.path().join("wal")).expect("list")[0].clone();
    let mut torn = Vec::new();
    wal::encode(&Event::Outcome(click("torn")), &mut torn);
    torn.truncate(torn.len() / 2);
    let mut bytes = fs::read(&segment).expect("read");
    bytes.extend_from_slice(&torn);
    fs::write(&segment, bytes).expect("write");
    let log = EventLog::open(options(dir.path())).expect("reopen");
    log.flush().await.expect("flush");
    assert_eq!(drain(&mut log.cursor()), ["acked"]);
    assert_eq!(
        log.append(clicks(&["torn"])).await.expect("append").fresh,
        [true],
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
    let refused = log
        .append(clicks(&["a", "b", "c"]))
        .await
        .expect_err("refused");
    assert!(
        matches!(refused.error, LogError::Overloaded { .. }),
        "{refused:?}"
    );
    let ids: Vec<&str> = refused.events.iter().map(Event::event_id).collect();
    assert_eq!(ids, ["a", "b", "c"], "handed back unchanged");
    assert_eq!(
        log.append(clicks(&["a"])).await.expect("append").fresh,
        [true]
    );
}

#[tokio::test]
async fn a_cursor_keeps_the_segments_it_has_not_read_and_releases_them_once_read() {
    let dir = tempfile::tempdir().expect("dir");
    let log = EventLog::open(options(dir.path())).expect("open");
    let mut cursor = log.cursor();
    assert!(drain(&mut cursor).is_empty());
    log.append(clicks(&["a", "b"])).await.expect("append");
    log.flush().await.expect("flush");
    let segments = || wal::list(&dir.path().join("wal")).expect("list").len();
    assert_eq!(segments(), 1, "rolled, but kept for the cursor");
    assert_eq!(drain(&mut cursor), ["a", "b"], "read from the segment");
    log.append(clicks(&["c"])).await.expect("append");
    log.flush().await.expect("flush");
    assert_eq!(
        segments(),
        1,
        "the first, read, is deleted; the second waits for the cursor"
    );
    drop(cursor);
    log.append(clicks(&["d"])).await.expect("append");
    log.flush().await.expect("flush");
    assert_eq!(segments(), 0, "a dropped cursor holds nothing");
    assert_eq!(sorted(drain(&mut log.cursor())), ["a", "b", "c", "d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_reads_every_event_once_while_writes_and_rolls_go_on() {
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
                let ids: Vec<String> = (0..10).map(|i| format!("e-{batch}-{i}")).collect();
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                log.append(clicks(&ids)).await.expect("append");
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let reading = log.clone();
    // Woken by the tip, as the results follower is.
    let reader = tokio::spawn(async move {
        let mut tip = reading.watch_tip();
        let mut cursor = reading.cursor();
        let mut seen = Vec::new();
        loop {
            tip.borrow_and_update();
            seen.extend(tokio::task::block_in_place(|| drain(&mut cursor)));
            if seen.len() >= 2_000 {
                return seen;
            }
            tip.changed().await.expect("the log stays open");
        }
    });
    writer.await.expect("writer");
    let seen = reader.await.expect("reader");
    let mut expected: Vec<String> = (0..200)
        .flat_map(|batch| (0..10).map(move |i| format!("e-{batch}-{i}")))
        .collect();
    expected.sort();
    assert_eq!(sorted(seen), expected, "every event exactly once");
}

#[tokio::test]
async fn a_cursor_from_a_position_reads_the_events_after_it() {
    let dir = tempfile::tempdir().expect("dir");
    let log = EventLog::open(options(dir.path())).expect("open");
    let first = log.append(clicks(&["a", "b"])).await.expect("append");
    log.append(clicks(&["c"])).await.expect("append");
    let mut cursor = log.cursor_from(first.position).expect("held");
    assert_eq!(drain(&mut cursor), ["c"]);
    log.flush().await.expect("flush");
    log.append(clicks(&["d"])).await.expect("append");
    assert_eq!(drain(&mut cursor), ["d"], "on into the next segment");
    assert!(
        drain(&mut log.cursor_from(log.tip()).expect("the tip")).is_empty(),
        "nothing after the tip"
    );
    drop(cursor);
    log.flush().await.expect("flush");
    let error = log
        .cursor_from(first.position)
        .expect_err("rolled and deleted");
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
}

#[tokio::test]
async fn a_rebuild_reads_hour_by_hour_each_hours_exposures_before_its_outcomes() {
    let dir = tempfile::tempdir().expect("dir");
    let log = EventLog::open(options(dir.path())).expect("open");
    let hour = |h: u64| SystemTime::now() - Duration::from_secs(3_600 * (3 - h));
    let mut batch = Batch::default();
    let mut late_view = page_view("view-0", "s-1");
    late_view.timestamp = hour(0);
    batch.push(late_view);
    batch.push(exposure("exposure-1", hour(1)));
    batch.push(exposure("exposure-0", hour(0)));
    let mut view = page_view("view-1", "s-1");
    view.timestamp = hour(1);
    batch.push(view);
    log.append(batch).await.expect("append");
    log.flush().await.expect("flush");
    assert_eq!(
        drain(&mut log.cursor()),
        ["exposure-0", "view-0", "exposure-1", "view-1"]
    );
}

#[tokio::test]
async fn behind_counts_the_events_after_a_position_and_when_the_oldest_was_committed() {
    let dir = tempfile::tempdir().expect("dir");
    let log = EventLog::open(options(dir.path())).expect("open");
    let before = SystemTime::now();
    let first = log.append(clicks(&["a", "b"])).await.expect("append");
    log.append(clicks(&["c"])).await.expect("append");
    let behind = log.behind(Position::ZERO);
    assert_eq!(behind.events, 3);
    assert!(behind.since.is_some_and(|since| since >= before));
    assert_eq!(log.behind(first.position).events, 1);
    assert_eq!(log.behind(log.tip()), Behind::default());
}

#[tokio::test]
async fn a_segment_whose_durable_records_do_not_read_back_is_kept_aside_after_its_roll() {
    let dir = tempfile::tempdir().expect("dir");
    let log = EventLog::open(options(dir.path())).expect("open");
    log.append(clicks(&["a", "b"])).await.expect("append");
    log.append(clicks(&["c"])).await.expect("append");
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
    assert!(
        SegmentReader::open(&aside, u64::MAX)
            .expect("open")
            .all(|record| record.is_ok())
    );
}

#[tokio::test]
async fn segments_are_rolled_after_the_flush_interval_without_being_asked() {
    let dir = tempfile::tempdir().expect("dir");
    let log = EventLog::open(LogOptions {
        flush_interval: Duration::from_millis(100),
        ..options(dir.path())
    })
    .expect("open");
    log.append(clicks(&["a"])).await.expect("append");
    for _ in 0..100 {
        if log.stats().segments_rolled.load(Ordering::Relaxed) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log.stats().segments_rolled.load(Ordering::Relaxed), 1);
    assert!(wal::list(&dir.path().join("wal")).expect("list").is_empty());
    assert_eq!(
        parquet::list(dir.path(), EventKind::Outcome)
            .expect("list")
            .len(),
        1
    );
}
