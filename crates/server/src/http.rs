//! The HTTP port: `GET /healthz` (alive) and `GET /readyz` (ready to
//! serve: 503 while shutting down, and, in a process that assigns, until
//! it has an experiment config), for load balancers and probes that do not
//! speak gRPC health. `/readyz` agrees with `grpc.health.v1`.

use axum::{Router, extract::State, http::StatusCode, routing::get};
use exp_assign::SnapshotCell;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Readiness {
    shutting_down: CancellationToken,
    // `Some` when this process assigns: ready only once a config is in.
    assignment: Option<SnapshotCell>,
}

/// The HTTP routes; `shutting_down` turns readiness off, and so does an
/// `assignment` cell without a config.
pub fn router(shutting_down: CancellationToken, assignment: Option<SnapshotCell>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Readiness {
            shutting_down,
            assignment,
        })
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    if readiness.shutting_down.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if readiness
        .assignment
        .as_ref()
        .is_some_and(|cell| cell.load().is_none())
    {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no experiment config yet\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}
