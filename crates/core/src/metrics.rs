//! Metrics as data. A metric is a [`MetricDefinition`]: which outcomes are
//! measured per analysis unit ([`Measure`]) and how units aggregate
//! ([`MetricKind`]). The built-in catalogue is a list of such definitions,
//! and an experiment may add its own in `metrics.definitions`; results
//! computation reads both the same way, so a new metric of a known kind
//! needs no new code.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Kinds of outcome, as the event contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutcomeType {
    /// Items shown (`item_ids`).
    Impression,
    /// A click on an item.
    Click,
    /// An item added to the cart.
    AddToCart,
    /// A purchase (`value`).
    Purchase,
    /// A page viewed.
    PageView,
    /// A page load (`latency_ms`).
    PageLoad,
}

/// How a metric aggregates per-unit values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricKind {
    /// Share of units whose numerator lies within the success bounds
    /// (two-sample z-test).
    Proportion,
    /// Mean of a per-unit value (Welch's t-test).
    Mean,
    /// Sum of the numerator over the sum of the denominator (delta method).
    Ratio,
    /// Simpson concentration of item counts between units: the chance that
    /// two different units are shown the same item (grouped jackknife).
    Concentration,
}

/// What a measure sums per unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Aggregate {
    /// Number of outcomes.
    Count,
    /// Sum of `value`.
    ValueSum,
    /// Sum of `quantity`.
    QuantitySum,
    /// Sum of `latency_ms`.
    LatencySum,
    /// Items shown: `item_ids` of impressions, one per other outcome.
    ItemCount,
}

/// A per-unit quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Measure {
    /// Outcomes counted.
    pub outcome_type: OutcomeType,
    /// Only outcomes on recommended items.
    pub recommended_only: bool,
    /// What is summed.
    pub aggregate: Aggregate,
    /// Only outcomes on one of the experiment's placements, or attributed
    /// to one by their source placement.
    #[serde(default)]
    pub experiment_placements_only: bool,
}

/// One metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricDefinition {
    /// Name used in `primary_metric`, `secondary_metrics`, guardrails.
    pub name: String,
    /// One line for people.
    pub description: String,
    /// How units aggregate.
    pub kind: MetricKind,
    /// The per-unit quantity (success count, value, numerator, items).
    pub numerator: Measure,
    /// The denominator of a ratio.
    pub denominator: Option<Measure>,
    /// Whether a larger value is an improvement.
    pub higher_is_better: bool,
    /// Proportion: smallest numerator that counts as a success (≥ 1).
    pub success_at_least: u32,
    /// Proportion: largest numerator that counts as a success.
    pub success_at_most: Option<u32>,
}

impl MetricDefinition {
    /// Whether a unit whose numerator is `value` is a success (proportions).
    pub fn is_success(&self, value: f64) -> bool {
        value >= f64::from(self.success_at_least.max(1))
            && self
                .success_at_most
                .is_none_or(|most| value <= f64::from(most))
    }
}

/// The primary metric when an experiment names none.
pub const DEFAULT_PRIMARY_METRIC: &str = "add_to_cart_rate";

fn measure(outcome_type: OutcomeType, recommended_only: bool, aggregate: Aggregate) -> Measure {
    Measure {
        outcome_type,
        recommended_only,
        aggregate,
        experiment_placements_only: false,
    }
}

/// Recommended items on the experiment's own placements.
fn recommended_here(outcome_type: OutcomeType, aggregate: Aggregate) -> Measure {
    Measure {
        experiment_placements_only: true,
        ..measure(outcome_type, true, aggregate)
    }
}

fn definition(
    name: &str,
    description: &str,
    kind: MetricKind,
    numerator: Measure,
    denominator: Option<Measure>,
    higher_is_better: bool,
) -> MetricDefinition {
    MetricDefinition {
        name: name.to_owned(),
        description: description.to_owned(),
        kind,
        numerator,
        denominator,
        higher_is_better,
        success_at_least: 1,
        success_at_most: None,
    }
}

/// The built-in metrics, available to every experiment by name.
///
/// `bounce_rate` is the share of exposed units with exactly one page view
/// after exposure. `inventory_exposure_balance` is the Simpson
/// concentration of recommended-item impressions between units: the
/// chance that two different units are shown the same item (Σ p², 1/items
/// for an even spread over the catalogue, 1 when one item takes
/// everything). Its estimate does not depend on how many units an arm has,
/// so an uneven split cannot make the smaller arm look more concentrated,
/// as it did under the Gini coefficient it replaced, and it rises as a
/// variant piles impressions onto best sellers.
pub fn catalogue() -> &'static [MetricDefinition] {
    static CATALOGUE: OnceLock<Vec<MetricDefinition>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        use Aggregate::*;
        use MetricKind::*;
        use OutcomeType::*;
        vec![
            definition(
                "add_to_cart_rate",
                "share of exposed units with at least one add-to-cart",
                Proportion,
                measure(AddToCart, false, Count),
                None,
                true,
            ),
            definition(
                "ctr",
                "clicks on recommended items per recommended item shown, on the experiment's placements",
                Ratio,
                recommended_here(Click, Count),
                Some(recommended_here(Impression, ItemCount)),
                true,
            ),
            definition(
                "conversion_rate",
                "share of exposed units with at least one purchase",
                Proportion,
                measure(Purchase, false, Count),
                None,
                true,
            ),
            definition(
                "revenue_per_session",
                "purchase value in the experiment's currency per exposed unit",
                Mean,
                measure(Purchase, false, ValueSum),
                None,
                true,
            ),
            MetricDefinition {
                success_at_most: Some(1),
                ..definition(
                    "bounce_rate",
                    "share of exposed units with exactly one page view",
                    Proportion,
                    measure(PageView, false, Count),
                    None,
                    false,
                )
            },
            definition(
                "page_load_time",
                "mean page load latency in milliseconds, per page load",
                Ratio,
                measure(PageLoad, false, LatencySum),
                Some(measure(PageLoad, false, Count)),
                false,
            ),
            definition(
                "inventory_exposure_balance",
                "chance that two units are shown the same recommended item on the experiment's placements (Simpson concentration; lower = more even)",
                Concentration,
                recommended_here(Impression, ItemCount),
                None,
                false,
            ),
        ]
    })
}

/// The catalogue entry called `name`.
pub fn find(name: &str) -> Option<&'static MetricDefinition> {
    catalogue().iter().find(|metric| metric.name == name)
}

/// Catalogue names, for error messages.
pub fn names() -> Vec<&'static str> {
    catalogue()
        .iter()
        .map(|metric| metric.name.as_str())
        .collect()
}

/// The definition `name` resolves to for an experiment: its own
/// definitions first, then the catalogue.
pub fn resolve<'a>(
    definitions: &'a [MetricDefinition],
    name: &str,
) -> Option<&'a MetricDefinition> {
    definitions
        .iter()
        .find(|metric| metric.name == name)
        .or_else(|| find(name))
}
