//! The Rust SDK of the experiment service: assignment in process, in well
//! under a microsecond, with the very code the server runs.
//!
//! A [`Client`] follows `ConfigService/WatchConfigs` in the background
//! (reconnecting with backoff), keeps the compiled snapshot in memory,
//! optionally persists it as the last known good config and starts from it
//! when the service is unreachable, and answers [`Client::assign`] locally:
//! the same unit gets the same variant as from `AssignmentService/Assign`.
//!
//! # Layout
//!
//! - [`follower`]: [`ConfigFollower`], the WatchConfigs subscriber and its
//!   snapshot file; also used by `expd` in sidecar mode.
//! - [`snapshot`]: [`SnapshotCell`], the compiled snapshot behind an
//!   atomic pointer, kept on the latest followed config; also `expd`'s.
//! - [`client`]: [`Client`], local evaluation on the followed config.
//! - [`events`]: [`EventSender`], exposures and outcomes batched to
//!   `EventService` in the background, retried with backoff, flushed on
//!   close, optionally spooled to disk so a restart does not lose them.
//!
//! # Example
//!
//! ```no_run
//! use exp_client::{Client, ClientOptions};
//! use exp_core::evaluate::RequestContext;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::start(ClientOptions {
//!     endpoint: "http://127.0.0.1:50051".into(),
//!     placements: vec!["you_may_also_like".into()],
//!     snapshot_path: Some("/var/cache/rec/expd-config.pb".into()),
//!     ..ClientOptions::default()
//! })?;
//! client.wait_for_config(std::time::Duration::from_secs(5)).await?;
//!
//! let context = RequestContext {
//!     placement: "you_may_also_like".into(),
//!     page_type: "product_detail".into(),
//!     ..RequestContext::default()
//! };
//! let answer = client.assign("u-18224", "s-5f1c9a", &context)?;
//! let params = answer.params(); // e.g. {"model_version": "v3", ...}
//! # let _ = params;
//! # Ok(()) }
//! ```
//!
//! `examples/assign.rs` is the same program, runnable against a local
//! `expd`: `cargo run -p exp-client --example assign`.

pub mod client;
pub mod events;
pub mod follower;
pub mod snapshot;
mod token;

pub use client::{Client, ClientError, ClientOptions};
pub use events::{EventSender, EventSenderOptions, QueueFull, SpoolOptions};
pub use follower::{ConfigFollower, FollowerOptions};
pub use snapshot::SnapshotCell;
