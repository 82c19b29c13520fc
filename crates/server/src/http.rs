//! The HTTP port: `GET /healthz` (alive) and `GET /readyz` (ready to
//! serve: 503 while shutting down, while the config store cannot write,
//! and, in a process that assigns, until it has an experiment config), for
//! load balancers and probes that do not speak gRPC health. `/readyz`
//! agrees with `grpc.health.v1`.

use axum::{Router, extract::State, http::StatusCode, routing::get};
use exp_assign::SnapshotCell;
use exp_store::StoreHealth;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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
}

/// The HTTP routes.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(readiness)
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, String) {
    if readiness.shutting_down.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    if readiness
        .assignment
        .as_ref()
        .is_some_and(|cell| cell.load().is_none())
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no experiment config yet\n".into(),
        );
    }
    if let Some(StoreHealth::CannotWrite { reason }) =
        readiness.store.as_ref().map(|store| store.borrow().clone())
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the config store cannot write: {reason}\n"),
        );
    }
    (StatusCode::OK, "ready\n".into())
}
