//! The experiment domain: what an experiment is, what makes one valid, and
//! how it may change. A pure library: no I/O, no tonic, no sled, so the
//! server, the store and the client SDK all share one set of rules.
//!
//! # Layout
//!
//! - [`model`]: the experiment resource, its variants, targeting, schedule,
//!   metrics, QA overrides and revisions.
//! - [`validate`]: every rule a stored experiment obeys, all problems
//!   reported at once as [`FieldViolation`]s with field paths.
//! - [`params`]: the parameter schema that variant params are checked
//!   against (built in, or loaded from a JSON file).
//! - [`metrics`]: the metric catalogue experiments may name.
//! - [`lifecycle`]: legal status transitions, the rules for what may change
//!   in each status, updates with field masks, rollback, layer capacity.
//! - [`holdout`]: holdouts, a share of units kept out of every experiment
//!   of some layers and placements: the resource, its rules and changes.
//! - [`examples`]: the seed's example experiment, for docs, demos, tests.
//! - [`bucketing`]: SipHash bucketing of units, the same in every language.
//! - [`allocation`]: which buckets of its layer an experiment holds, kept
//!   across ramps so no unit changes arm.
//! - [`serving`]: the serving config (what assignment needs), its deltas.
//! - [`evaluate`]: the compiled snapshot and `evaluate()`, shared by the
//!   server, sidecars and the client SDK.
//! - [`event`]: exposures and outcomes, the one form events have inside
//!   the service.
//! - [`clock`]: injected time, so schedules are tested without sleeping.
//! - [`digest`]: hash tables keyed by 128-bit digests, without hashing them again.
//! - [`error`]: the one domain error type.

pub mod allocation;
pub mod bucketing;
pub mod clock;
pub mod digest;
pub mod error;
pub mod evaluate;
pub mod event;
pub mod examples;
pub mod holdout;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod params;
pub mod serving;
pub mod validate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, FieldViolation};
pub use holdout::{Holdout, HoldoutStatus};
pub use model::*;
pub use params::ParamSchema;
