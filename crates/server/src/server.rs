//! The composition root: the flags' roles built (one builder each, in
//! [`crate::roles`]), mounted on a gRPC and an HTTP listener with
//! reflection, health and the tower layers, and stopped together: one
//! cancellation token for every background task and a task tracker to
//! wait for them.

use std::{future::Future, sync::Arc, time::Duration};

use exp_admin::{Access, AdminGrpc, Authenticator, ConfigGrpc};
use exp_assign::AssignGrpc;
use exp_core::{ParamSchema, SystemClock};
use exp_proto::v1::{
    admin_service_server::AdminServiceServer, assignment_service_server::AssignmentServiceServer,
    config_service_server::ConfigServiceServer, event_service_server::EventServiceServer,
    results_service_server::ResultsServiceServer,
};
use exp_results::ResultsGrpc;
use exp_store::Store;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::server::NamedService;
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{
    ServiceBuilder,
    layer::util::{Identity, Stack},
};
use tracing::{info, warn};

use crate::{
    Config,
    admission::AdmissionLayer,
    config::ServiceKind,
    connections::{Connections, FILES_RESERVED, raise_open_file_limit},
    layers::RpcMetricsLayer,
    roles::{
        self, AdminRole, AssignRole, Context, ExposureDestination, IngestRole, NatsRole, WriterRole,
    },
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
/// Calls open at once on one HTTP/2 connection (more wait in the client).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// How long a ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `config`'s services on `grpc` and `http` until `shutdown`
/// resolves, then drains: health turns NOT_SERVING and background tasks
/// are cancelled; in-flight calls get up to `--shutdown-grace` to finish;
/// the exposure feed hands on what it holds; the event log writes and
/// rolls what is pending.
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
    let connections = connections_for(&config);
    std::fs::create_dir_all(&config.data_dir).map_err(|err| {
        ServeError::Config(format!("--data-dir {}: {err}", config.data_dir.display()))
    })?;
    let context = Context {
        config: config.clone(),
        clock: Arc::new(SystemClock),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        requests_drained: CancellationToken::new(),
        auth,
        grpc_local,
        source_token: config.source_token().map_err(ServeError::Config)?,
    };

    // The local store backs the admin, and assignment unless it follows a
    // remote admin (sidecar mode), which needs no store at all.
    let runs_admin = config.runs(ServiceKind::Admin);
    let runs_assign = config.runs(ServiceKind::Assign);
    let store = (runs_admin || (runs_assign && config.config_source.is_none()))
        .then(|| Store::open(config.data_dir.join("config")).map(Arc::new))
        .transpose()?;
    let admin = store
        .as_ref()
        .map(|store| AdminRole::start(&context, store.clone(), schema, runs_admin))
        .transpose()?;
    let nats = NatsRole::start(&context).await?;
    let ingest = store
        .as_ref()
        .filter(|_| config.runs(ServiceKind::Ingest))
        .map(|store| IngestRole::start(&context, store.clone(), nats.as_ref()));
    let writer = nats
        .as_ref()
        .filter(|_| config.runs(ServiceKind::Writer))
        .map(|nats| WriterRole::start(&context, nats));
    let assign = runs_assign
        .then(|| {
            let local_log = ingest.as_ref().and_then(IngestRole::slot);
            let destination = match (&nats, local_log, &config.config_source) {
                (Some(nats), _, _) => ExposureDestination::Stream(nats),
                (None, Some(slot), _) => ExposureDestination::Log(slot),
                (None, None, Some(source)) => ExposureDestination::Remote(source),
                (None, None, None) => ExposureDestination::Discard,
            };
            AssignRole::start(&context, admin.as_ref().map(|a| &*a.publisher), destination)
        })
        .transpose()?;
    let source = roles::results_source(&context, nats.as_ref(), ingest.as_ref());
    let results = match (&admin, source) {
        (Some(admin), Some(source)) if config.runs(ServiceKind::Results) => {
            Some(roles::results_role(&context, &admin.admin, source))
        }
        _ => None,
    };

    let admin_services = admin.as_ref().filter(|_| runs_admin).map(|admin| {
        (
            admin.admin_service(&context),
            admin.config_service(&context),
        )
    });
    let results_service = match (&results, &admin) {
        (Some(results), Some(admin)) => Some(results.grpc(
            admin.admin.clone(),
            context.auth.clone(),
            config.request_timeout,
        )),
        _ => None,
    };
    let served: Vec<&'static str> = [
        admin_services.is_some().then_some(ADMIN_SERVICE),
        admin_services.is_some().then_some(CONFIG_SERVICE),
        assign.is_some().then_some(ASSIGNMENT_SERVICE),
        ingest.is_some().then_some(EVENT_SERVICE),
        results_service.is_some().then_some(RESULTS_SERVICE),
    ]
    .into_iter()
    .flatten()
    .collect();
    let (health, health_service) = tonic_health::server::health_reporter();
    report_health(
        &context,
        &health,
        &served,
        assign.as_ref(),
        ingest.as_ref(),
        nats.as_ref(),
    )
    .await;
    if let Some(store) = store.as_ref().filter(|_| admin_services.is_some()) {
        context.tasks.spawn(report_store_health(
            store.health(),
            health.clone(),
            context.shutdown.clone(),
        ));
    }
    let (admin_service, config_service) = admin_services.unzip();
    let watchers = config_service.as_ref().map(ConfigGrpc::open_watchers);
    let config_service = config_service.map(ConfigGrpc::into_server);
    let grpc_server = grpc_server_builder(&config)
        .add_service(health_service)
        .add_service(reflection_v1()?)
        .add_service(reflection_v1alpha()?)
        .add_optional_service(admin_service)
        .add_optional_service(config_service.map(|service| data_plane(service, &context.auth)))
        .add_optional_service(
            assign
                .as_ref()
                .map(|assign| data_plane(assign.assignment_service(), &context.auth)),
        )
        .add_optional_service(
            ingest
                .as_ref()
                .map(|ingest| data_plane(ingest.event_service(&context), &context.auth)),
        )
        .add_optional_service(results_service)
        .serve_with_incoming_shutdown(
            connections.incoming(grpc),
            context.shutdown.clone().cancelled_owned(),
        );
    let mut routes = crate::http::router(crate::http::Readiness {
        shutting_down: context.shutdown.clone(),
        assignment: assign.as_ref().map(|assign| assign.cell.clone()),
        store: store.as_ref().map(|store| store.health()),
        connections: connections.clone(),
        nats: nats.as_ref().map(|nats| nats.nats.clone()),
    });
    crate::metrics::register(crate::metrics::Sources {
        exposures: assign.as_ref().map(|assign| {
            (
                assign.assigner.exposure_counters(),
                assign.feed.clone(),
                assign.repeats.clone(),
            )
        }),
        assignment: assign.as_ref().map(|assign| assign.cell.clone()),
        store: store.clone(),
        connections: connections.clone(),
        watchers,
        log: ingest
            .as_ref()
            .and_then(IngestRole::slot)
            .or(writer.as_ref().map(|writer| &writer.slot))
            .cloned(),
        results: results.clone(),
        nats: nats.as_ref().map(|nats| nats.nats.clone()),
        writer: writer.as_ref().map(|writer| writer.stats.clone()),
    });
    routes = routes.route(
        "/metrics",
        axum::routing::get(crate::http::metrics).layer(axum::middleware::from_fn_with_state(
            (context.auth.clone(), Access::Read, "GET /metrics"),
            require_token,
        )),
    );
    // The console: pages for people, on the admin's and results' own use
    // cases, wherever the admin runs.
    if let Some(admin) = admin.as_ref().filter(|_| runs_admin) {
        routes = routes.merge(
            exp_console::Console::new(
                admin.admin.clone(),
                results.clone(),
                context.auth.clone(),
                config.allow_insecure_remote,
            )
            .router(),
        );
    }
    let (follower, feed) = match assign {
        Some(assign) => {
            // The router takes the last copy of the assigner (and of the
            // exposure queue's sender) this function held.
            // OFREP: the same data-plane check, inside CORS so a browser's
            // preflight (which carries no token) is answered.
            routes = routes.merge(
                exp_assign::ofrep::router(assign.assigner.clone())
                    .layer(axum::middleware::from_fn_with_state(
                        (context.auth.clone(), Access::DataPlane, "OFREP evaluation"),
                        require_token,
                    ))
                    .layer(ofrep_cors()),
            );
            routes = routes.merge(exp_assign::http::router(assign.assigner).layer(
                axum::middleware::from_fn_with_state(context.auth.clone(), require_data_plane),
            ));
            (assign.follower, Some(assign.feed))
        }
        None => (None, None),
    };
    let http_server = crate::http::serve(
        http,
        connections.clone(),
        routes,
        config.read_timeout,
        context.shutdown.clone(),
    );

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
    let http_task = tokio::spawn(http_server);
    let aborts = [grpc_task.abort_handle(), http_task.abort_handle()];
    let mut servers = tokio::spawn(async move { (grpc_task.await, http_task.await) });
    shutdown.await;

    info!("shutting down: draining in-flight calls");
    for name in served.iter().copied().chain([""]) {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    context.shutdown.cancel();
    let drained = match tokio::time::timeout(config.shutdown_grace, &mut servers).await {
        Ok(servers) => servers.ok(),
        Err(_) => {
            warn!(grace = ?config.shutdown_grace, "calls still in flight after the grace period; closing");
            for abort in aborts {
                abort.abort();
            }
            let _ = servers.await;
            None
        }
    };
    // No request is left: the exposure stage closes its queue (a connection
    // task the servers left behind may still hold a sender) and hands on
    // what it holds; every other task has ended on the token.
    context.requests_drained.cancel();
    context.tasks.close();
    if tokio::time::timeout(config.shutdown_grace, context.tasks.wait())
        .await
        .is_err()
    {
        warn!(grace = ?config.shutdown_grace, "background tasks still running after the grace period; closing");
    }
    drop(follower);
    let logs = [
        ingest.as_ref().and_then(IngestRole::slot),
        writer.as_ref().map(|writer| &writer.slot),
    ];
    for log in logs
        .into_iter()
        .flatten()
        .filter_map(exp_ingest::LogSlot::get)
    {
        let _ = tokio::task::spawn_blocking(move || log.close()).await;
    }
    if let Some(feed) = feed {
        info!(
            logged = feed.logged.load(std::sync::atomic::Ordering::Relaxed),
            dropped = feed.dropped.load(std::sync::atomic::Ordering::Relaxed),
            "exposure feed closed"
        );
    }
    if let Some((grpc, http)) = drained {
        if let Ok(result) = grpc {
            result?;
        }
        if let Ok(result) = http {
            result?;
        }
    }
    info!("shutdown complete");
    Ok(())
}

/// `service` behind a check that its caller holds a `data_plane` token
/// (when tokens are configured): assignment, config delivery, events.
fn data_plane<S>(
    service: S,
    auth: &Authenticator,
) -> tonic::service::interceptor::InterceptedService<
    S,
    impl tonic::service::Interceptor + Clone + Send + Sync + 'static,
> {
    let auth = auth.clone();
    tonic::service::interceptor::InterceptedService::new(
        service,
        move |request: tonic::Request<()>| {
            auth.authorize(
                request.metadata(),
                Access::DataPlane,
                "this data-plane call",
            )
            .map_err(exp_proto::to_status)?;
            Ok(request)
        },
    )
}

/// CORS of the OFREP routes: any origin may evaluate (the caller proves
/// itself with its bearer token, never a cookie), reading the `ETag` a
/// bulk answer carries; preflights are cached for an hour.
fn ofrep_cors() -> tower_http::cors::CorsLayer {
    use http::{Method, header};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
        ])
        .expose_headers([header::ETAG])
        .max_age(Duration::from_secs(3600))
}

/// The same check on the HTTP assignment route (an axum middleware),
/// answered from the one error table.
async fn require_data_plane(
    axum::extract::State(auth): axum::extract::State<Authenticator>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    require_token(
        axum::extract::State((auth, Access::DataPlane, "POST /experiments/assign")),
        request,
        next,
    )
    .await
}

/// An HTTP route behind a token that may `access` (when tokens are
/// configured), answered from the one error table.
async fn require_token(
    axum::extract::State((auth, access, what)): axum::extract::State<(
        Authenticator,
        Access,
        &'static str,
    )>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let header = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match auth.authorize_header(header, access, what) {
        Ok(_) => next.run(request).await,
        Err(error) => {
            let (status, body) = exp_proto::to_http(&error);
            axum::response::IntoResponse::into_response((status, axum::Json(body)))
        }
    }
}

/// Health of every served service (and `""`): SERVING, except assignment
/// until it has a config and event ingest until its log is open, which
/// turn SERVING when they do; with NATS, event ingest is SERVING while
/// NATS is reachable, NOT_SERVING while it is not.
async fn report_health(
    context: &Context,
    health: &HealthReporter,
    served: &[&'static str],
    assign: Option<&AssignRole>,
    ingest: Option<&IngestRole>,
    nats: Option<&NatsRole>,
) {
    let waiting_for_config = assign.is_some_and(|assign| assign.cell.load().is_none());
    let waiting_for_log = ingest
        .and_then(IngestRole::slot)
        .is_some_and(|slot| slot.get().is_none());
    for name in served.iter().copied().chain([""]) {
        let status = if (name == ASSIGNMENT_SERVICE && waiting_for_config)
            || (name == EVENT_SERVICE && waiting_for_log)
        {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        health.set_service_status(name, status).await;
    }
    if let Some(assign) = assign.filter(|_| waiting_for_config) {
        let (health, shutdown) = (health.clone(), context.shutdown.clone());
        let mut versions = assign.cell.versions();
        context.tasks.spawn(async move {
            let configured = tokio::select! {
                first = versions.wait_for(Option::is_some) => first.is_ok(),
                () = shutdown.cancelled() => false,
            };
            if configured {
                health
                    .set_service_status(ASSIGNMENT_SERVICE, ServingStatus::Serving)
                    .await;
            }
        });
    }
    if let Some(nats) = nats.filter(|_| ingest.is_some()) {
        let (health, shutdown) = (health.clone(), context.shutdown.clone());
        let mut connected = nats.nats.connected();
        context.tasks.spawn(async move {
            loop {
                let status = if *connected.borrow_and_update() {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                // Shutting down turns every service NOT_SERVING for good.
                if shutdown.is_cancelled() {
                    return;
                }
                health.set_service_status(EVENT_SERVICE, status).await;
                tokio::select! {
                    changed = connected.changed() => if changed.is_err() { return },
                    () = shutdown.cancelled() => return,
                }
            }
        });
    }
    if let Some(slot) = ingest
        .and_then(IngestRole::slot)
        .filter(|_| waiting_for_log)
    {
        let (health, shutdown, slot) = (health.clone(), context.shutdown.clone(), slot.clone());
        context.tasks.spawn(async move {
            tokio::select! {
                _ = slot.opened() => {
                    health.set_service_status(EVENT_SERVICE, ServingStatus::Serving).await;
                }
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// `AdminService` is NOT_SERVING while the store cannot write (its
/// reads still answer), SERVING again once it can.
async fn report_store_health(
    mut store: tokio::sync::watch::Receiver<exp_store::StoreHealth>,
    health: HealthReporter,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            changed = store.changed() => if changed.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        let status = match *store.borrow_and_update() {
            exp_store::StoreHealth::Writable => ServingStatus::Serving,
            exp_store::StoreHealth::CannotWrite { .. } => ServingStatus::NotServing,
        };
        health.set_service_status(ADMIN_SERVICE, status).await;
    }
}

/// Reflection, v1 (grpcurl 1.8.6 asks v1alpha: both are served).
/// google.rpc is registered so clients such as grpcurl decode the
/// BadRequest details of INVALID_ARGUMENT answers.
fn reflection_v1() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    ServeError,
> {
    reflection_builder()
        .build_v1()
        .map_err(|err| ServeError::Config(format!("reflection: {err}")))
}

/// Reflection, v1alpha.
fn reflection_v1alpha() -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    ServeError,
> {
    reflection_builder()
        .build_v1alpha()
        .map_err(|err| ServeError::Config(format!("reflection: {err}")))
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(exp_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Health names of the services.
const ADMIN_SERVICE: &str = <AdminServiceServer<AdminGrpc> as NamedService>::NAME;
const CONFIG_SERVICE: &str = <ConfigServiceServer<ConfigGrpc> as NamedService>::NAME;
const ASSIGNMENT_SERVICE: &str = <AssignmentServiceServer<AssignGrpc> as NamedService>::NAME;
const EVENT_SERVICE: &str = <EventServiceServer<exp_ingest::EventGrpc> as NamedService>::NAME;
const RESULTS_SERVICE: &str = <ResultsServiceServer<ResultsGrpc> as NamedService>::NAME;

/// The multi-threaded Tokio runtime `expd` serves on, one worker per
/// core it may run on: Tokio's default scheduler. (Turning its LIFO slot
/// off, an unstable option, saved about 9% of the server's CPU per
/// `Assign` in a same-run comparison, under the 10% that would pay for an
/// unstable build flag: `benches/RESULTS.md`.)
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The layers every gRPC call passes: RPC metrics, then admission (the
/// whole request read within `--read-timeout` and its size limit, then a
/// concurrency slot or RESOURCE_EXHAUSTED at once).
pub type GrpcLayers = Stack<AdmissionLayer, Stack<RpcMetricsLayer, Identity>>;

/// The gRPC server builder with `config`'s timeout, keepalives, tracing
/// span per call and [`GrpcLayers`]; services are added by the caller.
pub fn grpc_server_builder(
    config: &Config,
) -> tonic::transport::Server<Stack<GrpcLayers, Identity>> {
    let layers = ServiceBuilder::new()
        .layer(RpcMetricsLayer::new())
        .layer(AdmissionLayer::new(
            config.max_concurrent_requests as usize,
            config.read_timeout,
        ))
        .into_inner();
    tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .trace_fn(crate::layers::rpc_span)
        .layer(layers)
}

/// The connection table of both ports: `--max-connections` (lowered to
/// fit the open-file limit, raised first to its hard limit) and
/// `--max-connections-per-client`.
pub fn connections_for(config: &Config) -> Connections {
    let wanted = u64::from(config.max_connections);
    let total = match raise_open_file_limit() {
        Ok(files) => {
            let fits = files.saturating_sub(FILES_RESERVED).max(files / 2);
            if fits < wanted {
                warn!(
                    wanted,
                    allowed = fits,
                    open_file_limit = files,
                    "--max-connections lowered to fit the open-file limit"
                );
            }
            wanted.min(fits)
        }
        Err(err) => {
            warn!(error = %err, "could not read or raise the open-file limit");
            wanted
        }
    };
    let per_client = match u64::from(config.max_connections_per_client) {
        0 => total,
        limit => limit.min(total),
    };
    Connections::new(total, per_client, config.read_timeout)
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
