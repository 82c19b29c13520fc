//! Wire exposures and outcomes of every shape, and the catalog they name.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use exp_core::BucketingUnit;
use exp_ingest::validate::{Catalog, CatalogExperiment, MAX_FUTURE, MAX_PAST};
use exp_proto::v1;
use proptest::prelude::*;
use prost_types::Timestamp;

// === events ===

pub(crate) fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub(crate) fn catalog() -> Catalog {
    let experiment = |bucketing_unit| CatalogExperiment {
        variants: vec!["control".to_owned(), "treatment".to_owned()],
        bucketing_unit,
    };
    Catalog::new([
        (
            "reco_ymal_v1".to_owned(),
            experiment(BucketingUnit::UserOrSession),
        ),
        ("by_user".to_owned(), experiment(BucketingUnit::User)),
        ("by_session".to_owned(), experiment(BucketingUnit::Session)),
    ])
}

/// Anything a sender might put in a string: plausible, empty, random
/// characters (control characters too), or far too long.
pub(crate) fn text(plausible: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        40 => plausible,
        4 => Just(String::new()),
        3 => any::<String>(),
        1 => (120usize..140).prop_map(|n| "é".repeat(n)),
        1 => (250usize..270).prop_map(|n| "u".repeat(n)),
        1 => (1_000usize..70_000).prop_map(|n| "\u{1}".repeat(n)),
    ]
}

pub(crate) fn enum_number(known: i32) -> impl Strategy<Value = i32> {
    prop_oneof![18 => 0..known, 1 => Just(known), 1 => any::<i32>()]
}

/// A time near the server's clock, on either side of the window events
/// are taken in, or anywhere at all.
pub(crate) fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
    let window = (MAX_PAST + Duration::from_secs(3_600)).as_secs() as i64;
    let ahead = (MAX_FUTURE + Duration::from_secs(3_600)).as_secs() as i64;
    prop_oneof![
        12 => (-window..ahead, 0..1_000_000_000i32).prop_map(|(offset, nanos)| Some(Timestamp {
            seconds: 1_800_000_000 + offset,
            nanos,
        })),
        1 => Just(None),
        1 => (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Some(Timestamp { seconds, nanos })),
        1 => Just(Some(Timestamp { seconds: i64::MAX, nanos: i32::MAX })),
        1 => Just(Some(Timestamp { seconds: 1_800_000_000, nanos: -1 })),
    ]
}

pub(crate) fn exposure() -> impl Strategy<Value = v1::Exposure> {
    (
        (
            text("[a-z0-9-]{1,20}"),
            prop_oneof![
                6 => prop::sample::select(vec!["reco_ymal_v1", "by_user", "by_session"])
                    .prop_map(str::to_owned),
                1 => text("[a-z_]{3,12}"),
            ],
            prop_oneof![
                6 => prop::sample::select(vec!["control", "treatment"]).prop_map(str::to_owned),
                1 => text("[a-z]{1,9}"),
            ],
            text("u-[0-9]{1,6}"),
            text("s-[0-9a-f]{1,8}"),
        ),
        (
            enum_number(3),
            text("[a-z_]{1,20}"),
            text("[a-z_]{1,20}"),
            any::<u64>(),
            timestamp(),
        ),
    )
        .prop_map(
            |(
                (event_id, experiment_id, variant, user_id, session_id),
                (unit_type, placement, page_type, revision, timestamp),
            )| v1::Exposure {
                event_id,
                experiment_id,
                variant,
                user_id,
                session_id,
                unit_type,
                placement,
                page_type,
                revision,
                timestamp,
            },
        )
}

pub(crate) fn amount() -> impl Strategy<Value = f64> {
    prop_oneof![
        12 => 0.0..1_000.0f64,
        6 => Just(0.0),
        1 => any::<f64>(),
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, -0.0, -1.0, 600_000.5]),
    ]
}

pub(crate) fn outcome() -> impl Strategy<Value = v1::Outcome> {
    let items = prop_oneof![
        12 => prop::collection::vec(text("sku-[0-9]{1,5}"), 0..4),
        1 => Just(vec!["sku".to_owned(); 1_001]),
    ];
    let attributes = prop_oneof![
        12 => prop::collection::hash_map(text("[a-z_]{1,10}"), text("[a-z0-9]{0,10}"), 0..3),
        1 => Just((0..65).map(|i| (format!("k{i}"), String::new())).collect::<HashMap<_, _>>()),
    ];
    (
        (
            text("[a-z0-9-]{1,20}"),
            enum_number(7),
            text("u-[0-9]{1,6}"),
            text("s-[0-9a-f]{1,8}"),
            text("[a-z_]{1,20}"),
            text("[a-z_]{1,20}"),
            text("sku-[0-9]{1,5}"),
            items,
        ),
        (
            any::<bool>(),
            text("[a-z_]{1,20}"),
            amount(),
            prop_oneof![9 => "[A-Z]{3}".prop_map(String::from), 1 => text("[a-z]{3}")],
            prop_oneof![9 => 0u32..10, 1 => any::<u32>()],
            amount(),
            timestamp(),
            attributes,
        ),
    )
        .prop_map(
            |(
                (event_id, r#type, user_id, session_id, placement, page_type, item_id, item_ids),
                (
                    from_recommendation,
                    source_placement,
                    value,
                    currency,
                    quantity,
                    latency_ms,
                    timestamp,
                    attributes,
                ),
            )| v1::Outcome {
                event_id,
                r#type,
                user_id,
                session_id,
                placement,
                page_type,
                item_id,
                item_ids,
                from_recommendation,
                source_placement,
                value,
                currency,
                quantity,
                latency_ms,
                timestamp,
                attributes,
            },
        )
}
