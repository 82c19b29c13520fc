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
use exp_ingest::{
    EventLog, LogSlot,
    jetstream::{Nats, WriterStats},
};
use exp_results::Results;
use exp_store::{Store, StoreHealth};
use opentelemetry::{KeyValue, metrics::Meter};

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
    /// The connection to NATS (`--events-sink nats://`).
    pub nats: Option<Arc<Nats>>,
    /// The writer's counters (`--services writer`).
    pub writer: Option<Arc<WriterStats>>,
}

/// A counter of the event log: its name, description and how to read it.
type LogCounter = (&'static str, &'static str, fn(&EventLog) -> u64);

/// An observable counter reading `read` at each collection (`None`: no
/// value yet, e.g. the event log still opening).
fn counter(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    read: impl Fn() -> Option<u64> + Send + Sync + 'static,
) {
    meter
        .u64_observable_counter(name)
        .with_description(description)
        .with_callback(move |observer| {
            if let Some(value) = read() {
                observer.observe(value, &[]);
            }
        })
        .build();
}

/// An observable gauge reading `read` at each collection (`None`: no
/// value yet).
fn gauge(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    read: impl Fn() -> Option<u64> + Send + Sync + 'static,
) {
    meter
        .u64_observable_gauge(name)
        .with_description(description)
        .with_callback(move |observer| {
            if let Some(value) = read() {
                observer.observe(value, &[]);
            }
        })
        .build();
}

/// Registers the instruments on the global meter `expd`. They live as
/// long as the meter provider.
pub fn register(sources: Sources) {
    let meter = opentelemetry::global::meter("expd");
    if let Some((queue, feed, repeats)) = sources.exposures {
        counter(
            &meter,
            "expd.exposures.repeated",
            "Exposures not handed on: the unit saw the same variant within the repeat window",
            move || Some(repeats.repeats()),
        );
        let offered = queue.clone();
        counter(
            &meter,
            "expd.exposures.offered",
            "Exposure records Assign offered to the exposure queue",
            move || Some(offered.offered()),
        );
        counter(
            &meter,
            "expd.exposures.dropped",
            "Exposure records dropped because the exposure queue was full",
            move || Some(queue.dropped()),
        );
        let handed_on = feed.clone();
        counter(
            &meter,
            "expd.exposures.handed_on",
            "First exposures handed to the event log or the admin",
            move || Some(handed_on.logged.load(Ordering::Relaxed)),
        );
        counter(
            &meter,
            "expd.exposures.refused",
            "Exposures the event log or the admin handed back",
            move || Some(feed.dropped.load(Ordering::Relaxed)),
        );
    }
    let (assignment, store) = (sources.assignment, sources.store.clone());
    gauge(
        &meter,
        "expd.config.version",
        "The config version this process holds",
        move || {
            assignment
                .as_ref()
                .and_then(|cell| cell.load().map(|snapshot| snapshot.version()))
                .or_else(|| store.as_ref().map(|store| store.config_version()))
        },
    );
    if let Some(store) = sources.store {
        let health = store.health();
        gauge(
            &meter,
            "expd.store.writable",
            "1 while the config store writes, 0 while it cannot",
            move || Some(u64::from(matches!(*health.borrow(), StoreHealth::Writable))),
        );
    }
    let open = sources.connections.clone();
    gauge(
        &meter,
        "expd.connections.open",
        "Connections open, both ports",
        move || Some(open.open()),
    );
    let refused = sources.connections;
    counter(
        &meter,
        "expd.connections.refused",
        "Connections closed at once at a connection limit",
        move || Some(refused.refused()),
    );
    if let Some(watchers) = sources.watchers {
        let open = watchers.clone();
        gauge(
            &meter,
            "expd.watchers.open",
            "WatchConfigs streams open",
            move || Some(open.count() as u64),
        );
        gauge(
            &meter,
            "expd.watchers.behind",
            "Config versions the furthest-behind WatchConfigs stream has not been sent",
            move || Some(watchers.most_behind()),
        );
    }
    if let Some(slot) = sources.log {
        let from_log = |read: fn(&EventLog) -> u64| {
            let slot = slot.clone();
            move || slot.get().map(|log| read(&log))
        };
        gauge(
            &meter,
            "expd.events.pending",
            "Events accepted and waiting for the event log's writer",
            from_log(|log| log.pending_events() as u64),
        );
        meter
            .u64_observable_gauge("expd.events.disk")
            .with_unit("By")
            .with_description("Bytes of the event log's directory: held segments and Parquet files")
            .with_callback({
                let disk = from_log(EventLog::disk_bytes);
                move |observer| {
                    if let Some(bytes) = disk() {
                        observer.observe(bytes, &[]);
                    }
                }
            })
            .build();
        let stats: [LogCounter; 5] = [
            (
                "expd.events.written",
                "Events written to the event log",
                |log| log.stats().written.load(Ordering::Relaxed),
            ),
            (
                "expd.events.duplicates",
                "Events answered as duplicates",
                |log| log.stats().duplicates.load(Ordering::Relaxed),
            ),
            (
                "expd.events.fsyncs",
                "Group commits (fsyncs) of the event log",
                |log| log.stats().groups.load(Ordering::Relaxed),
            ),
            (
                "expd.events.write_failures",
                "Group writes of the event log the disk refused",
                |log| log.stats().write_failures.load(Ordering::Relaxed),
            ),
            (
                "expd.events.segments_rolled",
                "Event log segments rolled into Parquet",
                |log| log.stats().segments_rolled.load(Ordering::Relaxed),
            ),
        ];
        for (name, description, read) in stats {
            counter(&meter, name, description, from_log(read));
        }
    }
    if let Some(nats) = sources.nats {
        gauge(
            &meter,
            "expd.nats.connected",
            "1 while NATS (--events-sink) is reachable, 0 while it is not",
            move || Some(u64::from(nats.is_connected())),
        );
    }
    if let Some(writer) = sources.writer {
        let acknowledged = writer.clone();
        counter(
            &meter,
            "expd.writer.acknowledged",
            "Messages of the event stream the writer made durable in its log and acknowledged",
            move || Some(acknowledged.acknowledged.load(Ordering::Relaxed)),
        );
        let undecodable = writer.clone();
        counter(
            &meter,
            "expd.writer.undecodable",
            "Messages of the event stream that were not events, terminated by the writer",
            move || Some(undecodable.undecodable.load(Ordering::Relaxed)),
        );
        let owned = writer.clone();
        gauge(
            &meter,
            "expd.writer.partitions.owned",
            "Partitions of the event stream this writer owns and writes",
            move || Some(owned.partitions_owned.load(Ordering::Relaxed)),
        );
        gauge(
            &meter,
            "expd.writer.partitions.elsewhere",
            "Partitions this writer is named for that another writer owns (it does not write them)",
            move || Some(writer.partitions_elsewhere.load(Ordering::Relaxed)),
        );
    }
    if let Some(results) = sources.results {
        let events = results.clone();
        gauge(
            &meter,
            "expd.results.lag.events",
            "Events in the log the results have not counted yet",
            move || Some(events.lag().pending_events),
        );
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
