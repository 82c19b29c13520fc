//! `expd`: every service of the experiment platform in one process, or any
//! subset of them (`--services`), on an embedded sled store.
//!
//! # Layout
//!
//! - [`config`]: flags, each with an `EXPD_` environment variable, checked
//!   at startup (the loopback rule for servers without tokens included).
//! - [`server`]: [`serve`], the composition root: it builds the roles,
//!   mounts their services on bound listeners and runs until a shutdown
//!   future resolves (tests call it with `127.0.0.1:0` listeners), then
//!   stops everything through one cancellation token and a task tracker;
//!   and [`server::runtime`], the Tokio runtime `expd` serves on.
//! - [`roles`]: one builder per role (admin, ingest, assign, results):
//!   what each builds, which tasks it starts, which services it mounts.
//! - [`layers`]: tower layers of the gRPC server (RPC metrics); the
//!   timeout comes from tonic.
//! - [`admission`]: what a gRPC call must show before it takes one of the
//!   concurrency slots: its whole request, within the read timeout and its
//!   service's size limit; undecodable requests answered INVALID_ARGUMENT.
//! - [`connections`]: both ports' connections, bounded in total and per
//!   client, each closed if it sends nothing within the read timeout; the
//!   open-file limit.
//! - [`http`]: the HTTP port: its server, liveness, readiness and
//!   `/metrics`.
//! - [`metrics`]: the service's own signals as OpenTelemetry instruments,
//!   observed from the counters it keeps.
//! - [`telemetry`]: `tracing` output and optional OTLP export of traces and
//!   metrics.

pub mod admission;
pub mod config;
pub mod connections;
pub mod http;
pub mod layers;
pub mod metrics;
pub mod roles;
pub mod server;
pub mod telemetry;

pub use config::Config;
pub use server::{ServeError, serve};
