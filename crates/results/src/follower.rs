//! The analysis following the event log.
//!
//! One task. Once the log is open it reads it from the start with a
//! cursor into a fresh analyzer (a rebuild: Parquet files, then the
//! segments), publishes it when it has caught up, and from then on applies
//! what each commit adds. Reading and applying block (files, CPU), so each
//! round runs on the blocking pool; between rounds the task waits to be
//! woken by the log's tip, by a change of the experiments (their metrics
//! may need other per-unit sums: then a new analyzer is built off to the
//! side while the current one keeps answering), or by shutdown.
//!
//! The cursor keeps its place in the log, and the log keeps the segments
//! a cursor has not read: a follower that falls behind under load catches
//! up from disk, in order, without a rebuild.

use std::{sync::Arc, time::Instant};

use exp_admin::Admin;
use exp_analysis::{Analyzer, Catalog, Refresh};
use exp_ingest::{Cursor, EventLog};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::{Progress, Shared};

/// Experiment definitions for the analyzer, from the admin's store.
pub fn catalog(admin: &Admin) -> Catalog {
    let admin = admin.clone();
    Box::new(move |id| admin.get(id).ok())
}

/// What a round reads into.
enum Target {
    /// The published analyzer, under its lock.
    Published,
    /// A new analyzer, built off to the side until it has caught up.
    Building(Box<Analyzer>),
}

struct Reader {
    cursor: Cursor,
    target: Target,
}

pub(crate) async fn follow(shared: Arc<Shared>, admin: Admin, shutdown: CancellationToken) {
    let log = tokio::select! {
        log = shared.log.opened() => log,
        () = shutdown.cancelled() => return,
    };
    let mut tip = log.watch_tip();
    let mut experiments = admin.store().subscribe();
    let mut reader = Some(rebuild(&log, &admin));
    loop {
        tip.borrow_and_update();
        let round_shared = shared.clone();
        let Some(current) = reader.take() else {
            return;
        };
        let stop = shutdown.clone();
        let round =
            tokio::task::spawn_blocking(move || read_available(current, &round_shared, &stop));
        match round.await {
            Ok(Ok((_, Refresh::NeedsRebuild))) => {
                info!("an experiment changed while results were built; building them again");
                reader = Some(rebuild(&log, &admin));
                continue;
            }
            Ok(Ok((next, Refresh::Updated))) => reader = Some(next),
            Ok(Err(error)) => {
                error!(%error, "results cannot read the event log; rebuilding from the start");
                reader = Some(rebuild(&log, &admin));
            }
            Err(error) => {
                error!(%error, "reading the event log into results panicked; rebuilding");
                reader = Some(rebuild(&log, &admin));
            }
        }
        tokio::select! {
            changed = tip.changed() => {
                if changed.is_err() || tip.borrow().closed {
                    // The log closed: one last round reads what it committed.
                    if let Some(last) = reader.take() {
                        let shared = shared.clone();
                        let stop = shutdown.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            read_available(last, &shared, &stop)
                        })
                        .await;
                    }
                    return;
                }
            }
            changed = experiments.changed() => {
                if changed.is_err() {
                    return;
                }
                if matches!(reader.as_ref().map(|r| &r.target), Some(Target::Published))
                    && shared.analysis().analyzer.refresh() == Refresh::NeedsRebuild
                {
                    info!("a metric config or the variants changed; rebuilding results off to the side");
                    reader = Some(rebuild(&log, &admin));
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}

fn rebuild(log: &EventLog, admin: &Admin) -> Reader {
    Reader {
        cursor: log.cursor(),
        target: Target::Building(Box::new(Analyzer::new(catalog(admin)))),
    }
}

/// Reads and applies everything the log holds now (or until `stop`). A
/// finished build is published, then brought up to date with the
/// experiments' definitions, which may ask for another build.
fn read_available(
    mut reader: Reader,
    shared: &Shared,
    stop: &CancellationToken,
) -> std::io::Result<(Reader, Refresh)> {
    let started = Instant::now();
    let mut applied = 0_u64;
    loop {
        if stop.is_cancelled() {
            return Ok((reader, Refresh::Updated));
        }
        let events = reader.cursor.read()?;
        if events.is_empty() {
            break;
        }
        applied += events.len() as u64;
        match &mut reader.target {
            Target::Building(analyzer) => {
                for event in &events {
                    analyzer.apply(event);
                }
            }
            Target::Published => {
                let mut analysis = shared.analysis();
                for event in &events {
                    analysis.analyzer.apply(event);
                }
                analysis.counted = reader.cursor.position();
            }
        }
    }
    let counted = reader.cursor.position();
    let mut refresh = Refresh::Updated;
    if let Target::Building(analyzer) = reader.target {
        {
            let mut analysis = shared.analysis();
            analysis.analyzer = *analyzer;
            analysis.counted = counted;
            refresh = analysis.analyzer.refresh();
        }
        info!(
            events = applied,
            elapsed_ms = started.elapsed().as_millis() as u64,
            %counted,
            "results built from the event log"
        );
        reader.target = Target::Published;
    } else if applied == 0 {
        return Ok((reader, refresh));
    }
    shared.progress.send_replace(Progress {
        counted,
        ready: true,
    });
    Ok((reader, refresh))
}
