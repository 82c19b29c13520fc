//! One builder per role of `expd`. Each builds its part from the flags,
//! spawns its background tasks on the process's task tracker (all of them
//! end when the shutdown token is cancelled, or when their input closes),
//! and hands back the services the composition root mounts.

use std::{sync::Arc, time::Duration};

use exp_admin::{Admin, AdminGrpc, Authenticator, ConfigGrpc, ConfigPublisher, scheduler};
use exp_assign::{
    AssignGrpc, Assigner, ExposureQueue, ExposureRecord, RepeatFilter, SnapshotCell,
    feed::{self, FeedStats, RemoteSink},
};
use exp_client::{
    ClientError, ConfigFollower, EventSender, EventSenderOptions, FollowerOptions, SpoolOptions,
};
use exp_core::{Clock, ParamSchema, serving::ServingConfig};
use exp_ingest::{
    Catalog, CatalogExperiment, EventDestination, EventGrpc, EventLog, EventSource, LogOptions,
    LogSink, LogSlot, SharedCatalog,
    jetstream::{
        Nats, NatsOptions, StreamOptions, StreamPublisher, StreamSink, StreamSource, WriterOptions,
        WriterStats,
    },
};
use exp_proto::v1;
use exp_results::Results;
use exp_store::{Store, StoreHealth};
use tokio::sync::{mpsc, watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{error, warn};

use crate::{Config, ServeError};

/// What every role is built with.
#[derive(Debug, Clone)]
pub struct Context {
    /// The flags.
    pub config: Config,
    /// The one clock.
    pub clock: Arc<dyn Clock>,
    /// Cancelled when the process shuts down.
    pub shutdown: CancellationToken,
    /// Every background task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Cancelled once requests have drained: the exposure stage then
    /// closes its queue and hands on what it holds.
    pub requests_drained: CancellationToken,
    /// Who may call what.
    pub auth: Authenticator,
    /// The gRPC address this process serves on (names a sidecar to its
    /// admin).
    pub grpc_local: std::net::SocketAddr,
    /// The token presented to `--config-source`.
    pub source_token: Option<String>,
}

/// First retry of a store that could not write.
const RECOVER_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between retries of a store that cannot write.
const RECOVER_MAX: Duration = Duration::from_secs(30);
/// How long a log that failed to open waits before it is tried again.
const REOPEN_DELAY: Duration = Duration::from_secs(5);
/// How long a replica's sender may take, at shutdown, to send what it
/// holds (at most half of `--shutdown-grace`, so that what it cannot
/// send has time to reach its spool).
const SEND_AT_CLOSE: Duration = Duration::from_secs(5);

// === admin ===

/// The admin: experiments in the store, their serving config, the
/// scheduler.
#[derive(Debug)]
pub struct AdminRole {
    /// The use cases.
    pub admin: Admin,
    /// The serving config, rebuilt at every change.
    pub publisher: Arc<ConfigPublisher>,
}

impl AdminRole {
    /// Builds the admin on `store`; the publisher and (when `schedule`)
    /// the scheduler run on the tracker.
    pub fn start(
        context: &Context,
        store: Arc<Store>,
        schema: ParamSchema,
        schedule: bool,
    ) -> Result<Self, ServeError> {
        let (publisher, publishing) = ConfigPublisher::start(
            store.clone(),
            context.clock.clone(),
            context.shutdown.clone(),
        )?;
        context.tasks.spawn(publishing);
        context
            .tasks
            .spawn(recover_store(store.clone(), context.shutdown.clone()));
        let admin = Admin::new(store, Arc::new(schema), context.clock.clone());
        if schedule {
            context.tasks.spawn(scheduler::run(
                admin.clone(),
                context.config.scheduler_tick,
                context.shutdown.clone(),
            ));
        }
        Ok(Self { admin, publisher })
    }

    /// `AdminService`.
    pub fn admin_service(
        &self,
        context: &Context,
    ) -> v1::admin_service_server::AdminServiceServer<AdminGrpc> {
        AdminGrpc::new(self.admin.clone(), context.auth.clone()).into_server()
    }

    /// `ConfigService` (mounted with `into_server`).
    pub fn config_service(&self, context: &Context) -> ConfigGrpc {
        ConfigGrpc::new(
            self.publisher.clone(),
            context.clock.clone(),
            context.config.config_heartbeat,
            context.shutdown.clone(),
            context.config.max_watchers as usize,
        )
        .with_per_client(context.config.max_watchers_per_client as usize)
    }
}

/// Waits for the store to fail a write, then tries to make it write
/// again ([`Store::recover`]): after [`RECOVER_FIRST`], then backing off
/// to [`RECOVER_MAX`], until it succeeds. A write in between tries too.
async fn recover_store(store: Arc<Store>, shutdown: CancellationToken) {
    let mut health = store.health();
    loop {
        tokio::select! {
            failed = health.wait_for(|health| *health != StoreHealth::Writable) => {
                if failed.is_err() {
                    return;
                }
            }
            () = shutdown.cancelled() => return,
        }
        let mut delay = RECOVER_FIRST;
        loop {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
            let reopening = store.clone();
            match tokio::task::spawn_blocking(move || reopening.recover()).await {
                Ok(Ok(())) => break,
                Ok(Err(err)) => {
                    warn!(error = %err, retry_in = ?delay * 2, "the config store still cannot write")
                }
                Err(err) => error!(error = %err, "recovering the config store panicked"),
            }
            delay = (delay * 2).min(RECOVER_MAX);
        }
    }
}

// === events on NATS ===

/// The connection to NATS JetStream (`--events-sink nats://`), shared by
/// every role of the process that publishes or reads events.
#[derive(Debug, Clone)]
pub struct NatsRole {
    /// The connection.
    pub nats: Arc<Nats>,
}

/// First retry of a stream that could not be created.
const STREAM_FIRST_RETRY: Duration = Duration::from_millis(500);

impl NatsRole {
    /// Starts connecting (in the background: `expd` serves while NATS is
    /// down) and, in the admin's process, once connected, creates the
    /// stream if it is absent.
    pub async fn start(context: &Context) -> Result<Option<Self>, ServeError> {
        let config = &context.config;
        let Some(servers) = &config.events_sink else {
            return Ok(None);
        };
        let options = NatsOptions {
            servers: servers.0.clone(),
            credentials_file: config.nats_creds.clone(),
            user_password: config.nats_user.clone().zip(config.nats_password.clone()),
            token: config.nats_token.clone(),
            tls_ca: config.nats_tls_ca.clone(),
            client_name: format!("expd@{}", context.grpc_local),
            stream: StreamOptions {
                name: config.nats_stream.clone(),
                replicas: usize::from(config.nats_replicas),
                max_age: config.nats_max_age,
                max_bytes: 0,
                duplicate_window: config.nats_duplicate_window,
            },
        };
        let nats = Nats::connect(&options)
            .await
            .map_err(|err| ServeError::Config(err.to_string()))?;
        if config.runs(crate::config::ServiceKind::Admin) {
            context
                .tasks
                .spawn(create_stream(nats.clone(), context.shutdown.clone()));
        }
        Ok(Some(Self { nats }))
    }
}

/// Creates the stream if it is absent, once NATS is reachable, retrying
/// until it succeeds (the writer and results in this process also ask for
/// it themselves).
async fn create_stream(nats: Arc<Nats>, shutdown: CancellationToken) {
    let mut connected = nats.connected();
    let mut delay = STREAM_FIRST_RETRY;
    loop {
        tokio::select! {
            up = connected.wait_for(|up| *up) => if up.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        match nats.create_stream().await {
            Ok(_) => return,
            Err(err) => {
                warn!(error = %err, retry_in = ?delay, "cannot create the event stream yet")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(RECOVER_MAX);
    }
}

// === ingest ===

/// Event ingest: where acknowledged events go (the log, opened in the
/// background: a replay after a crash must not hold up assignment; or
/// the JetStream stream) and the catalog exposures are checked against.
#[derive(Debug)]
pub struct IngestRole {
    /// Where events go.
    pub destination: EventDestination,
    catalog: SharedCatalog,
}

impl IngestRole {
    /// Starts opening the log under `<data-dir>/events` (without `nats`)
    /// and following the store's experiments.
    pub fn start(context: &Context, store: Arc<Store>, nats: Option<&NatsRole>) -> Self {
        let destination = match nats {
            Some(nats) => EventDestination::Stream(StreamPublisher::new(nats.nats.clone())),
            None => EventDestination::Log(start_log(context)),
        };
        let catalog = SharedCatalog::default();
        context.tasks.spawn(follow_catalog(
            store,
            catalog.clone(),
            context.shutdown.clone(),
        ));
        Self {
            destination,
            catalog,
        }
    }

    /// The embedded log, when events go there.
    pub fn slot(&self) -> Option<&LogSlot> {
        match &self.destination {
            EventDestination::Log(slot) => Some(slot),
            EventDestination::Stream(_) => None,
        }
    }

    /// `EventService`.
    pub fn event_service(
        &self,
        context: &Context,
    ) -> v1::event_service_server::EventServiceServer<EventGrpc> {
        EventGrpc::new(
            self.destination.clone(),
            self.catalog.clone(),
            context.clock.clone(),
        )
        .into_server()
    }
}

/// Starts opening the event log under `<data-dir>/events`.
fn start_log(context: &Context) -> LogSlot {
    let slot = LogSlot::default();
    let options = LogOptions {
        dir: context.config.data_dir.join("events"),
        flush_interval: context.config.events_flush_interval,
        max_pending_events: context.config.events_max_pending as usize,
        dedup_window: context.config.events_dedup_window,
    };
    context
        .tasks
        .spawn(open_log(options, slot.clone(), context.shutdown.clone()));
    slot
}

// === writer ===

/// The writer: its partitions of the stream into this process's event
/// log, hence Parquet under `<data-dir>/events`.
#[derive(Debug)]
pub struct WriterRole {
    /// Where the log is once open.
    pub slot: LogSlot,
    /// Its counters.
    pub stats: Arc<WriterStats>,
}

impl WriterRole {
    /// Opens the log, then writes the partitions of `--writer-partitions`.
    pub fn start(context: &Context, nats: &NatsRole) -> Self {
        let slot = start_log(context);
        let stats = Arc::new(WriterStats::default());
        let data_dir = &context.config.data_dir;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        let place = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.clone());
        let options = WriterOptions {
            partitions: context.config.writer_partitions.0.clone(),
            ..WriterOptions::new(
                data_dir.join("writer"),
                format!("{host}:{}", place.display()),
            )
        };
        let (waiting, nats, shutdown, counters) = (
            slot.clone(),
            nats.nats.clone(),
            context.shutdown.clone(),
            stats.clone(),
        );
        context.tasks.spawn(async move {
            let log = tokio::select! {
                log = waiting.opened() => log,
                () = shutdown.cancelled() => return,
            };
            // The log is closed (rolling what it holds) with the process.
            exp_ingest::jetstream::writer::run(nats, log, options, counters, shutdown).await;
        });
        Self { slot, stats }
    }
}

async fn open_log(options: LogOptions, slot: LogSlot, shutdown: CancellationToken) {
    loop {
        let attempt = options.clone();
        match tokio::task::spawn_blocking(move || EventLog::open(attempt)).await {
            Ok(Ok(log)) => {
                slot.set(Arc::new(log));
                return;
            }
            Ok(Err(err)) => error!(
                dir = %options.dir.display(),
                error = %err,
                "cannot open the event log; EventService answers UNAVAILABLE until it opens"
            ),
            Err(err) => error!(error = %err, "opening the event log panicked"),
        }
        tokio::select! {
            () = tokio::time::sleep(REOPEN_DELAY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn follow_catalog(store: Arc<Store>, catalog: SharedCatalog, shutdown: CancellationToken) {
    let mut versions = store.subscribe();
    loop {
        let reading = store.clone();
        // A holdout's exposures name it as their experiment, with its two
        // groups as variants.
        let read = move || Ok::<_, exp_core::Error>((reading.experiments()?, reading.holdouts()?));
        match tokio::task::spawn_blocking(read).await {
            Ok(Ok((experiments, holdouts))) => catalog.store(Arc::new(Catalog::new(
                experiments
                    .into_iter()
                    .chain(holdouts.iter().map(exp_core::holdout::comparison))
                    .map(|experiment| {
                        let entry = CatalogExperiment {
                            variants: experiment.variants.iter().map(|v| v.name.clone()).collect(),
                            bucketing_unit: experiment.bucketing_unit,
                        };
                        (experiment.id, entry)
                    }),
            ))),
            Ok(Err(err)) => warn!(error = %err, "reading experiments for event validation failed"),
            Err(err) => warn!(error = %err, "reading experiments for event validation panicked"),
        }
        tokio::select! {
            changed = versions.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
    }
}

// === assign ===

/// Assignment: the compiled snapshot following a config source, and the
/// exposures of its answers on their way out.
#[derive(Debug)]
pub struct AssignRole {
    /// The snapshot requests read.
    pub cell: SnapshotCell,
    /// The use case (holds the exposure queue's sending end: the feed
    /// ends once every copy of it is gone).
    pub assigner: Assigner,
    /// The remote admin's follower (a sidecar), kept alive while serving.
    pub follower: Option<ConfigFollower>,
    /// Counters of the exposure feed.
    pub feed: Arc<FeedStats>,
    /// The feed's repeat filter (its count of repeats).
    pub repeats: RepeatFilter,
}

/// Where assignment's exposures go.
#[derive(Debug)]
pub enum ExposureDestination<'a> {
    /// The event log of this process.
    Log(&'a LogSlot),
    /// A remote admin's `EventService` (replicas and sidecars).
    Remote(&'a str),
    /// The JetStream stream (`--events-sink nats://`), from any process.
    Stream(&'a NatsRole),
    /// Nowhere: counted and dropped.
    Discard,
}

impl AssignRole {
    /// Serves from `local` (this process's publisher) or, without it, from
    /// `--config-source`; exposures go to `destination`.
    pub fn start(
        context: &Context,
        local: Option<&ConfigPublisher>,
        destination: ExposureDestination<'_>,
    ) -> Result<Self, ServeError> {
        let config = &context.config;
        let cell = SnapshotCell::new();
        let (queue, records) = ExposureQueue::bounded(config.exposure_queue as usize);
        let (configs, follower) = match (local, &config.config_source) {
            (Some(publisher), _) => (local_configs(publisher, context), None),
            (None, Some(source)) => {
                let remote = ConfigFollower::spawn(FollowerOptions {
                    endpoint: source.clone(),
                    client_id: format!("expd-sidecar@{}", context.grpc_local),
                    snapshot_path: Some(config.data_dir.join("config-snapshot.pb")),
                    token: context.source_token.clone(),
                    ..FollowerOptions::default()
                })
                .map_err(|err| ServeError::Config(format!("--config-source: {err}")))?;
                (remote.configs(), Some(remote))
            }
            (None, None) => {
                return Err(ServeError::Config(
                    "assignment needs a config: run it with the admin, or give --config-source"
                        .into(),
                ));
            }
        };
        // A config already at hand (local store, or a sidecar's saved
        // snapshot) is installed before the first request is accepted.
        if let Some(config) = configs.borrow().clone() {
            cell.install(&config);
        }
        cell.follow(configs);
        let feed = Arc::new(FeedStats::default());
        let filter = RepeatFilter::default();
        let repeats = filter.clone();
        match destination {
            ExposureDestination::Log(slot) => {
                context.tasks.spawn(feed::forward_exposures(
                    records,
                    LogSink::new(slot.clone()),
                    filter,
                    feed.clone(),
                    context.requests_drained.clone(),
                ));
            }
            ExposureDestination::Remote(endpoint) => {
                spawn_remote_feed(context, endpoint, records, filter, feed.clone())?;
            }
            ExposureDestination::Stream(nats) => {
                context.tasks.spawn(feed::forward_exposures(
                    records,
                    StreamSink::new(StreamPublisher::new(nats.nats.clone())),
                    filter,
                    feed.clone(),
                    context.requests_drained.clone(),
                ));
            }
            ExposureDestination::Discard => {
                context.tasks.spawn(feed::forward_exposures(
                    records,
                    feed::Discard,
                    filter,
                    feed.clone(),
                    context.requests_drained.clone(),
                ));
            }
        }
        let assigner = Assigner::new(cell.clone(), queue, context.clock.clone());
        Ok(Self {
            cell,
            assigner,
            follower,
            feed,
            repeats,
        })
    }

    /// `AssignmentService`.
    pub fn assignment_service(
        &self,
    ) -> v1::assignment_service_server::AssignmentServiceServer<AssignGrpc> {
        AssignGrpc::new(self.assigner.clone()).into_server()
    }
}

fn spawn_remote_feed(
    context: &Context,
    endpoint: &str,
    records: mpsc::Receiver<ExposureRecord>,
    filter: RepeatFilter,
    stats: Arc<FeedStats>,
) -> Result<(), ServeError> {
    let config = &context.config;
    // Exposures the admin cannot take yet wait on disk, so that a restart
    // during its outage does not lose them.
    let spool = (config.exposure_spool_mib > 0).then(|| SpoolOptions {
        dir: config.data_dir.join("spool").join("exposures"),
        max_bytes: u64::from(config.exposure_spool_mib) << 20,
    });
    let sender = EventSender::start(EventSenderOptions {
        endpoint: endpoint.to_owned(),
        token: context.source_token.clone(),
        spool,
        ..EventSenderOptions::default()
    })
    .map_err(|err| match err {
        ClientError::Spool { .. } => ServeError::Config(format!("--data-dir: {err}")),
        err => ServeError::Config(format!("--config-source: {err}")),
    })?;
    let send_at_close = SEND_AT_CLOSE.min(config.shutdown_grace / 2);
    context.tasks.spawn(feed::forward_exposures(
        records,
        RemoteSink::new(sender, send_at_close),
        filter,
        stats,
        context.requests_drained.clone(),
    ));
    Ok(())
}

/// The local publisher's configs as the optional configs a snapshot cell
/// follows.
fn local_configs(
    publisher: &ConfigPublisher,
    context: &Context,
) -> watch::Receiver<Option<Arc<ServingConfig>>> {
    let mut local = publisher.follow();
    let (sender, receiver) = watch::channel(Some(local.borrow_and_update().clone()));
    let shutdown = context.shutdown.clone();
    context.tasks.spawn(async move {
        loop {
            tokio::select! {
                changed = local.changed() => if changed.is_err() { return },
                () = shutdown.cancelled() => return,
            }
            let latest = local.borrow_and_update().clone();
            if sender.send(Some(latest)).is_err() {
                return;
            }
        }
    });
    receiver
}

/// Where results read events: the stream with NATS, else this process's
/// log.
pub fn results_source(
    context: &Context,
    nats: Option<&NatsRole>,
    ingest: Option<&IngestRole>,
) -> Option<EventSource> {
    if !context.config.runs(crate::config::ServiceKind::Results) {
        return None;
    }
    match (nats, ingest.and_then(IngestRole::slot)) {
        (Some(nats), _) => Some(EventSource::Stream(StreamSource::new(
            nats.nats.clone(),
            context.config.events_dedup_window,
            context.shutdown.clone(),
        ))),
        (None, Some(slot)) => Some(EventSource::Log(slot.clone())),
        (None, None) => None,
    }
}

// === results ===

/// Results: the analysis following this process's log, or the stream, and
/// the guardrail monitor.
pub fn results_role(context: &Context, admin: &Admin, source: EventSource) -> Results {
    Results::start(
        admin.clone(),
        source,
        context.config.guardrail_interval,
        &context.tasks,
        context.shutdown.clone(),
    )
}
