//! Events for the crate's unit tests.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use exp_core::{
    UnitType,
    event::{Exposure, Outcome},
    metrics::OutcomeType,
};

/// A session's exposure to `reco_ymal_v1`'s treatment at `time`.
pub fn exposure(id: &str, time: SystemTime) -> Exposure {
    Exposure {
        event_id: id.into(),
        experiment_id: "reco_ymal_v1".into(),
        variant: "treatment".into(),
        user_id: String::new(),
        session_id: "s-1".into(),
        unit_type: UnitType::Session,
        placement: "you_may_also_like".into(),
        page_type: "product_detail".into(),
        revision: 3,
        timestamp: time,
    }
}

/// A fixed time: 2026-11-29T10:05:00Z.
pub fn ten_past_ten() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_946_700)
}

/// An outcome of `outcome_type` by session `session` at
/// [`ten_past_ten`], every other field empty.
pub fn outcome(id: &str, outcome_type: OutcomeType, session: &str) -> Outcome {
    Outcome {
        event_id: id.into(),
        outcome_type,
        user_id: String::new(),
        session_id: session.into(),
        placement: String::new(),
        page_type: String::new(),
        item_id: String::new(),
        item_ids: Vec::new(),
        from_recommendation: false,
        source_placement: String::new(),
        value: 0.0,
        currency: String::new(),
        quantity: 0,
        latency_ms: 0.0,
        timestamp: ten_past_ten(),
        attributes: BTreeMap::new(),
    }
}

/// A page view by `session`.
pub fn page_view(id: &str, session: &str) -> Outcome {
    outcome(id, OutcomeType::PageView, session)
}

/// A click on `sku-1` by session `s-1`.
pub fn click(id: &str) -> Outcome {
    Outcome {
        item_id: "sku-1".into(),
        ..outcome(id, OutcomeType::Click, "s-1")
    }
}

/// A purchase of two recommended items by user `u-1` at `time`.
pub fn purchase(id: &str, time: SystemTime) -> Outcome {
    Outcome {
        user_id: "u-1".into(),
        item_id: "sku-1".into(),
        item_ids: vec!["sku-1".into(), "sku-2".into()],
        from_recommendation: true,
        source_placement: "you_may_also_like".into(),
        value: 59.9,
        currency: "USD".into(),
        quantity: 2,
        timestamp: time,
        attributes: BTreeMap::from([("ab_debug".into(), "1".into()), ("k".into(), "v".into())]),
        ..outcome(id, OutcomeType::Purchase, "s-1")
    }
}
