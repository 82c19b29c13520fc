//! QA overrides of one experiment: list, add (unit, variant, expiry),
//! delete. `Assign` follows them as soon as the config is published.

use std::time::Duration;

use axum::{
    extract::{Path, State},
    http::Uri,
    response::{IntoResponse, Response},
};
use exp_core::{Error, QaOverride, UnitType};
use maud::html;

use crate::{
    Console,
    layout::{self, csrf, url_part},
    session::{Change, Session},
};

/// Longest expiry the form offers: a year.
const MAX_EXPIRY_HOURS: f64 = 24.0 * 366.0;

fn unit_type_of(text: &str) -> Result<UnitType, Error> {
    match text {
        "user" => Ok(UnitType::User),
        "session" => Ok(UnitType::Session),
        other => Err(Error::invalid(
            "unit_type",
            format!("{other:?} is not a unit type: user or session"),
        )),
    }
}

/// `GET /experiments/{id}/overrides`.
pub async fn page(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    let loaded = console
        .blocking(move |admin| Ok((admin.get(&id)?, admin.overrides(Some(&id), false)?)))
        .await;
    let (experiment, overrides) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => return layout::error_page(Some(&session), &error),
    };
    let notice = console.notice_of(&uri);
    let base = format!("/experiments/{}/overrides", url_part(&experiment.id));
    let body = html! {
        (layout::notice(notice.as_deref()))
        h1 { "QA overrides of " a href={ "/experiments/" (url_part(&experiment.id)) } { (experiment.name) } }
        p { "A unit listed here gets its variant from " code { "Assign" } " whatever its bucket, "
            "while the experiment serves, until the override expires." }
        table #overrides {
            thead { tr { th { "Unit" } th { "Type" } th { "Variant" } th { "Expires" } th { "Reason" } th { "By" } th { "" } } }
            tbody {
                @for qa in &overrides {
                    tr data-unit=(qa.unit_id) {
                        td.unit { code { (qa.unit_id) } }
                        td.unit-type { (qa.unit_type.as_str()) }
                        td.variant { (qa.variant) }
                        td.expires { (layout::maybe_time(qa.expire_time)) }
                        td.reason { (qa.reason) }
                        td.author { (qa.created_by) }
                        td {
                            @if session.may_change() {
                                form.delete-override method="post" action={ (base) "/delete" } {
                                    (csrf(&session))
                                    input type="hidden" name="unit_type" value=(qa.unit_type.as_str());
                                    input type="hidden" name="unit_id" value=(qa.unit_id);
                                    button.danger type="submit" data-delete=(qa.unit_id) { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if overrides.is_empty() { p #no-overrides { "No override." } }
        @if session.may_change() {
            h2 { "Add an override" }
            form #override-form.grid method="post" action=(base) {
                (csrf(&session))
                label for="unit_type" { "Unit type" }
                select #unit_type name="unit_type" {
                    option value="user" { "user" }
                    option value="session" { "session" }
                }
                label for="unit_id" { "Unit id" }
                input #unit_id name="unit_id" required placeholder="qa-user-1";
                label for="variant" { "Variant" }
                select #variant name="variant" {
                    @for variant in &experiment.variants { option value=(variant.name) { (variant.name) } }
                }
                label for="expires_in_hours" { "Expires in (hours)" }
                input #expires_in_hours name="expires_in_hours" type="number" min="0" step="any" placeholder="empty: never";
                label for="reason" { "Reason" }
                input #reason name="reason" placeholder="checking the new ranking on my phone";
                div.actions.wide { button #add-override type="submit" { "Add override" } }
            }
        }
    };
    layout::page(Some(&session), "QA overrides", body).into_response()
}

/// `POST /experiments/{id}/overrides`: adds (or replaces) one.
pub async fn add(
    State(console): State<Console>,
    Path(id): Path<String>,
    Change { session, form }: Change,
) -> Response {
    let read = (|| {
        let unit_type = unit_type_of(form.get("unit_type"))?;
        let hours = form.get("expires_in_hours");
        let expire_time = if hours.is_empty() {
            None
        } else {
            let hours: f64 = hours
                .parse()
                .ok()
                .filter(|hours: &f64| *hours > 0.0 && *hours <= MAX_EXPIRY_HOURS)
                .ok_or_else(|| {
                    Error::invalid(
                        "expires_in_hours",
                        format!("{hours:?} is not a number of hours above 0 and at most {MAX_EXPIRY_HOURS}"),
                    )
                })?;
            Some(console.admin().clock().now() + Duration::from_secs_f64(hours * 3600.0))
        };
        Ok(QaOverride {
            experiment_id: id.clone(),
            unit_type,
            unit_id: form.get("unit_id").to_owned(),
            variant: form.get("variant").to_owned(),
            expire_time,
            reason: form.get("reason").to_owned(),
            create_time: std::time::SystemTime::UNIX_EPOCH,
            created_by: session.principal.identity.clone(),
        })
    })();
    let qa_override = match read {
        Ok(qa_override) => qa_override,
        Err(error) => return layout::error_page(Some(&session), &error),
    };
    match console
        .blocking(move |admin| admin.set_override(qa_override))
        .await
    {
        Ok(set) => console.redirect_with_notice(
            &format!("/experiments/{}/overrides", url_part(&id)),
            &format!(
                "{} {} now gets {}",
                set.unit_type.as_str(),
                set.unit_id,
                set.variant
            ),
        ),
        Err(error) => layout::error_page(Some(&session), &error),
    }
}

/// `POST /experiments/{id}/overrides/delete`.
pub async fn delete(
    State(console): State<Console>,
    Path(id): Path<String>,
    Change { session, form }: Change,
) -> Response {
    let unit_type = match unit_type_of(form.get("unit_type")) {
        Ok(unit_type) => unit_type,
        Err(error) => return layout::error_page(Some(&session), &error),
    };
    let unit_id = form.get("unit_id").to_owned();
    let experiment = id.clone();
    let deleted = {
        let unit_id = unit_id.clone();
        console
            .blocking(move |admin| admin.delete_override(&experiment, unit_type, &unit_id))
            .await
    };
    match deleted {
        Ok(()) => console.redirect_with_notice(
            &format!("/experiments/{}/overrides", url_part(&id)),
            &format!("deleted the override of {unit_id}"),
        ),
        Err(error) => layout::error_page(Some(&session), &error),
    }
}
