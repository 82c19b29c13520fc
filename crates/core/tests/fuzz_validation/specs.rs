//! Experiment specs and the requests evaluated against them.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use exp_core::{
    AttributeOperator, AttributeRule, BucketingUnit, Eligibility, Experiment, Guardrail,
    GuardrailAction, LoggedIn, MetricsConfig, Params, Schedule, Variant,
    evaluate::RequestContext,
    metrics::{self, Aggregate, Measure, MetricDefinition, MetricKind, OutcomeType},
};
use proptest::prelude::*;
use serde_json::{Number, Value};

// === vocabulary shared by experiments and requests, so requests match ===

pub(crate) const PLACEMENTS: &[&str] = &["you_may_also_like", "home", "search", "cart"];
pub(crate) const PAGE_TYPES: &[&str] = &["product_detail", "home", "search_results"];
pub(crate) const DEVICES: &[&str] = &["mobile", "desktop", "tablet"];
pub(crate) const COUNTRIES: &[&str] = &["US", "DE", "FR"];
pub(crate) const ATTRIBUTES: &[&str] = &["app_version", "tier", "score"];
pub(crate) const NUMBERS: &[&str] = &["3.5", "-2", "1e3", " 7 ", "0"];
pub(crate) const SEMVERS: &[&str] = &["5.3.1", "5.10.0", "0.0.1-rc.1", " 6.0.0 "];
pub(crate) const WORDS: &[&str] = &["gold", "ios", "", "5.3.1", "3.5"];
pub(crate) const REGEXES: &[&str] = &[
    "^5\\..*",
    "(a|b)*c",
    "ios|android",
    "[",
    "(?i)GOLD",
    "\\p{Greek}+",
    "a{1000}{1000}",
    "(a+)+$",
    ".*",
];

pub(crate) fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub(crate) fn pick(words: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(words).prop_map(str::to_owned)
}

/// Anything: random characters, and now and then a huge string.
pub(crate) fn junk() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        1 => (200usize..6_000).prop_map(|n| "x".repeat(n)),
        1 => Just(" ".to_owned()),
    ]
}

/// A valid value with probability 24/25, junk otherwise: a spec has a
/// few dozen such fields, and a fair share of specs must pass.
pub(crate) fn mostly(valid: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    prop_oneof![24 => valid, 1 => junk()].boxed()
}

pub(crate) fn slug() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{2,12}"
}

// === experiments ===

pub(crate) fn time() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        4 => (-86_400i64 * 30..86_400 * 30).prop_map(|offset| {
            let base = now();
            if offset >= 0 {
                base + Duration::from_secs(offset.unsigned_abs())
            } else {
                base - Duration::from_secs(offset.unsigned_abs())
            }
        }),
        1 => (0..=i64::MAX as u64).prop_map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs)),
        1 => Just(SystemTime::UNIX_EPOCH),
    ]
}

pub(crate) fn number(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// A JSON value of any type, nested a little.
pub(crate) fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(number),
        junk().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A parameter the built-in schema knows with a value of its type (any
/// float in range, so storage must keep every bit), or now and then
/// anything.
pub(crate) fn param() -> impl Strategy<Value = (String, Value)> {
    let valid = prop_oneof![
        (
            "rerank_weight_(price|style|brand|popularity|recency|similarity)",
            prop_oneof![8 => (0.0..=1.0f64).prop_map(number), 1 => Just(number(0.0)), 1 => Just(number(1.0))],
        ),
        (
            Just("model_version".to_owned()),
            "v[0-9]{1,3}(\\.[0-9]{1,2})?(-[a-z0-9]{1,6})?".prop_map(Value::String),
        ),
        (
            Just("candidate_pool_size".to_owned()),
            (10i64..=5_000).prop_map(Value::from)
        ),
        (
            "diversity_max_per_(brand|color)",
            (1i64..=50).prop_map(Value::from)
        ),
        (
            Just("candidate_pool".to_owned()),
            pick(&["same_category", "cross_category"]).prop_map(Value::String),
        ),
        (
            Just("price_band".to_owned()),
            pick(&["tight", "loose"]).prop_map(Value::String)
        ),
        (
            Just("personalization".to_owned()),
            pick(&["user_based", "item_only"]).prop_map(Value::String),
        ),
    ];
    let known_keys = pick(&[
        "rerank_weight_price",
        "model_version",
        "candidate_pool_size",
        "diversity_max_per_brand",
        "candidate_pool",
        "price_band",
    ]);
    prop_oneof![
        58 => valid,
        1 => (known_keys, any_json()),
        1 => (prop_oneof!["[a-z_]{1,12}".boxed(), junk().boxed()], any_json()),
    ]
}

pub(crate) fn params() -> impl Strategy<Value = Params> {
    prop::collection::vec(param(), 0..3).prop_map(|pairs| pairs.into_iter().collect())
}

/// Weights that sum to 100 over `count` variants most of the time.
pub(crate) fn weights(count: usize) -> BoxedStrategy<Vec<u32>> {
    let split =
        prop::collection::vec(0u32..=100, count.saturating_sub(1)).prop_map(move |mut cuts| {
            cuts.push(0);
            cuts.push(100);
            cuts.sort_unstable();
            cuts.windows(2)
                .map(|pair| pair[1] - pair[0])
                .collect::<Vec<u32>>()
        });
    prop_oneof![
        18 => split,
        1 => prop::collection::vec(0u32..=150, count),
        1 => prop::collection::vec(any::<u32>(), count),
    ]
    .boxed()
}

pub(crate) fn variants() -> impl Strategy<Value = Vec<Variant>> {
    prop_oneof![
        38 => 2usize..5,
        1 => 0usize..2,
        1 => 19usize..23,
    ]
    .prop_flat_map(|count| {
        let name = mostly(prop_oneof![
            "[a-z][a-z0-9_-]{0,10}".boxed(),
            pick(&["control", "treatment", "a", "b"]).boxed(),
        ]);
        (
            prop::collection::vec(name, count),
            weights(count),
            prop::collection::vec(params(), count),
            prop::collection::vec(prop_oneof![19 => Just(String::new()), 1 => junk()], count),
        )
    })
    .prop_map(|(names, weights, params, descriptions)| {
        // Distinct names most of the time: numbered after the first.
        names
            .into_iter()
            .zip(weights)
            .zip(params)
            .zip(descriptions)
            .enumerate()
            .map(|(index, (((name, weight), params), description))| Variant {
                name: if index > 0 && name.len() < 60 && !name.is_empty() {
                    format!("{name}{index}")
                } else {
                    name
                },
                description,
                weight,
                params,
            })
            .collect()
    })
}

pub(crate) fn operator() -> impl Strategy<Value = Option<AttributeOperator>> {
    use AttributeOperator::*;
    prop_oneof![
        39 => prop::sample::select(vec![
            In, NotIn, Equals, NotEquals, GreaterThan, GreaterThanOrEqual, LessThan,
            LessThanOrEqual, SemverEqual, SemverGreaterThan, SemverGreaterThanOrEqual,
            SemverLessThan, SemverLessThanOrEqual, RegexMatch,
        ])
        .prop_map(Some),
        1 => Just(None),
    ]
}

/// An operand of `operator`'s kind most of the time.
pub(crate) fn operand(operator: Option<AttributeOperator>) -> BoxedStrategy<String> {
    let fitting = match operator {
        Some(operator) if operator.is_numeric() => pick(NUMBERS),
        Some(operator) if operator.is_semver() => pick(SEMVERS),
        Some(AttributeOperator::RegexMatch) => pick(REGEXES),
        _ => pick(WORDS),
    };
    prop_oneof![
        18 => fitting,
        1 => prop_oneof![pick(NUMBERS), pick(SEMVERS), pick(REGEXES), pick(WORDS)],
        1 => junk(),
    ]
    .boxed()
}

pub(crate) fn attribute_rule() -> impl Strategy<Value = AttributeRule> {
    (mostly(pick(ATTRIBUTES)), operator())
        .prop_flat_map(|(attribute, operator)| {
            let count = match operator.and_then(AttributeOperator::operand_count) {
                Some(count) => prop_oneof![19 => Just(count), 1 => 0usize..3].boxed(),
                None => prop_oneof![19 => 1usize..4, 1 => Just(0usize)].boxed(),
            };
            (
                Just(attribute),
                Just(operator),
                count.prop_flat_map(move |n| prop::collection::vec(operand(operator), n)),
            )
        })
        .prop_map(|(attribute, operator, values)| AttributeRule {
            attribute,
            operator,
            values,
        })
}

pub(crate) fn eligibility() -> impl Strategy<Value = Eligibility> {
    // Most experiments restrict little: a request must pass every list.
    let list = |words: &'static [&'static str]| {
        prop_oneof![
            3 => Just(Vec::new()),
            2 => prop::collection::vec(mostly(pick(words)), 1..3),
        ]
    };
    (
        list(PLACEMENTS),
        list(PAGE_TYPES),
        list(COUNTRIES),
        list(DEVICES),
        prop::sample::select(vec![LoggedIn::Any, LoggedIn::LoggedIn, LoggedIn::Anonymous]),
        prop_oneof![
            3 => Just(Vec::new()),
            2 => prop::collection::vec(attribute_rule(), 1..3),
        ],
    )
        .prop_map(
            |(placements, page_types, countries, devices, logged_in, attribute_rules)| {
                Eligibility {
                    placements,
                    page_types,
                    countries,
                    devices,
                    logged_in,
                    attribute_rules,
                }
            },
        )
}

pub(crate) fn outcome_type() -> impl Strategy<Value = OutcomeType> {
    use OutcomeType::*;
    prop::sample::select(vec![
        Impression, Click, AddToCart, Purchase, PageView, PageLoad,
    ])
}

pub(crate) fn measure() -> impl Strategy<Value = Measure> {
    use Aggregate::*;
    (
        outcome_type(),
        any::<bool>(),
        prop::sample::select(vec![Count, ValueSum, QuantitySum, LatencySum, ItemCount]),
        any::<bool>(),
    )
        .prop_map(
            |(outcome_type, recommended_only, aggregate, experiment_placements_only)| Measure {
                outcome_type,
                recommended_only,
                aggregate,
                experiment_placements_only,
            },
        )
}

pub(crate) fn definition() -> impl Strategy<Value = MetricDefinition> {
    use MetricKind::*;
    (
        mostly("[a-z][a-z0-9_]{0,12}".boxed()),
        prop_oneof![9 => Just(String::new()), 1 => junk()],
        prop::sample::select(vec![Proportion, Mean, Ratio, Concentration]),
        measure(),
        prop::option::of(measure()),
        any::<bool>(),
        prop_oneof![9 => Just(1u32), 1 => any::<u32>()],
        prop::option::weighted(0.2, any::<u32>()),
    )
        .prop_map(
            |(name, description, kind, numerator, denominator, higher, least, most)| {
                MetricDefinition {
                    name,
                    description,
                    kind,
                    numerator,
                    denominator,
                    higher_is_better: higher,
                    success_at_least: least,
                    success_at_most: most,
                }
            },
        )
}

pub(crate) fn metric_name() -> BoxedStrategy<String> {
    mostly(prop::sample::select(metrics::names()).prop_map(str::to_owned))
}

pub(crate) fn metrics_config() -> impl Strategy<Value = MetricsConfig> {
    let guardrail = (
        metric_name(),
        prop_oneof![
            18 => 0.0..=10.0f64,
            1 => any::<f64>(),
            1 => Just(f64::NAN),
        ],
        prop::option::weighted(
            0.97,
            prop::sample::select(vec![GuardrailAction::Pause, GuardrailAction::Stop]),
        ),
    )
        .prop_map(|(metric, threshold, action)| Guardrail {
            metric,
            threshold,
            action,
        });
    (
        prop_oneof![2 => Just(String::new()), 8 => metric_name()],
        prop::collection::vec(metric_name(), 0..3),
        prop::collection::vec(guardrail, 0..3),
        prop_oneof![9 => Just(Vec::new()), 1 => prop::collection::vec(definition(), 1..3)],
        mostly(prop_oneof![Just(String::new()), "[A-Z]{3}".prop_map(String::from)].boxed()),
    )
        .prop_map(
            |(primary_metric, secondary_metrics, guardrails, definitions, currency)| {
                MetricsConfig {
                    primary_metric,
                    secondary_metrics,
                    guardrails,
                    definitions,
                    currency,
                    cuped: Default::default(),
                }
            },
        )
}

pub(crate) fn experiment() -> impl Strategy<Value = Experiment> {
    let texts = (
        mostly(slug().boxed()),
        mostly("[A-Za-z ]{1,30}".boxed()),
        mostly("[A-Za-z .,]{0,60}".boxed()),
        mostly("[A-Za-z .,]{1,60}".boxed()),
        mostly("[a-z.-]{1,20}@example\\.com".boxed()),
        prop_oneof![10 => Just(String::new()), 9 => slug().boxed(), 1 => junk().boxed()],
    );
    let shape = (
        variants(),
        prop_oneof![
            38 => Just(None),
            1 => Just(Some(String::new())),
            1 => junk().prop_map(Some),
        ],
        prop_oneof![
            14 => 0u32..=100,
            4 => Just(100u32),
            1 => Just(0u32),
            1 => any::<u32>()
        ],
        prop::sample::select(vec![
            BucketingUnit::UserOrSession,
            BucketingUnit::User,
            BucketingUnit::Session,
        ]),
        eligibility(),
        (
            prop::option::weighted(0.3, time()),
            prop::option::weighted(0.3, time()),
        ),
        metrics_config(),
    );
    (texts, shape).prop_map(
        |(
            (id, name, description, hypothesis, owner, layer),
            (variants, control, traffic_percent, bucketing_unit, eligibility, times, metrics),
        )| {
            // The control is the first variant unless the case says otherwise.
            let control_variant = control
                .or_else(|| variants.first().map(|variant| variant.name.clone()))
                .unwrap_or_default();
            Experiment {
                id,
                name,
                description,
                hypothesis,
                owner,
                layer,
                variants,
                control_variant,
                traffic_percent,
                bucketing_unit,
                eligibility,
                schedule: Schedule {
                    start_time: times.0,
                    end_time: times.1,
                },
                metrics,
                ..exp_core::examples::seed_experiment()
            }
        },
    )
}

// === requests ===

pub(crate) fn unit_id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        14 => "[a-z0-9-]{1,12}",
        2 => any::<String>(),
        1 => (257usize..400).prop_map(|n| "u".repeat(n)),
    ]
}

/// A request context, its fields most of the time among those
/// `eligibility` admits, so that requests get in.
pub(crate) fn context(eligibility: &Eligibility) -> impl Strategy<Value = RequestContext> + use<> {
    let field = |admitted: &[String], words: &'static [&'static str]| {
        let any = prop_oneof![
            14 => pick(words),
            3 => Just(String::new()),
            2 => any::<String>(),
            1 => (257usize..300).prop_map(|n| "p".repeat(n)),
        ];
        if admitted.is_empty() {
            any.boxed()
        } else {
            prop_oneof![9 => prop::sample::select(admitted.to_vec()), 1 => any].boxed()
        }
    };
    let value = || {
        prop_oneof![
            3 => pick(NUMBERS),
            3 => pick(SEMVERS),
            3 => pick(WORDS),
            1 => any::<String>()
        ]
    };
    // A value for each attribute a rule reads, often one of its operands.
    let ruled: Vec<BoxedStrategy<(String, String)>> = eligibility
        .attribute_rules
        .iter()
        .map(|rule| {
            let operand = if rule.values.is_empty() {
                value().boxed()
            } else {
                prop_oneof![3 => prop::sample::select(rule.values.clone()), 1 => value()].boxed()
            };
            (Just(rule.attribute.clone()), operand).boxed()
        })
        .collect();
    let others = prop::collection::hash_map(
        prop_oneof![9 => pick(ATTRIBUTES), 1 => any::<String>()],
        value(),
        0..3,
    );
    let attributes = (ruled, others).prop_map(|(ruled, mut attributes)| {
        attributes.extend(ruled);
        attributes
    });
    (
        field(&eligibility.page_types, PAGE_TYPES),
        field(&eligibility.placements, PLACEMENTS),
        field(&eligibility.countries, COUNTRIES),
        field(&eligibility.devices, DEVICES),
        prop_oneof![39 => attributes, 1 => Just(too_many_attributes())],
    )
        .prop_map(
            |(page_type, placement, country, device, attributes)| RequestContext {
                page_type,
                placement,
                country,
                device,
                attributes,
            },
        )
}

pub(crate) fn too_many_attributes() -> HashMap<String, String> {
    (0..100)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect()
}

/// A request: user id, session id, context.
pub(crate) type Request = (String, String, RequestContext);

pub(crate) fn requests(eligibility: &Eligibility) -> impl Strategy<Value = Vec<Request>> + use<> {
    prop::collection::vec((unit_id(), unit_id(), context(eligibility)), 2..10)
}

/// What happens to the experiment after it is started.
#[derive(Debug, Clone)]
pub(crate) enum Afterwards {
    KeepRunning,
    Pause,
    Stop(Option<String>),
}

pub(crate) fn afterwards() -> impl Strategy<Value = Afterwards> {
    prop_oneof![
        6 => Just(Afterwards::KeepRunning),
        1 => Just(Afterwards::Pause),
        1 => Just(Afterwards::Stop(None)),
        2 => prop_oneof![pick(&["control", "treatment"]), slug().boxed()]
            .prop_map(|name| Afterwards::Stop(Some(name))),
    ]
}
