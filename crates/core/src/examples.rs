//! Ready-made experiments: the seed's example, for documentation, demos
//! and tests.

use std::time::SystemTime;

use serde_json::json;

use crate::model::{
    BucketingUnit, Eligibility, Experiment, MetricsConfig, MultipleComparisonCorrection, Params,
    Schedule, Status, Variant,
};

/// The seed's example: `reco_ymal_v1` on placement `you_may_also_like`,
/// control on model v2 against v3 with price and style re-ranking, a
/// draft at 10% of traffic.
pub fn seed_experiment() -> Experiment {
    Experiment {
        id: "reco_ymal_v1".into(),
        name: "YMAL: model v3 with price and style re-ranking".into(),
        description: "You-may-also-like on product pages ranked by model v3".into(),
        hypothesis: "Re-ranking by style (0.6) and price (0.2) raises add-to-cart rate".into(),
        owner: "reco-team@example.com".into(),
        layer: "ymal_ranking".into(),
        variants: vec![
            variant("control", 50, json!({"model_version": "v2"})),
            variant(
                "treatment",
                50,
                json!({"model_version": "v3", "rerank_weight_price": 0.2, "rerank_weight_style": 0.6}),
            ),
        ],
        control_variant: "control".into(),
        traffic_percent: 10,
        bucketing_unit: BucketingUnit::UserOrSession,
        eligibility: Eligibility {
            placements: vec!["you_may_also_like".into()],
            ..Eligibility::default()
        },
        schedule: Schedule::default(),
        status: Status::Draft,
        metrics: MetricsConfig {
            primary_metric: "add_to_cart_rate".into(),
            secondary_metrics: vec![
                "ctr".into(),
                "conversion_rate".into(),
                "revenue_per_session".into(),
            ],
            guardrails: Vec::new(),
            definitions: Vec::new(),
            currency: "USD".into(),
            cuped: Default::default(),
        },
        revision: 0,
        create_time: SystemTime::UNIX_EPOCH,
        update_time: SystemTime::UNIX_EPOCH,
        updated_by: String::new(),
        shipped_variant: None,
        status_reason: String::new(),
        randomization: None,
        allocation: Vec::new(),
        sequential: false,
        multiple_comparison_correction: MultipleComparisonCorrection::Holm,
        sequential_tuning_parameter: crate::DEFAULT_SEQUENTIAL_TUNING_PARAMETER,
    }
}

fn variant(name: &str, weight: u32, params: serde_json::Value) -> Variant {
    let params: Params = match params {
        serde_json::Value::Object(map) => map,
        _ => Params::new(),
    };
    Variant {
        name: name.into(),
        description: String::new(),
        weight,
        params,
    }
}
