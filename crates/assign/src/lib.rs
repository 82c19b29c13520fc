//! Real-time assignment for the rec service.
//!
//! # Layout
//!
//! - [`SnapshotCell`] (from `exp-client`): the compiled snapshot behind an
//!   atomic pointer: requests read it without a lock; a follower task swaps
//!   in a new one when the serving config changes (from the local admin, or
//!   from a remote one in sidecar mode).
//! - [`exposure`]: exposure records of bucketed assignments and of units'
//!   holdout groups (`holdout` or `rest`), offered to a bounded queue that
//!   never blocks a request, and the filter of repeats its consumers
//!   apply.
//! - [`feed`]: the stage that takes exposures from that queue, filters
//!   repeats and hands them to a sink (this process's event log, or the
//!   admin's `EventService`).
//! - [`grpc`]: the `AssignmentService/Assign` RPC.
//! - [`http`]: the seed's JSON API, `POST /experiments/assign`.
//! - [`ofrep`]: OpenFeature's Remote Evaluation Protocol: one experiment
//!   or all for a context, for any OpenFeature SDK's OFREP provider.

pub mod exposure;
pub mod feed;
pub mod grpc;
pub mod http;
pub mod ofrep;

pub use exp_client::SnapshotCell;
pub use exposure::{ExposureQueue, ExposureRecord, QueueCounters, RepeatFilter};
pub use grpc::{AssignError, AssignGrpc, Assigner, Evaluated};
