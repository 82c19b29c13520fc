//! Event ingest: exposures and outcomes, acknowledged only once durable,
//! counted once per event id, read back in order by cursors, rolled into
//! Parquet for the warehouse.
//!
//! # Layout
//!
//! - [`validate`]: per-event rules, the experiment catalog exposures are
//!   checked against, and the conversion of a valid wire event into its
//!   domain form ([`exp_core::event`]).
//! - [`batch`]: [`Batch`], events encoded for the log by their caller.
//! - [`log`]: [`EventLog`]: open and recovery, appends, the tip, pushback.
//! - [`writer`] and [`roller`] (private): the two threads that block on
//!   the disk: group commit with one fsync per group; sealed segments
//!   into Parquet.
//! - [`cursor`]: [`Cursor`], reading the log from the start or from a
//!   [`Position`], a bounded chunk at a time.
//! - [`position`]: [`Position`], where the log is.
//! - [`dedup`]: event ids seen in the dedup window (at least 24 h).
//! - [`wal`]: log segments: framed, checksummed records; torn tails.
//! - [`parquet`]: hourly Hive-style partitions, the column schema, atomic
//!   file writes, reading files back one record batch at a time.
//! - [`sink`]: the log as the destination of `Assign`'s exposures.
//! - [`grpc`]: the `EventService` RPCs, onto the log or the stream
//!   ([`EventDestination`]).
//! - [`jetstream`]: events on NATS JetStream past one machine: publishing,
//!   the writer role (the stream into the log, hence Parquet), and the
//!   stream read back in order.
//! - [`source`]: [`EventSource`], the log or the stream as results read
//!   it.

pub mod batch;
pub mod cursor;
pub mod dedup;
pub mod grpc;
pub mod jetstream;
pub mod log;
mod metrics;
pub mod parquet;
pub mod position;
mod roller;
pub mod sink;
pub mod source;
pub mod validate;
pub mod wal;
mod writer;

#[cfg(test)]
mod testing;

pub use batch::Batch;
pub use cursor::Cursor;
pub use grpc::{EventDestination, EventGrpc};
pub use log::{Appended, Behind, EventLog, LogError, LogOptions, Refused, Tip};
pub use position::Position;
pub use sink::{LogSink, LogSlot};
pub use source::{EventCursor, EventSource, OpenSource};
pub use validate::{Catalog, CatalogExperiment, SharedCatalog};
