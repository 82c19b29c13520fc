//! The analysis following the event log (or, with `--events-sink
//! nats://`, the JetStream stream: the same cursors, tip and positions,
//! see [`exp_ingest::EventSource`]).
//!
//! One task. Once the log is open it builds an analyzer from the start of
//! the log with a cursor (a rebuild: Parquet files, then the segments),
//! publishes it when it has caught up, and from then on applies what each
//! commit adds to the published analyzer, woken by the log's tip. When an
//! experiment's metrics change so that its per-unit sums no longer fit, a
//! new analyzer is built off to the side from the start of the log while
//! the published one keeps following the log and answering, so reading
//! your writes keeps working during a rebuild. Reading and applying block
//! (files, CPU), so each round runs on the blocking pool; a build advances
//! a slice at a time, between which the published analyzer catches up.
//!
//! The cursors keep their place in the log, and the log keeps the
//! segments a cursor has not read: a follower that falls behind under
//! load catches up from disk, in order, without a rebuild. A read that
//! fails starts that reader over from the start of the log, after a
//! backoff.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use exp_admin::Admin;
use exp_analysis::{Analyzer, Catalog, Refresh};
use exp_ingest::{EventCursor, OpenSource};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::{Progress, Shared};

/// Chunks (of up to 8,192 events) a build reads per round, before the
/// published analyzer catches up again.
const BUILD_SLICE: usize = 64;
/// The first wait after a failed read; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait after failed reads.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `expd.results.rebuild.duration`: a build of the analysis from the
/// start of the log (after a start, or when metrics change).
fn rebuild_duration() -> &'static opentelemetry::metrics::Histogram<f64> {
    static REBUILD: std::sync::OnceLock<opentelemetry::metrics::Histogram<f64>> =
        std::sync::OnceLock::new();
    REBUILD.get_or_init(|| {
        opentelemetry::global::meter("expd")
            .f64_histogram("expd.results.rebuild.duration")
            .with_unit("s")
            .with_description("Time to build the analysis from the start of the event log")
            .build()
    })
}

/// Experiment definitions for the analyzer, from the admin's store: a
/// holdout's id answers the comparison of its two groups.
pub fn catalog(admin: &Admin) -> Catalog {
    let admin = admin.clone();
    Box::new(move |id| admin.results_subject(id).ok())
}

/// An analyzer being built from the start of the log.
struct Build {
    cursor: EventCursor,
    analyzer: Box<Analyzer>,
    started: Instant,
    events: u64,
}

impl Build {
    fn start(log: &OpenSource, admin: &Admin) -> Self {
        Self {
            cursor: log.cursor(),
            analyzer: Box::new(Analyzer::new(catalog(admin))),
            started: Instant::now(),
            events: 0,
        }
    }

    /// Reads up to `chunks` chunks into the analyzer; whether it has
    /// read everything committed.
    fn advance(&mut self, chunks: usize, stop: &CancellationToken) -> std::io::Result<bool> {
        for _ in 0..chunks {
            if stop.is_cancelled() {
                return Ok(false);
            }
            let events = self.cursor.read()?;
            if events.is_empty() {
                return Ok(true);
            }
            self.events += events.len() as u64;
            for event in &events {
                self.analyzer.apply(event);
            }
        }
        Ok(false)
    }
}

/// The readers of the log: the published analyzer's cursor (none before
/// the first build is published), and a build in progress.
struct Readers {
    published: Option<EventCursor>,
    building: Option<Build>,
}

/// What a round asks of the next.
struct Round {
    /// A read failed: wait before the next round.
    failed: bool,
}

/// What the task needs in a round, on the blocking pool.
#[derive(Clone)]
struct Context {
    shared: Arc<Shared>,
    log: OpenSource,
    admin: Admin,
    stop: CancellationToken,
}

pub(crate) async fn follow(shared: Arc<Shared>, admin: Admin, shutdown: CancellationToken) {
    let log = tokio::select! {
        log = shared.source.opened() => log,
        () = shutdown.cancelled() => return,
    };
    let mut tip = log.watch_tip();
    let mut experiments = admin.store().subscribe();
    let context = Context {
        shared,
        log: log.clone(),
        admin: admin.clone(),
        stop: shutdown.clone(),
    };
    let mut readers = Some(Readers {
        published: None,
        building: Some(Build::start(&log, &admin)),
    });
    let mut refresh = false;
    let mut backoff = FIRST_BACKOFF;
    loop {
        tip.borrow_and_update();
        let round_context = context.clone();
        let current = readers.take();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut current = current.unwrap_or_else(|| Readers {
                published: None,
                building: Some(Build::start(&round_context.log, &round_context.admin)),
            });
            let round = run_round(&mut current, &round_context, refresh);
            (current, round)
        })
        .await;
        refresh = false;
        let building = match outcome {
            Ok((next, round)) => {
                let building = next.building.is_some();
                readers = Some(next);
                if round.failed {
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                backoff = FIRST_BACKOFF;
                building
            }
            Err(panicked) => {
                // The readers went with the round: start over (the
                // published analyzer keeps answering meanwhile).
                error!(error = %panicked, "a results round panicked; building results again");
                true
            }
        };
        if shutdown.is_cancelled() {
            return;
        }
        if building {
            // A build goes on at once; the published analyzer catches up
            // between its slices.
            continue;
        }
        tokio::select! {
            changed = tip.changed() => {
                if changed.is_err() || tip.borrow().closed {
                    // The log closed: one last round reads what it committed.
                    if let Some(mut last) = readers.take() {
                        let context = context.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            run_round(&mut last, &context, false)
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
                refresh = true;
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// One round: the published analyzer reads everything committed; a build
/// reads a slice, and is published once it has caught up; with `refresh`,
/// the published analyzer takes the experiments' new definitions, and a
/// build starts if they no longer fit its per-unit sums.
fn run_round(readers: &mut Readers, context: &Context, refresh: bool) -> Round {
    let mut failed = false;
    if let Some(cursor) = &mut readers.published
        && let Err(error) = follow_published(cursor, context)
    {
        error!(%error, "results cannot read the event log; building them again from the start");
        readers.published = None;
        failed = true;
    }
    if refresh
        && readers.building.is_none()
        && context.shared.analysis().analyzer.refresh() == Refresh::NeedsRebuild
    {
        info!("a metric config or the variants changed; building results again off to the side");
        readers.building = Some(Build::start(&context.log, &context.admin));
    }
    if readers.published.is_none() && readers.building.is_none() {
        readers.building = Some(Build::start(&context.log, &context.admin));
    }
    let Some(build) = &mut readers.building else {
        return Round { failed };
    };
    match build.advance(BUILD_SLICE, &context.stop) {
        Err(error) => {
            error!(%error, "building results from the event log failed; starting over");
            readers.building = Some(Build::start(&context.log, &context.admin));
            failed = true;
        }
        Ok(false) => {}
        Ok(true) => {
            let behind_published = readers
                .published
                .as_ref()
                .is_some_and(|published| published.position() > build.cursor.position());
            if !behind_published && let Some(build) = readers.building.take() {
                publish(build, readers, context);
            }
        }
    }
    Round { failed }
}

/// Applies everything committed to the published analyzer.
fn follow_published(cursor: &mut EventCursor, context: &Context) -> std::io::Result<()> {
    let mut applied = false;
    loop {
        if context.stop.is_cancelled() {
            break;
        }
        let events = cursor.read()?;
        if events.is_empty() {
            break;
        }
        let mut analysis = context.shared.analysis();
        for event in &events {
            analysis.analyzer.apply(event);
        }
        analysis.counted = cursor.position();
        applied = true;
    }
    if applied {
        context.shared.progress.send_replace(Progress {
            counted: cursor.position(),
            ready: true,
        });
    }
    Ok(())
}

/// Makes a caught-up build the published analyzer, then brings it up to
/// date with the experiments' definitions, which may ask for another
/// build.
fn publish(build: Build, readers: &mut Readers, context: &Context) {
    let counted = build.cursor.position();
    let refresh = {
        let mut analysis = context.shared.analysis();
        analysis.analyzer = *build.analyzer;
        analysis.counted = counted;
        analysis.analyzer.refresh()
    };
    let took = build.started.elapsed();
    rebuild_duration().record(took.as_secs_f64(), &[]);
    info!(
        events = build.events,
        elapsed_ms = took.as_millis() as u64,
        %counted,
        "results built from the event log"
    );
    readers.published = Some(build.cursor);
    context.shared.progress.send_replace(Progress {
        counted,
        ready: true,
    });
    if refresh == Refresh::NeedsRebuild {
        info!("an experiment changed while results were built; building them again");
        readers.building = Some(Build::start(&context.log, &context.admin));
    }
}
