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
//! - [`examples`]: the seed's example experiment, for docs, demos, tests.
//! - [`clock`]: injected time, so schedules are tested without sleeping.
//! - [`error`]: the one domain error type.

pub mod clock;
pub mod error;
pub mod examples;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod params;
pub mod validate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, FieldViolation};
pub use model::*;
pub use params::ParamSchema;
