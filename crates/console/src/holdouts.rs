//! Holdouts: `GET /holdouts` lists every holdout (status, share, layers,
//! placements, description, units so far); `GET /holdouts/{id}/results`
//! shows one holdout's definition and the comparison of its groups,
//! `holdout` (the control) against `rest`, with the results page's own
//! table, intervals, CUPED column, sanity checks and charts; `POST
//! /holdouts/{id}/end` ends it as `EndHoldout` does (an editor, after a
//! confirm; the results stay readable).
//!
//! A holdout's numbers are `GetResults`' answer for its id: the comparison
//! [`exp_core::holdout::comparison`] reads it as, from the view the results
//! service keeps.

use axum::{
    extract::{Path, State},
    http::Uri,
    response::{IntoResponse, Redirect, Response},
};
use exp_core::{Error, Holdout, HoldoutStatus, holdout};
use exp_results::ResultsView;
use maud::{Markup, html};

use crate::{
    Console,
    layout::{self, csrf, url_part},
    list, results,
    session::{Change, Session},
};

/// The held-out share as a percentage of the units: 500 basis points ->
/// "5%", 1,250 -> "12.5%", 1 -> "0.01%".
pub fn share_percent(basis_points: u32) -> String {
    format!("{}%", f64::from(basis_points) / 100.0)
}

/// The path of a holdout's results page.
pub fn results_path(id: &str) -> String {
    format!("/holdouts/{}/results", url_part(id))
}

/// A list of names, or "none".
fn names(values: &[String]) -> String {
    if values.is_empty() {
        "none".to_owned()
    } else {
        values.join(", ")
    }
}

/// The table of holdouts, each with the units its view has counted so far
/// (none yet: "—").
pub fn table(rows: &[(Holdout, Option<u64>)]) -> Markup {
    html! {
        table #holdouts {
            thead { tr {
                th { "Holdout" } th { "Status" } th { "Share" } th { "Layers" } th { "Placements" }
                th { "Description" } th { "Units" }
            } }
            tbody {
                @for (holdout, units) in rows {
                    tr data-holdout=(holdout.id) {
                        td.id { a.results href=(results_path(&holdout.id)) { code { (holdout.id) } } }
                        td.status { (holdout.status.as_str()) }
                        td.share data-basis-points=(holdout.share_basis_points) {
                            (share_percent(holdout.share_basis_points))
                        }
                        td.layers { (names(&holdout.layers)) }
                        td.placements { (names(&holdout.placements)) }
                        td.description { (holdout.description) }
                        td.units data-value=[units] {
                            @match units { Some(units) => (units), None => "—" }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() {
            p #empty { "No holdouts yet: create one with " code { "expctl holdout create" } " or "
                code { "AdminService/CreateHoldout" } "." }
        }
    }
}

/// `GET /holdouts`.
pub async fn list_page(State(console): State<Console>, session: Session, uri: Uri) -> Response {
    let holdouts = match console.blocking(|admin| admin.holdouts(None)).await {
        Ok(holdouts) => holdouts,
        Err(error) => return layout::error_page(Some(&session), &error),
    };
    let rows: Vec<(Holdout, Option<u64>)> = holdouts
        .into_iter()
        .map(|holdout| {
            let view = console.results().and_then(|results| {
                let subject = holdout::comparison(&holdout);
                let kept = results.kept_view(&subject);
                if kept.is_none() {
                    results.refresh(&subject);
                }
                kept
            });
            let units = list::units(view.as_deref());
            (holdout, units)
        })
        .collect();
    let body = html! {
        (layout::notice(console.notice_of(&uri).as_deref()))
        h1 { "Holdouts" }
        p { "A holdout keeps a share of units out of every experiment of the layers and placements "
            "it names; its results compare those units (" strong { (holdout::HOLDOUT_GROUP) } ", the control) "
            "with the rest of its scope (" strong { (holdout::REST_GROUP) } ")." }
        (table(&rows))
    };
    layout::page(Some(&session), "Holdouts", body).into_response()
}

/// What a holdout is: id, status, share, scope, description, revision.
pub fn definition(holdout: &Holdout) -> Markup {
    html! {
        dl.summary #holdout {
            dt { "Id" } dd #holdout-id { code { (holdout.id) } }
            dt { "Status" } dd #status { (holdout.status.as_str()) }
            dt { "Share held out" } dd #share data-basis-points=(holdout.share_basis_points) {
                (share_percent(holdout.share_basis_points)) " of the units ("
                (holdout.share_basis_points) " basis points)"
            }
            dt { "Layers" } dd #layers { (names(&holdout.layers)) }
            dt { "Placements" } dd #placements { (names(&holdout.placements)) }
            dt { "Description" } dd #description {
                @if holdout.description.is_empty() { "—" } @else { (holdout.description) }
            }
            dt { "Salt" } dd { code { (holdout.salt) } }
            dt { "Revision" } dd #revision {
                (holdout.revision) ", written by " (holdout.updated_by) " at "
                (layout::time(holdout.update_time)) "; created " (layout::time(holdout.create_time))
            }
        }
    }
}

/// The form that ends an active holdout, for an editor.
fn end_form(holdout: &Holdout, session: &Session) -> Markup {
    html! {
        @if session.may_change() && holdout.status == HoldoutStatus::Active {
            form #end-holdout-form method="post" action={ "/holdouts/" (url_part(&holdout.id)) "/end" }
                data-confirm={ "End holdout " (holdout.id) "? Its units get experiments again." } {
                (csrf(session))
                input type="hidden" name="expected_revision" value=(holdout.revision);
                button #end-holdout.danger type="submit" { "End holdout" }
            }
        }
    }
}

/// The body of a holdout's results page: its definition, then the
/// comparison of its groups as an experiment's results page shows one.
pub fn results_body(holdout: &Holdout, view: &ResultsView, session: &Session) -> Markup {
    let subject = holdout::comparison(holdout);
    html! {
        h1 { "Holdout " (holdout.id) }
        p.links { a #all-holdouts href="/holdouts" { "All holdouts" } }
        (definition(holdout))
        (end_form(holdout, session))
        h2 { "Holdout against rest" }
        p #groups { "The control is " strong { (holdout::HOLDOUT_GROUP) } ", the units held out; "
            strong { (holdout::REST_GROUP) } " is every other unit of its scope, which got its experiments. "
            "A difference is what the experiments of its layers and placements add up to." }
        (results::comparison(&subject, view))
    }
}

/// `GET /holdouts/{id}`: its results page, which shows its definition.
pub async fn page(Path(id): Path<String>) -> Redirect {
    Redirect::to(&results_path(&id))
}

/// `GET /holdouts/{id}/results`.
pub async fn results_page(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    let holdout = match console.blocking(move |admin| admin.holdout(&id)).await {
        Ok(holdout) => holdout,
        Err(error) => return layout::error_page(Some(&session), &error),
    };
    let view = match results::view_of(&console, &session, &holdout::comparison(&holdout)).await {
        Ok(view) => view,
        Err(refused) => return refused,
    };
    let body = html! {
        (layout::notice(console.notice_of(&uri).as_deref()))
        (results_body(&holdout, &view, &session))
    };
    let title = format!("Holdout {}", holdout.id);
    layout::page(Some(&session), &title, body).into_response()
}

/// `POST /holdouts/{id}/end`: ends it, if `expected_revision` is still
/// current.
pub async fn end(
    State(console): State<Console>,
    Path(id): Path<String>,
    Change { session, form }: Change,
) -> Response {
    let expected = form.get("expected_revision");
    let Ok(expected) = expected.parse::<u64>() else {
        return layout::error_page(
            Some(&session),
            &Error::invalid(
                "expected_revision",
                format!("{expected:?} is not a revision number"),
            ),
        );
    };
    let principal = session.principal.clone();
    let ended = console
        .blocking(move |admin| admin.end_holdout(&id, expected, &principal))
        .await;
    match ended {
        Ok(holdout) => console.redirect_with_notice(
            &results_path(&holdout.id),
            &format!(
                "ended holdout {} (revision {}): its units get experiments again",
                holdout.id, holdout.revision
            ),
        ),
        Err(error) => layout::error_page(Some(&session), &error),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use exp_admin::Role;
    use exp_proto::v1;

    use super::*;

    fn reco_holdout() -> Holdout {
        Holdout {
            id: "reco_holdout_2027h1".into(),
            description: "Everything the ranking layer ships in 2027 H1".into(),
            share_basis_points: 500,
            salt: holdout::salt("reco_holdout_2027h1"),
            layers: vec!["ymal_ranking".into(), "home_ranking".into()],
            placements: vec![],
            status: HoldoutStatus::Active,
            revision: 2,
            create_time: SystemTime::UNIX_EPOCH,
            update_time: SystemTime::UNIX_EPOCH + Duration::from_secs(86_400),
            updated_by: "alice@example.com".into(),
        }
    }

    fn group(name: &str, is_control: bool, units: u64) -> v1::VariantResult {
        v1::VariantResult {
            variant: name.into(),
            is_control,
            exposed_units: units,
            metrics: vec![v1::MetricResult {
                metric: "add_to_cart_rate".into(),
                role: v1::MetricRole::Primary as i32,
                value: if is_control { 0.11 } else { 0.14 },
                comparison_status: if is_control {
                    v1::ComparisonStatus::Control as i32
                } else {
                    v1::ComparisonStatus::Computed as i32
                },
                absolute_difference: if is_control { 0.0 } else { 0.03 },
                absolute_interval: (!is_control).then_some(v1::ConfidenceInterval {
                    lower: 0.01,
                    upper: 0.05,
                    level: 0.95,
                }),
                ..Default::default()
            }],
        }
    }

    fn comparison_view() -> ResultsView {
        ResultsView {
            results: v1::GetResultsResponse {
                experiment_id: "reco_holdout_2027h1".into(),
                alpha: 0.05,
                interval_kind: v1::IntervalKind::FixedHorizon as i32,
                multiple_comparison_correction: "holm".into(),
                variants: vec![group("holdout", true, 52), group("rest", false, 948)],
                sample_ratio: Some(v1::SampleRatioCheck {
                    chi_square: 0.2,
                    p_value: 0.65,
                    mismatch: false,
                }),
                ..Default::default()
            },
            timeline: v1::GetResultsTimelineResponse::default(),
            computed_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_share_is_written_as_a_percent_of_the_units() {
        assert_eq!(share_percent(500), "5%");
        assert_eq!(share_percent(1_250), "12.5%");
        assert_eq!(share_percent(1), "0.01%");
        assert_eq!(share_percent(5_000), "50%");
    }

    #[test]
    fn the_list_shows_each_holdouts_scope_and_links_to_its_results() {
        let counted = reco_holdout();
        let ended = Holdout {
            id: "checkout_holdout".into(),
            description: String::new(),
            share_basis_points: 1_250,
            layers: vec![],
            placements: vec!["cart_upsell".into()],
            status: HoldoutStatus::Ended,
            ..reco_holdout()
        };
        let page = table(&[(counted, Some(1_000)), (ended, None)]).into_string();
        assert!(
            page.contains(r#"<tr data-holdout="reco_holdout_2027h1">"#),
            "{page}"
        );
        assert!(
            page.contains(r#"href="/holdouts/reco_holdout_2027h1/results""#),
            "{page}"
        );
        assert!(
            page.contains(r#"href="/holdouts/checkout_holdout/results""#),
            "{page}"
        );
        assert!(page.contains(r#"<td class="status">active</td>"#), "{page}");
        assert!(page.contains(r#"<td class="status">ended</td>"#), "{page}");
        assert!(
            page.contains(r#"data-basis-points="500">5%</td>"#),
            "{page}"
        );
        assert!(
            page.contains(r#"data-basis-points="1250">12.5%</td>"#),
            "{page}"
        );
        assert!(
            page.contains(r#"<td class="layers">ymal_ranking, home_ranking</td>"#),
            "{page}"
        );
        assert!(
            page.contains(r#"<td class="placements">none</td>"#),
            "{page}"
        );
        assert!(
            page.contains(r#"<td class="placements">cart_upsell</td>"#),
            "{page}"
        );
        assert!(
            page.contains("Everything the ranking layer ships in 2027 H1"),
            "{page}"
        );
        assert!(
            page.contains(r#"<td class="units" data-value="1000">1000</td>"#),
            "{page}"
        );
        assert!(page.contains(r#"<td class="units">—</td>"#), "{page}");
        assert!(!page.contains(r#"id="empty""#), "{page}");
    }

    #[test]
    fn an_empty_list_says_how_to_create_a_holdout() {
        let page = table(&[]).into_string();
        assert!(page.contains(r#"id="empty""#), "{page}");
        assert!(page.contains("expctl holdout create"), "{page}");
    }

    #[test]
    fn a_holdouts_results_show_its_definition_and_compare_rest_against_the_held_out_control() {
        let editor = Session::for_test("alice@example.com", Role::Editor);
        let page = results_body(&reco_holdout(), &comparison_view(), &editor).into_string();
        // The definition.
        assert!(
            page.contains(r#"<dd id="holdout-id"><code>reco_holdout_2027h1</code></dd>"#),
            "{page}"
        );
        assert!(page.contains(r#"<dd id="status">active</dd>"#), "{page}");
        assert!(
            page.contains("5% of the units (500 basis points)"),
            "{page}"
        );
        assert!(
            page.contains(r#"<dd id="layers">ymal_ranking, home_ranking</dd>"#),
            "{page}"
        );
        assert!(page.contains(r#"<dd id="placements">none</dd>"#), "{page}");
        // The results page's own rendering, against the holdout group.
        assert!(
            page.contains("Differences are against <strong>holdout</strong>"),
            "{page}"
        );
        assert!(
            page.contains(r#"data-variant="holdout" data-metric="add_to_cart_rate""#),
            "{page}"
        );
        assert!(
            page.contains(r#"data-variant="rest" data-metric="add_to_cart_rate""#),
            "{page}"
        );
        assert!(page.contains("holdout (control)"), "{page}");
        assert!(
            page.contains(r#"<td class="units" data-value="948">948</td>"#),
            "{page}"
        );
        assert!(
            page.contains(r#"data-lower="0.01" data-upper="0.05""#),
            "{page}"
        );
        assert!(page.contains("<th>CUPED</th>"), "{page}");
        assert!(page.contains(r#"id="interval-kind""#), "{page}");
        assert!(page.contains(r#"<li data-variant="rest""#), "{page}");
        assert!(
            page.contains(r#"data-check="sample_ratio" class="passed""#),
            "{page}"
        );
        assert!(page.contains(r#"id="lift-chart""#), "{page}");
        assert!(page.contains(r#"id="timeline-data""#), "{page}");
        assert!(!page.contains(r#"id="srm-banner""#), "{page}");
    }

    #[test]
    fn only_an_editor_may_end_a_holdout_and_only_while_it_is_active() {
        let view = comparison_view();
        let editor = Session::for_test("alice@example.com", Role::Editor);
        let page = results_body(&reco_holdout(), &view, &editor).into_string();
        assert!(
            page.contains(r#"action="/holdouts/reco_holdout_2027h1/end""#),
            "{page}"
        );
        assert!(
            page.contains(r#"name="expected_revision" value="2""#),
            "{page}"
        );
        assert!(page.contains(r#"value="test-csrf-token""#), "{page}");
        let viewer = Session::for_test("bob@example.com", Role::Viewer);
        let page = results_body(&reco_holdout(), &view, &viewer).into_string();
        assert!(!page.contains("end-holdout"), "{page}");
        let ended = Holdout {
            status: HoldoutStatus::Ended,
            ..reco_holdout()
        };
        let page = results_body(&ended, &view, &editor).into_string();
        assert!(page.contains(r#"<dd id="status">ended</dd>"#), "{page}");
        assert!(!page.contains("end-holdout"), "{page}");
    }
}
