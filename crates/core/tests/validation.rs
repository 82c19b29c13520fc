//! Every validation rule, each shown refusing with its field path, and the
//! seed's example shown passing.

use std::time::{Duration, SystemTime};

use exp_core::{
    AttributeOperator, AttributeRule, Experiment, FieldViolation, Guardrail, GuardrailAction,
    MultipleComparisonCorrection, ParamSchema, QaOverride, UnitType,
    examples::seed_experiment,
    metrics::{self, Aggregate, MetricDefinition, MetricKind},
    validate,
};
use serde_json::json;

fn violations(experiment: &Experiment) -> Vec<FieldViolation> {
    validate::experiment(experiment, &ParamSchema::builtin())
}

fn fields(experiment: &Experiment) -> Vec<String> {
    violations(experiment)
        .into_iter()
        .map(|v| v.field)
        .collect()
}

fn assert_refuses(experiment: &Experiment, field: &str) {
    let found = violations(experiment);
    assert!(
        found.iter().any(|v| v.field == field),
        "expected a violation of {field}, got {found:?}"
    );
}

#[test]
fn seed_example_with_its_params_is_valid_under_the_builtin_schema() {
    assert_eq!(violations(&seed_experiment()), []);
}

#[test]
fn id_must_be_a_lowercase_slug_of_3_to_64_characters() {
    for bad in ["Bad Id", "ab", "1abc", "reco.ymal", &"a".repeat(65), ""] {
        let mut e = seed_experiment();
        e.id = bad.into();
        assert_refuses(&e, "id");
    }
    for good in ["abc", "reco_ymal_v1", "reco-ymal-2"] {
        let mut e = seed_experiment();
        e.id = good.into();
        assert_eq!(fields(&e), Vec::<String>::new(), "{good}");
    }
}

#[test]
fn name_hypothesis_and_owner_are_required() {
    let mut e = seed_experiment();
    e.name = " ".into();
    e.hypothesis.clear();
    e.owner.clear();
    assert_eq!(fields(&e), ["name", "hypothesis", "owner"]);
}

#[test]
fn long_texts_are_refused() {
    let mut e = seed_experiment();
    e.name = "n".repeat(201);
    e.description = "d".repeat(5001);
    assert_eq!(fields(&e), ["name", "description"]);
}

#[test]
fn layer_is_empty_or_a_slug() {
    let mut e = seed_experiment();
    e.layer = "Not A Layer".into();
    assert_refuses(&e, "layer");
    e.layer.clear();
    assert_eq!(fields(&e), Vec::<String>::new());
    assert_eq!(e.effective_layer(), "reco_ymal_v1");
}

#[test]
fn an_experiment_needs_at_least_two_variants() {
    let mut e = seed_experiment();
    e.variants.truncate(1);
    e.variants[0].weight = 100;
    assert_eq!(fields(&e), ["variants"]);
}

#[test]
fn variant_names_are_unique_slugs() {
    let mut e = seed_experiment();
    e.variants[1].name = "control".into();
    assert_eq!(fields(&e), ["variants[1].name"]);
    let mut e = seed_experiment();
    e.variants[1].name = "Treatment A".into();
    assert_refuses(&e, "variants[1].name");
}

#[test]
fn weights_are_percentages_summing_to_100() {
    let mut e = seed_experiment();
    e.variants[1].weight = 40;
    let found = violations(&e);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].field, "variants");
    assert!(
        found[0].description.contains("sum to 90"),
        "{}",
        found[0].description
    );

    let mut e = seed_experiment();
    e.variants[0].weight = 150;
    assert_refuses(&e, "variants[0].weight");
}

#[test]
fn control_variant_must_name_a_variant() {
    let mut e = seed_experiment();
    e.control_variant = "baseline".into();
    assert_eq!(fields(&e), ["control_variant"]);
    e.control_variant.clear();
    assert_eq!(fields(&e), ["control_variant"]);
}

#[test]
fn traffic_percent_is_between_0_and_100() {
    let mut e = seed_experiment();
    e.traffic_percent = 101;
    assert_eq!(fields(&e), ["traffic_percent"]);
    e.traffic_percent = 0;
    assert_eq!(fields(&e), Vec::<String>::new());
    e.traffic_percent = 100;
    assert_eq!(fields(&e), Vec::<String>::new());
}

#[test]
fn end_time_must_be_after_start_time() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut e = seed_experiment();
    e.schedule.start_time = Some(start);
    e.schedule.end_time = Some(start);
    assert_eq!(fields(&e), ["schedule.end_time"]);
    e.schedule.end_time = Some(start + Duration::from_secs(1));
    assert_eq!(fields(&e), Vec::<String>::new());
}

#[test]
fn eligibility_lists_are_checked_item_by_item() {
    let mut e = seed_experiment();
    e.eligibility.placements = vec!["pdp".into(), "Home Page".into()];
    e.eligibility.page_types = vec!["".into()];
    e.eligibility.countries = vec!["US".into(), "usa".into()];
    e.eligibility.devices = vec!["mobile".into(), "MOBILE".into()];
    assert_eq!(
        fields(&e),
        [
            "eligibility.placements[1]",
            "eligibility.page_types[0]",
            "eligibility.devices[1]",
            "eligibility.countries[1]"
        ]
    );
}

fn rule(operator: Option<AttributeOperator>, values: &[&str]) -> AttributeRule {
    AttributeRule {
        attribute: "app_version".into(),
        operator,
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

#[test]
fn attribute_rules_check_operator_operand_count_and_operand_syntax() {
    use AttributeOperator::*;
    let cases: &[(AttributeRule, Option<&str>)] = &[
        (
            rule(None, &["x"]),
            Some("eligibility.attribute_rules[0].operator"),
        ),
        (
            rule(Some(In), &[]),
            Some("eligibility.attribute_rules[0].values"),
        ),
        (rule(Some(In), &["a", "b"]), None),
        (rule(Some(NotIn), &["a"]), None),
        (
            rule(Some(Equals), &["a", "b"]),
            Some("eligibility.attribute_rules[0].values"),
        ),
        (rule(Some(NotEquals), &["a"]), None),
        (
            rule(Some(GreaterThan), &["abc"]),
            Some("eligibility.attribute_rules[0].values[0]"),
        ),
        (rule(Some(LessThanOrEqual), &["2.5"]), None),
        (
            rule(Some(GreaterThanOrEqual), &["NaN"]),
            Some("eligibility.attribute_rules[0].values[0]"),
        ),
        (
            rule(Some(SemverGreaterThanOrEqual), &["5.2"]),
            Some("eligibility.attribute_rules[0].values[0]"),
        ),
        (rule(Some(SemverLessThan), &["5.2.0"]), None),
        (
            rule(Some(RegexMatch), &["(unclosed"]),
            Some("eligibility.attribute_rules[0].values[0]"),
        ),
        (rule(Some(RegexMatch), &["^premium_(gold|silver)$"]), None),
    ];
    for (rule, expected) in cases {
        let mut e = seed_experiment();
        e.eligibility.attribute_rules = vec![rule.clone()];
        let found = fields(&e);
        match expected {
            Some(field) => assert_eq!(found, [*field], "{rule:?}"),
            None => assert!(found.is_empty(), "{rule:?}: {found:?}"),
        }
    }
    let mut e = seed_experiment();
    e.eligibility.attribute_rules = vec![rule(Some(RegexMatch), &[&"a".repeat(513)])];
    assert_eq!(fields(&e), ["eligibility.attribute_rules[0].values[0]"]);
    e.eligibility.attribute_rules = vec![AttributeRule {
        attribute: "has space".into(),
        ..rule(Some(Equals), &["x"])
    }];
    assert_eq!(fields(&e), ["eligibility.attribute_rules[0].attribute"]);
}

#[test]
fn metrics_must_come_from_the_catalogue_and_guardrails_need_threshold_and_action() {
    let mut e = seed_experiment();
    e.metrics.primary_metric = "happiness".into();
    e.metrics.secondary_metrics = vec!["ctr".into(), "clicks_total".into()];
    e.metrics.guardrails = vec![
        Guardrail {
            metric: "bounce_rate".into(),
            threshold: 0.05,
            action: Some(GuardrailAction::Stop),
        },
        Guardrail {
            metric: "latency".into(),
            threshold: -1.0,
            action: None,
        },
        Guardrail {
            metric: "bounce_rate".into(),
            threshold: 0.1,
            action: Some(GuardrailAction::Pause),
        },
    ];
    assert_eq!(
        fields(&e),
        [
            "metrics.primary_metric",
            "metrics.secondary_metrics[1]",
            "metrics.guardrails[1].metric",
            "metrics.guardrails[1].threshold",
            "metrics.guardrails[1].action",
            "metrics.guardrails[2].metric"
        ]
    );
    e.metrics.primary_metric.clear();
    e.metrics.secondary_metrics.truncate(1);
    e.metrics.guardrails.truncate(1);
    assert_eq!(
        fields(&e),
        Vec::<String>::new(),
        "empty primary means add_to_cart_rate"
    );
}

#[test]
fn the_metrics_currency_is_empty_for_usd_or_three_upper_case_letters() {
    for good in ["", "USD", "JPY", "EUR"] {
        let mut e = seed_experiment();
        e.metrics.currency = good.into();
        assert_eq!(fields(&e), Vec::<String>::new(), "{good:?}");
    }
    for bad in ["usd", "US", "USDT", "U$D", " USD"] {
        let mut e = seed_experiment();
        e.metrics.currency = bad.into();
        assert_eq!(fields(&e), ["metrics.currency"], "{bad:?}");
    }
    let mut e = seed_experiment();
    e.metrics.currency.clear();
    assert_eq!(e.metrics.effective_currency(), "USD");
}

#[test]
fn an_experiment_stored_before_the_currency_field_still_loads_with_usd() {
    let mut stored = serde_json::to_value(seed_experiment()).expect("serializable");
    stored["metrics"]
        .as_object_mut()
        .expect("an object")
        .remove("currency");
    let loaded: Experiment = serde_json::from_value(stored).expect("loads without the field");
    assert_eq!(loaded.metrics.currency, "");
    assert_eq!(loaded.metrics.effective_currency(), "USD");
}

#[test]
fn an_experiment_stored_before_sequential_and_its_correction_loads_fixed_horizon_with_holm() {
    let mut stored = serde_json::to_value(seed_experiment()).expect("serializable");
    let object = stored.as_object_mut().expect("an object");
    object.remove("sequential");
    object.remove("multiple_comparison_correction");
    let loaded: Experiment = serde_json::from_value(stored).expect("loads without the fields");
    assert!(!loaded.sequential);
    assert_eq!(
        loaded.multiple_comparison_correction,
        MultipleComparisonCorrection::Holm
    );
}

#[test]
fn an_experiment_stored_before_cuped_loads_with_it_on_over_14_days() {
    let mut stored = serde_json::to_value(seed_experiment()).expect("serializable");
    stored["metrics"]
        .as_object_mut()
        .expect("an object")
        .remove("cuped");
    let loaded: Experiment = serde_json::from_value(stored).expect("loads without the field");
    assert!(loaded.metrics.cuped.enabled);
    assert_eq!(loaded.metrics.cuped.pre_period_days, 14);
}

#[test]
fn an_experiment_stored_before_its_tuning_parameter_loads_with_5000_and_bad_values_are_refused() {
    let mut stored = serde_json::to_value(seed_experiment()).expect("serializable");
    stored
        .as_object_mut()
        .expect("an object")
        .remove("sequential_tuning_parameter");
    let loaded: Experiment = serde_json::from_value(stored).expect("loads without the field");
    assert_eq!(loaded.sequential_tuning_parameter, 5_000);
    for (value, valid) in [
        (0, false),
        (99, false),
        (100, true),
        (100_000_000, true),
        (100_000_001, false),
    ] {
        let mut e = seed_experiment();
        e.sequential_tuning_parameter = value;
        if valid {
            assert!(violations(&e).is_empty(), "{value}: {:?}", violations(&e));
        } else {
            assert_refuses(&e, "sequential_tuning_parameter");
        }
    }
}

#[test]
fn the_cuped_pre_period_is_1_to_28_days() {
    for (days, valid) in [(0, false), (1, true), (14, true), (28, true), (29, false)] {
        let mut e = seed_experiment();
        e.metrics.cuped.pre_period_days = days;
        if valid {
            assert!(
                violations(&e).is_empty(),
                "{days} days: {:?}",
                violations(&e)
            );
        } else {
            assert_refuses(&e, "metrics.cuped.pre_period_days");
        }
    }
}

#[test]
fn a_sequential_experiment_with_benjamini_hochberg_round_trips_stored_by_variant_name() {
    let mut e = seed_experiment();
    e.sequential = true;
    e.multiple_comparison_correction = MultipleComparisonCorrection::BenjaminiHochberg;
    let stored = serde_json::to_value(&e).expect("serializable");
    assert_eq!(stored["sequential"], json!(true));
    // The convention of every stored enum of the model, e.g. the status.
    assert_eq!(
        stored["multiple_comparison_correction"],
        json!("BenjaminiHochberg")
    );
    assert_eq!(stored["status"], json!("Draft"));
    let loaded: Experiment = serde_json::from_value(stored).expect("loads");
    assert_eq!(loaded, e);
}

#[test]
fn an_experiment_defines_its_own_metrics_as_data_and_bad_definitions_name_their_field() {
    let mut e = seed_experiment();
    let mut carts_per_unit = metrics::find("add_to_cart_rate")
        .expect("catalogue metric")
        .clone();
    carts_per_unit.name = "items_carted_per_unit".into();
    carts_per_unit.kind = MetricKind::Mean;
    carts_per_unit.numerator.aggregate = Aggregate::QuantitySum;
    e.metrics.definitions = vec![carts_per_unit.clone()];
    e.metrics.secondary_metrics = vec!["items_carted_per_unit".into()];
    e.metrics.guardrails = vec![Guardrail {
        metric: "items_carted_per_unit".into(),
        threshold: 0.1,
        action: Some(GuardrailAction::Pause),
    }];
    assert_eq!(fields(&e), Vec::<String>::new());

    let ratio_without_denominator = MetricDefinition {
        name: "carts_per_view".into(),
        kind: MetricKind::Ratio,
        ..carts_per_unit.clone()
    };
    let catalogue_name = MetricDefinition {
        name: "ctr".into(),
        ..carts_per_unit.clone()
    };
    let bad_bounds = MetricDefinition {
        name: "BadName".into(),
        kind: MetricKind::Proportion,
        success_at_least: 3,
        success_at_most: Some(2),
        ..carts_per_unit
    };
    let page_views_on_recommendations = MetricDefinition {
        name: "recommended_page_views".into(),
        kind: MetricKind::Concentration,
        description: "x".repeat(600),
        numerator: metrics::Measure {
            outcome_type: metrics::OutcomeType::PageView,
            recommended_only: true,
            aggregate: Aggregate::Count,
            experiment_placements_only: false,
        },
        ..bad_bounds.clone()
    };
    e.metrics.definitions = vec![
        ratio_without_denominator,
        catalogue_name,
        bad_bounds,
        MetricDefinition {
            success_at_least: 1,
            success_at_most: None,
            ..page_views_on_recommendations
        },
    ];
    e.metrics.secondary_metrics = vec!["carts_per_view".into()];
    e.metrics.guardrails.clear();
    assert_eq!(
        fields(&e),
        [
            "metrics.definitions[0].denominator",
            "metrics.definitions[1].name",
            "metrics.definitions[2].name",
            "metrics.definitions[2].success_at_most",
            "metrics.definitions[3].description",
            "metrics.definitions[3].numerator.recommended_only",
            "metrics.definitions[3].numerator",
        ]
    );
}

#[test]
fn params_are_checked_against_the_schema_with_their_path() {
    let mut e = seed_experiment();
    let params = &mut e.variants[1].params;
    params.insert("rerank_weight_price".into(), json!(1.5));
    params.insert("rerank_weight_style".into(), json!("high"));
    params.insert("candidate_pool".into(), json!("everything"));
    params.insert("diversity_max_per_brand".into(), json!(2.5));
    params.insert("personalisation".into(), json!("user_based"));
    params.insert("model_version".into(), json!("three"));
    let found = violations(&e);
    let paths: Vec<&str> = found.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        paths,
        [
            "variants[1].params.candidate_pool",
            "variants[1].params.diversity_max_per_brand",
            "variants[1].params.model_version",
            "variants[1].params.personalisation",
            "variants[1].params.rerank_weight_price",
            "variants[1].params.rerank_weight_style",
        ]
    );
    let described = |path: &str| {
        &found
            .iter()
            .find(|v| v.field == path)
            .expect("present")
            .description
    };
    assert!(
        described("variants[1].params.rerank_weight_price").contains("between 0 and 1, got 1.5")
    );
    assert!(described("variants[1].params.rerank_weight_style").contains("must be a number"));
    assert!(described("variants[1].params.personalisation").contains("unknown parameter"));
}

#[test]
fn a_hundred_thousand_unknown_params_are_listed_fifty_at_a_time_and_counted() {
    let mut e = seed_experiment();
    let params = &mut e.variants[1].params;
    for index in 0..100_000 {
        params.insert(format!("unknown_{index:06}"), json!(index));
    }
    let found = violations(&e);
    let params_found: Vec<_> = found
        .iter()
        .filter(|v| v.field.starts_with("variants[1].params"))
        .collect();
    assert_eq!(
        params_found.len(),
        exp_core::params::MAX_PARAM_VIOLATIONS + 1
    );
    let last = params_found.last().expect("the count");
    assert_eq!(last.field, "variants[1].params");
    assert!(
        last.description.contains(&format!(
            "and {} more",
            100_000 - exp_core::params::MAX_PARAM_VIOLATIONS
        )),
        "{}",
        last.description
    );
}

#[test]
fn every_builtin_knob_accepts_a_sensible_value() {
    let mut e = seed_experiment();
    e.variants[1].params = serde_json::from_value(json!({
        "model_version": "v3.1-canary",
        "rerank_weight_price": 0,
        "rerank_weight_style": 1,
        "rerank_weight_brand": 0.5,
        "rerank_weight_popularity": 0.1,
        "rerank_weight_recency": 0.2,
        "rerank_weight_similarity": 0.3,
        "candidate_pool": "cross_category",
        "candidate_pool_size": 500,
        "price_band": "loose",
        "diversity_max_per_brand": 3,
        "diversity_max_per_color": 4,
        "personalization": "item_only"
    }))
    .expect("object");
    assert_eq!(violations(&e), []);
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut e = seed_experiment();
    e.id = "Bad Id".into();
    e.variants[1].weight = 40;
    e.control_variant = "baseline".into();
    e.traffic_percent = 150;
    e.variants[1]
        .params
        .insert("rerank_weight_price".into(), json!(1.5));
    assert_eq!(
        fields(&e),
        [
            "id",
            "variants[1].params.rerank_weight_price",
            "variants",
            "control_variant",
            "traffic_percent"
        ]
    );
}

#[test]
fn a_schema_file_replaces_the_builtin_schema() {
    let schema = ParamSchema::from_json(
        r#"{"params": {
            "boost": {"type": "number", "min": 0, "max": 2},
            "slate_size": {"type": "integer", "min": 1, "max": 40},
            "enabled": {"type": "boolean"},
            "mode": {"type": "enum", "values": ["a", "b"]},
            "label": {"type": "string", "pattern": "[a-z]+"}
        }}"#,
    )
    .expect("valid schema");
    let mut e = seed_experiment();
    e.variants[0].params = serde_json::from_value(
        json!({"boost": 1.5, "slate_size": 12, "enabled": true, "mode": "b", "label": "abc"}),
    )
    .expect("object");
    e.variants[1].params =
        serde_json::from_value(json!({"model_version": "v3", "enabled": "yes", "label": "ABC"}))
            .expect("object");
    let found: Vec<String> = validate::experiment(&e, &schema)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        found,
        [
            "variants[1].params.enabled",
            "variants[1].params.label",
            "variants[1].params.model_version"
        ]
    );
}

#[test]
fn a_bad_schema_file_is_refused_with_paths() {
    let problems = ParamSchema::from_json(
        r#"{"params": {
            "w": {"type": "number", "min": 2, "max": 1},
            "p": {"type": "string", "pattern": "("},
            "e": {"type": "enum", "values": []},
            "Bad Key": {"type": "boolean"}
        }}"#,
    )
    .expect_err("refused");
    let paths: Vec<&str> = problems.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        paths,
        [
            "params.Bad Key",
            "params.e.values",
            "params.p.pattern",
            "params.w.max"
        ]
    );
    let unknown_type =
        ParamSchema::from_json(r#"{"params": {"w": {"type": "float"}}}"#).expect_err("refused");
    assert!(
        unknown_type[0].description.contains("float"),
        "{unknown_type:?}"
    );
}

#[test]
fn qa_overrides_need_a_real_variant_a_unit_id_and_a_future_expiry() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let experiment = seed_experiment();
    let good = QaOverride {
        experiment_id: experiment.id.clone(),
        unit_type: UnitType::User,
        unit_id: "qa-user-1".into(),
        variant: "treatment".into(),
        expire_time: Some(now + Duration::from_secs(60)),
        reason: String::new(),
        create_time: now,
        created_by: "alice".into(),
    };
    assert_eq!(validate::qa_override(&good, &experiment, now), []);
    let bad = QaOverride {
        unit_id: String::new(),
        variant: "nope".into(),
        expire_time: Some(now),
        ..good
    };
    let paths: Vec<String> = validate::qa_override(&bad, &experiment, now)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(paths, ["unit_id", "variant", "expire_time"]);
}

#[test]
fn lists_are_capped_so_one_experiment_cannot_exhaust_every_replica() {
    let mut e = seed_experiment();
    e.variants = (0..21)
        .map(|i| exp_core::Variant {
            name: format!("v{i}"),
            description: String::new(),
            weight: 0,
            params: Default::default(),
        })
        .collect();
    assert_refuses(&e, "variants");
    let mut e = seed_experiment();
    e.eligibility.attribute_rules = vec![rule(Some(AttributeOperator::Equals), &["x"]); 51];
    assert_eq!(fields(&e), ["eligibility.attribute_rules"]);
    let mut e = seed_experiment();
    e.eligibility.countries = vec!["US".into(); 2001];
    assert_eq!(fields(&e), ["eligibility.countries"]);
    let mut e = seed_experiment();
    e.eligibility.attribute_rules = vec![rule(Some(AttributeOperator::In), &vec!["x"; 1001])];
    assert_eq!(fields(&e), ["eligibility.attribute_rules[0].values"]);
}
