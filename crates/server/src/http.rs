//! The HTTP port: `GET /healthz` (alive) and `GET /readyz` (ready to
//! serve: 503 while shutting down, with fewer than 64 descriptors left,
//! and, in a process that assigns, until it has an experiment config), for
//! load balancers and probes that do not speak gRPC health. `/readyz`
//! agrees with `grpc.health.v1`; its body also reports a config store that
//! cannot write (AdminService is NOT_SERVING then), the open-file headroom
//! and the connections.
//!
//! [`serve`] is the port's server: HTTP/1.1 on hyper, with the connection
//! limits of [`Connections`], a read timeout for headers
//! (`--read-timeout`) and, through [`read_whole_body`], for bodies.

use std::time::Duration;

use axum::{
    Router,
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use exp_assign::SnapshotCell;
use exp_core::Error;
use exp_store::StoreHealth;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::connections::{self, Connections};

/// The largest HTTP request body.
pub const MAX_BODY: usize = 2 << 20;
/// Readiness fails with fewer descriptors than this left.
const MIN_FILE_HEADROOM: u64 = 64;

/// What `/readyz` looks at.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// Cancelled when the process shuts down.
    pub shutting_down: CancellationToken,
    /// `Some` when this process assigns: ready only once a config is in.
    pub assignment: Option<SnapshotCell>,
    /// `Some` when this process has a config store: ready only while it
    /// can write.
    pub store: Option<watch::Receiver<StoreHealth>>,
    /// Both ports' connections.
    pub connections: Connections,
    /// `Some` with `--events-sink nats://`: whether NATS is reachable.
    pub nats: Option<std::sync::Arc<exp_ingest::jetstream::Nats>>,
}

/// The HTTP routes of every process: health, readiness, metrics.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(readiness)
}

/// `GET /metrics`: every instrument of [`crate::metrics`] and the RPC
/// histogram, in the Prometheus text format.
pub async fn metrics() -> Response {
    // Collection runs the instruments' callbacks, one of which walks the
    // event log's directory: off the async workers.
    let encoded = tokio::task::spawn_blocking(|| {
        prometheus::TextEncoder::new().encode_to_string(&prometheus::gather())
    })
    .await;
    match encoded {
        Ok(Ok(text)) => (
            [(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            text,
        )
            .into_response(),
        Ok(Err(err)) => {
            warn!(error = %err, "encoding metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(err) => {
            warn!(error = %err, "collecting metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, String) {
    let files = connections::open_files();
    let headroom = files.map_or(String::new(), |(open, limit)| {
        format!("open files: {open} of {limit}\n")
    });
    let (status, reason) = not_ready(&readiness, files)
        .map_or((StatusCode::OK, "ready\n".to_owned()), |reason| {
            (StatusCode::SERVICE_UNAVAILABLE, reason)
        });
    // A store that cannot write is reported, not a reason to be taken out
    // of rotation: reads, assignment and config delivery still serve.
    let store = match readiness.store.as_ref().map(|store| store.borrow().clone()) {
        Some(StoreHealth::CannotWrite { reason }) => {
            format!("the config store cannot write (admin changes are refused): {reason}\n")
        }
        _ => String::new(),
    };
    let connections = format!(
        "connections: {} open, {} refused at a limit\n",
        readiness.connections.open(),
        readiness.connections.refused()
    );
    // NATS unreachable is reported, not a reason to be taken out of
    // rotation: assignment and config delivery still serve, and
    // EventService answers UNAVAILABLE (its gRPC health is NOT_SERVING).
    let nats = match &readiness.nats {
        Some(nats) if nats.is_connected() => {
            format!("events: NATS reachable ({})\n", nats.servers())
        }
        Some(nats) => format!(
            "events: NATS unreachable ({}{}): EventService answers UNAVAILABLE, exposures are dropped and counted, the writer and results wait\n",
            nats.servers(),
            nats.last_error()
                .map_or(String::new(), |error| format!("; last error: {error}"))
        ),
        None => String::new(),
    };
    (
        status,
        format!("{reason}{store}{nats}{headroom}{connections}"),
    )
}

fn not_ready(readiness: &Readiness, files: Option<(u64, u64)>) -> Option<String> {
    if readiness.shutting_down.is_cancelled() {
        return Some("shutting down\n".into());
    }
    if readiness
        .assignment
        .as_ref()
        .is_some_and(|cell| cell.load().is_none())
    {
        return Some("no experiment config yet\n".into());
    }
    if let Some((open, limit)) = files.filter(|(open, limit)| open + MIN_FILE_HEADROOM > *limit) {
        return Some(format!(
            "fewer than {MIN_FILE_HEADROOM} file descriptors left ({open} of {limit} open)\n"
        ));
    }
    None
}

/// Reads a request's whole body, at most [`MAX_BODY`] bytes, within
/// `read_timeout`, before the handler runs: a body that stalls is answered
/// 408 and one too large 413, from the error table.
pub async fn read_whole_body(
    State(read_timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match tokio::time::timeout(read_timeout, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            return refusal(if too_large {
                Error::TooLarge(format!(
                    "the body is over the {MAX_BODY} bytes this port takes"
                ))
            } else {
                Error::invalid("body", format!("the body could not be read: {error}"))
            });
        }
        Err(_) => {
            return refusal(Error::RequestTimeout(format!(
                "the body did not arrive within the {read_timeout:?} read timeout"
            )));
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

fn refusal(error: Error) -> Response {
    let (status, body) = exp_proto::to_http(&error);
    (status, axum::Json(body)).into_response()
}

/// Serves `router` on `listener` (HTTP/1.1) until `shutdown` is
/// cancelled, then waits for the open connections' requests to finish.
/// Headers must arrive within `read_timeout`; connections are admitted by
/// `connections`.
pub async fn serve(
    listener: TcpListener,
    connections: Connections,
    router: Router,
    read_timeout: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = router
        .route_layer(axum::middleware::from_fn(crate::layers::http_metrics))
        .layer(axum::middleware::from_fn_with_state(
            read_timeout,
            read_whole_body,
        ));
    let service = hyper_util::service::TowerToHyperService::new(router);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of descriptors, or a connection reset before it
                    // was accepted: wait a moment rather than spin.
                    warn!(error = %err, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let Some(guarded) = connections.guard(stream) else {
            continue;
        };
        let connection =
            graceful.watch(http1.serve_connection(TokioIo::new(guarded), service.clone()));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(error = %err, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
