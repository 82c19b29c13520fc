//! The service's own signals, as OpenTelemetry instruments on the global
//! meter: scraped from `GET /metrics` (Prometheus text format) and pushed
//! over OTLP with `--otlp-endpoint`. Each is observed from counters the
//! service keeps anyway, when a reader collects, so serving pays nothing
//! for them between scrapes.
//!
//! | instrument | Prometheus | what |
//! |---|---|---|
//! | `expd.assignments` | `expd_assignments_total` | assignments answered, by `experiment` and `reason` ([`exp_assign::grpc::count_assignment`]) |
//! | `expd.exposures.offered` | `expd_exposures_offered_total` | exposure records `Assign` offered to the exposure queue |
//! | `expd.exposures.dropped` | `expd_exposures_dropped_total` | records dropped because the queue was full |
//! | `expd.exposures.handed_on` | `expd_exposures_handed_on_total` | first exposures handed to the event log or the admin |
//! | `expd.exposures.repeated` | `expd_exposures_repeated_total` | exposures not handed on: the unit saw that variant within the repeat window |
//! | `expd.exposures.refused` | `expd_exposures_refused_total` | exposures the log or the admin handed back |
//! | `expd.config.version` | `expd_config_version` | the config version this process holds (store or followed admin) |
//! | `expd.store.writable` | `expd_store_writable` | 1 while the config store writes, 0 while it cannot |
//! | `expd.connections.open` | `expd_connections_open` | connections open, both ports |
//! | `expd.connections.refused` | `expd_connections_refused_total` | connections closed at once at a limit |
//! | `expd.build.info` | `expd_build_info` | 1, with the version as `version` |
//! | `expd.watchers.open` | `expd_watchers_open` | WatchConfigs streams open |
//! | `expd.watchers.behind` | `expd_watchers_behind` | config versions the furthest-behind stream has not been sent |
//! | `expd.events.written` | `expd_events_written_total` | events written to the event log |
//! | `expd.events.duplicates` | `expd_events_duplicates_total` | events answered as duplicates |
//! | `expd.events.fsyncs` | `expd_events_fsyncs_total` | group commits of the event log |
//! | `expd.events.write_failures` | `expd_events_write_failures_total` | group writes the disk refused |
//! | `expd.events.segments_rolled` | `expd_events_segments_rolled_total` | log segments rolled into Parquet |
//! | `expd.events.pending` | `expd_events_pending` | events accepted and waiting for the writer |
//! | `expd.events.disk` | `expd_events_disk_bytes` | bytes of the event log's directory (a walk at collection) |
//! | `expd.events.commit.duration` | `expd_events_commit_duration_seconds` | one group's write and fsync ([`exp_ingest`]) |
//! | `expd.events.roll.lag` | `expd_events_roll_lag_seconds` | from a segment's opening until it is in Parquet |
//! | `expd.results.rebuild.duration` | `expd_results_rebuild_duration_seconds` | a build of the analysis from the start of the log |
//! | `expd.watchers.messages` | `expd_watchers_messages_total` | WatchConfigs messages sent, by `kind` |
//! | `expd.results.lag.events` | `expd_results_lag_events` | events in the log the results have not counted |
//! | `expd.results.lag` | `expd_results_lag_seconds` | how long the oldest of them has waited |
//! | `expd.guardrail.looks` | `expd_guardrail_looks_total` | guardrail judgements, by `experiment` ([`exp_results::monitor`]) |
//! | `expd.guardrail.actions` | `expd_guardrail_actions_total` | pauses and stops the monitor applied, by `experiment` and `action` |
//! | `rpc.server.duration` | `rpc_server_duration_seconds` | gRPC calls by service, method and code ([`crate::layers`]) |
//! | `http.server.request.duration` | `http_server_request_duration_seconds` | HTTP requests by method, route and status ([`crate::layers::http_metrics`]) |

use std::sync::{Arc, atomic::Ordering};

use exp_admin::config::OpenWatchers;
use exp_assign::{QueueCounters, RepeatFilter, SnapshotCell, feed::FeedStats};
use exp_ingest::{LogSlot, log::LogStats};
use exp_results::Results;
use exp_store::{Store, StoreHealth};
use opentelemetry::KeyValue;

use crate::connections::Connections;

/// What the instruments read.
#[derive(Debug)]
pub struct Sources {
    /// The exposure queue of assignment, its feed and its repeat filter.
    pub exposures: Option<(QueueCounters, Arc<FeedStats>, RepeatFilter)>,
    /// The snapshot assignment serves (its version).
    pub assignment: Option<SnapshotCell>,
    /// The config store.
    pub store: Option<Arc<Store>>,
    /// Both ports' connections.
    pub connections: Connections,
    /// Open WatchConfigs streams.
    pub watchers: Option<OpenWatchers>,
    /// The event log (once open).
    pub log: Option<LogSlot>,
    /// The results' analysis.
    pub results: Option<Results>,
}

/// Registers the instruments on the global meter `expd`. They live as
/// long as the meter provider.
pub fn register(sources: Sources) {
    let meter = opentelemetry::global::meter("expd");
    if let Some((queue, feed, repeats)) = sources.exposures {
        meter
            .u64_observable_counter("expd.exposures.repeated")
            .with_description(
                "Exposures not handed on: the unit saw the same variant within the repeat window",
            )
            .with_callback(move |observer| observer.observe(repeats.repeats(), &[]))
            .build();
        let offered = queue.clone();
        meter
            .u64_observable_counter("expd.exposures.offered")
            .with_description("Exposure records Assign offered to the exposure queue")
            .with_callback(move |observer| observer.observe(offered.offered(), &[]))
            .build();
        meter
            .u64_observable_counter("expd.exposures.dropped")
            .with_description("Exposure records dropped because the exposure queue was full")
            .with_callback(move |observer| observer.observe(queue.dropped(), &[]))
            .build();
        let handed_on = feed.clone();
        meter
            .u64_observable_counter("expd.exposures.handed_on")
            .with_description("First exposures handed to the event log or the admin")
            .with_callback(move |observer| {
                observer.observe(handed_on.logged.load(Ordering::Relaxed), &[]);
            })
            .build();
        meter
            .u64_observable_counter("expd.exposures.refused")
            .with_description("Exposures the event log or the admin handed back")
            .with_callback(move |observer| {
                observer.observe(feed.dropped.load(Ordering::Relaxed), &[]);
            })
            .build();
    }
    let (assignment, store) = (sources.assignment, sources.store.clone());
    meter
        .u64_observable_gauge("expd.config.version")
        .with_description("The config version this process holds")
        .with_callback(move |observer| {
            let held = assignment
                .as_ref()
                .and_then(|cell| cell.load().map(|snapshot| snapshot.version()))
                .or_else(|| store.as_ref().map(|store| store.config_version()));
            if let Some(version) = held {
                observer.observe(version, &[]);
            }
        })
        .build();
    if let Some(store) = sources.store {
        let health = store.health();
        meter
            .u64_observable_gauge("expd.store.writable")
            .with_description("1 while the config store writes, 0 while it cannot")
            .with_callback(move |observer| {
                let writable = matches!(*health.borrow(), StoreHealth::Writable);
                observer.observe(u64::from(writable), &[]);
            })
            .build();
    }
    let open = sources.connections.clone();
    meter
        .u64_observable_gauge("expd.connections.open")
        .with_description("Connections open, both ports")
        .with_callback(move |observer| observer.observe(open.open(), &[]))
        .build();
    let refused = sources.connections;
    meter
        .u64_observable_counter("expd.connections.refused")
        .with_description("Connections closed at once at a connection limit")
        .with_callback(move |observer| observer.observe(refused.refused(), &[]))
        .build();
    if let Some(watchers) = sources.watchers {
        meter
            .u64_observable_gauge("expd.watchers.open")
            .with_description("WatchConfigs streams open")
            .with_callback({
                let watchers = watchers.clone();
                move |observer| observer.observe(watchers.count() as u64, &[])
            })
            .build();
        meter
            .u64_observable_gauge("expd.watchers.behind")
            .with_description(
                "Config versions the furthest-behind WatchConfigs stream has not been sent",
            )
            .with_callback(move |observer| observer.observe(watchers.most_behind(), &[]))
            .build();
    }
    if let Some(slot) = sources.log {
        let log_counter =
            |name: &'static str, description: &'static str, read: fn(&LogStats) -> u64| {
                let slot = slot.clone();
                meter
                    .u64_observable_counter(name)
                    .with_description(description)
                    .with_callback(move |observer| {
                        if let Some(log) = slot.get() {
                            observer.observe(read(log.stats()), &[]);
                        }
                    })
                    .build();
            };
        let pending = slot.clone();
        meter
            .u64_observable_gauge("expd.events.pending")
            .with_description("Events accepted and waiting for the event log's writer")
            .with_callback(move |observer| {
                if let Some(log) = pending.get() {
                    observer.observe(log.pending_events() as u64, &[]);
                }
            })
            .build();
        let on_disk = slot.clone();
        meter
            .u64_observable_gauge("expd.events.disk")
            .with_unit("By")
            .with_description("Bytes of the event log's directory: held segments and Parquet files")
            .with_callback(move |observer| {
                if let Some(log) = on_disk.get() {
                    observer.observe(log.disk_bytes(), &[]);
                }
            })
            .build();
        log_counter(
            "expd.events.written",
            "Events written to the event log",
            |stats| stats.written.load(Ordering::Relaxed),
        );
        log_counter(
            "expd.events.duplicates",
            "Events answered as duplicates",
            |stats| stats.duplicates.load(Ordering::Relaxed),
        );
        log_counter(
            "expd.events.fsyncs",
            "Group commits (fsyncs) of the event log",
            |stats| stats.groups.load(Ordering::Relaxed),
        );
        log_counter(
            "expd.events.write_failures",
            "Group writes of the event log the disk refused",
            |stats| stats.write_failures.load(Ordering::Relaxed),
        );
        log_counter(
            "expd.events.segments_rolled",
            "Event log segments rolled into Parquet",
            |stats| stats.segments_rolled.load(Ordering::Relaxed),
        );
    }
    if let Some(results) = sources.results {
        let events = results.clone();
        meter
            .u64_observable_gauge("expd.results.lag.events")
            .with_description("Events in the log the results have not counted yet")
            .with_callback(move |observer| observer.observe(events.lag().pending_events, &[]))
            .build();
        meter
            .f64_observable_gauge("expd.results.lag")
            .with_unit("s")
            .with_description("How long the oldest event the results have not counted has waited")
            .with_callback(move |observer| observer.observe(results.lag().lag_seconds, &[]))
            .build();
    }
    meter
        .u64_observable_gauge("expd.build.info")
        .with_description("1, labelled with the version of this build")
        .with_callback(|observer| {
            observer.observe(1, &[KeyValue::new("version", env!("CARGO_PKG_VERSION"))]);
        })
        .build();
}
