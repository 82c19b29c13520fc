//! The config store: experiments, their immutable revisions, QA overrides,
//! holdouts and the global config version, on sled. Knows nothing of gRPC.
//!
//! # Layout
//!
//! - [`Store`]: opening, reads, and [`Store::write`], the one way to change
//!   anything: a closure reads through a [`WriteTxn`] and stages writes,
//!   which land atomically (one sled transaction across trees), are flushed
//!   to disk before `write` returns, and bump the global config version.
//! - [`Confirmed`]: what is on disk, the only state anyone reads. A write
//!   replaces it after its flush succeeded; a write the disk refused is
//!   never seen, and the store reopens sled to write again
//!   ([`Store::recover`], [`StoreHealth`]).
//! - The change feed: [`Store::subscribe`] hands out a `watch` receiver of
//!   the config version, so watchers wake on every committed change.
//!
//! # On-disk layout
//!
//! | tree | key | value |
//! |---|---|---|
//! | `experiments` | experiment id | current [`Experiment`], JSON |
//! | `revisions` | id, `0x00`, revision (u64 big-endian) | [`Revision`], JSON |
//! | `overrides` | experiment id, `0x00`, unit type, `0x00`, unit id | [`QaOverride`], JSON |
//! | `holdouts` | holdout id | current [`exp_core::Holdout`], JSON (its revision inside; no history) |
//! | `meta` | `config_version` | u64 big-endian |

mod store;

pub use store::{Confirmed, Store, StoreHealth, WriteTxn};
