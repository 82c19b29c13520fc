//! The metric catalogue: the metrics an experiment may name as primary,
//! secondary or guardrail. Results computation reads the same entries.

/// How a metric aggregates per-unit data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Share of units with at least one event (e.g. add-to-cart rate).
    Proportion,
    /// Mean of a per-unit value (e.g. revenue per session).
    Mean,
    /// Sum of one per-unit quantity over the sum of another (e.g. CTR).
    Ratio,
}

/// One catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricDefinition {
    /// Name used in experiments, e.g. `add_to_cart_rate`.
    pub name: &'static str,
    /// How it aggregates.
    pub kind: MetricKind,
    /// Whether a larger value is an improvement; decides what a guardrail
    /// counts as "worse".
    pub higher_is_better: bool,
    /// One line for people.
    pub description: &'static str,
}

/// The primary metric when an experiment names none.
pub const DEFAULT_PRIMARY_METRIC: &str = "add_to_cart_rate";

/// Every metric an experiment may name.
pub const CATALOGUE: &[MetricDefinition] = &[
    MetricDefinition {
        name: "add_to_cart_rate",
        kind: MetricKind::Proportion,
        higher_is_better: true,
        description: "share of exposed units with at least one add-to-cart",
    },
    MetricDefinition {
        name: "ctr",
        kind: MetricKind::Ratio,
        higher_is_better: true,
        description: "clicks on recommended items per impression of them",
    },
    MetricDefinition {
        name: "conversion_rate",
        kind: MetricKind::Proportion,
        higher_is_better: true,
        description: "share of exposed units with at least one purchase",
    },
    MetricDefinition {
        name: "revenue_per_session",
        kind: MetricKind::Mean,
        higher_is_better: true,
        description: "purchase value per exposed unit",
    },
    MetricDefinition {
        name: "bounce_rate",
        kind: MetricKind::Proportion,
        higher_is_better: false,
        description: "share of exposed units with a single page view",
    },
    MetricDefinition {
        name: "page_load_time",
        kind: MetricKind::Ratio,
        higher_is_better: false,
        description: "mean page load latency in milliseconds",
    },
    MetricDefinition {
        name: "inventory_exposure_balance",
        kind: MetricKind::Mean,
        higher_is_better: false,
        description: "Gini coefficient of impressions across items (0 = even)",
    },
];

/// The catalogue entry called `name`.
pub fn find(name: &str) -> Option<&'static MetricDefinition> {
    CATALOGUE.iter().find(|metric| metric.name == name)
}

/// Catalogue names, for error messages.
pub fn names() -> Vec<&'static str> {
    CATALOGUE.iter().map(|metric| metric.name).collect()
}
