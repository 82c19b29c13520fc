//! Every rule a stored experiment obeys, checked together so a PM sees all
//! problems at once, each with its field path.

use std::{collections::HashMap, sync::LazyLock};

use regex::Regex;

use crate::{
    FieldViolation, ParamSchema,
    metrics::{self, Aggregate, MetricDefinition, MetricKind, OutcomeType},
    model::{AttributeRule, Eligibility, Experiment, MetricsConfig, QaOverride},
};

/// Longest description of a metric an experiment defines.
pub const MAX_METRIC_DESCRIPTION: usize = 512;

/// Longest regular expression an attribute rule may carry.
pub const MAX_REGEX_LEN: usize = 512;
/// Longest user or session id.
pub const MAX_UNIT_ID_LEN: usize = 256;
/// Most variants of an experiment.
pub const MAX_VARIANTS: usize = 20;
/// Most entries of each targeting list (placements, page types, ...).
pub const MAX_TARGETING_VALUES: usize = 2_000;
/// Most attribute rules of an experiment.
pub const MAX_ATTRIBUTE_RULES: usize = 50;
/// Most operands of one attribute rule.
pub const MAX_RULE_VALUES: usize = 1_000;
/// Most secondary metrics, and most guardrails.
pub const MAX_METRICS: usize = 20;
/// Compiled size limit of an attribute rule's regular expression.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;

#[allow(clippy::unwrap_used)] // constant patterns, exercised by every test
static EXPERIMENT_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[a-z][a-z0-9_-]{2,63}$").unwrap());
#[allow(clippy::unwrap_used)]
static VARIANT_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[a-z][a-z0-9_-]{0,63}$").unwrap());
#[allow(clippy::unwrap_used)]
static SLUG: LazyLock<Regex> = LazyLock::new(|| Regex::new("^[a-z0-9][a-z0-9_-]{0,63}$").unwrap());
#[allow(clippy::unwrap_used)]
static COUNTRY: LazyLock<Regex> = LazyLock::new(|| Regex::new("^[A-Z]{2}$").unwrap());
#[allow(clippy::unwrap_used)]
static ATTRIBUTE_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[A-Za-z0-9_.-]{1,64}$").unwrap());

/// Whether `id` is a well-formed experiment id.
pub fn is_experiment_id(id: &str) -> bool {
    EXPERIMENT_ID.is_match(id)
}

/// Whether `value` is a well-formed placement, page type or device.
pub fn is_slug(value: &str) -> bool {
    SLUG.is_match(value)
}

/// Checks everything about `experiment` that does not depend on other
/// experiments or on its history. Returns every violation found.
pub fn experiment(experiment: &Experiment, schema: &ParamSchema) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    if !EXPERIMENT_ID.is_match(&experiment.id) {
        out.push(FieldViolation::new(
            "id",
            format!(
                "{:?} is not a valid id: use 3 to 64 lowercase letters, digits, '_' or '-', starting with a letter (e.g. reco_ymal_v1)",
                experiment.id
            ),
        ));
    }
    text(&mut out, "name", &experiment.name, true, 200);
    let tuning = experiment.sequential_tuning_parameter;
    if !crate::SEQUENTIAL_TUNING_PARAMETER_RANGE.contains(&tuning) {
        out.push(FieldViolation::new(
            "sequential_tuning_parameter",
            format!(
                "must be {} to {} units (both arms together), got {tuning}",
                crate::SEQUENTIAL_TUNING_PARAMETER_RANGE.start(),
                crate::SEQUENTIAL_TUNING_PARAMETER_RANGE.end()
            ),
        ));
    }
    text(
        &mut out,
        "description",
        &experiment.description,
        false,
        5000,
    );
    text(&mut out, "hypothesis", &experiment.hypothesis, true, 5000);
    text(&mut out, "owner", &experiment.owner, true, 200);
    if !experiment.layer.is_empty() && !EXPERIMENT_ID.is_match(&experiment.layer) {
        out.push(FieldViolation::new(
            "layer",
            format!(
                "{:?} is not a valid layer: same format as an id, or empty for a layer of its own",
                experiment.layer
            ),
        ));
    }
    variants(&mut out, experiment, schema);
    if experiment.traffic_percent > 100 {
        out.push(FieldViolation::new(
            "traffic_percent",
            format!(
                "must be between 0 and 100, got {}",
                experiment.traffic_percent
            ),
        ));
    }
    if let (Some(start), Some(end)) = (experiment.schedule.start_time, experiment.schedule.end_time)
        && end <= start
    {
        out.push(FieldViolation::new(
            "schedule.end_time",
            "must be after schedule.start_time",
        ));
    }
    eligibility(&mut out, &experiment.eligibility);
    metrics_config(&mut out, &experiment.metrics);
    out
}

fn text(out: &mut Vec<FieldViolation>, field: &str, value: &str, required: bool, max: usize) {
    if required && value.trim().is_empty() {
        out.push(FieldViolation::new(field, "is required"));
    } else if value.chars().count() > max {
        out.push(FieldViolation::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
}

fn variants(out: &mut Vec<FieldViolation>, experiment: &Experiment, schema: &ParamSchema) {
    let variants = &experiment.variants;
    if variants.len() > MAX_VARIANTS {
        out.push(FieldViolation::new(
            "variants",
            format!("at most {MAX_VARIANTS} variants, got {}", variants.len()),
        ));
        return;
    }
    if variants.len() < 2 {
        out.push(FieldViolation::new(
            "variants",
            format!(
                "an experiment needs at least 2 variants (a control and a treatment), got {}",
                variants.len()
            ),
        ));
    }
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    let mut total_weight: u64 = 0;
    for (index, variant) in variants.iter().enumerate() {
        let path = format!("variants[{index}]");
        if !VARIANT_NAME.is_match(&variant.name) {
            out.push(FieldViolation::new(
                format!("{path}.name"),
                format!(
                    "{:?} is not a valid variant name: use 1 to 64 lowercase letters, digits, '_' or '-', starting with a letter",
                    variant.name
                ),
            ));
        }
        if let Some(first) = first_index.insert(&variant.name, index) {
            first_index.insert(&variant.name, first);
            out.push(FieldViolation::new(
                format!("{path}.name"),
                format!(
                    "{:?} is already the name of variants[{first}]",
                    variant.name
                ),
            ));
        }
        text(
            out,
            &format!("{path}.description"),
            &variant.description,
            false,
            1000,
        );
        if variant.weight > 100 {
            out.push(FieldViolation::new(
                format!("{path}.weight"),
                format!("must be between 0 and 100, got {}", variant.weight),
            ));
        }
        total_weight += u64::from(variant.weight);
        out.extend(schema.check(&variant.params, &format!("{path}.params")));
    }
    if !variants.is_empty() && total_weight != 100 {
        out.push(FieldViolation::new(
            "variants",
            format!("variant weights must sum to 100, they sum to {total_weight}"),
        ));
    }
    if experiment.control_variant.is_empty() {
        out.push(FieldViolation::new("control_variant", "is required"));
    } else if experiment.variant(&experiment.control_variant).is_none() {
        out.push(FieldViolation::new(
            "control_variant",
            format!(
                "{:?} is not one of the variants",
                experiment.control_variant
            ),
        ));
    }
}

fn eligibility(out: &mut Vec<FieldViolation>, eligibility: &Eligibility) {
    let slug_lists = [
        ("placements", &eligibility.placements),
        ("page_types", &eligibility.page_types),
        ("devices", &eligibility.devices),
    ];
    for (name, values) in slug_lists
        .iter()
        .copied()
        .chain([("countries", &eligibility.countries)])
    {
        if values.len() > MAX_TARGETING_VALUES {
            out.push(FieldViolation::new(
                format!("eligibility.{name}"),
                format!(
                    "at most {MAX_TARGETING_VALUES} entries, got {}",
                    values.len()
                ),
            ));
            return;
        }
    }
    if eligibility.attribute_rules.len() > MAX_ATTRIBUTE_RULES {
        out.push(FieldViolation::new(
            "eligibility.attribute_rules",
            format!(
                "at most {MAX_ATTRIBUTE_RULES} rules, got {}",
                eligibility.attribute_rules.len()
            ),
        ));
        return;
    }
    for (name, values) in slug_lists {
        for (index, value) in values.iter().enumerate() {
            if !SLUG.is_match(value) {
                out.push(FieldViolation::new(
                    format!("eligibility.{name}[{index}]"),
                    format!("{value:?} must be 1 to 64 lowercase letters, digits, '_' or '-'"),
                ));
            }
        }
    }
    for (index, country) in eligibility.countries.iter().enumerate() {
        if !COUNTRY.is_match(country) {
            out.push(FieldViolation::new(
                format!("eligibility.countries[{index}]"),
                format!("{country:?} is not an ISO 3166-1 alpha-2 code such as \"US\""),
            ));
        }
    }
    for (index, rule) in eligibility.attribute_rules.iter().enumerate() {
        attribute_rule(out, &format!("eligibility.attribute_rules[{index}]"), rule);
    }
}

fn attribute_rule(out: &mut Vec<FieldViolation>, path: &str, rule: &AttributeRule) {
    if !ATTRIBUTE_KEY.is_match(&rule.attribute) {
        out.push(FieldViolation::new(
            format!("{path}.attribute"),
            "must be 1 to 64 letters, digits, '_', '-' or '.'",
        ));
    }
    let Some(operator) = rule.operator else {
        out.push(FieldViolation::new(
            format!("{path}.operator"),
            "is required (e.g. ATTRIBUTE_OPERATOR_IN)",
        ));
        return;
    };
    if rule.values.len() > MAX_RULE_VALUES {
        out.push(FieldViolation::new(
            format!("{path}.values"),
            format!(
                "at most {MAX_RULE_VALUES} values, got {}",
                rule.values.len()
            ),
        ));
        return;
    }
    match operator.operand_count() {
        Some(expected) if rule.values.len() != expected => {
            out.push(FieldViolation::new(
                format!("{path}.values"),
                format!(
                    "{operator:?} takes exactly {expected} value, got {}",
                    rule.values.len()
                ),
            ));
            return;
        }
        None if rule.values.is_empty() => {
            out.push(FieldViolation::new(
                format!("{path}.values"),
                format!("{operator:?} takes at least one value"),
            ));
            return;
        }
        _ => {}
    }
    for (index, value) in rule.values.iter().enumerate() {
        let field = format!("{path}.values[{index}]");
        if operator.is_numeric() && !value.trim().parse::<f64>().is_ok_and(f64::is_finite) {
            out.push(FieldViolation::new(
                field,
                format!("{value:?} is not a number"),
            ));
        } else if operator.is_semver() && semver::Version::parse(value.trim()).is_err() {
            out.push(FieldViolation::new(
                field,
                format!("{value:?} is not a semantic version such as \"5.2.0\""),
            ));
        } else if operator == crate::AttributeOperator::RegexMatch {
            if value.len() > MAX_REGEX_LEN {
                out.push(FieldViolation::new(
                    field,
                    format!("must be at most {MAX_REGEX_LEN} characters"),
                ));
            } else if let Err(err) = regex::RegexBuilder::new(value)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
            {
                out.push(FieldViolation::new(
                    field,
                    format!("not a valid regular expression: {err}"),
                ));
            }
        }
    }
}

fn metrics_config(out: &mut Vec<FieldViolation>, config: &MetricsConfig) {
    let known = || {
        let mut names = metrics::names();
        names.extend(config.definitions.iter().map(|metric| metric.name.as_str()));
        names.join(", ")
    };
    let find = |name: &str| metrics::resolve(&config.definitions, name);
    for (field, count) in [
        ("metrics.secondary_metrics", config.secondary_metrics.len()),
        ("metrics.guardrails", config.guardrails.len()),
        ("metrics.definitions", config.definitions.len()),
    ] {
        if count > MAX_METRICS {
            out.push(FieldViolation::new(
                field,
                format!("at most {MAX_METRICS}, got {count}"),
            ));
            return;
        }
    }
    for (index, definition) in config.definitions.iter().enumerate() {
        metric_definition(out, config, index, definition);
    }
    let currency = &config.currency;
    let iso_4217 = currency.len() == 3 && currency.bytes().all(|byte| byte.is_ascii_uppercase());
    if !currency.is_empty() && !iso_4217 {
        out.push(FieldViolation::new(
            "metrics.currency",
            format!(
                "must be empty (USD) or an ISO 4217 code of three upper-case letters such as \
                 \"EUR\", got {currency:?}"
            ),
        ));
    }
    let days = config.cuped.pre_period_days;
    if !(1..=crate::MAX_PRE_PERIOD_DAYS).contains(&days) {
        out.push(FieldViolation::new(
            "metrics.cuped.pre_period_days",
            format!(
                "must be 1 to {} whole days before the first exposure, got {days}",
                crate::MAX_PRE_PERIOD_DAYS
            ),
        ));
    }
    if !config.primary_metric.is_empty() && find(&config.primary_metric).is_none() {
        out.push(FieldViolation::new(
            "metrics.primary_metric",
            format!(
                "unknown metric {:?}; known: {}",
                config.primary_metric,
                known()
            ),
        ));
    }
    for (index, name) in config.secondary_metrics.iter().enumerate() {
        if find(name).is_none() {
            out.push(FieldViolation::new(
                format!("metrics.secondary_metrics[{index}]"),
                format!("unknown metric {name:?}; known: {}", known()),
            ));
        }
    }
    for (index, guardrail) in config.guardrails.iter().enumerate() {
        let path = format!("metrics.guardrails[{index}]");
        if find(&guardrail.metric).is_none() {
            out.push(FieldViolation::new(
                format!("{path}.metric"),
                format!("unknown metric {:?}; known: {}", guardrail.metric, known()),
            ));
        } else if config.guardrails[..index]
            .iter()
            .any(|earlier| earlier.metric == guardrail.metric)
        {
            out.push(FieldViolation::new(
                format!("{path}.metric"),
                format!(
                    "{:?} has a guardrail already; one threshold and action per metric",
                    guardrail.metric
                ),
            ));
        }
        if !(guardrail.threshold.is_finite() && (0.0..=10.0).contains(&guardrail.threshold)) {
            out.push(FieldViolation::new(
                format!("{path}.threshold"),
                format!(
                    "must be a fraction between 0 and 10 (0.05 = 5% worse), got {}",
                    guardrail.threshold
                ),
            ));
        }
        if guardrail.action.is_none() {
            out.push(FieldViolation::new(
                format!("{path}.action"),
                "is required: GUARDRAIL_ACTION_PAUSE or GUARDRAIL_ACTION_STOP",
            ));
        }
    }
}

fn metric_definition(
    out: &mut Vec<FieldViolation>,
    config: &MetricsConfig,
    index: usize,
    definition: &MetricDefinition,
) {
    let path = format!("metrics.definitions[{index}]");
    let name = &definition.name;
    let well_formed = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    if !well_formed {
        out.push(FieldViolation::new(
            format!("{path}.name"),
            format!("must be 1 to 64 characters of [a-z0-9_], got {name:?}"),
        ));
    } else if metrics::find(name).is_some() {
        out.push(FieldViolation::new(
            format!("{path}.name"),
            format!("{name:?} is a catalogue metric; pick another name"),
        ));
    } else if config.definitions[..index]
        .iter()
        .any(|earlier| earlier.name == *name)
    {
        out.push(FieldViolation::new(
            format!("{path}.name"),
            format!("{name:?} is defined twice"),
        ));
    }
    if definition.description.chars().count() > MAX_METRIC_DESCRIPTION {
        out.push(FieldViolation::new(
            format!("{path}.description"),
            format!("at most {MAX_METRIC_DESCRIPTION} characters"),
        ));
    }
    for (field, measure) in std::iter::once(("numerator", &definition.numerator))
        .chain(definition.denominator.as_ref().map(|m| ("denominator", m)))
    {
        let page_event = matches!(
            measure.outcome_type,
            OutcomeType::PageView | OutcomeType::PageLoad
        );
        if page_event && measure.recommended_only {
            out.push(FieldViolation::new(
                format!("{path}.{field}.recommended_only"),
                "page views and page loads are not recommended items; it would count nothing",
            ));
        }
    }
    if definition.kind == MetricKind::Concentration {
        let numerator = &definition.numerator;
        if matches!(
            numerator.outcome_type,
            OutcomeType::PageView | OutcomeType::PageLoad
        ) || numerator.aggregate != Aggregate::ItemCount
        {
            out.push(FieldViolation::new(
                format!("{path}.numerator"),
                "a concentration counts items: an item outcome (impression, click, add-to-cart, \
                 purchase) with MEASURE_AGGREGATE_ITEM_COUNT",
            ));
        }
    }
    match (definition.kind, definition.denominator) {
        (MetricKind::Ratio, None) => out.push(FieldViolation::new(
            format!("{path}.denominator"),
            "is required for a ratio metric",
        )),
        (MetricKind::Ratio, Some(_)) | (_, None) => {}
        (_, Some(_)) => out.push(FieldViolation::new(
            format!("{path}.denominator"),
            "is only allowed for a ratio metric",
        )),
    }
    if definition.kind == MetricKind::Proportion {
        if let Some(most) = definition.success_at_most
            && most < definition.success_at_least.max(1)
        {
            out.push(FieldViolation::new(
                format!("{path}.success_at_most"),
                format!(
                    "must be at least success_at_least ({}), got {most}",
                    definition.success_at_least.max(1)
                ),
            ));
        }
    } else if definition.success_at_least > 1 || definition.success_at_most.is_some() {
        out.push(FieldViolation::new(
            format!("{path}.success_at_least"),
            "success bounds apply to proportion metrics only",
        ));
    }
}

/// Checks a QA override against its experiment. `now` decides whether an
/// expiry is in the past.
pub fn qa_override(
    qa_override: &QaOverride,
    experiment: &Experiment,
    now: std::time::SystemTime,
) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    if qa_override.unit_id.is_empty() || qa_override.unit_id.len() > MAX_UNIT_ID_LEN {
        out.push(FieldViolation::new(
            "unit_id",
            format!("must be 1 to {MAX_UNIT_ID_LEN} characters"),
        ));
    }
    if experiment.variant(&qa_override.variant).is_none() {
        out.push(FieldViolation::new(
            "variant",
            format!(
                "{:?} is not a variant of {}; variants: {}",
                qa_override.variant,
                experiment.id,
                experiment
                    .variants
                    .iter()
                    .map(|variant| variant.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if qa_override.expire_time.is_some_and(|expiry| expiry <= now) {
        out.push(FieldViolation::new("expire_time", "must be in the future"));
    }
    text(&mut out, "reason", &qa_override.reason, false, 1000);
    out
}
