//! The form as fields and back: an experiment's inputs, named by their
//! field paths, and the `v1::Experiment` a posted form describes, with
//! every input that could not be read named by its path.

use std::time::SystemTime;

use exp_core::{FieldViolation, ParamSchema, params::ParamSpec};
use exp_proto::{
    convert::{json_to_struct, struct_to_json},
    v1,
};
use serde_json::{Map, Value};

use crate::{layout, session::Form};

/// Most variant (or guardrail) rows a posted form may carry.
pub const MAX_ROWS: usize = 100;

pub(super) const BUCKETING_UNITS: [(v1::BucketingUnit, &str); 3] = [
    (v1::BucketingUnit::UserOrSession, "user_or_session"),
    (v1::BucketingUnit::User, "user"),
    (v1::BucketingUnit::Session, "session"),
];

pub(super) const LOGGED_IN: [(v1::LoggedInRequirement, &str); 3] = [
    (v1::LoggedInRequirement::Any, "any"),
    (v1::LoggedInRequirement::LoggedIn, "logged_in"),
    (v1::LoggedInRequirement::Anonymous, "anonymous"),
];

pub(super) const GUARDRAIL_ACTIONS: [(v1::GuardrailAction, &str); 2] = [
    (v1::GuardrailAction::Pause, "pause"),
    (v1::GuardrailAction::Stop, "stop"),
];

pub(super) const CORRECTIONS: [(v1::MultipleComparisonCorrection, &str); 2] = [
    (v1::MultipleComparisonCorrection::Holm, "holm"),
    (
        v1::MultipleComparisonCorrection::BenjaminiHochberg,
        "benjamini_hochberg",
    ),
];

/// The form's fields of `experiment`, as its inputs show them.
pub fn fields_of(experiment: &v1::Experiment) -> Form {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut put = |name: String, value: String| fields.push((name, value));
    put("id".into(), experiment.id.clone());
    put("name".into(), experiment.name.clone());
    put("owner".into(), experiment.owner.clone());
    put("description".into(), experiment.description.clone());
    put("hypothesis".into(), experiment.hypothesis.clone());
    put("layer".into(), experiment.layer.clone());
    put(
        "traffic_percent".into(),
        experiment.traffic_percent.to_string(),
    );
    put("control_variant".into(), experiment.control_variant.clone());
    put("revision".into(), experiment.revision.to_string());
    // A checkbox posts "true" when ticked and nothing when not.
    if experiment.sequential {
        put("sequential".into(), "true".into());
    }
    put(
        "sequential_tuning_parameter".into(),
        match experiment.sequential_tuning_parameter {
            0 => exp_core::DEFAULT_SEQUENTIAL_TUNING_PARAMETER,
            value => value,
        }
        .to_string(),
    );
    let correction = CORRECTIONS
        .iter()
        .find(|(correction, _)| *correction as i32 == experiment.multiple_comparison_correction)
        .map_or("", |(_, name)| name);
    put("multiple_comparison_correction".into(), correction.into());
    let unit = BUCKETING_UNITS
        .iter()
        .find(|(unit, _)| *unit as i32 == experiment.bucketing_unit)
        .map_or("", |(_, name)| name);
    put("bucketing_unit".into(), unit.into());
    let eligibility = experiment.eligibility.clone().unwrap_or_default();
    put(
        "eligibility.placements".into(),
        eligibility.placements.join(", "),
    );
    put(
        "eligibility.countries".into(),
        eligibility.countries.join(", "),
    );
    put("eligibility.devices".into(), eligibility.devices.join(", "));
    let logged_in = LOGGED_IN
        .iter()
        .find(|(requirement, _)| *requirement as i32 == eligibility.logged_in)
        .map_or("", |(_, name)| name);
    put("eligibility.logged_in".into(), logged_in.into());
    let schedule = experiment.schedule.unwrap_or_default();
    let time = |at: Option<prost_types::Timestamp>| {
        at.and_then(|at| SystemTime::try_from(at).ok())
            .map_or_else(String::new, layout::exact_time)
    };
    put("schedule.start_time".into(), time(schedule.start_time));
    put("schedule.end_time".into(), time(schedule.end_time));
    let metrics = experiment.metrics.clone().unwrap_or_default();
    put(
        "metrics.primary_metric".into(),
        metrics.primary_metric.clone(),
    );
    put(
        "metrics.secondary_metrics".into(),
        metrics.secondary_metrics.join(", "),
    );
    // Unset means on, over 14 days (as the service reads it).
    let cuped = metrics.cuped.unwrap_or_default();
    if !cuped.disabled {
        put("metrics.cuped.enabled".into(), "true".into());
    }
    put(
        "metrics.cuped.pre_period_days".into(),
        match cuped.pre_period_days {
            0 => exp_core::DEFAULT_PRE_PERIOD_DAYS,
            days => days,
        }
        .to_string(),
    );
    for (index, guardrail) in metrics.guardrails.iter().enumerate() {
        let path = format!("metrics.guardrails[{index}]");
        put(format!("{path}.metric"), guardrail.metric.clone());
        put(format!("{path}.threshold"), guardrail.threshold.to_string());
        let action = GUARDRAIL_ACTIONS
            .iter()
            .find(|(action, _)| *action as i32 == guardrail.action)
            .map_or("", |(_, name)| name);
        put(format!("{path}.action"), action.into());
    }
    for (index, variant) in experiment.variants.iter().enumerate() {
        let path = format!("variants[{index}]");
        put(format!("{path}.name"), variant.name.clone());
        put(format!("{path}.weight"), variant.weight.to_string());
        put(format!("{path}.description"), variant.description.clone());
        let mut ignored = Vec::new();
        let params = variant
            .params
            .as_ref()
            .map(|params| struct_to_json(params, &path, &mut ignored))
            .unwrap_or_default();
        for (key, value) in params {
            let text = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            put(format!("{path}.params.{key}"), text);
        }
    }
    Form::from_fields(fields)
}

/// Whether any input of the row at `path` (`variants[2]`) has a value.
fn has_values(form: &Form, path: &str) -> bool {
    let prefix = format!("{path}.");
    form.fields()
        .iter()
        .any(|(name, value)| name.starts_with(&prefix) && !value.trim().is_empty())
}

fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The experiment a posted form describes, on top of `base` (the current
/// experiment when editing, so fields the form does not show are kept),
/// and every input that could not be read, by its field path.
pub fn experiment_from_fields(
    form: &Form,
    base: v1::Experiment,
    schema: &ParamSchema,
) -> (v1::Experiment, Vec<FieldViolation>) {
    let mut violations = Vec::new();
    let mut experiment = base;
    experiment.id = form.get("id").to_owned();
    experiment.name = form.get("name").to_owned();
    experiment.owner = form.get("owner").to_owned();
    experiment.description = form.get("description").to_owned();
    experiment.hypothesis = form.get("hypothesis").to_owned();
    experiment.layer = form.get("layer").to_owned();
    experiment.control_variant = form.get("control_variant").to_owned();
    experiment.traffic_percent = whole(form, "traffic_percent", &mut violations);
    let revision = form.get("revision");
    if !revision.is_empty() {
        match revision.parse() {
            Ok(revision) => experiment.revision = revision,
            Err(_) => violations.push(FieldViolation::new(
                "revision",
                format!("{revision:?} is not a revision number"),
            )),
        }
    }
    experiment.bucketing_unit = BUCKETING_UNITS
        .iter()
        .find(|(_, name)| *name == form.get("bucketing_unit"))
        .map_or(0, |(unit, _)| *unit as i32);
    experiment.sequential = form.get("sequential") == "true";
    let tuning = form.get("sequential_tuning_parameter");
    experiment.sequential_tuning_parameter = tuning.parse().unwrap_or_else(|_| {
        violations.push(FieldViolation::new(
            "sequential_tuning_parameter",
            format!("{tuning:?} is not a whole number of units (100 to 100,000,000)"),
        ));
        0
    });
    experiment.multiple_comparison_correction = CORRECTIONS
        .iter()
        .find(|(_, name)| *name == form.get("multiple_comparison_correction"))
        .map_or(0, |(correction, _)| *correction as i32);
    let mut eligibility = experiment.eligibility.take().unwrap_or_default();
    eligibility.placements = comma_list(form.get("eligibility.placements"));
    eligibility.countries = comma_list(form.get("eligibility.countries"));
    eligibility.devices = comma_list(form.get("eligibility.devices"));
    eligibility.logged_in = LOGGED_IN
        .iter()
        .find(|(_, name)| *name == form.get("eligibility.logged_in"))
        .map_or(0, |(requirement, _)| *requirement as i32);
    experiment.eligibility = Some(eligibility);
    experiment.schedule = Some(v1::Schedule {
        start_time: timestamp(form, "schedule.start_time", &mut violations),
        end_time: timestamp(form, "schedule.end_time", &mut violations),
    });
    let mut metrics = experiment.metrics.take().unwrap_or_default();
    metrics.primary_metric = form.get("metrics.primary_metric").to_owned();
    metrics.secondary_metrics = comma_list(form.get("metrics.secondary_metrics"));
    metrics.guardrails = (0..MAX_ROWS)
        .map(|index| format!("metrics.guardrails[{index}]"))
        .take_while(|path| form.has(&format!("{path}.metric")))
        .filter(|path| !form.get(&format!("{path}.metric")).is_empty() || has_values(form, path))
        .map(|path| {
            let threshold_path = format!("{path}.threshold");
            let threshold = form.get(&threshold_path);
            let threshold = threshold.parse::<f64>().unwrap_or_else(|_| {
                violations.push(FieldViolation::new(
                    threshold_path,
                    format!("{threshold:?} is not a number (a relative change, 0.05 for 5%)"),
                ));
                0.0
            });
            v1::Guardrail {
                metric: form.get(&format!("{path}.metric")).to_owned(),
                threshold,
                action: GUARDRAIL_ACTIONS
                    .iter()
                    .find(|(_, name)| *name == form.get(&format!("{path}.action")))
                    .map_or(0, |(action, _)| *action as i32),
            }
        })
        .collect();
    let days_path = "metrics.cuped.pre_period_days";
    let days = form.get(days_path);
    metrics.cuped = Some(v1::CupedConfig {
        disabled: form.get("metrics.cuped.enabled") != "true",
        pre_period_days: days.parse().unwrap_or_else(|_| {
            violations.push(FieldViolation::new(
                days_path,
                format!("{days:?} is not a whole number of days (1 to 28)"),
            ));
            0
        }),
    });
    experiment.metrics = Some(metrics);
    experiment.variants = (0..MAX_ROWS)
        .map(|index| format!("variants[{index}]"))
        .take_while(|path| form.has(&format!("{path}.name")))
        .filter(|path| !form.get(&format!("{path}.name")).is_empty() || has_values(form, path))
        .map(|path| {
            let mut params = Map::new();
            // Every parameter input of the row: the schema's, and any the
            // experiment carries that the schema no longer names (kept, so
            // an edit does not drop them; validation says what it thinks).
            let prefix = format!("{path}.params.");
            for (field, text) in form.fields() {
                let Some(key) = field.strip_prefix(&prefix) else {
                    continue;
                };
                if text.trim().is_empty() || params.contains_key(key) {
                    continue;
                }
                match param_value(schema.spec(key), text.trim()) {
                    Ok(value) => {
                        params.insert(key.to_owned(), value);
                    }
                    Err(reason) => violations.push(FieldViolation::new(field.clone(), reason)),
                }
            }
            v1::Variant {
                name: form.get(&format!("{path}.name")).to_owned(),
                description: form.get(&format!("{path}.description")).to_owned(),
                weight: whole(form, &format!("{path}.weight"), &mut violations),
                params: Some(json_to_struct(&params)),
            }
        })
        .collect();
    (experiment, violations)
}

/// The form with its variant and guardrail rows numbered from 0 without
/// gaps: a row whose every input is empty is dropped, so the paths
/// validation names are the rows the page shows. A row with values but no
/// name (or metric) is kept, with a violation on that input.
pub fn compact_rows(form: &Form) -> (Form, Vec<FieldViolation>) {
    let mut violations = Vec::new();
    let mut fields: Vec<(String, String)> = form
        .fields()
        .iter()
        .filter(|(name, _)| {
            !name.starts_with("variants[") && !name.starts_with("metrics.guardrails[")
        })
        .cloned()
        .collect();
    for (list, key) in [("variants", "name"), ("metrics.guardrails", "metric")] {
        let mut kept = 0;
        for index in (0..MAX_ROWS).take_while(|index| form.has(&format!("{list}[{index}].{key}"))) {
            let prefix = format!("{list}[{index}].");
            let row: Vec<(&str, &str)> = form
                .fields()
                .iter()
                .filter_map(|(name, value)| Some((name.strip_prefix(&prefix)?, value.as_str())))
                .collect();
            let named = row
                .iter()
                .any(|(field, value)| *field == key && !value.trim().is_empty());
            let filled = row.iter().any(|(_, value)| !value.trim().is_empty());
            if !filled {
                continue;
            }
            if !named {
                violations.push(FieldViolation::new(
                    format!("{list}[{kept}].{key}"),
                    "is required: this row has other values (empty every input to drop it)",
                ));
            }
            fields.extend(
                row.into_iter()
                    .map(|(field, value)| (format!("{list}[{kept}].{field}"), value.to_owned())),
            );
            kept += 1;
        }
    }
    (Form::from_fields(fields), violations)
}

fn whole(form: &Form, path: &str, violations: &mut Vec<FieldViolation>) -> u32 {
    let text = form.get(path);
    text.parse().unwrap_or_else(|_| {
        violations.push(FieldViolation::new(
            path,
            format!("{text:?} is not a whole number from 0 to 100"),
        ));
        0
    })
}

fn timestamp(
    form: &Form,
    path: &str,
    violations: &mut Vec<FieldViolation>,
) -> Option<prost_types::Timestamp> {
    let text = form.get(path);
    if text.is_empty() {
        return None;
    }
    match humantime::parse_rfc3339_weak(text) {
        Ok(at) => Some(at.into()),
        Err(_) => {
            violations.push(FieldViolation::new(
                path,
                format!("{text:?} is not a time: write it as 2026-12-01T09:00:00Z (UTC)"),
            ));
            None
        }
    }
}

/// A parameter's input read by its type in the schema (the range is
/// checked by validation, with the rest); one the schema does not name is
/// read as JSON when it is JSON (a number, `true`), else as text.
fn param_value(spec: Option<&ParamSpec>, text: &str) -> Result<Value, String> {
    match spec {
        None => Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))),
        Some(ParamSpec::Number { .. }) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("{text:?} is not a number")),
        Some(ParamSpec::Integer { .. }) => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{text:?} is not a whole number")),
        Some(ParamSpec::Boolean) => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("{text:?} is not true or false")),
        },
        _ => Ok(Value::String(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exp_proto::convert::experiment_to_proto;

    #[test]
    fn an_experiment_survives_the_form_both_ways() {
        let schema = ParamSchema::builtin();
        let mut seed = experiment_to_proto(&exp_core::examples::seed_experiment());
        seed.schedule = Some(v1::Schedule {
            start_time: Some(prost_types::Timestamp {
                seconds: 1_796_000_000,
                nanos: 0,
            }),
            end_time: None,
        });
        let form = fields_of(&seed);
        let (read, violations) = experiment_from_fields(&form, seed.clone(), &schema);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(read, seed);
        let sequential = v1::Experiment {
            sequential: true,
            multiple_comparison_correction: v1::MultipleComparisonCorrection::BenjaminiHochberg
                as i32,
            ..seed.clone()
        };
        let form = fields_of(&sequential);
        assert_eq!(form.get("sequential"), "true");
        let (read, _) = experiment_from_fields(&form, seed.clone(), &schema);
        assert_eq!(read, sequential);
        // An unticked checkbox posts nothing: the experiment is not
        // sequential, whatever it was before.
        let (read, _) = experiment_from_fields(&fields_of(&seed), sequential, &schema);
        assert!(!read.sequential);
    }

    #[test]
    fn cuped_is_ticked_with_14_days_unless_turned_off_and_bad_days_name_their_field() {
        let schema = ParamSchema::builtin();
        let mut seed = experiment_to_proto(&exp_core::examples::seed_experiment());
        if let Some(metrics) = seed.metrics.as_mut() {
            metrics.cuped = None;
        }
        let form = fields_of(&seed);
        assert_eq!(form.get("metrics.cuped.enabled"), "true");
        assert_eq!(form.get("metrics.cuped.pre_period_days"), "14");
        let (read, violations) = experiment_from_fields(&form, seed.clone(), &schema);
        assert!(violations.is_empty(), "{violations:?}");
        let cuped = read.metrics.and_then(|metrics| metrics.cuped).expect("set");
        assert!(!cuped.disabled);
        assert_eq!(cuped.pre_period_days, 14);
        // Unticked, 21 days.
        let mut fields: Vec<(String, String)> = form
            .fields()
            .iter()
            .filter(|(name, _)| name != "metrics.cuped.enabled")
            .cloned()
            .collect();
        for (name, value) in &mut fields {
            if name == "metrics.cuped.pre_period_days" {
                *value = "21".into();
            }
        }
        let (read, _) =
            experiment_from_fields(&Form::from_fields(fields.clone()), seed.clone(), &schema);
        let cuped = read.metrics.and_then(|metrics| metrics.cuped).expect("set");
        assert!(cuped.disabled);
        assert_eq!(cuped.pre_period_days, 21);
        for (name, value) in &mut fields {
            if name == "metrics.cuped.pre_period_days" {
                *value = "two weeks".into();
            }
        }
        let (_, violations) = experiment_from_fields(&Form::from_fields(fields), seed, &schema);
        assert_eq!(violations[0].field, "metrics.cuped.pre_period_days");
    }

    #[test]
    fn inputs_that_cannot_be_read_are_named_by_their_field_paths() {
        let schema = ParamSchema::builtin();
        let seed = experiment_to_proto(&exp_core::examples::seed_experiment());
        let mut fields = fields_of(&seed).fields().to_vec();
        for (name, value) in &mut fields {
            match name.as_str() {
                "traffic_percent" => *value = "lots".into(),
                "variants[1].weight" => *value = "half".into(),
                "schedule.end_time" => *value = "next tuesday".into(),
                _ => {}
            }
        }
        fields.push((
            "variants[0].params.rerank_weight_style".into(),
            "heavy".into(),
        ));
        let form = Form::from_fields(fields);
        let (_, violations) = experiment_from_fields(&form, seed, &schema);
        let named: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            named,
            [
                "traffic_percent",
                "schedule.end_time",
                "variants[0].params.rerank_weight_style",
                "variants[1].weight"
            ],
            "{violations:?}"
        );
    }
}
