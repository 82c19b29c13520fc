//! One experiment: what it is, the status moves its status allows (each
//! with a reason), its revision history with a field-by-field diff of each
//! revision against the one before, and rollback with a preview of what
//! would change.

use std::collections::BTreeSet;

use axum::{
    extract::{Path, State},
    http::Uri,
    response::{IntoResponse, Response},
};
use exp_core::{
    Error, Experiment, GuardrailAction, Revision, RevisionAction, Status,
    lifecycle::{Transition, Update},
};
use exp_proto::v1;
use maud::{Markup, html};

use crate::{
    Console, diff,
    layout::{self, csrf, url_part},
    session::{Change, Session},
};

/// Most revisions a history page shows.
const HISTORY_LIMIT: usize = 500;

/// The status moves of the page: (action, button label, allowed from).
const MOVES: &[(&str, &str)] = &[
    ("start", "Start"),
    ("pause", "Pause"),
    ("resume", "Resume"),
    ("ramp", "Ramp"),
    ("stop", "Stop"),
    ("archive", "Archive"),
];

/// Whether `action` is a move `status` allows.
fn allowed(action: &str, status: Status) -> bool {
    let transition = match action {
        "start" => Transition::Start,
        "pause" => Transition::Pause,
        "resume" => Transition::Resume,
        "stop" => Transition::Stop { ship_variant: None },
        "archive" => Transition::Archive,
        // A ramp is an update of `traffic_percent`: while it has not ended.
        "ramp" => {
            return matches!(
                status,
                Status::Draft | Status::Scheduled | Status::Running | Status::Paused
            );
        }
        _ => return false,
    };
    transition.allowed_from().contains(&status)
}

/// Every revision of `id`, newest first, up to [`HISTORY_LIMIT`].
fn history(admin: &exp_admin::Admin, id: &str) -> Result<Vec<Revision>, Error> {
    let mut revisions = Vec::new();
    let mut token = String::new();
    while revisions.len() < HISTORY_LIMIT {
        let page = admin.revisions(id, exp_admin::admin::MAX_PAGE_SIZE, &token)?;
        revisions.extend(page.items);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    revisions.truncate(HISTORY_LIMIT);
    Ok(revisions)
}

/// `GET /experiments/{id}`.
pub async fn page(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    let loaded = console
        .blocking(move |admin| Ok((admin.get(&id)?, history(admin, &id)?)))
        .await;
    let (experiment, revisions) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => return layout::error_page(Some(&session), &error),
    };
    let body = html! {
        (layout::notice(console.notice_of(&uri).as_deref()))
        (summary(&experiment))
        (links(&experiment, &session))
        @if session.may_change() { (moves(&experiment, &session)) }
        h2 { "History" }
        (history_table(&experiment, &revisions, &session))
    };
    layout::page(Some(&session), &experiment.name, body).into_response()
}

fn links(experiment: &Experiment, session: &Session) -> Markup {
    let base = format!("/experiments/{}", url_part(&experiment.id));
    html! {
        p.links {
            a #results href={ (base) "/results" } { "Results" }
            " · "
            a #overrides href={ (base) "/overrides" } { "QA overrides" }
            @if session.may_change() && experiment.status != Status::Archived {
                " · "
                a #edit href={ (base) "/edit" } { "Edit" }
            }
        }
    }
}

/// What the experiment is: hypothesis, variants side by side, eligibility,
/// schedule, metrics, layer.
pub fn summary(experiment: &Experiment) -> Markup {
    let eligibility = &experiment.eligibility;
    let any = |values: &[String]| {
        if values.is_empty() {
            "any".to_owned()
        } else {
            values.join(", ")
        }
    };
    let params: BTreeSet<&str> = experiment
        .variants
        .iter()
        .flat_map(|variant| variant.params.keys().map(String::as_str))
        .collect();
    let metrics = &experiment.metrics;
    let proto_eligibility = exp_proto::convert::eligibility_to_proto(eligibility);
    html! {
        h1 { (experiment.name) }
        dl.summary {
            dt { "Id" } dd #experiment-id { code { (experiment.id) } }
            dt { "Status" } dd #status { (experiment.status.as_str()) }
            @if !experiment.status_reason.is_empty() {
                dt { "Why" } dd #status-reason { (experiment.status_reason) }
            }
            dt { "Revision" } dd #revision { (experiment.revision) }
            dt { "Traffic" } dd #traffic { (experiment.traffic_percent) "%" }
            dt { "Hypothesis" } dd #hypothesis { (experiment.hypothesis) }
            dt { "Owner" } dd #owner { (experiment.owner) }
            dt { "Layer" } dd #layer { (experiment.effective_layer()) }
            dt { "Eligibility" } dd #eligibility {
                "placements " (any(&eligibility.placements))
                "; countries " (any(&eligibility.countries))
                "; devices " (any(&eligibility.devices))
                "; page types " (any(&eligibility.page_types))
                "; logged in: " (layout::enum_name(v1::LoggedInRequirement::try_from(proto_eligibility.logged_in).map(|v| v.as_str_name()), "LOGGED_IN_REQUIREMENT_"))
                @for rule in &proto_eligibility.attribute_rules {
                    "; " (rule.attribute) " "
                    (layout::enum_name(v1::AttributeOperator::try_from(rule.operator).map(|v| v.as_str_name()), "ATTRIBUTE_OPERATOR_"))
                    " " (rule.values.join(", "))
                }
            }
            dt { "Schedule" } dd #schedule {
                (layout::maybe_time(experiment.schedule.start_time)) " → "
                (layout::maybe_time(experiment.schedule.end_time))
            }
            dt { "Metrics" } dd #metrics {
                "primary " strong { (metrics.primary_metric) }
                @if !metrics.secondary_metrics.is_empty() {
                    "; secondary " (metrics.secondary_metrics.join(", "))
                }
                @for guardrail in &metrics.guardrails {
                    "; guardrail " (guardrail.metric) " (threshold " (guardrail.threshold)
                    @if let Some(action) = guardrail.action {
                        ", " (match action { GuardrailAction::Pause => "pause", GuardrailAction::Stop => "stop" })
                    }
                    ")"
                }
            }
            dt { "Readout" } dd #readout {
                @if experiment.sequential { "always-valid (sequential) intervals" } @else { "fixed-horizon intervals" }
                "; secondary metrics corrected by "
                (match experiment.multiple_comparison_correction {
                    exp_core::MultipleComparisonCorrection::Holm => "Holm",
                    exp_core::MultipleComparisonCorrection::BenjaminiHochberg => "Benjamini-Hochberg",
                })
            }
            @if let Some(shipped) = &experiment.shipped_variant {
                dt { "Shipped" } dd #shipped { (shipped) }
            }
        }
        h2 { "Variants" }
        table #variants {
            thead { tr {
                th { "" }
                @for variant in &experiment.variants {
                    th data-variant=(variant.name) {
                        (variant.name)
                        @if variant.name == experiment.control_variant { " (control)" }
                    }
                }
            } }
            tbody {
                tr data-param="weight" {
                    th { "weight" }
                    @for variant in &experiment.variants {
                        td data-variant=(variant.name) { (variant.weight) }
                    }
                }
                @for key in &params {
                    tr data-param=(key) {
                        th { (key) }
                        @for variant in &experiment.variants {
                            td data-variant=(variant.name) {
                                @match variant.params.get(*key) {
                                    Some(serde_json::Value::String(text)) => (text),
                                    Some(value) => (value),
                                    None => span.unset { "—" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A form for each move the status allows, each asking for a reason.
fn moves(experiment: &Experiment, session: &Session) -> Markup {
    let base = format!("/experiments/{}", url_part(&experiment.id));
    html! {
        section #moves {
            h2 { "Change status" }
            @for (action, label) in MOVES.iter().filter(|(action, _)| allowed(action, experiment.status)) {
                // Only stop and archive ask first: an empty `data-confirm`
                // would still make console.js ask, with no question.
                @let confirm = matches!(*action, "stop" | "archive")
                    .then(|| format!("{label} {}?", experiment.id));
                form.move data-action=(action) method="post" action={ (base) "/" (action) }
                    data-confirm=[confirm] {
                    (csrf(session))
                    input type="hidden" name="expected_revision" value=(experiment.revision);
                    @if *action == "ramp" {
                        label { "to " input type="number" name="traffic_percent" min="0" max="100"
                            value=(experiment.traffic_percent) required; " %" }
                    }
                    @if *action == "stop" {
                        label { "ship "
                            select name="ship_variant" {
                                option value="" { "nothing (everyone gets the default)" }
                                @for variant in &experiment.variants {
                                    option value=(variant.name) { (variant.name) }
                                }
                            }
                        }
                    }
                    input type="text" name="reason" placeholder="why" required;
                    button type="submit" class=@if matches!(*action, "stop" | "archive") { "danger" } { (label) }
                }
            }
        }
    }
}

fn history_table(experiment: &Experiment, revisions: &[Revision], session: &Session) -> Markup {
    let base = format!("/experiments/{}", url_part(&experiment.id));
    html! {
        table #history {
            thead { tr { th { "Revision" } th { "Action" } th { "By" } th { "Reason" } th { "When" } th { "Changes" } th { "" } } }
            tbody {
                @for (index, revision) in revisions.iter().enumerate() {
                    tr data-revision=(revision.number()) {
                        td.number { (revision.number()) }
                        td.action {
                            (layout::action_name(revision.action))
                            @if let Some(to) = revision.rolled_back_to { " to " (to) }
                        }
                        td.author { (revision.author) }
                        td.reason { (revision.reason) }
                        td.time { (layout::time(revision.written_at())) }
                        td.diff {
                            @match revisions.get(index + 1) {
                                Some(before) => (diff::render(&diff::experiments(&before.experiment, &revision.experiment))),
                                None if revision.action == RevisionAction::Create => "created",
                                None => "(the revision before is past the history shown)",
                            }
                        }
                        td {
                            @if revision.number() != experiment.revision && session.may_change()
                                && experiment.status != Status::Archived {
                                a.rollback data-to=(revision.number())
                                    href={ (base) "/rollback/" (revision.number()) } { "Roll back to this" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `POST /experiments/{id}/{action}`: start, pause, resume, ramp, stop or
/// archive, with a reason, based on the revision the page showed.
pub async fn act(
    State(console): State<Console>,
    Path((id, action)): Path<(String, String)>,
    Change { session, form }: Change,
) -> Response {
    let reason = form.get("reason").to_owned();
    let checked = (|| {
        if !MOVES.iter().any(|(known, _)| *known == action) {
            return Err(Error::NotFound {
                kind: "action",
                id: action.clone(),
            });
        }
        if reason.is_empty() {
            return Err(Error::invalid(
                "reason",
                "is required: say why, for the history",
            ));
        }
        let expected = form.get("expected_revision");
        let expected = expected.parse::<u64>().map_err(|_| {
            Error::invalid(
                "expected_revision",
                format!("{expected:?} is not a revision number"),
            )
        })?;
        Ok(expected)
    })();
    let expected = match checked {
        Ok(expected) => expected,
        Err(error) => return layout::error_page(Some(&session), &error),
    };
    let principal = session.principal.clone();
    let written = match action.as_str() {
        "ramp" => {
            let percent = form.get("traffic_percent");
            let Ok(percent) = percent.parse::<u32>() else {
                return layout::error_page(
                    Some(&session),
                    &Error::invalid(
                        "traffic_percent",
                        format!("{percent:?} is not a whole number from 0 to 100"),
                    ),
                );
            };
            let id = id.clone();
            console
                .blocking(move |admin| {
                    let mut proposed = admin.get(&id)?;
                    proposed.traffic_percent = percent;
                    proposed.revision = expected;
                    let mask = ["traffic_percent".to_owned()];
                    let update = Update {
                        proposed: &proposed,
                        mask: &mask,
                        rerandomize: false,
                    };
                    admin.update(update, &principal, &reason)
                })
                .await
        }
        verb => {
            let transition = match verb {
                "start" => Transition::Start,
                "pause" => Transition::Pause,
                "resume" => Transition::Resume,
                "archive" => Transition::Archive,
                _ => Transition::Stop {
                    ship_variant: Some(form.get("ship_variant").to_owned())
                        .filter(|name| !name.is_empty()),
                },
            };
            let id = id.clone();
            console
                .blocking(move |admin| {
                    admin.transition(&id, &transition, Some(expected), &principal, &reason)
                })
                .await
        }
    };
    match written {
        Ok(experiment) => console.redirect_with_notice(
            &format!("/experiments/{}", url_part(&experiment.id)),
            &format!(
                "{}: now {} at {}% (revision {})",
                action,
                experiment.status.as_str(),
                experiment.traffic_percent,
                experiment.revision
            ),
        ),
        Err(error) => layout::error_page(Some(&session), &error),
    }
}

/// `GET /experiments/{id}/rollback/{revision}`: what rolling back would
/// change, computed by the same rule the write applies, and the form that
/// writes it.
pub async fn rollback_preview(
    State(console): State<Console>,
    session: Session,
    Path((id, revision)): Path<(String, u64)>,
) -> Response {
    let principal = session.principal.clone();
    let planned = console
        .blocking(move |admin| {
            let current = admin.get(&id)?;
            let target = admin.revision(&id, revision)?;
            // The rule the write applies, with nothing written.
            let preview = admin.plan_rollback(&id, revision, false, &principal);
            Ok((current, target, preview))
        })
        .await;
    let (current, target, preview) = match planned {
        Ok(planned) => planned,
        Err(error) => return layout::error_page(Some(&session), &error),
    };
    let base = format!("/experiments/{}", url_part(&current.id));
    let body = html! {
        h1 { "Roll back " (current.name) " to revision " (revision) }
        p { "Revision " (revision) " was written by " (target.author) " at "
            (layout::time(target.written_at())) " (" (layout::action_name(target.action)) "). "
            "Rolling back writes its configuration as revision " (current.revision + 1)
            "; the status (" (current.status.as_str()) ") and the history stay." }
        h2 { "What would change" }
        @match &preview {
            Ok(next) => div #rollback-diff { (diff::render(&diff::experiments(&current, next))) },
            Err(error) => div #error { (error) },
        }
        @if session.may_change() {
            form #rollback-form method="post" action={ (base) "/rollback/" (revision) } {
                (csrf(&session))
                input type="hidden" name="expected_revision" value=(current.revision);
                @if preview.is_err() {
                    label { input type="checkbox" name="rerandomize" value="true";
                        " re-randomise (reshuffles every unit: allowed for weight changes of a started experiment)" }
                }
                input type="text" name="reason" placeholder="why" required;
                button #confirm-rollback.danger type="submit" { "Roll back" }
            }
        }
        p { a href=(base) { "Back to the experiment" } }
    };
    layout::page(Some(&session), "Roll back", body).into_response()
}

/// `POST /experiments/{id}/rollback/{revision}`.
pub async fn rollback(
    State(console): State<Console>,
    Path((id, revision)): Path<(String, u64)>,
    Change { session, form }: Change,
) -> Response {
    let reason = form.get("reason").to_owned();
    if reason.is_empty() {
        return layout::error_page(
            Some(&session),
            &Error::invalid("reason", "is required: say why, for the history"),
        );
    }
    let expected = match form.get("expected_revision").parse::<u64>() {
        Ok(expected) => expected,
        Err(_) => {
            return layout::error_page(
                Some(&session),
                &Error::invalid(
                    "expected_revision",
                    "is required: the revision the preview showed, so a change made since is not overwritten",
                ),
            );
        }
    };
    let rerandomize = form.get("rerandomize") == "true";
    let principal = session.principal.clone();
    let written = console
        .blocking(move |admin| {
            admin.rollback(
                &id,
                revision,
                rerandomize,
                Some(expected),
                &principal,
                &reason,
            )
        })
        .await;
    match written {
        Ok(experiment) => console.redirect_with_notice(
            &format!("/experiments/{}", url_part(&experiment.id)),
            &format!(
                "rolled back to revision {revision}, written as revision {}",
                experiment.revision
            ),
        ),
        Err(error) => layout::error_page(Some(&session), &error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_moves_offered_are_the_ones_the_lifecycle_allows() {
        let offered = |status| -> Vec<&str> {
            MOVES
                .iter()
                .map(|(action, _)| *action)
                .filter(|action| allowed(action, status))
                .collect()
        };
        assert_eq!(offered(Status::Draft), ["start", "ramp", "archive"]);
        assert_eq!(offered(Status::Running), ["pause", "ramp", "stop"]);
        assert_eq!(offered(Status::Paused), ["resume", "ramp", "stop"]);
        assert_eq!(offered(Status::Stopped), ["archive"]);
        assert!(offered(Status::Archived).is_empty());
    }
}
