//! Creating and editing an experiment: a form whose inputs are named by
//! the proto's field paths (`traffic_percent`, `variants[1].weight`,
//! `variants[0].params.rerank_weight_style`) with one input per parameter
//! of the schema, and a YAML pane in `expctl`'s file format. Both become a
//! `v1::Experiment` and take the gRPC admin's path from there (the same
//! conversion, validation and use cases), so every violation comes back by
//! its field path and is shown next to its input.
//!
//! An edit names the revision it was based on. When someone else changed
//! the experiment since, nothing is written: the page says so, shows what
//! they changed, and keeps what the user typed.

use std::time::SystemTime;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use exp_core::{
    Error, Experiment, FieldViolation, ParamSchema, lifecycle::Update, params::ParamSpec,
};
use exp_proto::{
    convert::{experiment_from_proto, experiment_to_proto, json_to_struct, struct_to_json},
    file, v1,
};
use maud::{Markup, html};
use serde_json::{Map, Value};

use crate::{
    Console, diff,
    layout::{self, csrf, url_part},
    session::{Form, Session},
};

/// Empty variant rows a new experiment's form offers.
const NEW_VARIANT_ROWS: usize = 3;

/// Most variant rows a posted form may carry.
const MAX_VARIANT_ROWS: usize = 100;

/// Guardrail rows offered beyond the existing ones.
const SPARE_GUARDRAIL_ROWS: usize = 1;

const BUCKETING_UNITS: [(v1::BucketingUnit, &str); 3] = [
    (v1::BucketingUnit::UserOrSession, "user_or_session"),
    (v1::BucketingUnit::User, "user"),
    (v1::BucketingUnit::Session, "session"),
];

const LOGGED_IN: [(v1::LoggedInRequirement, &str); 3] = [
    (v1::LoggedInRequirement::Any, "any"),
    (v1::LoggedInRequirement::LoggedIn, "logged_in"),
    (v1::LoggedInRequirement::Anonymous, "anonymous"),
];

const GUARDRAIL_ACTIONS: [(v1::GuardrailAction, &str); 2] = [
    (v1::GuardrailAction::Pause, "pause"),
    (v1::GuardrailAction::Stop, "stop"),
];

// === the form as fields ===

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
            .map_or_else(String::new, layout::time)
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
    metrics.guardrails = (0..MAX_VARIANT_ROWS)
        .map(|index| format!("metrics.guardrails[{index}]"))
        .take_while(|path| form.has(&format!("{path}.metric")))
        .filter(|path| !form.get(&format!("{path}.metric")).is_empty())
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
    experiment.metrics = Some(metrics);
    experiment.variants = (0..MAX_VARIANT_ROWS)
        .map(|index| format!("variants[{index}]"))
        .take_while(|path| form.has(&format!("{path}.name")))
        .filter(|path| !form.get(&format!("{path}.name")).is_empty())
        .map(|path| {
            let mut params = Map::new();
            for key in schema.keys() {
                let param_path = format!("{path}.params.{key}");
                let text = form.get(&param_path);
                if text.is_empty() {
                    continue;
                }
                match param_value(schema.spec(key), text) {
                    Ok(value) => {
                        params.insert(key.to_owned(), value);
                    }
                    Err(reason) => violations.push(FieldViolation::new(param_path, reason)),
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
/// checked by validation, with the rest).
fn param_value(spec: Option<&ParamSpec>, text: &str) -> Result<Value, String> {
    match spec {
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

// === the page ===

/// What a form page shows besides the fields.
#[derive(Debug, Default)]
struct Outcome {
    violations: Vec<FieldViolation>,
    valid: bool,
    stale: Option<Markup>,
    yaml: Option<String>,
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

fn form_page(
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
    let variant_rows = (0..MAX_VARIANT_ROWS)
        .take_while(|index| form.has(&format!("variants[{index}].name")))
        .count();
    let guardrail_rows = (0..MAX_VARIANT_ROWS)
        .take_while(|index| form.has(&format!("metrics.guardrails[{index}].metric")))
        .count();
    let metric_names: Vec<&str> = exp_core::metrics::names();
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
fn with_spare_rows(form: Form, variant_rows: usize) -> Form {
    let mut fields = form.fields().to_vec();
    let variants = (0..MAX_VARIANT_ROWS)
        .take_while(|index| form.has(&format!("variants[{index}].name")))
        .count();
    for index in variants..variant_rows.max(variants + 1) {
        fields.push((format!("variants[{index}].name"), String::new()));
    }
    let guardrails = (0..MAX_VARIANT_ROWS)
        .take_while(|index| form.has(&format!("metrics.guardrails[{index}].metric")))
        .count();
    for index in guardrails..guardrails + SPARE_GUARDRAIL_ROWS {
        fields.push((format!("metrics.guardrails[{index}].metric"), String::new()));
    }
    Form::from_fields(fields)
}

/// `GET /experiments/new`.
pub async fn new_page(State(console): State<Console>, session: Session) -> Response {
    if let Some(refused) = session.editor_only() {
        return refused;
    }
    let blank = v1::Experiment {
        traffic_percent: 10,
        control_variant: "control".into(),
        bucketing_unit: v1::BucketingUnit::UserOrSession as i32,
        metrics: Some(v1::MetricsConfig {
            primary_metric: "add_to_cart_rate".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut form = fields_of(&blank);
    form.set("revision", "");
    let form = with_spare_rows(form, NEW_VARIANT_ROWS);
    layout::page(
        Some(&session),
        "New experiment",
        form_page(&console, &session, None, &form, &Outcome::default()),
    )
    .into_response()
}

/// `GET /experiments/{id}/edit`.
pub async fn edit_page(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    if let Some(refused) = session.editor_only() {
        return refused;
    }
    let current = match console.blocking(move |admin| admin.get(&id)).await {
        Ok(current) => current,
        Err(error) => return layout::error_page(Some(&session), &error),
    };
    let form = with_spare_rows(fields_of(&experiment_to_proto(&current)), 0);
    layout::page(
        Some(&session),
        &current.name,
        form_page(
            &console,
            &session,
            Some(&current),
            &form,
            &Outcome::default(),
        ),
    )
    .into_response()
}

/// `POST /experiments/new`.
pub async fn create(State(console): State<Console>, session: Session, form: Form) -> Response {
    submit(console, session, None, form).await
}

/// `POST /experiments/{id}/edit`.
pub async fn update(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    let current = match console.blocking(move |admin| admin.get(&id)).await {
        Ok(current) => current,
        Err(error) => return layout::error_page(Some(&session), &error),
    };
    submit(console, session, Some(current), form).await
}

/// Reads the posted form or YAML, then validates or saves it.
async fn submit(
    console: Console,
    session: Session,
    current: Option<Experiment>,
    form: Form,
) -> Response {
    if let Some(refused) = session.refusal(&console, &form) {
        return refused;
    }
    let action = form.get("action").to_owned();
    let from_yaml = action.ends_with("-yaml");
    let save = action == "save" || action == "save-yaml";
    let base = current
        .as_ref()
        .map(experiment_to_proto)
        .unwrap_or_default();
    let (proposed, mut violations) = if from_yaml {
        match file::parse_experiment(form.get("yaml"), false) {
            Ok(mut parsed) => {
                if parsed.revision == 0 {
                    parsed.revision = form.get("revision").parse().unwrap_or(0);
                }
                (parsed, Vec::new())
            }
            Err(error) => (base.clone(), vec![FieldViolation::new("yaml", error)]),
        }
    } else {
        experiment_from_fields(&form, base.clone(), console.admin().schema())
    };
    if let Some(current) = &current
        && proposed.id != current.id
    {
        violations.push(FieldViolation::new(
            "id",
            format!("is {:?}: an experiment's id never changes", current.id),
        ));
    }
    // What the user typed stays on the page, whatever happens next.
    let shown = if from_yaml && violations.is_empty() {
        with_spare_rows(fields_of(&proposed), 0)
    } else if from_yaml {
        with_spare_rows(fields_of(&base), 0)
    } else {
        form.clone()
    };
    let mut outcome = Outcome {
        yaml: from_yaml.then(|| form.get("yaml").to_owned()),
        ..Outcome::default()
    };
    let domain = match experiment_from_proto(proposed) {
        Ok(domain) if violations.is_empty() => Some(domain),
        Ok(_) => None,
        Err(more) => {
            violations.extend(more);
            None
        }
    };
    let Some(proposed) = domain else {
        outcome.violations = violations;
        return refused_page(&console, &session, current.as_ref(), &shown, &outcome);
    };
    let principal = session.principal.clone();
    let reason = form.get("reason").to_owned();
    let rerandomize = form.get("rerandomize") == "true";
    let creating = current.is_none();
    let result = console
        .blocking(move |admin| {
            let update = Update {
                proposed: &proposed,
                mask: &[],
                rerandomize,
            };
            if !save {
                return admin.validate(update).map(Err);
            }
            let written = if creating {
                admin.create(&proposed, &principal, &reason)?
            } else {
                admin.update(update, &principal, &reason)?
            };
            Ok(Ok(written))
        })
        .await;
    match result {
        Ok(Ok(written)) => Redirect::to(&format!(
            "/experiments/{}?notice={}",
            url_part(&written.id),
            url_part(&format!("saved as revision {}", written.revision))
        ))
        .into_response(),
        Ok(Err(found)) => {
            outcome.valid = found.is_empty();
            outcome.violations = found;
            let status = if outcome.valid {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let title = if creating { "New experiment" } else { "Edit" };
            (
                status,
                layout::page(
                    Some(&session),
                    title,
                    form_page(&console, &session, current.as_ref(), &shown, &outcome),
                ),
            )
                .into_response()
        }
        Err(Error::InvalidArgument(found)) => {
            outcome.violations = found;
            refused_page(&console, &session, current.as_ref(), &shown, &outcome)
        }
        Err(Error::StaleRevision {
            based_on,
            current: now,
        }) => {
            let Some(current) = current else {
                return layout::error_page(
                    Some(&session),
                    &Error::StaleRevision {
                        based_on,
                        current: now,
                    },
                );
            };
            let id = current.id.clone();
            let theirs = console
                .blocking(move |admin| {
                    let latest = admin.get(&id)?;
                    let base = admin
                        .revisions(&id, 1, &(based_on + 1).to_string())?
                        .items
                        .into_iter()
                        .find(|revision| revision.number() == based_on);
                    Ok((base, latest))
                })
                .await;
            outcome.stale = Some(html! {
                div #stale {
                    strong { "Someone else changed this experiment" }
                    " since revision " (based_on) " your edit was based on: it is now at revision " (now) ". "
                    "Nothing was saved. Here is what changed; reload the form to edit the current revision "
                    "(your values are still below to copy)."
                    @match &theirs {
                        Ok((Some(base), latest)) => (diff::render(&diff::experiments(&base.experiment, latest))),
                        _ => {},
                    }
                    p { a #reload href={ "/experiments/" (url_part(&current.id)) "/edit" } { "Edit the current revision" } }
                }
            });
            (
                StatusCode::CONFLICT,
                layout::page(
                    Some(&session),
                    "Edit",
                    form_page(&console, &session, Some(&current), &shown, &outcome),
                ),
            )
                .into_response()
        }
        Err(error) => layout::error_page(Some(&session), &error),
    }
}

fn refused_page(
    console: &Console,
    session: &Session,
    current: Option<&Experiment>,
    shown: &Form,
    outcome: &Outcome,
) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        layout::page(
            Some(session),
            "Not saved",
            form_page(console, session, current, shown, outcome),
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

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
