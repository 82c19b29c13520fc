//! Requests of an episode: the seed's example with fields mutated, and
//! the calls made on it.

use exp_proto::v1;
use proptest::prelude::*;
use prost_types::{ListValue, Struct, Timestamp, value::Kind};

// === mutations of the seed's example ===

/// A `google.protobuf.Value` of any kind: finite and non-finite numbers,
/// strings, nested lists and structs.
pub(crate) fn proto_value() -> impl Strategy<Value = prost_types::Value> {
    let leaf = prop_oneof![
        4 => (0.0..=1.0f64).prop_map(Kind::NumberValue),
        2 => any::<f64>().prop_map(Kind::NumberValue),
        1 => prop::sample::select(vec![f64::NAN, f64::INFINITY, -0.0, 1e300, 5.0])
            .prop_map(Kind::NumberValue),
        2 => text().prop_map(Kind::StringValue),
        1 => any::<bool>().prop_map(Kind::BoolValue),
        1 => Just(Kind::NullValue(0)),
    ]
    .prop_map(|kind| prost_types::Value { kind: Some(kind) });
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3)
                .prop_map(|values| Kind::ListValue(ListValue { values })),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..3)
                .prop_map(|fields| Kind::StructValue(Struct { fields })),
        ]
        .prop_map(|kind| prost_types::Value { kind: Some(kind) })
    })
}

/// Text: plausible words, random characters, empty, or huge.
pub(crate) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9_]{0,10}",
        2 => any::<String>(),
        1 => Just(String::new()),
        1 => prop::sample::select(vec!["control", "treatment", "you_may_also_like", "US", "v3"])
            .prop_map(str::to_owned),
        1 => (100usize..8_000).prop_map(|n| "é".repeat(n)),
    ]
}

/// An enum number: a known one or not.
pub(crate) fn enum_number(known: i32) -> impl Strategy<Value = i32> {
    prop_oneof![8 => 0..known, 1 => Just(known), 1 => any::<i32>()]
}

pub(crate) fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        6 => (-86_400i64 * 30..86_400 * 30)
            .prop_map(|offset| Timestamp { seconds: 1_800_000_000 + offset, nanos: 0 }),
        1 => (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }),
        1 => Just(Timestamp { seconds: -1, nanos: 0 }),
        1 => Just(Timestamp { seconds: i64::MAX, nanos: 999_999_999 }),
    ]
}

/// One change to an experiment message.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    Id(String),
    Text(usize, String),
    Layer(String),
    Variants(Vec<(String, u32)>),
    Weight(usize, u32),
    Param(usize, String, prost_types::Value),
    Control(String),
    Traffic(u32),
    BucketingUnit(i32),
    Targeting(usize, Vec<String>),
    LoggedIn(i32),
    Rule(String, i32, Vec<String>),
    Schedule(Option<Timestamp>, Option<Timestamp>),
    Metric(String),
    Guardrail(String, f64, i32),
    Definition(String, i32, i32, i32, Option<(i32, i32)>),
    Currency(String),
    OutputOnly(i32, u64, String),
}

pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    use Mutation::*;
    let param_key = prop_oneof![
        4 => prop::sample::select(vec![
            "model_version", "rerank_weight_price", "rerank_weight_style", "candidate_pool",
            "candidate_pool_size", "diversity_max_per_brand", "price_band", "personalization",
        ])
        .prop_map(str::to_owned),
        1 => text(),
    ];
    prop_oneof![
        (text()).prop_map(Id),
        (0usize..4, text()).prop_map(|(field, value)| Text(field, value)),
        prop_oneof![Just(String::new()), text()].prop_map(Layer),
        prop::collection::vec((text(), prop_oneof![0u32..=100, any::<u32>()]), 0..4)
            .prop_map(Variants),
        (0usize..3, prop_oneof![0u32..=100, any::<u32>()]).prop_map(|(i, w)| Weight(i, w)),
        (0usize..3, param_key, proto_value()).prop_map(|(i, k, v)| Param(i, k, v)),
        text().prop_map(Control),
        prop_oneof![0u32..=100, any::<u32>()].prop_map(Traffic),
        enum_number(4).prop_map(BucketingUnit),
        (0usize..4, prop::collection::vec(text(), 0..3)).prop_map(|(i, v)| Targeting(i, v)),
        enum_number(4).prop_map(LoggedIn),
        (
            text(),
            enum_number(15),
            prop::collection::vec(
                prop_oneof![
                    prop::sample::select(vec!["5.3.1", "3.5", "^a+$", "[", "gold"])
                        .prop_map(str::to_owned),
                    text(),
                ],
                0..3
            )
        )
            .prop_map(|(a, o, v)| Rule(a, o, v)),
        (prop::option::of(timestamp()), prop::option::of(timestamp()))
            .prop_map(|(start, end)| Schedule(start, end)),
        prop_oneof![Just("ctr".to_owned()), text()].prop_map(Metric),
        (
            prop_oneof![Just("page_load_time".to_owned()), text()],
            prop_oneof![0.0..=10.0f64, any::<f64>()],
            enum_number(3)
        )
            .prop_map(|(m, t, a)| Guardrail(m, t, a)),
        (
            text(),
            enum_number(5),
            enum_number(7),
            enum_number(6),
            prop::option::of((enum_number(7), enum_number(6)))
        )
            .prop_map(|(n, k, o, a, d)| Definition(n, k, o, a, d)),
        prop_oneof!["[A-Z]{3}".prop_map(String::from), text()].prop_map(Currency),
        (any::<i32>(), any::<u64>(), text()).prop_map(|(s, r, v)| OutputOnly(s, r, v)),
    ]
}

pub(crate) fn apply(experiment: &mut v1::Experiment, mutation: &Mutation) {
    use Mutation::*;
    let eligibility = experiment.eligibility.get_or_insert_with(Default::default);
    let metrics = experiment.metrics.get_or_insert_with(Default::default);
    match mutation.clone() {
        Id(id) => experiment.id = id,
        Text(0, value) => experiment.name = value,
        Text(1, value) => experiment.description = value,
        Text(2, value) => experiment.hypothesis = value,
        Text(_, value) => experiment.owner = value,
        Layer(layer) => experiment.layer = layer,
        Variants(variants) => {
            experiment.variants = variants
                .into_iter()
                .map(|(name, weight)| v1::Variant {
                    name,
                    weight,
                    ..Default::default()
                })
                .collect();
        }
        Weight(index, weight) => {
            if let Some(variant) = experiment.variants.get_mut(index) {
                variant.weight = weight;
            }
        }
        Param(index, key, value) => {
            if let Some(variant) = experiment.variants.get_mut(index) {
                variant
                    .params
                    .get_or_insert_with(Default::default)
                    .fields
                    .insert(key, value);
            }
        }
        Control(name) => experiment.control_variant = name,
        Traffic(percent) => experiment.traffic_percent = percent,
        BucketingUnit(unit) => experiment.bucketing_unit = unit,
        Targeting(0, values) => eligibility.placements = values,
        Targeting(1, values) => eligibility.page_types = values,
        Targeting(2, values) => eligibility.countries = values,
        Targeting(_, values) => eligibility.devices = values,
        LoggedIn(value) => eligibility.logged_in = value,
        Rule(attribute, operator, values) => eligibility.attribute_rules.push(v1::AttributeRule {
            attribute,
            operator,
            values,
        }),
        Schedule(start_time, end_time) => {
            experiment.schedule = Some(v1::Schedule {
                start_time,
                end_time,
            });
        }
        Metric(name) => metrics.secondary_metrics.push(name),
        Guardrail(metric, threshold, action) => metrics.guardrails.push(v1::Guardrail {
            metric,
            threshold,
            action,
        }),
        Definition(name, kind, outcome_type, aggregate, denominator) => {
            let measure = |outcome_type, aggregate| v1::Measure {
                outcome_type,
                aggregate,
                ..Default::default()
            };
            metrics.definitions.push(v1::MetricDefinition {
                name,
                kind,
                numerator: Some(measure(outcome_type, aggregate)),
                denominator: denominator.map(|(o, a)| measure(o, a)),
                ..Default::default()
            });
        }
        Currency(currency) => metrics.currency = currency,
        OutputOnly(status, revision, shipped) => {
            experiment.status = status;
            experiment.revision = revision;
            experiment.shipped_variant = shipped;
        }
    }
}

pub(crate) fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop_oneof![2 => Just(Vec::new()), 5 => prop::collection::vec(mutation(), 1..4)]
}

/// Which revision an edit says it is based on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Base {
    Current,
    Missing,
    Stale,
    Any(u64),
}

pub(crate) fn base() -> impl Strategy<Value = Base> {
    prop_oneof![
        12 => Just(Base::Current),
        1 => Just(Base::Missing),
        1 => Just(Base::Stale),
        1 => any::<u64>().prop_map(Base::Any),
    ]
}

pub(crate) fn mask() -> impl Strategy<Value = Vec<String>> {
    let path = prop_oneof![
        8 => prop::sample::select(exp_core::lifecycle::EDITABLE_FIELDS.to_vec()).prop_map(str::to_owned),
        1 => prop::sample::select(exp_core::lifecycle::OUTPUT_ONLY_FIELDS.to_vec()).prop_map(str::to_owned),
        1 => text(),
    ];
    prop_oneof![1 => Just(Vec::new()), 1 => prop::collection::vec(path, 1..4)]
}

/// One call of an episode.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Update {
        mutations: Vec<Mutation>,
        mask: Vec<String>,
        base: Base,
        rerandomize: bool,
    },
    Start(Base),
    Pause,
    Resume,
    Stop(String),
    Archive,
    Rollback(u64, bool),
    Override(i32, String, String, Option<Timestamp>),
}

pub(crate) fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (mutations(), mask(), base(), any::<bool>()).prop_map(
            |(mutations, mask, base, rerandomize)| Step::Update { mutations, mask, base, rerandomize }
        ),
        3 => base().prop_map(Step::Start),
        1 => Just(Step::Pause),
        1 => Just(Step::Resume),
        1 => prop_oneof![Just(String::new()), Just("treatment".to_owned()), text()].prop_map(Step::Stop),
        1 => Just(Step::Archive),
        1 => (prop_oneof![0u64..5, any::<u64>()], any::<bool>()).prop_map(|(to, r)| Step::Rollback(to, r)),
        2 => (
            enum_number(3),
            prop_oneof![Just("u-1".to_owned()), text()],
            prop_oneof![Just("treatment".to_owned()), text()],
            prop::option::of(timestamp()),
        )
            .prop_map(|(unit_type, unit, variant, expiry)| Step::Override(unit_type, unit, variant, expiry)),
    ]
}
