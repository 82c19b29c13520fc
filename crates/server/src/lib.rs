//! `expd`: every service of the experiment platform in one process, or any
//! subset of them (`--services`), on an embedded sled store.
//!
//! # Layout
//!
//! - [`config`]: flags, each with an `EXPD_` environment variable, checked
//!   at startup (the loopback rule for servers without tokens included).
//! - [`server`]: [`serve`], which wires the stores and services onto bound
//!   listeners and runs until a shutdown future resolves; tests call it
//!   with `127.0.0.1:0` listeners; and [`server::runtime`], the Tokio
//!   runtime `expd` serves on.
//! - [`layers`]: tower layers of the gRPC server (RPC metrics); the
//!   timeout, load shedding and concurrency limit come from tonic and tower.
//! - [`http`]: the HTTP port: liveness and readiness.
//! - [`ingest`]: event ingest's wiring: the event log opened in the
//!   background, the experiment catalog following the store, and the
//!   exposures of assignment fed into the log (or sent to the config
//!   source's `EventService` from a sidecar).
//! - [`results`]: results' wiring: the analyzer rebuilt from the event log
//!   and following it, `ResultsService`, and the guardrail monitor that
//!   pauses or stops an experiment through the admin's transitions.
//! - [`telemetry`]: `tracing` output and optional OTLP export of traces and
//!   metrics.

pub mod config;
pub mod http;
pub mod ingest;
pub mod layers;
pub mod results;
pub mod server;
pub mod telemetry;

pub use config::Config;
pub use server::{ServeError, serve};
