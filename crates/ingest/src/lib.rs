//! Event ingest: exposures and outcomes, acknowledged only once durable,
//! counted once per event id, rolled into Parquet for the warehouse.
//!
//! # Layout
//!
//! - [`event`]: the two event kinds, kept as their proto messages.
//! - [`validate`]: per-event rules and the experiment catalog exposures are
//!   checked against.
//! - [`dedup`]: event ids seen in the dedup window (at least 24 h).
//! - [`wal`]: log segments: framed, checksummed records; torn tails.
//! - [`log`]: [`EventLog`]: group commit, fsync before ack, pushback, the
//!   roller into Parquet, and a scan of everything held.
//! - [`parquet`]: hourly Hive-style partitions, the column schema, atomic
//!   file writes, reading files back.
//! - [`feed`]: exposures made by `Assign` in this process, batched into
//!   the log from a thread of their own.
//! - [`grpc`]: the `EventService` RPCs.
//! - [`yielding`]: background threads' share of the CPU, and yielding it
//!   to request handlers every 50 us of work.

pub mod dedup;
pub mod event;
pub mod feed;
pub mod grpc;
pub mod log;
pub mod parquet;
pub mod validate;
pub mod wal;
pub mod yielding;

pub use event::{Event, EventKind};
pub use feed::{ExposureBatcher, LogSlot};
pub use grpc::EventGrpc;
pub use log::{Batch, Committed, EventLog, LogError, LogOptions, Refused, Scan};
pub use validate::{Catalog, SharedCatalog};
pub use yielding::{Share, Yielder, set_background_share};
