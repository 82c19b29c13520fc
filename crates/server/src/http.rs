//! The HTTP port: `GET /healthz` (alive) and `GET /readyz` (serving; 503
//! while shutting down), for load balancers and probes that do not speak
//! gRPC health.

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio::sync::watch;

/// The HTTP routes; `shutting_down` turns readiness off.
pub fn router(shutting_down: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(shutting_down)
}

async fn ready(State(shutting_down): State<watch::Receiver<bool>>) -> (StatusCode, &'static str) {
    if *shutting_down.borrow() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
