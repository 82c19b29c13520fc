//! The `experiments.v1` protobuf contract for Rust: generated messages,
//! tonic clients and servers, the descriptor set for reflection, and the
//! edge between the wire and the domain.
//!
//! # Layout
//!
//! - [`v1`]: prost messages and tonic services generated from
//!   `proto/experiments/v1/*.proto` by `build.rs` (protox, no `protoc`).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, imports included,
//!   for `grpc.reflection`.
//! - [`convert`]: proto <-> domain conversions; input conversions report
//!   bad fields as [`exp_core::FieldViolation`]s.
//! - [`file`]: experiment files and printed resources as YAML or JSON in
//!   the protobuf JSON mapping with proto field names: `expctl`'s format,
//!   and the console's YAML pane.
//! - [`events`]: exposures and outcomes between the wire and the domain,
//!   and their wire encoding as the event log's record format.
//! - [`holdout`]: holdouts, the admin's resource and its serving form.
//! - [`serving`]: conversions of the serving config and of assignment
//!   answers.
//! - [`status`]: the one table of error codes, mapping [`exp_core::Error`]
//!   to a [`tonic::Status`] (with `google.rpc.BadRequest` details) and to
//!   an HTTP status and JSON body.

pub mod convert;
pub mod events;
pub mod file;
pub mod holdout;
pub mod serving;
pub mod status;

/// Generated code of package `experiments.v1`.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod v1 {
    tonic::include_proto!("experiments.v1");
}

/// The encoded `FileDescriptorSet` of `experiments.v1` and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/experiments_v1_descriptor.bin"));

pub use status::{ErrorCode, to_http, to_status};
