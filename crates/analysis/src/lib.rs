//! Results of experiments: metrics defined as data, per-unit aggregates
//! kept as events arrive, and the statistics analysts and the guardrail
//! monitor read. Domain only: no gRPC, no storage. Events come in as the
//! domain's [`exp_core::event::Event`]s.
//!
//! | Module | Role |
//! |---|---|
//! | [`analyzer`] | routes every exposure and outcome to the units of every experiment it concerns |
//! | [`experiment`] | the state of one experiment: units, per-unit sums, item tables, sanity counters |
//! | [`recent`] | the window of recent outcomes, replayed into units exposed after them |
//! | [`report`] | per-variant results from that state: values, comparisons, Holm, SRM, sanity checks, guardrail states |
//! | [`stats`] | the tests themselves (z, Welch, delta method, jackknife, Holm, chi-square, mSPRT), checked against scipy |

pub mod analyzer;
pub mod experiment;
pub mod recent;
pub mod report;
pub mod stats;

pub use analyzer::{Analyzer, Catalog, Refresh, Unattributed};
pub use experiment::{JACKKNIFE_GROUPS, Role};
pub use recent::RECENT_OUTCOMES;
pub use report::{GuardrailState, Report};
