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
//!
//! - [`fields`]: the form's fields of an experiment, and the experiment a
//!   posted form describes.
//! - [`form`]: the page: inputs, violations, the YAML pane.

mod fields;
mod form;

pub use fields::{compact_rows, experiment_from_fields, fields_of};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use exp_core::{Error, Experiment, FieldViolation, lifecycle::Update};
use exp_proto::{
    convert::{experiment_from_proto, experiment_to_proto},
    file, v1,
};
use maud::html;

use crate::{
    Console, diff,
    layout::{self, url_part},
    session::{Change, Form, Session},
};
use form::{NEW_VARIANT_ROWS, Outcome, form_page, with_spare_rows};

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
pub async fn create(State(console): State<Console>, Change { session, form }: Change) -> Response {
    submit(console, session, None, form).await
}

/// `POST /experiments/{id}/edit`.
pub async fn update(
    State(console): State<Console>,
    Path(id): Path<String>,
    // Checked first: a forged POST learns nothing, not even whether the
    // id exists.
    Change { session, form }: Change,
) -> Response {
    let current = match console.blocking(move |admin| admin.get(&id)).await {
        Ok(current) => current,
        Err(error) => return layout::error_page(Some(&session), &error),
    };
    submit(console, session, Some(current), form).await
}

/// Reads the posted form or YAML, then validates or saves it (the caller
/// has checked the form may change anything).
async fn submit(
    console: Console,
    session: Session,
    current: Option<Experiment>,
    form: Form,
) -> Response {
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
        let (rows, mut found) = compact_rows(&form);
        let (proposed, unreadable) =
            experiment_from_fields(&rows, base.clone(), console.admin().schema());
        found.extend(unreadable);
        (proposed, found)
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
        with_spare_rows(compact_rows(&form).0, 0)
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
        Ok(Ok(written)) => console.redirect_with_notice(
            &format!("/experiments/{}", url_part(&written.id)),
            &format!("saved as revision {}", written.revision),
        ),
        Ok(Err(found)) => {
            outcome.valid = found.is_empty();
            outcome.violations = found;
            let status = if outcome.valid {
                StatusCode::OK
            } else {
                layout::status_of(&Error::InvalidArgument(Vec::new()))
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
                    let base = admin.revision(&id, based_on).ok();
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
                layout::status_of(&Error::StaleRevision {
                    based_on,
                    current: now,
                }),
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
        layout::status_of(&Error::InvalidArgument(Vec::new())),
        layout::page(
            Some(session),
            "Not saved",
            form_page(console, session, current, shown, outcome),
        ),
    )
        .into_response()
}
