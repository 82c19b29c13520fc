//! Results of experiments: metrics defined as data, per-unit aggregates
//! kept as events arrive, and the statistics analysts and the guardrail
//! monitor read. Domain only: no gRPC, no storage.
//!
//! | Module | Role |
//! |---|---|
//! | [`analyzer`] | per-unit state of every experiment, fed exposure by exposure and outcome by outcome |
//! | [`report`] | per-variant results from that state: values, comparisons, Holm, SRM, sanity checks, guardrail states |
//! | [`stats`] | the tests themselves (z, Welch, delta method, jackknife, Holm, chi-square, mSPRT), checked against scipy |

pub mod analyzer;
pub mod report;
pub mod stats;

pub use analyzer::{Analyzer, Catalog, ExposureFact, OutcomeFact, Refresh, Role};
pub use report::{GuardrailState, Report};
