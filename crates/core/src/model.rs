//! The experiment resource and everything it holds. The same names as the
//! proto (`experiments.v1`), without its wire concerns: unset enums are
//! resolved to their defaults at the edge, times are `SystemTime`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Recommender parameters of a variant: a JSON object whose keys the
/// parameter schema checks. Example: `{"model_version": "v3"}`.
pub type Params = serde_json::Map<String, serde_json::Value>;

/// Number of allocation and variant buckets a unit hashes into.
pub const BUCKETS: u32 = 10_000;

/// A controlled experiment on the recommender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Immutable slug, e.g. `reco_ymal_v1`.
    pub id: String,
    /// Human-readable title.
    pub name: String,
    /// What changes for users.
    pub description: String,
    /// What the team expects and why.
    pub hypothesis: String,
    /// Accountable team or person.
    pub owner: String,
    /// Layer of mutually exclusive experiments; empty means its own.
    pub layer: String,
    /// The arms; weights sum to 100.
    pub variants: Vec<Variant>,
    /// Name of the control arm.
    pub control_variant: String,
    /// Share of eligible units that enter, 0 to 100.
    pub traffic_percent: u32,
    /// Which id is the unit.
    pub bucketing_unit: BucketingUnit,
    /// Who may enter.
    pub eligibility: Eligibility,
    /// When it runs.
    pub schedule: Schedule,
    /// Lifecycle status.
    pub status: Status,
    /// What it is judged on.
    pub metrics: MetricsConfig,
    /// Revision number of this state, from 1.
    pub revision: u64,
    /// When it was created.
    pub create_time: SystemTime,
    /// When this revision was written.
    pub update_time: SystemTime,
    /// Who wrote this revision.
    pub updated_by: String,
    /// Variant shipped to everyone after a stop, if any.
    pub shipped_variant: Option<String>,
    /// Why it is in its current status.
    pub status_reason: String,
    /// Hash salts, fixed at start; `None` before.
    pub randomization: Option<Randomization>,
    /// Allocation buckets this experiment holds in its layer, in the order
    /// they were taken; empty unless it holds traffic.
    #[serde(default)]
    pub allocation: Vec<BucketRange>,
    /// Whether results carry always-valid intervals and p-values (a
    /// confidence sequence) instead of fixed-horizon ones. Experiments
    /// stored before the field existed load with it false.
    #[serde(default)]
    pub sequential: bool,
    /// How the secondary metrics' p-values are adjusted for multiple
    /// comparisons. Experiments stored before the field existed load with
    /// Holm.
    #[serde(default)]
    pub multiple_comparison_correction: MultipleComparisonCorrection,
    /// N* of a sequential experiment's confidence sequences: the units
    /// (both arms together) at which they are narrowest relative to a
    /// fixed-horizon interval. Experiments stored before the field existed
    /// load with [`DEFAULT_SEQUENTIAL_TUNING_PARAMETER`].
    #[serde(default = "default_sequential_tuning_parameter")]
    pub sequential_tuning_parameter: u32,
}

/// N* of the confidence sequences unless an experiment says otherwise
/// (GrowthBook's default).
pub const DEFAULT_SEQUENTIAL_TUNING_PARAMETER: u32 = 5_000;

/// The range of N* an experiment may set.
pub const SEQUENTIAL_TUNING_PARAMETER_RANGE: std::ops::RangeInclusive<u32> = 100..=100_000_000;

fn default_sequential_tuning_parameter() -> u32 {
    DEFAULT_SEQUENTIAL_TUNING_PARAMETER
}

/// How the secondary metrics' p-values are adjusted for multiple
/// comparisons (the primary metric and the guardrails are always adjusted
/// by Holm over the treatments).
///
/// Stored by variant name (`"Holm"`, `"BenjaminiHochberg"`), as every
/// other enum of a stored experiment is (`"Running"`, `"UserOrSession"`):
/// renaming a variant changes the stored form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MultipleComparisonCorrection {
    /// Holm's step-down over each metric's treatments.
    #[default]
    Holm,
    /// Benjamini-Hochberg over every secondary metric and treatment.
    BenjaminiHochberg,
}

impl MultipleComparisonCorrection {
    /// Its name in results: `holm` or `benjamini_hochberg`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Holm => "holm",
            Self::BenjaminiHochberg => "benjamini_hochberg",
        }
    }
}

/// A half-open range `[start, end)` of allocation buckets in `0..BUCKETS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRange {
    /// First bucket.
    pub start: u32,
    /// One past the last bucket.
    pub end: u32,
}

impl BucketRange {
    /// Number of buckets in the range.
    pub fn len(self) -> u32 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no bucket.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Whether `bucket` is in the range.
    pub fn contains(self, bucket: u32) -> bool {
        (self.start..self.end).contains(&bucket)
    }
}

impl Experiment {
    /// The layer this experiment competes for traffic in: its own id when
    /// no layer is named.
    pub fn effective_layer(&self) -> &str {
        if self.layer.is_empty() {
            &self.id
        } else {
            &self.layer
        }
    }

    /// The variant called `name`, if any.
    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|variant| variant.name == name)
    }
}

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// Unique name within the experiment.
    pub name: String,
    /// What the arm does differently.
    pub description: String,
    /// Integer percent of the experiment's units.
    pub weight: u32,
    /// Parameter overrides.
    pub params: Params,
}

/// Which id decides a unit's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BucketingUnit {
    /// `user_id` when present, else `session_id`.
    #[default]
    UserOrSession,
    /// `user_id` only.
    User,
    /// `session_id` only.
    Session,
}

impl BucketingUnit {
    /// Which id a request with these ids is bucketed by: the rule of
    /// `Assign`, and of an exposure logged without its unit type. `None`
    /// when that id is empty (the request is not in the experiment).
    pub fn unit_type(self, user_id: &str, session_id: &str) -> Option<UnitType> {
        let unit_type = match self {
            Self::UserOrSession if !user_id.is_empty() => UnitType::User,
            Self::UserOrSession | Self::Session => UnitType::Session,
            Self::User => UnitType::User,
        };
        let id = match unit_type {
            UnitType::User => user_id,
            UnitType::Session => session_id,
        };
        (!id.is_empty()).then_some(unit_type)
    }
}

/// Which id a unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum UnitType {
    /// A logged-in user.
    User,
    /// A session.
    Session,
}

impl UnitType {
    /// Lower-case name, as in logs and store keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Session => "session",
        }
    }
}

/// Targeting rules; an empty list restricts nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Eligibility {
    /// Placements, any of.
    pub placements: Vec<String>,
    /// Page types, any of.
    pub page_types: Vec<String>,
    /// ISO country codes, any of.
    pub countries: Vec<String>,
    /// Device classes, any of.
    pub devices: Vec<String>,
    /// Logged-in requirement.
    pub logged_in: LoggedIn,
    /// Attribute rules, all of.
    pub attribute_rules: Vec<AttributeRule>,
}

/// Whether a request must be logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LoggedIn {
    /// Either.
    #[default]
    Any,
    /// Only requests with a user id.
    LoggedIn,
    /// Only requests without one.
    Anonymous,
}

/// A condition on one request attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeRule {
    /// Attribute key.
    pub attribute: String,
    /// Comparison; `None` when the input left it unset (refused by
    /// validation).
    pub operator: Option<AttributeOperator>,
    /// Operands.
    pub values: Vec<String>,
}

/// Comparison of an attribute rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttributeOperator {
    /// Equals one of the values.
    In,
    /// Equals none of the values.
    NotIn,
    /// Equals the value.
    Equals,
    /// Differs from the value.
    NotEquals,
    /// Numerically greater.
    GreaterThan,
    /// Numerically greater or equal.
    GreaterThanOrEqual,
    /// Numerically less.
    LessThan,
    /// Numerically less or equal.
    LessThanOrEqual,
    /// Semantic version equal.
    SemverEqual,
    /// Semantic version greater.
    SemverGreaterThan,
    /// Semantic version greater or equal.
    SemverGreaterThanOrEqual,
    /// Semantic version less.
    SemverLessThan,
    /// Semantic version less or equal.
    SemverLessThanOrEqual,
    /// Regular expression match.
    RegexMatch,
}

impl AttributeOperator {
    /// How many operands the operator takes: `None` for "one or more".
    pub fn operand_count(self) -> Option<usize> {
        match self {
            Self::In | Self::NotIn => None,
            _ => Some(1),
        }
    }

    /// Whether operands are numbers.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            Self::GreaterThan | Self::GreaterThanOrEqual | Self::LessThan | Self::LessThanOrEqual
        )
    }

    /// Whether operands are semantic versions.
    pub fn is_semver(self) -> bool {
        matches!(
            self,
            Self::SemverEqual
                | Self::SemverGreaterThan
                | Self::SemverGreaterThanOrEqual
                | Self::SemverLessThan
                | Self::SemverLessThanOrEqual
        )
    }
}

/// When an experiment runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Schedule {
    /// Start of serving; `None`: as soon as started.
    pub start_time: Option<SystemTime>,
    /// Automatic completion; `None`: until stopped.
    pub end_time: Option<SystemTime>,
}

/// Lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Status {
    /// Being written; serves nothing.
    #[default]
    Draft,
    /// Started, waiting for its start time.
    Scheduled,
    /// Serving.
    Running,
    /// Temporarily serving nothing.
    Paused,
    /// Ended early or by decision.
    Stopped,
    /// Ended at its end time.
    Completed,
    /// Read-only forever.
    Archived,
}

impl Status {
    /// Lower-case name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Completed => "completed",
            Self::Archived => "archived",
        }
    }

    /// Whether the experiment holds a share of its layer's traffic:
    /// scheduled, running or paused.
    pub fn holds_traffic(self) -> bool {
        matches!(self, Self::Scheduled | Self::Running | Self::Paused)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Hash salts of a started experiment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Randomization {
    /// Salt of "is the unit in?" (shared by the layer).
    pub allocation_salt: String,
    /// Salt of "which arm?".
    pub variant_salt: String,
}

/// What an experiment is judged on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MetricsConfig {
    /// Decision metric; empty means add-to-cart rate.
    pub primary_metric: String,
    /// Reported alongside.
    pub secondary_metrics: Vec<String>,
    /// Must not get worse.
    pub guardrails: Vec<Guardrail>,
    /// Metrics the experiment defines for itself.
    #[serde(default)]
    pub definitions: Vec<crate::metrics::MetricDefinition>,
    /// ISO 4217 code of the amounts its value metrics add up (revenue):
    /// only outcomes in this currency count for them. Empty means
    /// [`DEFAULT_CURRENCY`]; stored experiments written before the field
    /// existed load with it empty.
    #[serde(default)]
    pub currency: String,
    /// Variance reduction by the same measure before exposure (CUPED).
    /// Stored experiments written before the field existed load with it
    /// on, over [`DEFAULT_PRE_PERIOD_DAYS`].
    #[serde(default)]
    pub cuped: CupedConfig,
}

/// The currency of an experiment whose metrics config names none.
pub const DEFAULT_CURRENCY: &str = "USD";

/// Whole UTC days before a unit's first exposure whose outcomes make its
/// CUPED covariate, unless the experiment says otherwise.
pub const DEFAULT_PRE_PERIOD_DAYS: u32 = 14;

/// Longest pre-period an experiment may ask for: the days of outcomes the
/// analysis keeps per unit for covariates.
pub const MAX_PRE_PERIOD_DAYS: u32 = 28;

/// CUPED: each proportion and mean metric is also estimated adjusted for
/// the unit's value of the same metric over the whole UTC days before the
/// day of its first exposure (a regression on the arm and the centred
/// covariate, its coefficient pooled across arms). Ratio and concentration
/// metrics are not adjusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CupedConfig {
    /// Whether proportion and mean metrics are adjusted.
    pub enabled: bool,
    /// Days of the pre-period, 1 to [`MAX_PRE_PERIOD_DAYS`].
    pub pre_period_days: u32,
}

impl Default for CupedConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            pre_period_days: DEFAULT_PRE_PERIOD_DAYS,
        }
    }
}

impl MetricsConfig {
    /// The currency its value metrics count: `currency`, or
    /// [`DEFAULT_CURRENCY`] when empty.
    pub fn effective_currency(&self) -> &str {
        if self.currency.is_empty() {
            DEFAULT_CURRENCY
        } else {
            &self.currency
        }
    }
}

/// A metric a treatment must not degrade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guardrail {
    /// Catalogue metric name.
    pub metric: String,
    /// Tolerated relative degradation, as a fraction.
    pub threshold: f64,
    /// What a breach does; `None` when unset (refused by validation).
    pub action: Option<GuardrailAction>,
}

/// What a guardrail breach does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuardrailAction {
    /// Pause the experiment.
    Pause,
    /// Stop it.
    Stop,
}

/// A QA override: one unit forced into one variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QaOverride {
    /// The experiment.
    pub experiment_id: String,
    /// Which id `unit_id` is.
    pub unit_type: UnitType,
    /// The user or session id.
    pub unit_id: String,
    /// The variant forced.
    pub variant: String,
    /// When it stops applying.
    pub expire_time: Option<SystemTime>,
    /// Why it exists.
    pub reason: String,
    /// When it was set.
    pub create_time: SystemTime,
    /// Who set it.
    pub created_by: String,
}

impl QaOverride {
    /// Whether the override still applies at `now`.
    pub fn is_active_at(&self, now: SystemTime) -> bool {
        self.expire_time.is_none_or(|expiry| expiry > now)
    }
}

/// The kind of change that wrote a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevisionAction {
    /// Created.
    Create,
    /// Updated (including ramps).
    Update,
    /// Started or activated by the schedule.
    Start,
    /// Paused.
    Pause,
    /// Resumed.
    Resume,
    /// Stopped.
    Stop,
    /// Completed at its end time.
    Complete,
    /// Archived.
    Archive,
    /// Rolled back to an earlier configuration.
    Rollback,
}

/// One immutable revision of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    /// The experiment after the change; `experiment.revision` numbers it.
    pub experiment: Experiment,
    /// What the change was.
    pub action: RevisionAction,
    /// Who made it.
    pub author: String,
    /// Why.
    pub reason: String,
    /// For a rollback, the revision restored.
    pub rolled_back_to: Option<u64>,
}

impl Revision {
    /// The revision number.
    pub fn number(&self) -> u64 {
        self.experiment.revision
    }

    /// When it was written (the experiment's update time at that revision).
    pub fn written_at(&self) -> SystemTime {
        self.experiment.update_time
    }
}
