//! Results of experiments, as the service serves them: the analysis
//! follows the event log, the guardrail monitor acts on it, and
//! `ResultsService` reads it.
//!
//! # Layout
//!
//! - [`follower`]: a task that reads the log with a cursor (from the start
//!   after a restart, then as groups commit) into the analyzer, and
//!   rebuilds it off to the side when an experiment's metrics change.
//! - [`monitor`]: every `--guardrail-interval`, each running experiment's
//!   guardrails are judged; a breach pauses or stops it through the
//!   admin's own transition, with the evidence in the revision's reason.
//! - [`grpc`]: `GetResults`, which reads your writes (it waits for a position),
//!   `GetResultsTimeline`, and `PlanExperiment` (units and days needed, at
//!   daily units given, observed for a started experiment, or observed on
//!   a placement before launch).
//! - [`convert`]: reports to their proto form.
//! - [`view`]: the newest results and timeline of an experiment kept for
//!   people (the console), so a page answers without a pass over its
//!   units; refreshed off the request when the analysis has counted more.
//!
//! The analyzer is behind one lock, held by the follower for one chunk of
//! events at a time and by a report for one pass over an experiment's
//! units. How far it has counted is a watch: a caller waiting for its
//! writes is woken, never polls.

pub mod convert;
pub mod follower;
pub mod grpc;
pub mod monitor;
pub mod view;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use exp_admin::{Admin, Authenticator};
use exp_analysis::{Analyzer, Report, timeline::Granularity};
use exp_core::Experiment;
use exp_ingest::{EventSource, Position};
use exp_proto::v1;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use grpc::ResultsGrpc;
pub use view::ResultsView;

/// Significance level of GetResults when the request names none, and of
/// the guardrail monitor.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// Power of PlanExperiment when the request names none.
pub const DEFAULT_POWER: f64 = 0.8;
/// Identity recorded on revisions the guardrail monitor writes.
pub const GUARDRAIL_AUTHOR: &str = "guardrail";

/// How far the analysis has counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Every event at or before it is counted.
    pub counted: Position,
    /// The analyzer holds the whole log up to `counted` (false while the
    /// first build after a start reads the log).
    pub ready: bool,
}

/// The analyzer and how far it has counted, changed together.
#[derive(Debug)]
pub(crate) struct Analysis {
    pub(crate) analyzer: Analyzer,
    pub(crate) counted: Position,
}

/// What the follower, the monitor and the RPCs share.
#[derive(Debug)]
pub(crate) struct Shared {
    analysis: Mutex<Analysis>,
    pub(crate) progress: watch::Sender<Progress>,
    pub(crate) source: EventSource,
    pub(crate) views: view::Views,
    /// Where background refreshes of the views run.
    pub(crate) tasks: TaskTracker,
}

impl Shared {
    pub(crate) fn analysis(&self) -> MutexGuard<'_, Analysis> {
        self.analysis
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `experiment`'s results at significance `alpha`, as `GetResults`
    /// answers them: one pass over its units (blocking).
    pub(crate) fn results(&self, experiment: &Experiment, alpha: f64) -> v1::GetResultsResponse {
        let (report, counted) = self.report(experiment, alpha);
        self.results_of(experiment, report.as_ref(), counted, alpha)
    }

    /// `experiment`'s report and the position it counted through: one
    /// pass over its units (blocking).
    pub(crate) fn report(&self, experiment: &Experiment, alpha: f64) -> (Option<Report>, Position) {
        let mut analysis = self.analysis();
        let report = analysis.analyzer.report(&experiment.id, alpha);
        (report, analysis.counted)
    }

    /// A report in `GetResults`' form, with how far behind it is.
    pub(crate) fn results_of(
        &self,
        experiment: &Experiment,
        report: Option<&Report>,
        counted: Position,
        alpha: f64,
    ) -> v1::GetResultsResponse {
        let lag = self.lag(counted);
        let mut response = match report {
            Some(report) => convert::report_to_proto(report, lag),
            None => v1::GetResultsResponse {
                experiment_id: experiment.id.clone(),
                alpha,
                multiple_comparison_correction: experiment
                    .multiple_comparison_correction
                    .name()
                    .into(),
                interval_kind: convert::interval_kind_to_proto(
                    exp_analysis::Readout::of(experiment).intervals,
                ) as i32,
                sequential_tuning_parameter: experiment.sequential_tuning_parameter,
                counted_position: lag.counted_position,
                pending_events: lag.pending_events,
                lag_seconds: lag.lag_seconds,
                ..Default::default()
            },
        };
        if response.revision == 0 {
            response.revision = experiment.revision;
        }
        response
    }

    /// `experiment`'s timeline, as `GetResultsTimeline` answers it
    /// (blocking).
    pub(crate) fn timeline(
        &self,
        experiment: &Experiment,
        granularity: Granularity,
        alpha: f64,
    ) -> v1::GetResultsTimelineResponse {
        let (timeline, counted) = {
            let analysis = self.analysis();
            let timeline = analysis
                .analyzer
                .timeline(&experiment.id, granularity, alpha);
            (timeline, analysis.counted)
        };
        v1::GetResultsTimelineResponse {
            experiment_id: experiment.id.clone(),
            alpha,
            points: timeline
                .map(|timeline| convert::timeline_to_proto(&timeline))
                .unwrap_or_default(),
            counted_position: counted.as_u64(),
        }
    }

    /// How far `counted` is behind the log's tip: events and the age of
    /// the oldest of them.
    pub(crate) fn lag(&self, counted: Position) -> convert::Lag {
        let behind = self.source.behind(counted);
        convert::Lag {
            counted_position: counted.as_u64(),
            pending_events: behind.events,
            lag_seconds: behind.since.map_or(0.0, |since| {
                std::time::SystemTime::now()
                    .duration_since(since)
                    .unwrap_or_default()
                    .as_secs_f64()
            }),
        }
    }
}

/// The results side of `expd`.
#[derive(Debug, Clone)]
pub struct Results {
    shared: Arc<Shared>,
}

impl Results {
    /// Starts following `source` (the log once it opens, or the stream) and the
    /// guardrail monitor, judging every `guardrail_interval`, on `tasks`;
    /// both end when `shutdown` is cancelled.
    pub fn start(
        admin: Admin,
        source: EventSource,
        guardrail_interval: Duration,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let shared = Arc::new(Shared {
            analysis: Mutex::new(Analysis {
                analyzer: Analyzer::new(follower::catalog(&admin)),
                counted: Position::ZERO,
            }),
            progress: watch::Sender::new(Progress::default()),
            source,
            views: view::Views::default(),
            tasks: tasks.clone(),
        });
        tasks.spawn(follower::follow(
            shared.clone(),
            admin.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(monitor::run(
            shared.clone(),
            admin,
            guardrail_interval,
            shutdown,
        ));
        Self { shared }
    }

    /// How far the analysis is behind the event log now.
    pub fn lag(&self) -> convert::Lag {
        let counted = self.shared.progress.borrow().counted;
        self.shared.lag(counted)
    }

    /// The `ResultsService` over this state; a call waiting for a position
    /// gives up before `request_timeout` (the server's own deadline).
    pub fn grpc(
        &self,
        admin: Admin,
        auth: Authenticator,
        request_timeout: Duration,
    ) -> exp_proto::v1::results_service_server::ResultsServiceServer<ResultsGrpc> {
        ResultsGrpc::new(self.shared.clone(), admin, auth, request_timeout).into_server()
    }
}
