//! Results for people: the newest results and timeline of each
//! experiment a page has asked for, kept.
//!
//! A report is one pass over the experiment's units (54 ms at a million
//! units, `benches/RESULTS.md`), and so is the timeline's "now" point. A
//! page must answer faster than that, so it reads the view kept from the
//! last pass, which says the log position it counted through. When the
//! analysis has counted further since (or the experiment has a new
//! revision), the page still gets the kept view at once and one refresh
//! runs off the request. The guardrail monitor keeps a view of every
//! running or paused experiment at each of its looks, so only an
//! experiment no look has reached yet is computed while the caller waits.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use exp_analysis::{Report, timeline::Granularity};
use exp_core::{Error, Experiment};
use exp_ingest::Position;
use exp_proto::v1;

use crate::{DEFAULT_ALPHA, Progress, Results, Shared};

/// Youngest a kept view may be and still be refreshed: the analysis
/// counts continuously under traffic, so without it every page would
/// start a look (two passes over the units).
pub const REFRESH_AFTER: Duration = Duration::from_secs(1);

/// An experiment's results and timeline from one look, at
/// [`DEFAULT_ALPHA`], hourly.
#[derive(Debug, Clone)]
pub struct ResultsView {
    /// What `GetResults` answered then.
    pub results: v1::GetResultsResponse,
    /// What `GetResultsTimeline` (hourly) answered then.
    pub timeline: v1::GetResultsTimelineResponse,
    /// When the look was taken.
    pub computed_at: SystemTime,
}

impl ResultsView {
    /// Whether it shows everything counted for `experiment` as it is now.
    fn is_current(&self, experiment: &Experiment, progress: Progress) -> bool {
        self.results.revision == experiment.revision
            && self.results.counted_position >= progress.counted.as_u64()
    }
}

/// The kept views and the refreshes under way.
#[derive(Debug, Default)]
pub(crate) struct Views {
    kept: Mutex<HashMap<String, Arc<ResultsView>>>,
    refreshing: Mutex<HashSet<String>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// A new look at `experiment`, kept (blocking: two passes over its
    /// units).
    fn look(&self, experiment: &Experiment) -> Arc<ResultsView> {
        let (report, counted) = self.report(experiment, DEFAULT_ALPHA);
        self.keep(experiment, report.as_ref(), counted)
    }

    /// Keeps the view of `report` (at [`DEFAULT_ALPHA`], counted through
    /// `counted`) with a new timeline (blocking: one pass over the units),
    /// unless a newer look was kept meanwhile (the monitor's and a page's
    /// refresh may cross); returns the view kept.
    pub(crate) fn keep(
        &self,
        experiment: &Experiment,
        report: Option<&Report>,
        counted: Position,
    ) -> Arc<ResultsView> {
        let view = Arc::new(ResultsView {
            results: self.results_of(experiment, report, counted, DEFAULT_ALPHA),
            timeline: self.timeline(experiment, Granularity::Hour, DEFAULT_ALPHA),
            computed_at: SystemTime::now(),
        });
        let mut kept = locked(&self.views.kept);
        if let Some(newer) = kept.get(&experiment.id).filter(|old| {
            (old.results.revision, old.results.counted_position)
                > (view.results.revision, view.results.counted_position)
        }) {
            return newer.clone();
        }
        kept.insert(experiment.id.clone(), view.clone());
        view
    }
}

/// Marks a refresh of one experiment under way; unmarks it when dropped,
/// even if the look panicked, so the next page can start another.
struct Refreshing<'a> {
    views: &'a Views,
    id: String,
}

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        locked(&self.views.refreshing).remove(&self.id);
    }
}

impl Results {
    /// How far the analysis has counted.
    pub fn progress(&self) -> Progress {
        *self.shared.progress.borrow()
    }

    /// The view of `experiment`: the kept one, refreshed in the background
    /// when it is behind; computed now when there is none yet.
    /// `UNAVAILABLE` while the first read of the log is under way.
    pub async fn view(&self, experiment: &Experiment) -> Result<Arc<ResultsView>, Error> {
        if !self.progress().ready {
            return Err(Error::Unavailable(
                "results are loading: the event log is still being read; retry shortly".into(),
            ));
        }
        if let Some(kept) = self.kept_view(experiment) {
            return Ok(kept);
        }
        let shared = self.shared.clone();
        let experiment = experiment.clone();
        self.shared
            .tasks
            .spawn_blocking(move || shared.look(&experiment))
            .await
            .map_err(|error| Error::Unavailable(format!("the results task failed: {error}")))
    }

    /// The view kept for `experiment`, if a page has asked for it before;
    /// when it is behind and at least [`REFRESH_AFTER`] old, one refresh
    /// starts in the background.
    pub fn kept_view(&self, experiment: &Experiment) -> Option<Arc<ResultsView>> {
        let kept = locked(&self.shared.views.kept)
            .get(&experiment.id)
            .cloned()?;
        let old_enough = kept
            .computed_at
            .elapsed()
            .is_ok_and(|age| age >= REFRESH_AFTER);
        if old_enough && !kept.is_current(experiment, self.progress()) {
            self.refresh(experiment);
        }
        Some(kept)
    }

    /// Takes a new look at `experiment` in the background, unless one is
    /// under way.
    pub fn refresh(&self, experiment: &Experiment) {
        if !self.progress().ready
            || !locked(&self.shared.views.refreshing).insert(experiment.id.clone())
        {
            return;
        }
        let shared = self.shared.clone();
        let experiment = experiment.clone();
        self.shared.tasks.spawn_blocking(move || {
            let _marked = Refreshing {
                views: &shared.views,
                id: experiment.id.clone(),
            };
            shared.look(&experiment);
        });
    }
}
