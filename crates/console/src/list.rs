//! `GET /experiments`: every experiment with its health, filtered by
//! status, placement and owner, searched by name or id.

use axum::{
    extract::State,
    http::Uri,
    response::{IntoResponse, Response},
};
use exp_admin::admin::{ListFilter, MAX_PAGE_SIZE};
use exp_core::{Experiment, Status};
use exp_proto::v1;
use exp_results::{GUARDRAIL_AUTHOR, ResultsView};
use maud::{Markup, html};

use crate::{
    Console,
    layout::{self, url_part},
    session::Session,
};

/// Every status, in lifecycle order.
pub const STATUSES: [Status; 7] = [
    Status::Draft,
    Status::Scheduled,
    Status::Running,
    Status::Paused,
    Status::Stopped,
    Status::Completed,
    Status::Archived,
];

/// Results lagging more than this behind the log are "behind".
const BEHIND_SECONDS: f64 = 60.0;

/// The query of the list page.
#[derive(Debug, Default)]
struct Query {
    status: String,
    placement: String,
    owner: String,
    search: String,
}

impl Query {
    fn of(uri: &Uri) -> Self {
        let mut query = Self::default();
        for (name, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
            let value = value.trim().to_owned();
            match &*name {
                "status" => query.status = value,
                "placement" => query.placement = value,
                "owner" => query.owner = value,
                "q" => query.search = value,
                _ => {}
            }
        }
        query
    }
}

/// A health badge of an experiment: (kind, label, explanation).
pub type Badge = (&'static str, String, String);

/// What a PM should look at first, from the kept results view and the
/// experiment itself.
pub fn badges(experiment: &Experiment, view: Option<&ResultsView>, lag_seconds: f64) -> Vec<Badge> {
    let mut badges = Vec::new();
    let stopped_by_guardrail = experiment.updated_by == GUARDRAIL_AUTHOR
        && matches!(experiment.status, Status::Paused | Status::Stopped);
    if let Some(view) = view {
        let results = &view.results;
        if results.sample_ratio.is_some_and(|check| check.mismatch) {
            badges.push((
                "srm",
                "sample ratio mismatch".into(),
                "exposed units do not match the weights: do not trust the results".into(),
            ));
        }
        let breached: Vec<&v1::GuardrailStatus> = results
            .guardrails
            .iter()
            .filter(|guardrail| guardrail.state == v1::GuardrailState::Breached as i32)
            .collect();
        if !breached.is_empty() || stopped_by_guardrail {
            let which: Vec<String> = breached
                .iter()
                .map(|guardrail| format!("{} in {}", guardrail.metric, guardrail.variant))
                .collect();
            badges.push((
                "guardrail",
                "guardrail breached".into(),
                if which.is_empty() {
                    experiment.status_reason.clone()
                } else {
                    which.join(", ")
                },
            ));
        }
        let failing: Vec<&str> = results
            .sanity_checks
            .iter()
            .filter(|check| !check.passed)
            .map(|check| check.name.as_str())
            .collect();
        if !failing.is_empty() {
            badges.push(("sanity", "sanity check failing".into(), failing.join(", ")));
        }
        let exposed: u64 = results.variants.iter().map(|v| v.exposed_units).sum();
        if exposed == 0 && experiment.status == Status::Running {
            badges.push((
                "no-exposures",
                "no exposures yet".into(),
                "running, and no unit has been exposed".into(),
            ));
        }
    } else if stopped_by_guardrail {
        badges.push((
            "guardrail",
            "guardrail breached".into(),
            experiment.status_reason.clone(),
        ));
    }
    if lag_seconds > BEHIND_SECONDS {
        badges.push((
            "results-behind",
            "results behind".into(),
            format!("the analysis is {lag_seconds:.0} s behind the event log"),
        ));
    }
    if badges.is_empty() && view.is_some() {
        badges.push(("ok", "ok".into(), "nothing needs a look".into()));
    }
    badges
}

/// The badges as pills.
pub fn render_badges(badges: &[Badge]) -> Markup {
    html! {
        @for (kind, label, why) in badges {
            span.badge data-health=(kind) title=(why) { (label) }
        }
    }
}

/// Units exposed so far, from a view.
pub fn units(view: Option<&ResultsView>) -> Option<u64> {
    view.map(|view| view.results.variants.iter().map(|v| v.exposed_units).sum())
}

/// `GET /experiments`.
pub async fn page(State(console): State<Console>, session: Session, uri: Uri) -> Response {
    let query = Query::of(&uri);
    let status = match query.status.as_str() {
        "" => None,
        name => match STATUSES.iter().find(|status| status.as_str() == name) {
            Some(status) => Some(*status),
            None => {
                return layout::error_page(
                    Some(&session),
                    &exp_core::Error::invalid(
                        "status",
                        format!(
                            "{name:?} is not a status: draft, scheduled, running, paused, stopped, completed or archived"
                        ),
                    ),
                );
            }
        },
    };
    let filter = ListFilter {
        status,
        placement: (!query.placement.is_empty()).then(|| query.placement.clone()),
        owner: (!query.owner.is_empty()).then(|| query.owner.clone()),
    };
    let listed = console
        .blocking(move |admin| {
            let mut experiments = Vec::new();
            let mut token = String::new();
            loop {
                let page = admin.list(&filter, MAX_PAGE_SIZE, &token)?;
                experiments.extend(page.items);
                if page.next_page_token.is_empty() {
                    return Ok(experiments);
                }
                token = page.next_page_token;
            }
        })
        .await;
    let experiments = match listed {
        Ok(experiments) => experiments,
        Err(error) => return layout::error_page(Some(&session), &error),
    };
    let search = query.search.to_lowercase();
    let experiments: Vec<Experiment> = experiments
        .into_iter()
        .filter(|experiment| {
            search.is_empty()
                || experiment.id.to_lowercase().contains(&search)
                || experiment.name.to_lowercase().contains(&search)
        })
        .collect();
    let lag_seconds = console
        .results()
        .map_or(0.0, |results| results.lag().lag_seconds);
    let rows: Vec<(Experiment, Option<std::sync::Arc<ResultsView>>)> = experiments
        .into_iter()
        .map(|experiment| {
            let view = console.results().and_then(|results| {
                let kept = results.kept_view(&experiment);
                if kept.is_none() && experiment.status != Status::Draft {
                    results.refresh(&experiment);
                }
                kept
            });
            (experiment, view)
        })
        .collect();
    let body = html! {
        h1 { "Experiments" }
        // htmx: the table follows the filters as they are typed (the page
        // itself is fetched, and only its table swapped in); without
        // scripts, the button submits the form.
        form #filters method="get" action="/experiments"
            hx-get="/experiments" hx-trigger="input changed delay:300ms, change"
            hx-target="#experiment-list" hx-select="#experiment-list" hx-swap="outerHTML"
            hx-push-url="true" {
            label { "Status "
                select name="status" {
                    option value="" selected[query.status.is_empty()] { "all but archived" }
                    @for status in STATUSES {
                        option value=(status.as_str()) selected[query.status == status.as_str()] { (status.as_str()) }
                    }
                }
            }
            label { "Placement " input name="placement" value=(query.placement) placeholder="pdp"; }
            label { "Owner " input name="owner" value=(query.owner) placeholder="alice@example.com"; }
            label { "Search " input name="q" value=(query.search) placeholder="name or id"; }
            button #apply-filters type="submit" { "Filter" }
        }
        @if session.may_change() {
            p { a #new-experiment.button href="/experiments/new" { "New experiment" } }
        }
        div #experiment-list {
        table #experiments {
            thead { tr {
                th { "Experiment" } th { "Owner" } th { "Status" } th { "Layer" } th { "Placements" }
                th { "Traffic" } th { "Schedule" } th { "Units" } th { "Health" }
            } }
            tbody {
                @for (experiment, view) in &rows {
                    tr data-experiment=(experiment.id) {
                        td.name {
                            a href={ "/experiments/" (url_part(&experiment.id)) } { (experiment.name) }
                            br; code { (experiment.id) }
                        }
                        td.owner { (experiment.owner) }
                        td.status { (experiment.status.as_str()) }
                        td.layer { (experiment.effective_layer()) }
                        td.placements {
                            @if experiment.eligibility.placements.is_empty() { "any" }
                            @else { (experiment.eligibility.placements.join(", ")) }
                        }
                        td.traffic { (experiment.traffic_percent) "%" }
                        td.schedule {
                            (layout::maybe_time(experiment.schedule.start_time)) " → "
                            (layout::maybe_time(experiment.schedule.end_time))
                        }
                        td.units data-value=[units(view.as_deref())] {
                            @match units(view.as_deref()) { Some(units) => (units), None => "—" }
                        }
                        td.health { (render_badges(&badges(experiment, view.as_deref(), lag_seconds))) }
                    }
                }
            }
        }
        @if rows.is_empty() { p #empty { "No experiment matches." } }
        }
    };
    layout::page(Some(&session), "Experiments", body).into_response()
}
