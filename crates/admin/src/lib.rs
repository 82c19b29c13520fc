//! Experiment management: the `AdminService` RPCs over the config store,
//! bearer-token roles, and the scheduler that starts and completes
//! experiments on time.
//!
//! # Layout
//!
//! - [`admin`]: [`Admin`], the use cases (create, update, lifecycle,
//!   rollback, overrides, listing) on domain types; each write runs the
//!   `exp_core` rules inside one store write.
//! - [`holdouts`]: the holdout use cases (create, get, list, update,
//!   end) on the same store; holdout and experiment ids share one
//!   namespace.
//! - [`auth`]: the tokens file, roles (viewer reads, editor changes) and
//!   the check of `authorization: Bearer` metadata.
//! - [`grpc`]: [`AdminGrpc`], the tonic service: authorises, converts at
//!   the edge, runs the use case, maps errors in one place.
//! - [`config`]: `ConfigService`: the serving config, rebuilt at every
//!   config version, once or streamed with deltas and heartbeats.
//! - [`scheduler`]: moves SCHEDULED experiments to RUNNING at their start
//!   time and RUNNING or PAUSED ones to COMPLETED at their end time.

pub mod admin;
pub mod auth;
pub mod config;
pub mod grpc;
pub mod holdouts;
pub mod scheduler;

pub use admin::Admin;
pub use auth::{Access, Authenticator, Principal, Role};
pub use config::{ConfigGrpc, ConfigPublisher};
pub use grpc::AdminGrpc;
