//! The published test vectors, so a client in any language can prove it
//! buckets and assigns like this one:
//!
//! - `testdata/bucketing.json`: (salt, unit id) -> bucket, produced by an
//!   independent SipHash-2-4 in Python (`testdata/make_bucketing_vectors.py`);
//! - `testdata/assignments.json`: a whole serving config, requests, and the
//!   assignments expected. Regenerate it deliberately with
//!   `UPDATE_VECTORS=1 cargo test -p exp-core --test vectors` (a changed
//!   answer is a breaking change for every client).

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use exp_core::{
    Experiment, ParamSchema, QaOverride, UnitType, allocation,
    bucketing::bucket,
    evaluate::{CompiledSnapshot, RequestContext},
    examples::seed_experiment,
    lifecycle::{self, Change, Transition},
    serving::ServingConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");

#[derive(Deserialize)]
struct BucketingFile {
    vectors: Vec<BucketVector>,
}

#[derive(Deserialize)]
struct BucketVector {
    salt: String,
    unit_id: String,
    bucket: u32,
}

#[test]
fn buckets_match_the_independent_python_siphash_vectors() {
    let text =
        std::fs::read_to_string(format!("{TESTDATA}/bucketing.json")).expect("bucketing.json");
    let file: BucketingFile = serde_json::from_str(&text).expect("valid vectors");
    assert!(file.vectors.len() >= 40);
    for vector in file.vectors {
        assert_eq!(
            bucket(&vector.salt, &vector.unit_id),
            vector.bucket,
            "salt {:?}, unit {:?}",
            vector.salt,
            vector.unit_id
        );
    }
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct AssignmentVectors {
    description: String,
    now_unix_seconds: u64,
    config: ServingConfig,
    cases: Vec<Case>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Case {
    user_id: String,
    session_id: String,
    placement: String,
    country: String,
    device: String,
    attributes: HashMap<String, String>,
    assignments: Vec<Expected>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Expected {
    experiment_id: String,
    variant: String,
    reason: String,
    unit_type: String,
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn started(mut proposal: Experiment, others: &[Experiment]) -> Experiment {
    let change = Change {
        now: now(),
        author: "vectors",
        reason: "",
    };
    proposal.revision = 0;
    let draft = lifecycle::create(&proposal, &ParamSchema::builtin(), change).expect("valid");
    let mut running = lifecycle::transition(&draft, &Transition::Start, change).expect("start");
    allocation::allocate(&mut running, Some(&draft), others).expect("fits");
    running
}

/// The config the vectors are computed on: the seed at 30% in a layer it
/// shares with a 40% model test; an independent 80/10/10 diversity test
/// everywhere for logged-in US users on app >= 5.2.0; a stopped experiment
/// that shipped a variant; QA overrides.
fn vector_config() -> ServingConfig {
    let mut seed = seed_experiment();
    seed.traffic_percent = 30;
    let seed = started(seed, &[]);

    let mut model = seed_experiment();
    model.id = "ymal_model_v4".into();
    model.traffic_percent = 40;
    model.variants[1].params = serde_json::from_value(json!({"model_version": "v4"})).expect("map");
    let model = started(model, std::slice::from_ref(&seed));

    let mut diversity = seed_experiment();
    diversity.id = "diversity_caps".into();
    diversity.layer = "diversity".into();
    diversity.traffic_percent = 100;
    diversity.eligibility.placements.clear();
    diversity.eligibility.countries = vec!["US".into()];
    diversity.eligibility.logged_in = exp_core::LoggedIn::LoggedIn;
    diversity.eligibility.attribute_rules = vec![exp_core::AttributeRule {
        attribute: "app_version".into(),
        operator: Some(exp_core::AttributeOperator::SemverGreaterThanOrEqual),
        values: vec!["5.2.0".into()],
    }];
    diversity.variants = ["control", "brand_cap_3", "color_cap_2"]
        .iter()
        .zip([80, 10, 10])
        .map(|(name, weight)| exp_core::Variant {
            name: (*name).into(),
            description: String::new(),
            weight,
            params: match *name {
                "brand_cap_3" => {
                    serde_json::from_value(json!({"diversity_max_per_brand": 3})).expect("map")
                }
                "color_cap_2" => {
                    serde_json::from_value(json!({"diversity_max_per_color": 2})).expect("map")
                }
                _ => Default::default(),
            },
        })
        .collect();
    let diversity = started(diversity, &[]);

    let mut pool = seed_experiment();
    pool.id = "cart_pool".into();
    pool.layer = "cart".into();
    pool.eligibility.placements = vec!["cart".into()];
    pool.variants[0].params =
        serde_json::from_value(json!({"candidate_pool": "same_category"})).expect("map");
    pool.variants[1].params =
        serde_json::from_value(json!({"candidate_pool": "cross_category"})).expect("map");
    let pool = lifecycle::transition(
        &started(pool, &[]),
        &Transition::Stop {
            ship_variant: Some("treatment".into()),
        },
        Change {
            now: now(),
            author: "vectors",
            reason: "cross-category wins",
        },
    )
    .expect("stop");

    let overrides = vec![
        QaOverride {
            experiment_id: "reco_ymal_v1".into(),
            unit_type: UnitType::User,
            unit_id: "qa-user-1".into(),
            variant: "treatment".into(),
            expire_time: None,
            reason: "QA".into(),
            create_time: now(),
            created_by: "qa@example.com".into(),
        },
        QaOverride {
            experiment_id: "diversity_caps".into(),
            unit_type: UnitType::Session,
            unit_id: "qa-session-1".into(),
            variant: "color_cap_2".into(),
            expire_time: Some(now() - Duration::from_secs(1)),
            reason: "expired".into(),
            create_time: now(),
            created_by: "qa@example.com".into(),
        },
    ];
    // The expired override is dropped by `build`, as the server does.
    ServingConfig::build(42, &[seed, model, diversity, pool], &overrides, now())
}

fn requests() -> Vec<Case> {
    let mut cases = Vec::new();
    let contexts = [
        ("you_may_also_like", "US", "mobile", Some("5.3.0")),
        ("you_may_also_like", "GB", "desktop", None),
        ("cart", "US", "mobile", Some("5.1.0")),
        ("home", "US", "tablet", Some("6.0.0")),
    ];
    for index in 0..40 {
        let (placement, country, device, app) = contexts[index % contexts.len()];
        let user_id = if index % 3 == 2 {
            String::new()
        } else {
            format!("u-{}", 1000 + index * 37)
        };
        cases.push(Case {
            user_id,
            session_id: format!("s-{:04x}", index * 7919),
            placement: placement.into(),
            country: country.into(),
            device: device.into(),
            attributes: app
                .map(|v| HashMap::from([("app_version".to_owned(), v.to_owned())]))
                .unwrap_or_default(),
            assignments: Vec::new(),
        });
    }
    cases.push(Case {
        user_id: "qa-user-1".into(),
        session_id: "qa-session-1".into(),
        placement: "you_may_also_like".into(),
        country: "US".into(),
        device: "mobile".into(),
        attributes: HashMap::from([("app_version".to_owned(), "5.2.0".to_owned())]),
        assignments: Vec::new(),
    });
    cases
}

fn expected(snapshot: &CompiledSnapshot, case: &Case) -> Vec<Expected> {
    let context = RequestContext {
        page_type: String::new(),
        placement: case.placement.clone(),
        country: case.country.clone(),
        device: case.device.clone(),
        attributes: case.attributes.clone(),
    };
    snapshot
        .evaluate(&case.user_id, &case.session_id, &context, now())
        .expect("valid request")
        .assignments
        .into_iter()
        .map(|a| Expected {
            experiment_id: a.experiment_id.to_string(),
            variant: a.variant.to_string(),
            reason: a.reason.as_str().into(),
            unit_type: a.unit_type.as_str().into(),
        })
        .collect()
}

#[test]
fn assignments_match_the_published_vectors() {
    let path = format!("{TESTDATA}/assignments.json");
    let config = vector_config();
    let snapshot = CompiledSnapshot::compile(&config);
    let mut cases = requests();
    for case in &mut cases {
        case.assignments = expected(&snapshot, case);
    }
    let computed = AssignmentVectors {
        description: "Serving config (expd's serde form of ServingConfig), requests evaluated at \
                      now_unix_seconds, and the assignments expected, in (layer, id) order."
            .into(),
        now_unix_seconds: 1_800_000_000,
        config,
        cases,
    };
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&computed).expect("encode");
        std::fs::write(&path, text + "\n").expect("write vectors");
    }
    let text =
        std::fs::read_to_string(&path).expect("assignments.json (UPDATE_VECTORS=1 writes it)");
    let published: AssignmentVectors = serde_json::from_str(&text).expect("valid vectors");
    // Evaluate the published config itself, as a client in another
    // language would, and compare with the published answers.
    let republished = CompiledSnapshot::compile(&published.config);
    for case in &published.cases {
        assert_eq!(
            expected(&republished, case),
            case.assignments,
            "{:?}",
            case.user_id
        );
    }
    assert_eq!(
        published, computed,
        "the published vectors are the current behaviour"
    );
    let reasons: Vec<&str> = published
        .cases
        .iter()
        .flat_map(|c| c.assignments.iter().map(|a| a.reason.as_str()))
        .collect();
    for reason in ["bucketed", "override", "shipped"] {
        assert!(reasons.contains(&reason), "the vectors exercise {reason}");
    }
}
