//! The create and edit page: the form (every input next to its
//! violations) and the YAML pane.

use exp_core::{Experiment, FieldViolation, params::ParamSpec};
use exp_proto::{convert::experiment_to_proto, file};
use maud::{Markup, html};

use super::fields::{
    BUCKETING_UNITS, CORRECTIONS, GUARDRAIL_ACTIONS, LOGGED_IN, MAX_ROWS, experiment_from_fields,
};
use crate::{
    Console,
    layout::{csrf, url_part},
    session::{Form, Session},
};

/// Empty variant rows a new experiment's form offers.
pub(super) const NEW_VARIANT_ROWS: usize = 3;

/// Guardrail rows offered beyond the existing ones.
const SPARE_GUARDRAIL_ROWS: usize = 1;

/// What a form page shows besides the fields.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) violations: Vec<FieldViolation>,
    pub(super) valid: bool,
    pub(super) stale: Option<Markup>,
    pub(super) yaml: Option<String>,
}

/// The violations of exactly `path`, shown next to its input.
fn violations_at(violations: &[FieldViolation], path: &str) -> Markup {
    violations_where(violations, |field| field == path)
}

/// Whether `field` is `path` or one item of it (`path[2]`): a
/// comma-separated input is a list, and validation names each bad item
/// (`eligibility.countries[0]`), which belongs next to that input too.
fn is_item_of(field: &str, path: &str) -> bool {
    field == path
        || field
            .strip_prefix(path)
            .and_then(|rest| rest.strip_prefix('['))
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
}

/// `aria-invalid` of the input at `path`: set when a violation names it
/// or one of its items.
fn invalid(violations: &[FieldViolation], path: &str) -> Option<&'static str> {
    violations
        .iter()
        .any(|violation| is_item_of(&violation.field, path))
        .then_some("true")
}

fn violations_where(violations: &[FieldViolation], shown: impl Fn(&str) -> bool) -> Markup {
    html! {
        @for violation in violations.iter().filter(|violation| shown(&violation.field)) {
            span.violation data-field=(violation.field) { (violation.description) }
        }
    }
}

fn text_input(
    form: &Form,
    violations: &[FieldViolation],
    path: &str,
    label: &str,
    hint: &str,
) -> Markup {
    html! {
        label for=(path) { (label) }
        div.input {
            input id=(path) name=(path) value=(form.get(path)) placeholder=(hint)
                aria-invalid=[invalid(violations, path)];
            (violations_where(violations, |field| is_item_of(field, path)))
        }
    }
}

fn select_input(
    form: &Form,
    violations: &[FieldViolation],
    path: &str,
    label: &str,
    options: &[&str],
) -> Markup {
    let chosen = form.get(path);
    html! {
        label for=(path) { (label) }
        div.input {
            select id=(path) name=(path) aria-invalid=[invalid(violations, path)] {
                option value="" selected[chosen.is_empty()] { "—" }
                @for option in options {
                    option value=(option) selected[chosen == *option] { (option) }
                }
            }
            (violations_at(violations, path))
        }
    }
}

fn param_input(
    form: &Form,
    violations: &[FieldViolation],
    path: &str,
    spec: Option<&ParamSpec>,
) -> Markup {
    let value = form.get(path);
    let invalid = invalid(violations, path);
    html! {
        div.input {
            @match spec {
                Some(ParamSpec::Enum { values }) => {
                    select id=(path) name=(path) aria-invalid=[invalid] {
                        option value="" selected[value.is_empty()] { "(not set)" }
                        @for option in values {
                            option value=(option) selected[value == option] { (option) }
                        }
                    }
                }
                Some(ParamSpec::Boolean) => {
                    select id=(path) name=(path) aria-invalid=[invalid] {
                        option value="" selected[value.is_empty()] { "(not set)" }
                        option value="true" selected[value == "true"] { "true" }
                        option value="false" selected[value == "false"] { "false" }
                    }
                }
                Some(ParamSpec::Number { min, max }) => {
                    input id=(path) name=(path) type="number" step="any" value=(value) aria-invalid=[invalid]
                        min=[min] max=[max];
                }
                Some(ParamSpec::Integer { min, max }) => {
                    input id=(path) name=(path) type="number" step="1" value=(value) aria-invalid=[invalid]
                        min=[min] max=[max];
                }
                _ => { input id=(path) name=(path) value=(value) aria-invalid=[invalid]; }
            }
            (violations_at(violations, path))
        }
    }
}

pub(super) fn form_page(
    console: &Console,
    session: &Session,
    current: Option<&Experiment>,
    form: &Form,
    outcome: &Outcome,
) -> Markup {
    let schema = console.admin().schema();
    let violations = &outcome.violations;
    let action = match current {
        Some(current) => format!("/experiments/{}/edit", url_part(&current.id)),
        None => "/experiments/new".to_owned(),
    };
    let title = match current {
        Some(current) => format!("Edit {}", current.name),
        None => "New experiment".to_owned(),
    };
    let variant_rows = (0..MAX_ROWS)
        .take_while(|index| form.has(&format!("variants[{index}].name")))
        .count();
    let guardrail_rows = (0..MAX_ROWS)
        .take_while(|index| form.has(&format!("metrics.guardrails[{index}].metric")))
        .count();
    // The catalogue's metrics, the experiment's own definitions, and
    // whatever the form holds: a select must offer the current value, or
    // the browser would post it as "" and the save would drop it.
    let mut metric_names: Vec<String> = exp_core::metrics::names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let definitions = current.iter().flat_map(|current| {
        current
            .metrics
            .definitions
            .iter()
            .map(|definition| definition.name.clone())
    });
    let chosen = form
        .fields()
        .iter()
        .filter(|(name, _)| name == "metrics.primary_metric" || name.ends_with("].metric"))
        .map(|(_, value)| value.trim().to_owned());
    for name in definitions.chain(chosen) {
        if !name.is_empty() && !metric_names.contains(&name) {
            metric_names.push(name);
        }
    }
    let metric_names: Vec<&str> = metric_names.iter().map(String::as_str).collect();
    let yaml = outcome.yaml.clone().unwrap_or_else(|| {
        let (experiment, _) = experiment_from_fields(
            form,
            current.map(experiment_to_proto).unwrap_or_default(),
            schema,
        );
        file::to_yaml("experiments.v1.Experiment", &experiment)
    });
    html! {
        h1 { (title) }
        @if let Some(stale) = &outcome.stale { (stale) }
        @if !violations.is_empty() {
            div #error {
                "Nothing was saved: " (violations.len()) " problem(s)."
                ul #violations {
                    @for violation in violations {
                        li data-field=(violation.field) { code { (violation.field) } ": " (violation.description) }
                    }
                }
            }
        }
        @if outcome.valid { div #valid { "Valid: saving would be accepted." } }
        // `novalidate`: the server checks every field and shows each
        // violation by its input; the browser's own check (of `min`,
        // `max`) would stop the form at the first one, with no way to
        // Validate the rest.
        form #experiment-form.grid method="post" action=(action) novalidate {
            (csrf(session))
            input type="hidden" name="revision" value=(form.get("revision"));
            @if current.is_some() {
                input type="hidden" name="id" value=(form.get("id"));
                label { "Id" } div.input { code { (form.get("id")) } }
            } @else {
                (text_input(form, violations, "id", "Id", "reco_ymal_v2"))
            }
            (text_input(form, violations, "name", "Name", "YMAL style re-rank"))
            (text_input(form, violations, "owner", "Owner", "alice@example.com"))
            label for="hypothesis" { "Hypothesis" }
            div.input {
                textarea #hypothesis name="hypothesis" rows="2" aria-invalid=[invalid(violations, "hypothesis")] {
                    (form.get("hypothesis"))
                }
                (violations_at(violations, "hypothesis"))
            }
            (text_input(form, violations, "description", "Description", ""))
            (text_input(form, violations, "layer", "Layer", "empty: a layer of its own"))
            label for="traffic_percent" { "Traffic %" }
            div.input {
                input #traffic_percent name="traffic_percent" type="number" min="0" max="100"
                    aria-invalid=[invalid(violations, "traffic_percent")]
                    value=(form.get("traffic_percent"));
                (violations_at(violations, "traffic_percent"))
            }
            (select_input(form, violations, "bucketing_unit", "Bucketing unit",
                &BUCKETING_UNITS.map(|(_, name)| name)))
            (text_input(form, violations, "eligibility.placements", "Placements", "pdp, search (empty: any)"))
            (text_input(form, violations, "eligibility.countries", "Countries", "US, DE (empty: any)"))
            (text_input(form, violations, "eligibility.devices", "Devices", "mobile, desktop (empty: any)"))
            (select_input(form, violations, "eligibility.logged_in", "Logged in",
                &LOGGED_IN.map(|(_, name)| name)))
            (text_input(form, violations, "schedule.start_time", "Start", "2026-12-01T09:00:00Z (empty: at start)"))
            (text_input(form, violations, "schedule.end_time", "End", "empty: until stopped"))
            (select_input(form, violations, "metrics.primary_metric", "Primary metric", &metric_names))
            (text_input(form, violations, "metrics.secondary_metrics", "Secondary metrics", "ctr, conversion_rate"))
            @for index in 0..guardrail_rows.max(1) {
                @let path = format!("metrics.guardrails[{index}]");
                (select_input(form, violations, &format!("{path}.metric"), &format!("Guardrail {}", index + 1), &metric_names))
                (text_input(form, violations, &format!("{path}.threshold"), "  threshold", "0.05 (a 5% relative worsening)"))
                (select_input(form, violations, &format!("{path}.action"), "  action",
                    &GUARDRAIL_ACTIONS.map(|(_, name)| name)))
            }
            label for="metrics.cuped.enabled" { "CUPED" }
            div.input {
                label {
                    input id="metrics.cuped.enabled" type="checkbox" name="metrics.cuped.enabled" value="true"
                        checked[form.get("metrics.cuped.enabled") == "true"]
                        aria-invalid=[invalid(violations, "metrics.cuped")];
                    " adjust proportions and means for each unit's same metric before its first "
                    "exposure: narrower intervals, the same answer sooner"
                }
                (violations_at(violations, "metrics.cuped"))
            }
            (text_input(form, violations, "metrics.cuped.pre_period_days", "  pre-period days", "14 (1 to 28 whole days)"))
            label for="sequential" { "Sequential" }
            div.input {
                label {
                    input #sequential type="checkbox" name="sequential" value="true"
                        checked[form.get("sequential") == "true"]
                        aria-invalid=[invalid(violations, "sequential")];
                    " always-valid intervals and p-values: read the results as often as you like, "
                    "stop when an interval excludes zero (wider intervals)"
                }
                (violations_at(violations, "sequential"))
            }
            (text_input(form, violations, "sequential_tuning_parameter", "  tuning parameter N*",
                "5000: the units (both arms) where always-valid intervals are narrowest"))
            (select_input(form, violations, "multiple_comparison_correction",
                "Secondary metrics' correction", &CORRECTIONS.map(|(_, name)| name)))
            (text_input(form, violations, "control_variant", "Control variant", "control"))
            h2.wide { "Variants" }
            div.wide { (violations_at(violations, "variants")) }
            div.variants.wide {
                @for index in 0..variant_rows {
                    @let path = format!("variants[{index}]");
                    fieldset.variant data-index=(index) {
                        legend { "Variant " (index + 1) }
                        (violations_at(violations, &path))
                        (text_input(form, violations, &format!("{path}.name"), "Name", "empty: no variant"))
                        (text_input(form, violations, &format!("{path}.weight"), "Weight %", "50"))
                        (text_input(form, violations, &format!("{path}.description"), "Description", ""))
                        (violations_at(violations, &format!("{path}.params")))
                        @for key in schema.keys() {
                            @let param = format!("{path}.params.{key}");
                            label for=(param) { (key) }
                            (param_input(form, violations, &param, schema.spec(key)))
                        }
                        // Parameters the schema no longer names stay
                        // editable, so a save keeps them.
                        @for (param, key) in unknown_params(form, &path, schema) {
                            label for=(param) { (key) " (not in the schema)" }
                            (param_input(form, violations, param, None))
                        }
                    }
                }
            }
            div.actions.wide {
                @if current.is_some() {
                    label { input type="checkbox" name="rerandomize" value="true";
                        " re-randomise (needed to change the weights of a started experiment)" }
                    input type="text" name="reason" placeholder="why (for the history)";
                }
                button #validate.secondary type="submit" name="action" value="validate" { "Validate" }
                button #save type="submit" name="action" value="save" { "Save" }
            }
        }
        h2 { "YAML" }
        p { "The same experiment in " code { "expctl" } "'s file format (proto field names); "
            "edit and save it, or copy it into a file for " code { "expctl create -f" } "." }
        form #yaml-form method="post" action=(action) {
            (csrf(session))
            input type="hidden" name="revision" value=(form.get("revision"));
            textarea #yaml name="yaml" rows="24" spellcheck="false" { (yaml) }
            (violations_at(violations, "yaml"))
            div.actions {
                @if current.is_some() {
                    input type="text" name="reason" placeholder="why (for the history)";
                }
                button.secondary type="submit" name="action" value="validate-yaml" { "Validate YAML" }
                button #save-yaml type="submit" name="action" value="save-yaml" { "Save YAML" }
            }
        }
    }
}

/// Adds empty rows for variants and a guardrail to a form's fields.
/// (input name, key) of the parameters of the row at `path` the schema
/// does not name.
fn unknown_params<'a>(
    form: &'a Form,
    path: &str,
    schema: &exp_core::ParamSchema,
) -> Vec<(&'a str, &'a str)> {
    let prefix = format!("{path}.params.");
    form.fields()
        .iter()
        .filter_map(|(name, _)| Some((name.as_str(), name.strip_prefix(&prefix)?)))
        .filter(|(_, key)| schema.spec(key).is_none())
        .collect()
}

pub(super) fn with_spare_rows(form: Form, variant_rows: usize) -> Form {
    let mut fields = form.fields().to_vec();
    let variants = (0..MAX_ROWS)
        .take_while(|index| form.has(&format!("variants[{index}].name")))
        .count();
    for index in variants..variant_rows.max(variants + 1) {
        fields.push((format!("variants[{index}].name"), String::new()));
    }
    let guardrails = (0..MAX_ROWS)
        .take_while(|index| form.has(&format!("metrics.guardrails[{index}].metric")))
        .count();
    for index in guardrails..guardrails + SPARE_GUARDRAIL_ROWS {
        fields.push((format!("metrics.guardrails[{index}].metric"), String::new()));
    }
    Form::from_fields(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_input_shows_the_violations_of_its_items_and_no_other() {
        assert!(is_item_of("eligibility.countries", "eligibility.countries"));
        assert!(is_item_of(
            "eligibility.countries[12]",
            "eligibility.countries"
        ));
        assert!(!is_item_of(
            "eligibility.countries[]",
            "eligibility.countries"
        ));
        assert!(!is_item_of(
            "eligibility.countries[0].x",
            "eligibility.countries"
        ));
        assert!(!is_item_of(
            "eligibility.countries_x",
            "eligibility.countries"
        ));
        let found = [
            FieldViolation::new("eligibility.countries[0]", "\"usa\" is not a code"),
            FieldViolation::new("variants[1].weight", "too heavy"),
        ];
        let shown = violations_where(&found, |field| is_item_of(field, "eligibility.countries"));
        assert!(
            shown
                .into_string()
                .contains(r#"data-field="eligibility.countries[0]""#)
        );
        assert!(violations_at(&found, "variants").into_string().is_empty());
    }
}
