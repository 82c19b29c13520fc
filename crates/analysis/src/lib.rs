//! Results of experiments: metrics defined as data, per-unit aggregates
//! kept as events arrive, and the statistics analysts and the guardrail
//! monitor read. Domain only: no gRPC, no storage. Events come in as the
//! domain's [`exp_core::event::Event`]s.
//!
//! | Module | Role |
//! |---|---|
//! | [`analyzer`] | routes every exposure and outcome to the units of every experiment it concerns |
//! | [`experiment`] | the state of one experiment: units, per-unit sums, item tables, sanity counters |
//! | [`preperiod`] | every user's outcomes of the last 28 UTC days, bounded, read into a unit's CUPED covariates when it is first exposed |
//! | [`recent`] | the window of recent outcomes, replayed into units exposed after them |
//! | [`report`] | results of an experiment from that state: per-variant results, SRM, sanity checks, guardrail states |
//! | [`results`] | per-variant values, comparisons (fixed-horizon or always-valid) and adjusted p-values (Holm, Benjamini-Hochberg) from sufficient statistics, for reports and timelines alike |
//! | [`timeline`] | results over time: snapshots at every UTC hour boundary of event time, read at any alpha |
//! | [`placement`] | units exposed on each placement over the last 24 hours, across experiments, in bounded hourly sketches |
//! | [`plan`] | units and days an experiment needs before launch (power and sample size) |
//! | [`stats`] | the tests themselves (z, Welch, delta method, jackknife, Holm, Benjamini-Hochberg, chi-square, confidence sequences, mSPRT), checked against scipy |

pub mod analyzer;
pub mod experiment;
pub mod placement;
pub mod plan;
pub mod preperiod;
pub mod recent;
pub mod report;
pub mod results;
pub mod stats;
pub mod timeline;

pub use analyzer::{Analyzer, Catalog, Refresh, Unattributed};
pub use experiment::{JACKKNIFE_GROUPS, Role};
pub use recent::RECENT_OUTCOMES;
pub use report::{GuardrailState, Report};
pub use results::{IntervalKind, Readout};
pub use timeline::{Granularity, Timeline};
