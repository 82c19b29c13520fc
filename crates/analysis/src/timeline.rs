//! Results over time: what a reader would have seen at every UTC hour
//! boundary.
//!
//! The analyzer tracks an event-time watermark: the largest event
//! timestamp applied so far, across every experiment. When an event's
//! timestamp crosses one or more hour boundaries, before it is applied,
//! every experiment with units records a snapshot at each boundary
//! crossed: per variant its exposed units and, per metric, the sufficient
//! statistics of [`crate::results`] (per-unit moments, or the
//! concentration estimate). Comparisons are computed when the timeline is
//! read, at the alpha asked for, with the code a report uses.
//!
//! Events arrive roughly in time order live; a rebuild replays the Parquet
//! hour partitions in order (exposures, then outcomes, of each hour) and
//! then the log not yet rolled, so it crosses the same boundaries after the
//! same events and reproduces the same snapshots. A late event (older than
//! the watermark) counts from the next boundary on, live; a rebuild files
//! it in its own hour.
//!
//! # Memory
//!
//! Hourly points are kept for [`HOURLY_RETENTION_MICROS`] (90 days) of
//! event time, and the 00:00 UTC ones for [`DAILY_RETENTION_MICROS`] (two
//! years): at most about 2,160 + 640 points per experiment. A point costs
//! 16 bytes in the list plus its snapshot (boundaries crossed at once share
//! one): 56 bytes per variant and metric (the moments, or the
//! concentration estimate), 56 per metric, 8 per variant, about 90 per
//! snapshot, and for each CUPED-adjusted metric its fit (about 80 bytes
//! and 40 per variant); 928 bytes for two variants and five metrics,
//! 1,704 when all five are adjusted, so 90 days of hourly points take
//! about 2.0 to 3.7 MB per experiment, and the whole history at most about
//! 2.6 to 4.8 MB. Metric names are shared, not copied. Taking a
//! snapshot costs what a report does (a pass over the units per metric,
//! and two over a compact copy per CUPED-adjusted metric): once an hour
//! per experiment live (taken while the event that crossed the hour is
//! applied, so a reader may wait that long once an hour), and once per
//! hour of history during a rebuild: 90 days that end at a million units
//! add at most 2,160 snapshots, each no longer than a report of those
//! units (43 ms at a million without CUPED, 118 ms with the seed's four
//! adjusted metrics, in `benches/RESULTS.md`): at most 1.5 or 4.3 minutes.

use std::sync::Arc;

use crate::{
    analyzer::Analyzer,
    experiment::ExperimentState,
    results::{MetricStatistics, Readout, VariantReport, exposed_units, variant_reports},
};

/// An hour, in microseconds.
pub const HOUR_MICROS: i64 = 3_600_000_000;

/// A day, in microseconds.
pub const DAY_MICROS: i64 = 24 * HOUR_MICROS;

/// How long hourly points are kept, in event time: 90 days.
pub const HOURLY_RETENTION_MICROS: i64 = 90 * DAY_MICROS;

/// How long the points at 00:00 UTC are kept, in event time: two years.
pub const DAILY_RETENTION_MICROS: i64 = 730 * DAY_MICROS;

/// Which boundaries a timeline shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Every UTC hour boundary.
    Hour,
    /// Every 00:00 UTC.
    Day,
}

impl Granularity {
    fn shows(self, boundary_micros: i64) -> bool {
        match self {
            Self::Hour => true,
            Self::Day => boundary_micros.rem_euclid(DAY_MICROS) == 0,
        }
    }
}

/// When a point's results stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointTime {
    /// At this UTC boundary (microseconds since the Unix epoch): every
    /// event before it that had been applied when the event time crossed it.
    Boundary(i64),
    /// Now: the current state, with the newest event time applied so far
    /// across experiments (`None` before any event).
    Now(Option<i64>),
}

/// An experiment's results over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// The experiment.
    pub experiment_id: String,
    /// Which boundaries it shows.
    pub granularity: Granularity,
    /// Significance level of its comparisons.
    pub alpha: f64,
    /// How every point's comparisons are read: as the experiment says now
    /// (so a sequential experiment shows its confidence sequence at every
    /// time it covers).
    pub readout: Readout,
    /// Boundaries, oldest first (those with units), then now.
    pub points: Vec<TimelinePoint>,
}

/// The results at one point in time.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelinePoint {
    /// When.
    pub time: PointTime,
    /// The experiment's revision then.
    pub revision: u64,
    /// Cumulative results per variant, control first, from the statistics
    /// kept then: exposed units, and per metric the value, the comparison
    /// with control and the adjusted p-value, read as the experiment says
    /// now ([`Timeline::readout`]).
    pub variants: Vec<VariantReport>,
}

/// What is kept of an experiment at one boundary.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    revision: u64,
    /// Exposed units per variant.
    exposed: Vec<u64>,
    metrics: Vec<MetricStatistics>,
}

impl Snapshot {
    /// The experiment's state now.
    fn of(state: &ExperimentState) -> Self {
        Self {
            revision: state.experiment.revision,
            exposed: exposed_units(state).0,
            metrics: MetricStatistics::of_experiment(state),
        }
    }

    fn point(&self, state: &ExperimentState, time: PointTime, alpha: f64) -> TimelinePoint {
        TimelinePoint {
            time,
            revision: self.revision,
            variants: variant_reports(state, &self.exposed, &self.metrics, alpha),
        }
    }
}

/// The snapshots of one experiment, by boundary, oldest first.
#[derive(Debug, Default)]
pub(crate) struct History {
    points: Vec<(i64, Arc<Snapshot>)>,
    /// Metric names, shared by every snapshot that carries them.
    names: Vec<Arc<str>>,
}

impl History {
    /// Records `state` at each of `boundaries` (ascending, after every
    /// point kept), then forgets what `now` puts past the retention.
    fn record(&mut self, state: &ExperimentState, boundaries: &[i64], now: i64) {
        let mut snapshot = Snapshot::of(state);
        for metric in &mut snapshot.metrics {
            match self.names.iter().find(|name| **name == metric.name) {
                Some(name) => metric.name = name.clone(),
                None => self.names.push(metric.name.clone()),
            }
        }
        let snapshot = Arc::new(snapshot);
        self.points.extend(
            boundaries
                .iter()
                .map(|boundary| (*boundary, snapshot.clone())),
        );
        self.points.retain(|(boundary, _)| kept(*boundary, now));
    }
}

/// Whether the point at `boundary` is still kept when the watermark is at
/// `now`.
fn kept(boundary: i64, now: i64) -> bool {
    boundary >= now.saturating_sub(HOURLY_RETENTION_MICROS)
        || (boundary.rem_euclid(DAY_MICROS) == 0
            && boundary >= now.saturating_sub(DAILY_RETENTION_MICROS))
}

/// The hour boundaries b with `watermark` < b ≤ `time`, ascending, that
/// the retention keeps at `time` (so an event far ahead of the others
/// records a bounded number of points).
fn crossed(watermark: i64, time: i64) -> Vec<i64> {
    let oldest_kept = time.saturating_sub(DAILY_RETENTION_MICROS);
    let first = watermark.max(oldest_kept.saturating_sub(1));
    let Some(mut boundary) = first
        .div_euclid(HOUR_MICROS)
        .checked_add(1)
        .and_then(|hours| hours.checked_mul(HOUR_MICROS))
    else {
        return Vec::new();
    };
    let mut boundaries = Vec::new();
    while boundary <= time {
        if kept(boundary, time) {
            boundaries.push(boundary);
        }
        let Some(next) = boundary.checked_add(HOUR_MICROS) else {
            break;
        };
        boundary = next;
    }
    boundaries
}

impl Analyzer {
    /// Moves the event-time watermark to `time_micros` if it is later,
    /// first recording every experiment with units at each hour boundary
    /// it crosses. Called before an event is applied.
    pub(crate) fn advance_watermark(&mut self, time_micros: i64) {
        let Some(watermark) = self.watermark_micros else {
            self.watermark_micros = Some(time_micros);
            return;
        };
        if time_micros <= watermark {
            return;
        }
        self.watermark_micros = Some(time_micros);
        let boundaries = crossed(watermark, time_micros);
        if boundaries.is_empty() {
            return;
        }
        for state in self.experiments.values_mut() {
            if state.units.is_empty() {
                continue;
            }
            let mut history = std::mem::take(&mut state.history);
            history.record(state, &boundaries, time_micros);
            state.history = history;
        }
    }

    /// The results of `experiment_id` over time at significance `alpha`:
    /// one point per UTC hour (or day) boundary kept since its first
    /// units, then one for now. `None` when the catalog does not know it.
    /// Reading it computes each point's comparisons (cheap: the statistics
    /// are kept) and takes one pass over the units for now; it changes no
    /// state (the always-valid p-values of the guardrails are not part of
    /// it).
    pub fn timeline(
        &self,
        experiment_id: &str,
        granularity: Granularity,
        alpha: f64,
    ) -> Option<Timeline> {
        let unknown;
        let state = match self.experiments.get(experiment_id) {
            Some(state) => state,
            None => {
                unknown = ExperimentState::new((self.catalog)(experiment_id)?, 0);
                &unknown
            }
        };
        let mut points: Vec<TimelinePoint> = state
            .history
            .points
            .iter()
            .filter(|(boundary, _)| granularity.shows(*boundary))
            .map(|(boundary, snapshot)| {
                snapshot.point(state, PointTime::Boundary(*boundary), alpha)
            })
            .collect();
        points.push(Snapshot::of(state).point(state, PointTime::Now(self.watermark_micros), alpha));
        Some(Timeline {
            experiment_id: state.experiment.id.clone(),
            granularity,
            alpha,
            readout: Readout::of(&state.experiment),
            points,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_of_two_variants_and_five_metrics_takes_under_two_kilobytes() {
        use std::mem::size_of;
        let (variants, metrics) = (2, 5);
        let per_point = size_of::<(i64, Arc<Snapshot>)>()
            + 2 * size_of::<usize>() // the Arc's counts
            + size_of::<Snapshot>()
            + variants * size_of::<u64>()
            + metrics
                * (size_of::<MetricStatistics>()
                    + variants * size_of::<crate::results::Sufficient>()
                    // A CUPED fit (every metric adjusted, at worst).
                    + size_of::<crate::results::Cuped>()
                    + variants * crate::stats::CupedFit::BYTES_PER_ARM);
        assert_eq!(size_of::<crate::results::Sufficient>(), 56);
        assert!(per_point < 2048, "{per_point} bytes");
    }

    #[test]
    fn boundaries_crossed_are_those_after_the_watermark_up_to_the_event() {
        let hour = HOUR_MICROS;
        assert_eq!(crossed(10 * hour + 5, 10 * hour + 9), Vec::<i64>::new());
        assert_eq!(crossed(10 * hour - 1, 10 * hour), vec![10 * hour]);
        assert_eq!(
            crossed(10 * hour, 12 * hour + 1),
            vec![11 * hour, 12 * hour]
        );
        assert_eq!(crossed(-hour - 1, 0), vec![-hour, 0]);
        // Far ahead: only what the retention keeps, here from a midnight:
        // the 640 midnights of days 730 to 91 before, and every hour of
        // the last 90 days, both ends included.
        let far = crossed(0, 10 * DAILY_RETENTION_MICROS);
        assert_eq!(far.len(), 640 + 90 * 24 + 1);
        assert!(crossed(0, i64::MAX).len() <= 730 + 90 * 24);
    }
}
