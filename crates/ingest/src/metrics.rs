//! The event log's own instruments on the global OpenTelemetry meter
//! (read by `GET /metrics` and OTLP in `expd`); the counters it keeps in
//! [`crate::log::LogStats`] are observed by `expd` itself.

use std::sync::OnceLock;

use opentelemetry::metrics::Histogram;

/// `expd.events.commit.duration`: one group's write and fsync.
pub(crate) fn commit_duration() -> &'static Histogram<f64> {
    static COMMIT: OnceLock<Histogram<f64>> = OnceLock::new();
    COMMIT.get_or_init(|| {
        opentelemetry::global::meter("expd")
            .f64_histogram("expd.events.commit.duration")
            .with_unit("s")
            .with_description("Time to write and fsync one group of events")
            .build()
    })
}

/// `expd.events.roll.lag`: how long a segment's first events waited until
/// the segment was in Parquet.
pub(crate) fn roll_lag() -> &'static Histogram<f64> {
    static ROLL: OnceLock<Histogram<f64>> = OnceLock::new();
    ROLL.get_or_init(|| {
        opentelemetry::global::meter("expd")
            .f64_histogram("expd.events.roll.lag")
            .with_unit("s")
            .with_description("From a log segment's opening until it was rolled into Parquet")
            .build()
    })
}
