//! Two experiments compared field by field, by the field paths of the
//! proto (`traffic_percent`, `variants[1].params.rerank_weight_style`): the
//! names `expctl`'s files, grpcurl and validation errors use.

use exp_core::Experiment;
use exp_proto::{convert::experiment_to_proto, file::to_json_value};
use maud::{Markup, html};
use serde_json::Value;

/// Fields every revision changes, or that follow from others: not shown.
const NOT_COMPARED: &[&str] = &[
    "revision",
    "create_time",
    "update_time",
    "updated_by",
    "allocation",
];

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// Its path. Example: `variants[1].weight`.
    pub field: String,
    /// The value before; `None` when it had none.
    pub before: Option<String>,
    /// The value after; `None` when it has none.
    pub after: Option<String>,
}

/// What differs from `before` to `after`, in the order of the proto's
/// fields.
pub fn experiments(before: &Experiment, after: &Experiment) -> Vec<FieldChange> {
    let name = "experiments.v1.Experiment";
    let before = flatten(&to_json_value(name, &experiment_to_proto(before)));
    let after = flatten(&to_json_value(name, &experiment_to_proto(after)));
    let mut changes: Vec<FieldChange> = after
        .iter()
        .filter(|(field, value)| {
            before
                .iter()
                .find(|(known, _)| known == field)
                .is_none_or(|(_, old)| old != value)
        })
        .map(|(field, value)| FieldChange {
            field: field.clone(),
            before: before
                .iter()
                .find(|(known, _)| known == field)
                .map(|(_, old)| old.clone()),
            after: Some(value.clone()),
        })
        .collect();
    changes.extend(
        before
            .iter()
            .filter(|(field, _)| !after.iter().any(|(known, _)| known == field))
            .map(|(field, value)| FieldChange {
                field: field.clone(),
                before: Some(value.clone()),
                after: None,
            }),
    );
    changes
}

/// (path, value as text) of every leaf; a list of plain values is one
/// leaf ("pdp, search"), a list of messages is indexed.
fn flatten(value: &Value) -> Vec<(String, String)> {
    let mut leaves = Vec::new();
    walk(value, String::new(), &mut leaves);
    leaves
}

fn walk(value: &Value, path: String, leaves: &mut Vec<(String, String)>) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                if path.is_empty() && NOT_COMPARED.contains(&name.as_str()) {
                    continue;
                }
                let nested = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                walk(field, nested, leaves);
            }
        }
        Value::Array(items) if items.iter().any(Value::is_object) => {
            for (index, item) in items.iter().enumerate() {
                walk(item, format!("{path}[{index}]"), leaves);
            }
        }
        Value::Array(items) => {
            if !items.is_empty() {
                let listed: Vec<String> = items.iter().map(text).collect();
                leaves.push((path, listed.join(", ")));
            }
        }
        Value::Null => {}
        other => leaves.push((path, text(other))),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The changes as a list: `ul.diff > li[data-field]`.
pub fn render(changes: &[FieldChange]) -> Markup {
    html! {
        @if changes.is_empty() {
            p.no-change { "No field changes." }
        } @else {
            ul.diff {
                @for change in changes {
                    li data-field=(change.field) {
                        span.field { (change.field) }
                        ": "
                        del { (change.before.as_deref().unwrap_or("(unset)")) }
                        " → "
                        ins { (change.after.as_deref().unwrap_or("(unset)")) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_and_a_param_change_show_as_their_field_paths_only() {
        let before = exp_core::examples::seed_experiment();
        let mut after = before.clone();
        after.traffic_percent = 50;
        after.revision += 1;
        after.updated_by = "alice@example.com".into();
        after.variants[1]
            .params
            .insert("rerank_weight_style".into(), serde_json::json!(0.4));
        let changes = experiments(&before, &after);
        let fields: Vec<&str> = changes.iter().map(|change| change.field.as_str()).collect();
        assert_eq!(
            fields,
            ["traffic_percent", "variants[1].params.rerank_weight_style"],
            "{changes:?}"
        );
        assert_eq!(
            changes[0].before.as_deref(),
            Some(&*before.traffic_percent.to_string())
        );
        assert_eq!(changes[0].after.as_deref(), Some("50"));
    }

    #[test]
    fn a_removed_variant_shows_its_fields_as_unset() {
        let before = exp_core::examples::seed_experiment();
        let mut after = before.clone();
        let removed = after.variants.pop().expect("the seed has variants");
        let changes = experiments(&before, &after);
        let name = changes
            .iter()
            .find(|change| change.before.as_deref() == Some(removed.name.as_str()))
            .expect("the removed variant's name is listed");
        assert_eq!(name.after, None);
    }
}
