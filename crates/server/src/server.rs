//! Wiring: the store, the use cases and every enabled service on a gRPC
//! and an HTTP listener, with reflection, health, tower layers and a
//! bounded graceful shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use exp_admin::{Admin, AdminGrpc, Authenticator, ConfigGrpc, ConfigPublisher, scheduler};
use exp_assign::{AssignGrpc, Assigner, ExposureQueue, SnapshotCell};
use exp_client::{ConfigFollower, FollowerOptions};
use exp_core::{Clock, ParamSchema, SystemClock, serving::ServingConfig};
use exp_proto::v1::{
    admin_service_server::AdminServiceServer, assignment_service_server::AssignmentServiceServer,
    config_service_server::ConfigServiceServer, event_service_server::EventServiceServer,
    results_service_server::ResultsServiceServer,
};
use exp_store::Store;
use tokio::{net::TcpListener, sync::watch};
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tower::{
    ServiceBuilder,
    layer::util::{Identity, Stack},
    limit::GlobalConcurrencyLimitLayer,
    load_shed::LoadShedLayer,
};
use tracing::{error, info, warn};

use crate::{
    Config,
    config::ServiceKind,
    ingest::Ingest,
    layers::RpcMetricsLayer,
    results::{Results, ResultsGrpc},
};

/// Why `expd` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A flag or a file it names is wrong.
    #[error("{0}")]
    Config(String),
    /// The store could not be opened.
    #[error("{0}")]
    Store(#[from] exp_core::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
}

/// How often HTTP/2 pings probe idle connections, so half-open ones are
/// reaped.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `config`'s services on `grpc` and `http` until `shutdown`
/// resolves, then drains: health turns NOT_SERVING, new calls are
/// refused, in-flight calls get up to `--shutdown-grace` to finish.
pub async fn serve(
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.check().map_err(ServeError::Config)?;
    let grpc_local = grpc.local_addr()?;
    let http_local = http.local_addr()?;
    let schema = match &config.param_schema {
        None => ParamSchema::builtin(),
        Some(path) => load_schema(path)?,
    };
    let auth = match &config.tokens_file {
        None => Authenticator::open(),
        Some(path) => Authenticator::from_file(path).map_err(ServeError::Config)?,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|err| {
        ServeError::Config(format!("--data-dir {}: {err}", config.data_dir.display()))
    })?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let runs_admin = config.runs(ServiceKind::Admin);
    let runs_assign = config.runs(ServiceKind::Assign);
    // The local store backs the admin, and assignment unless it follows a
    // remote admin (sidecar mode), which needs no store at all.
    let local_config = runs_admin || (runs_assign && config.config_source.is_none());
    let store = if local_config {
        Some(Arc::new(Store::open(config.data_dir.join("config"))?))
    } else {
        None
    };
    let (publisher, publisher_task) = match &store {
        Some(store) => {
            let (publisher, task) =
                ConfigPublisher::start(store.clone(), clock.clone(), shutdown_rx.clone())?;
            (Some(publisher), Some(task))
        }
        None => (None, None),
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    // google.rpc is registered so clients such as grpcurl decode the
    // BadRequest details of INVALID_ARGUMENT answers.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(exp_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|err| ServeError::Config(format!("reflection: {err}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(exp_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|err| ServeError::Config(format!("reflection: {err}")))?;

    // Ingest runs beside the admin (`Config::check`), on its store.
    let mut ingest = store
        .as_ref()
        .filter(|_| config.runs(ServiceKind::Ingest))
        .map(|store| Ingest::start(&config, store.clone()));
    let admin = store
        .as_ref()
        .map(|store| Admin::new(store.clone(), Arc::new(schema), clock.clone()));
    let admin_service = match (&admin, runs_admin) {
        (Some(admin), true) => Some(AdminGrpc::new(admin.clone(), auth.clone()).into_server()),
        _ => None,
    };
    let config_service = match (&publisher, runs_admin) {
        (Some(publisher), true) => Some(
            ConfigGrpc::new(
                publisher.clone(),
                clock.clone(),
                config.config_heartbeat,
                shutdown_rx.clone(),
                config.max_watchers as usize,
            )
            .into_server(),
        ),
        _ => None,
    };

    // Assignment: a snapshot cell following the local publisher or a
    // remote admin; exposures go to a bounded queue.
    let cell = SnapshotCell::new();
    let (exposures, exposure_receiver) = ExposureQueue::bounded(config.exposure_queue as usize);
    let mut follower = None;
    let mut remote_exposures = None;
    let assigner =
        runs_assign.then(|| Assigner::new(cell.clone(), exposures.clone(), clock.clone()));
    if runs_assign {
        let configs = match (&config.config_source, &publisher) {
            (Some(source), _) => {
                let remote = ConfigFollower::spawn(FollowerOptions {
                    endpoint: source.clone(),
                    client_id: format!("expd-sidecar@{grpc_local}"),
                    snapshot_path: Some(config.data_dir.join("config-snapshot.pb")),
                    ..FollowerOptions::default()
                })
                .map_err(|err| ServeError::Config(format!("--config-source: {err}")))?;
                let configs = remote.configs();
                follower = Some(remote);
                configs
            }
            (None, Some(publisher)) => local_configs(publisher),
            (None, None) => unreachable!("assignment without a config source has a local store"),
        };
        // A config already at hand (local store, or a sidecar's saved
        // snapshot) is installed before the first request is accepted.
        if let Some(config) = configs.borrow().clone() {
            cell.install(&config);
        }
        cell.follow(configs);
        match (&mut ingest, &config.config_source) {
            (Some(ingest), _) => ingest.forward_exposures(exposure_receiver),
            (None, Some(source)) => {
                match crate::ingest::forward_to_remote(source, exposure_receiver) {
                    Ok(forwarder) => remote_exposures = Some(forwarder),
                    Err(err) => error!(
                        error = %err,
                        "cannot start the exposure sender thread; exposures are not sent"
                    ),
                }
            }
            (None, None) => {
                tokio::spawn(drain_exposures(exposure_receiver));
            }
        }
    }
    let assignment_service = assigner
        .clone()
        .map(|assigner| AssignGrpc::new(assigner).into_server());
    let event_service = ingest.as_ref().map(|ingest| ingest.grpc(clock.clone()));
    // Results read the event log of this process (`Config::check`).
    let results =
        match (&ingest, &admin) {
            (Some(ingest), Some(admin)) if config.runs(ServiceKind::Results) => Some(
                Results::start(admin.clone(), ingest.slot(), config.guardrail_interval),
            ),
            _ => None,
        };
    let results_service = match (&results, &admin) {
        (Some(results), Some(admin)) => Some(results.grpc(admin.clone(), auth.clone())),
        _ => None,
    };

    let served: Vec<&'static str> = [
        admin_service
            .is_some()
            .then_some(<AdminServiceServer<AdminGrpc> as NamedService>::NAME),
        config_service
            .is_some()
            .then_some(<ConfigServiceServer<ConfigGrpc> as NamedService>::NAME),
        assignment_service.is_some().then_some(ASSIGNMENT_SERVICE),
        event_service.is_some().then_some(EVENT_SERVICE),
        results_service
            .is_some()
            .then_some(<ResultsServiceServer<ResultsGrpc> as NamedService>::NAME),
    ]
    .into_iter()
    .flatten()
    .collect();
    for name in served.iter().copied().chain([""]) {
        // Assignment reports SERVING once it has a config (at once with a
        // local store or a saved snapshot; a sidecar's cold start with the
        // admin down and nothing saved waits for the admin).
        let status = if (name == ASSIGNMENT_SERVICE && cell.load().is_none())
            || (name == EVENT_SERVICE && ingest.as_ref().is_some_and(|i| i.slot().get().is_none()))
        {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        health.set_service_status(name, status).await;
    }
    if runs_assign {
        // Set after the initial statuses, so the first config cannot be
        // overtaken by them.
        let health = health.clone();
        let mut versions = cell.versions();
        tokio::spawn(async move {
            if versions.wait_for(Option::is_some).await.is_ok() {
                health
                    .set_service_status(ASSIGNMENT_SERVICE, ServingStatus::Serving)
                    .await;
            }
        });
    }

    if let Some(ingest) = &ingest {
        // SERVING once the log is open (a replay after a crash can take a
        // moment; assignment does not wait for it).
        let health = health.clone();
        let slot = ingest.slot();
        tokio::spawn(async move {
            while slot.get().is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            health
                .set_service_status(EVENT_SERVICE, ServingStatus::Serving)
                .await;
        });
    }

    let (grpc_stop_tx, grpc_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let grpc_server = grpc_server_builder(&config)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_optional_service(admin_service)
        .add_optional_service(config_service)
        .add_optional_service(assignment_service)
        .add_optional_service(event_service)
        .add_optional_service(results_service)
        .serve_with_incoming_shutdown(incoming(grpc), async {
            let _ = grpc_stop_rx.await;
        });

    let mut http_stop = shutdown_rx.clone();
    let mut routes = crate::http::router(shutdown_rx.clone(), runs_assign.then(|| cell.clone()));
    if let Some(assigner) = assigner {
        routes = routes.merge(exp_assign::http::router(assigner));
    }
    let http_server = axum::serve(http, routes)
        .with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|stop| *stop).await;
        })
        .into_future();

    let scheduler_task = admin.filter(|_| runs_admin).map(|admin| {
        tokio::spawn(scheduler::run(
            admin,
            config.scheduler_tick,
            shutdown_rx.clone(),
        ))
    });

    info!(
        grpc = %grpc_local,
        http = %http_local,
        services = ?served,
        data_dir = %config.data_dir.display(),
        tokens = config.tokens_file.is_some(),
        config_version = store.as_ref().map(|store| store.config_version()),
        config_source = config.config_source.as_deref(),
        "expd serving"
    );

    let grpc_task = tokio::spawn(grpc_server);
    let _follower = follower;
    let http_task = tokio::spawn(http_server);
    shutdown.await;

    info!("shutting down: draining in-flight calls");
    for name in served.iter().copied().chain([""]) {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let _ = shutdown_tx.send(true);
    let _ = grpc_stop_tx.send(());
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        let grpc = grpc_task.await;
        let http = http_task.await;
        (grpc, http)
    })
    .await;
    // Background tasks end on the shutdown signal; waiting for them lets
    // the store close before `serve` returns (a restart can reopen it).
    for task in [scheduler_task, publisher_task].into_iter().flatten() {
        let _ = task.await;
    }
    if let Some(results) = results {
        results.close().await;
    }
    if let Some(ingest) = ingest {
        ingest.close().await;
    }
    if let Some(forwarder) = remote_exposures {
        forwarder.stop().await;
    }
    match drained {
        Ok((grpc, http)) => {
            if let Ok(result) = grpc {
                result?;
            }
            if let Ok(result) = http {
                result?;
            }
            info!("shutdown complete");
        }
        Err(_) => {
            warn!(grace = ?config.shutdown_grace, "calls still in flight after the grace period; closing")
        }
    }
    Ok(())
}

/// The multi-threaded Tokio runtime `expd` serves on, one worker per
/// core it may run on.
///
/// Built with `--cfg tokio_unstable` (the workspace's `.cargo/config.toml`
/// sets it), the scheduler's LIFO slot is off. With it on, the task of
/// an answered call wakes its connection's task, which then runs next
/// and writes that one answer, so every answer costs a `writev` and the
/// client a read; with it off, the calls that arrived together all answer
/// before the connection task runs, and it writes their answers in one
/// `writev`. At 10,000 `Assign` calls/s this cut the server's CPU per call
/// by about a third, and the client's by as much (`benches/RESULTS.md`).
/// Without the flag the runtime is Tokio's default one.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.enable_all().build()
}

/// The layers every gRPC call passes: RPC metrics, then load shedding in
/// front of a global concurrency limit, so a call beyond the limit is
/// refused at once with RESOURCE_EXHAUSTED instead of queueing.
pub type GrpcLayers =
    Stack<GlobalConcurrencyLimitLayer, Stack<LoadShedLayer, Stack<RpcMetricsLayer, Identity>>>;

/// The gRPC server builder with `config`'s timeout, keepalives, tracing
/// span per call and [`GrpcLayers`]; services are added by the caller.
pub fn grpc_server_builder(
    config: &Config,
) -> tonic::transport::Server<Stack<GrpcLayers, Identity>> {
    let layers = ServiceBuilder::new()
        .layer(RpcMetricsLayer::new())
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(
            config.max_concurrent_requests as usize,
        ))
        .into_inner();
    tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .trace_fn(|request| tracing::info_span!("grpc", method = %request.uri().path()))
        .layer(layers)
}

/// Accepted connections of `listener`, with the socket options tonic
/// applies only to listeners it binds itself: no Nagle delay (a small
/// unary answer would otherwise wait ~40 ms for a delayed ACK) and TCP
/// keepalive, so half-open peers are reaped.
pub fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
}

/// Health name of the assignment service.
const ASSIGNMENT_SERVICE: &str = <AssignmentServiceServer<AssignGrpc> as NamedService>::NAME;
/// Health name of the event service.
const EVENT_SERVICE: &str = <EventServiceServer<exp_ingest::EventGrpc> as NamedService>::NAME;

/// The local publisher's configs as the optional configs a snapshot cell
/// follows.
fn local_configs(publisher: &ConfigPublisher) -> watch::Receiver<Option<Arc<ServingConfig>>> {
    let mut local = publisher.follow();
    let (sender, receiver) = watch::channel(Some(local.borrow_and_update().clone()));
    tokio::spawn(async move {
        while local.changed().await.is_ok() {
            let latest = local.borrow_and_update().clone();
            if sender.send(Some(latest)).is_err() {
                return;
            }
        }
    });
    receiver
}

/// With neither ingest in this process nor a config source to send them
/// to, exposures are counted and dropped here, so the queue never fills
/// up.
async fn drain_exposures(mut receiver: tokio::sync::mpsc::Receiver<exp_assign::ExposureRecord>) {
    let mut drained: u64 = 0;
    while receiver.recv().await.is_some() {
        drained += 1;
        if drained.is_power_of_two() {
            tracing::debug!(drained, "exposures drained");
        }
    }
}

fn load_schema(path: &std::path::Path) -> Result<ParamSchema, ServeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| ServeError::Config(format!("--param-schema {}: {err}", path.display())))?;
    ParamSchema::from_json(&text).map_err(|violations| {
        let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
        ServeError::Config(format!(
            "--param-schema {}: {}",
            path.display(),
            listed.join("; ")
        ))
    })
}
