//! `GET /experiments/{id}/results`: what kind of intervals the results
//! carry (fixed-horizon, or always-valid for a sequential experiment) and
//! how their p-values are corrected; per metric and variant the value, the
//! difference with its interval drawn against zero, the relative lift, p
//! and the corrected p; the sample-ratio banner; the sanity checks; each
//! guardrail with its evidence and the pauses or stops it caused; lift over
//! time with its band and exposures per variant (from the timeline); how
//! far the results have counted; and the minimum detectable effect now.
//!
//! The numbers are `GetResults`' and `GetResultsTimeline`'s own answers,
//! from the view [`exp_results::Results`] keeps, so the page never costs a
//! pass over a million units while someone waits.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use exp_analysis::stats::normal_critical;
use exp_core::{Error, Experiment, RevisionAction};
use exp_proto::v1;
use exp_results::{GUARDRAIL_AUTHOR, ResultsView};
use maud::{Markup, PreEscaped, html};
use serde_json::json;

use crate::{
    Console,
    layout::{self, url_part},
    session::Session,
};

/// Power the minimum detectable effect is given at.
pub const MDE_POWER: f64 = 0.8;

const INTERVAL_WIDTH: f64 = 160.0;
const INTERVAL_HEIGHT: f64 = 16.0;

fn computed(metric: &v1::MetricResult) -> bool {
    metric.comparison_status == v1::ComparisonStatus::Computed as i32
}

fn exact(value: f64) -> String {
    format!("{value}")
}

/// A p-value for reading: four decimals, or "< 0.0001".
fn p_value(p: f64) -> String {
    if p < 1e-4 {
        "< 0.0001".to_owned()
    } else {
        format!("{p:.4}")
    }
}

/// The interval of a difference as a bar against zero; `scale` is the
/// largest absolute bound of the metric across variants.
fn interval_bar(estimate: f64, interval: &v1::ConfidenceInterval, scale: f64) -> Markup {
    let half = INTERVAL_WIDTH / 2.0;
    let x = |value: f64| half + (value / scale).clamp(-1.0, 1.0) * (half - 4.0);
    let class = if interval.lower > 0.0 {
        "interval positive"
    } else if interval.upper < 0.0 {
        "interval negative"
    } else {
        "interval"
    };
    let (lower, upper) = (x(interval.lower), x(interval.upper));
    let label = format!("interval {} to {}", interval.lower, interval.upper);
    html! {
        svg class=(class) width=(INTERVAL_WIDTH) height=(INTERVAL_HEIGHT)
            viewBox={ "0 0 " (INTERVAL_WIDTH) " " (INTERVAL_HEIGHT) } role="img" aria-label=(label) {
            line.zero x1=(half) x2=(half) y1="0" y2=(INTERVAL_HEIGHT) {}
            rect.range x=(format!("{lower:.1}")) y="4" width=(format!("{:.1}", (upper - lower).max(1.0))) height="8" {}
            circle.point cx=(format!("{:.1}", x(estimate))) cy="8" r="3" {}
        }
    }
}

/// The minimum detectable effect of `metric` (a treatment's primary
/// metric) at its current sample size: the true difference whose estimate
/// falls beyond its interval's half-width with probability [`MDE_POWER`],
/// half-width + z(power) × standard error (the far tail neglected). That
/// holds for either kind of interval: a fixed-horizon z interval gives
/// (z(1 − alpha/2) + z(power)) × standard error, a confidence sequence its
/// wider half-width. Without the standard error (an older answer), it is
/// the one a normal interval of that width implies.
pub fn mde(metric: &v1::MetricResult, alpha: f64) -> Option<f64> {
    let interval = metric
        .absolute_interval
        .as_ref()
        .filter(|_| computed(metric))?;
    let half = (interval.upper - interval.lower) / 2.0;
    let standard_error = if metric.standard_error > 0.0 {
        metric.standard_error
    } else {
        half / normal_critical(alpha)
    };
    Some(half + normal_critical(2.0 * (1.0 - MDE_POWER)) * standard_error)
}

/// Whether `kind` is the always-valid (sequential) kind.
fn sequential(kind: i32) -> bool {
    kind == v1::IntervalKind::Sequential as i32
}

/// How the corrected p-values were corrected, for people.
fn correction(name: &str, treatments: usize) -> String {
    match name {
        "holm" => format!("by Holm across the {treatments} treatment(s) of each metric"),
        "benjamini_hochberg" => format!(
            "by Benjamini-Hochberg across every secondary metric and the {treatments} \
             treatment(s) (false discovery rate); the primary metric and guardrails by Holm \
             across the treatments"
        ),
        other => format!("by {other}"),
    }
}

/// The timeline as the chart script reads it: the primary metric's
/// relative lift and interval per treatment, and exposed units per
/// variant, at each point.
pub fn chart_data(timeline: &v1::GetResultsTimelineResponse, primary: &str) -> serde_json::Value {
    let times: Vec<i64> = timeline
        .points
        .iter()
        .map(|point| point.time.map_or(0, |time| time.seconds))
        .collect();
    let variants: Vec<(&str, bool)> = timeline
        .points
        .last()
        .map(|point| {
            point
                .variants
                .iter()
                .map(|variant| (variant.variant.as_str(), variant.is_control))
                .collect()
        })
        .unwrap_or_default();
    let of = |point: &v1::TimelinePoint, name: &str| -> Option<v1::VariantResult> {
        point.variants.iter().find(|v| v.variant == name).cloned()
    };
    let treatments: Vec<serde_json::Value> = variants
        .iter()
        .filter(|(_, is_control)| !is_control)
        .map(|(name, _)| {
            let mut lift = Vec::new();
            let mut lower = Vec::new();
            let mut upper = Vec::new();
            for point in &timeline.points {
                let metric = of(point, name).and_then(|variant| {
                    variant
                        .metrics
                        .into_iter()
                        .find(|metric| metric.metric == primary)
                        .filter(|metric| computed(metric) && !metric.relative_undefined)
                });
                let interval = metric.as_ref().and_then(|m| m.relative_interval);
                lift.push(metric.as_ref().map(|m| m.relative_difference));
                lower.push(interval.map(|i| i.lower));
                upper.push(interval.map(|i| i.upper));
            }
            json!({"variant": name, "lift": lift, "lower": lower, "upper": upper})
        })
        .collect();
    let exposures: Vec<serde_json::Value> = variants
        .iter()
        .map(|(name, _)| {
            let units: Vec<Option<u64>> = timeline
                .points
                .iter()
                .map(|point| of(point, name).map(|variant| variant.exposed_units))
                .collect();
            json!({"variant": name, "units": units})
        })
        .collect();
    json!({
        "metric": primary,
        "relative": true,
        "times": times,
        "treatments": treatments,
        "exposures": exposures,
    })
}

/// `GET /experiments/{id}/results`.
pub async fn page(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let loaded = console
        .blocking(move |admin| {
            let experiment = admin.get(&id)?;
            let actions: Vec<(u64, RevisionAction, String)> = admin
                .revisions(&id, exp_admin::admin::MAX_PAGE_SIZE, "")?
                .items
                .into_iter()
                .filter(|revision| revision.author == GUARDRAIL_AUTHOR)
                .map(|revision| (revision.number(), revision.action, revision.reason))
                .collect();
            Ok((experiment, actions))
        })
        .await;
    let (experiment, guardrail_actions) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => return layout::error_page(Some(&session), &error),
    };
    let view = match view_of(&console, &session, &experiment).await {
        Ok(view) => view,
        Err(refused) => return refused,
    };
    let body = html! {
        h1 { "Results of " a href={ "/experiments/" (url_part(&experiment.id)) } { (experiment.name) } }
        (comparison(&experiment, &view))
        (guardrails(&view, &guardrail_actions))
    };
    (
        StatusCode::OK,
        layout::page(Some(&session), "Results", body),
    )
        .into_response()
}

/// The results view of `subject` (an experiment, or a holdout's
/// comparison), or the error page saying why there is none.
pub(crate) async fn view_of(
    console: &Console,
    session: &Session,
    subject: &Experiment,
) -> Result<Arc<ResultsView>, Response> {
    let Some(results) = console.results() else {
        return Err(layout::error_page(
            Some(session),
            &Error::Unavailable("this expd does not run the results service (--services)".into()),
        ));
    };
    results
        .view(subject)
        .await
        .map_err(|error| layout::error_page(Some(session), &error))
}

/// What a results page shows of `subject` (an experiment, or a holdout's
/// comparison read as one): the sample-ratio banner, how far it counted,
/// the metrics table, the minimum detectable effect, the charts over time
/// and the sanity checks.
pub(crate) fn comparison(subject: &Experiment, view: &ResultsView) -> Markup {
    let primary = &subject.metrics.primary_metric;
    html! {
        (banner(view))
        (progress(view))
        (metric_table(subject, view))
        (mde_section(subject, view))
        h2 { "Lift over time: " (primary)
            @if sequential(view.results.interval_kind) { " (always-valid band)" } }
        div #lift-chart.chart {}
        h2 { "Exposed units over time" }
        div #exposure-chart.chart {}
        script #timeline-data type="application/json" {
            (PreEscaped(chart_data(&view.timeline, primary)
                .to_string()
                .replace('<', "\\u003c")))
        }
        (sanity(view))
    }
}

fn banner(view: &ResultsView) -> Markup {
    html! {
        @if let Some(check) = view.results.sample_ratio.filter(|check| check.mismatch) {
            div #srm-banner {
                strong { "Sample ratio mismatch." }
                " The exposed units do not match the weights (chi-square "
                (layout::number(check.chi_square)) ", p = " (format!("{:.2e}", check.p_value))
                "): assignment or exposure logging is broken for some units, so these results "
                "cannot be trusted until it is found."
            }
        }
    }
}

fn progress(view: &ResultsView) -> Markup {
    let results = &view.results;
    html! {
        p.progress {
            "Counted through log position "
            span #counted-through data-position=(results.counted_position) { (results.counted_position) }
            "; "
            span #lag data-pending=(results.pending_events) data-seconds=(results.lag_seconds) {
                (results.pending_events) " events not yet counted, "
                (format!("{:.1}", results.lag_seconds)) " s behind"
            }
            "; newest event "
            (results.data_freshness_time
                .and_then(|time| std::time::SystemTime::try_from(time).ok())
                .map_or_else(|| "—".to_owned(), layout::time))
            "; computed " (layout::time(view.computed_at))
            " (a newer look is taken in the background when more is counted: reload)."
        }
    }
}

fn metric_table(experiment: &Experiment, view: &ResultsView) -> Markup {
    let results = &view.results;
    let metric_names: Vec<(String, i32)> = results
        .variants
        .first()
        .map(|variant| {
            variant
                .metrics
                .iter()
                .map(|metric| (metric.metric.clone(), metric.role))
                .collect()
        })
        .unwrap_or_default();
    let always_valid = sequential(results.interval_kind);
    let treatments = results.variants.len().saturating_sub(1);
    html! {
        h2 { "Metrics" }
        p #interval-kind data-kind=(if always_valid { "sequential" } else { "fixed_horizon" }) {
            @if always_valid {
                strong { "Always-valid (sequential) intervals and p-values." }
                " They hold at every look at once: read them as often as you like and stop as soon "
                "as an interval excludes zero. They are wider than fixed-horizon intervals on the same units."
            } @else {
                strong { "Fixed-horizon intervals and p-values." }
                " Valid at one look planned in advance: stopping at the first look that shows "
                "significance raises the false-positive rate far above alpha (set the experiment "
                "sequential to look as often as you like)."
            }
        }
        p #correction data-correction=(results.multiple_comparison_correction) {
            "Differences are against " strong { (experiment.control_variant) } " with "
            (layout::percent(1.0 - results.alpha, 0))
            @if always_valid { " always-valid" } " intervals; p-values are corrected "
            (correction(&results.multiple_comparison_correction, treatments)) "." }
        (cuped_note(results))
        table #metrics {
            thead { tr {
                th { "Metric" } th { "Variant" } th { "Units" } th { "Value" } th { "Difference" }
                th { @if always_valid { "Always-valid interval" } @else { "Interval" } }
                th { "Lift" } th { "p" } th { "p (corrected)" } th { "Significant" }
                th { "CUPED" }
            } }
            tbody {
                @for (name, role) in &metric_names {
                    @let scale = results.variants.iter()
                        .filter_map(|variant| variant.metrics.iter().find(|m| &m.metric == name))
                        .filter(|metric| computed(metric))
                        .filter_map(|metric| metric.absolute_interval)
                        .map(|interval| interval.lower.abs().max(interval.upper.abs()))
                        .fold(0.0_f64, f64::max);
                    @for variant in &results.variants {
                        @if let Some(metric) = variant.metrics.iter().find(|m| &m.metric == name) {
                            (metric_row(name, *role, variant, metric, scale))
                        }
                    }
                }
            }
        }
    }
}

/// What the CUPED column holds: which metrics are adjusted, over which
/// pre-period, or why none is yet.
fn cuped_note(results: &v1::GetResultsResponse) -> Markup {
    let adjustments: Vec<&v1::CupedResult> = results
        .variants
        .iter()
        .flat_map(|variant| &variant.metrics)
        .filter_map(|metric| metric.cuped.as_ref())
        .collect();
    let applied = adjustments.iter().find(|cuped| cuped.applied);
    html! {
        @if let Some(cuped) = applied {
            p #cuped data-state="applied" data-days=(cuped.pre_period_days) {
                strong { "CUPED-adjusted." }
                " Proportions and means are estimated adjusted for each unit's same measure over the "
                (cuped.pre_period_days) " whole UTC days before the day of its first exposure: the differences, "
                "intervals and p-values shown are the adjusted ones; the CUPED column gives the "
                "share of variance the adjustment removed and the unadjusted difference."
            }
        } @else if let Some(cuped) = adjustments.first() {
            p #cuped data-state="not_applied" data-days=(cuped.pre_period_days) {
                strong { "CUPED is on, not applied yet:" }
                " it applies once every arm has at least 10 units with outcomes in their "
                (cuped.pre_period_days) "-day pre-period; until then the estimates are unadjusted."
            }
        }
    }
}

/// The CUPED cell of a treatment row: variance removed, and the unadjusted
/// difference with its interval.
fn cuped_cell(metric: &v1::MetricResult) -> Markup {
    let cuped = metric
        .cuped
        .as_ref()
        .filter(|cuped| cuped.applied && computed(metric));
    let unadjusted = cuped
        .filter(|cuped| cuped.unadjusted_status == v1::ComparisonStatus::Computed as i32)
        .and_then(|cuped| Some((cuped, cuped.unadjusted_absolute_interval?)));
    html! {
        td.cuped
            data-variance-reduction=[cuped.filter(|c| !c.variance_reduction_undefined).map(|c| exact(c.variance_reduction))]
            data-unadjusted=[unadjusted.map(|(c, _)| exact(c.unadjusted_absolute_difference))]
            data-unadjusted-lower=[unadjusted.map(|(_, i)| exact(i.lower))]
            data-unadjusted-upper=[unadjusted.map(|(_, i)| exact(i.upper))] {
            @if let Some(cuped) = cuped {
                @if !cuped.variance_reduction_undefined {
                    (layout::percent(cuped.variance_reduction, 1)) " variance removed"
                }
                @if let Some((cuped, interval)) = unadjusted {
                    br;
                    small {
                        "unadjusted " (layout::number(cuped.unadjusted_absolute_difference))
                        " [" (layout::number(interval.lower)) ", " (layout::number(interval.upper)) "]"
                    }
                }
            }
        }
    }
}

fn role_name(role: i32) -> &'static str {
    match v1::MetricRole::try_from(role) {
        Ok(v1::MetricRole::Primary) => "primary",
        Ok(v1::MetricRole::Secondary) => "secondary",
        Ok(v1::MetricRole::Guardrail) => "guardrail",
        _ => "",
    }
}

fn metric_row(
    name: &str,
    role: i32,
    variant: &v1::VariantResult,
    metric: &v1::MetricResult,
    scale: f64,
) -> Markup {
    let is_computed = computed(metric);
    let status =
        v1::ComparisonStatus::try_from(metric.comparison_status).map_or(
            "",
            |status| match status {
                v1::ComparisonStatus::Control => "control",
                v1::ComparisonStatus::NoData => "no data yet",
                v1::ComparisonStatus::TooFewUnits => "too few units",
                v1::ComparisonStatus::NoVariance => "no variance",
                _ => "",
            },
        );
    let interval = metric.absolute_interval.filter(|_| is_computed);
    let relative = metric
        .relative_interval
        .filter(|_| is_computed && !metric.relative_undefined);
    html! {
        tr data-variant=(variant.variant) data-metric=(name) class=(role_name(role)) {
            td.metric { (name) " " small { (role_name(role)) } }
            td.variant { (variant.variant) @if variant.is_control { " (control)" } }
            td.units data-value=(variant.exposed_units) { (variant.exposed_units) }
            td.value data-value=(if metric.value_undefined { String::new() } else { exact(metric.value) }) {
                @if metric.value_undefined { "—" } @else { (layout::number(metric.value)) }
            }
            td.difference data-value=(if is_computed { exact(metric.absolute_difference) } else { String::new() }) {
                @match interval {
                    Some(interval) => {
                        (layout::number(metric.absolute_difference)) " "
                        (interval_bar(metric.absolute_difference, &interval, if scale > 0.0 { scale } else { 1.0 }))
                    }
                    None => (status),
                }
            }
            td.interval data-lower=[interval.map(|i| exact(i.lower))] data-upper=[interval.map(|i| exact(i.upper))] {
                @if let Some(interval) = interval {
                    "[" (layout::number(interval.lower)) ", " (layout::number(interval.upper)) "]"
                }
            }
            td.lift data-value=(if relative.is_some() { exact(metric.relative_difference) } else { String::new() }) {
                @if let Some(relative) = relative {
                    (layout::percent(metric.relative_difference, 2)) " "
                    small { "[" (layout::percent(relative.lower, 2)) ", " (layout::percent(relative.upper, 2)) "]" }
                } @else if is_computed && metric.relative_undefined { "undefined (control is 0)" }
            }
            td.p data-value=(if is_computed { exact(metric.p_value) } else { String::new() }) {
                @if is_computed { (p_value(metric.p_value)) }
            }
            td.p-adjusted data-value=(if is_computed { exact(metric.adjusted_p_value) } else { String::new() }) {
                @if is_computed { (p_value(metric.adjusted_p_value)) }
            }
            td.significant { @if is_computed { @if metric.significant { strong { "yes" } } @else { "no" } } }
            (cuped_cell(metric))
        }
    }
}

fn mde_section(experiment: &Experiment, view: &ResultsView) -> Markup {
    let primary = &experiment.metrics.primary_metric;
    let alpha = view.results.alpha;
    let control_value = view
        .results
        .variants
        .iter()
        .find(|variant| variant.is_control)
        .and_then(|variant| variant.metrics.iter().find(|m| &m.metric == primary))
        .filter(|metric| !metric.value_undefined)
        .map(|metric| metric.value);
    html! {
        section #mde {
            h2 { "Minimum detectable effect" }
            p { "The smallest true difference in " (primary) " these units would find significant "
                (layout::percent(MDE_POWER, 0)) " of the time at alpha " (alpha)
                @if sequential(view.results.interval_kind) { " with the always-valid interval" }
                ", given the spread observed so far." }
            ul {
                @for variant in view.results.variants.iter().filter(|variant| !variant.is_control) {
                    @let found = variant.metrics.iter().find(|m| &m.metric == primary).and_then(|m| mde(m, alpha));
                    li data-variant=(variant.variant) data-value=[found.map(exact)] {
                        (variant.variant) ": "
                        @match found {
                            Some(effect) => {
                                "±" (layout::number(effect))
                                @if let Some(control) = control_value.filter(|value| *value != 0.0) {
                                    " (" (layout::percent(effect / control, 1)) " of control's " (layout::number(control)) ")"
                                }
                            }
                            None => "not yet: too few units to estimate the spread",
                        }
                    }
                }
            }
        }
    }
}

fn sanity(view: &ResultsView) -> Markup {
    html! {
        h2 { "Sanity checks" }
        ul #sanity {
            @if let Some(check) = view.results.sample_ratio {
                li data-check="sample_ratio" class=(if check.mismatch { "failed" } else { "passed" }) {
                    "sample ratio: chi-square " (layout::number(check.chi_square)) ", p = "
                    (format!("{:.4}", check.p_value))
                }
            }
            @for check in &view.results.sanity_checks {
                li data-check=(check.name) class=(if check.passed { "passed" } else { "failed" }) {
                    (check.name) ": " (check.detail)
                }
            }
        }
    }
}

fn guardrails(view: &ResultsView, actions: &[(u64, RevisionAction, String)]) -> Markup {
    html! {
        h2 { "Guardrails" }
        ul #guardrails {
            @for guardrail in &view.results.guardrails {
                @let state = match v1::GuardrailState::try_from(guardrail.state) {
                    Ok(v1::GuardrailState::Ok) => "ok",
                    Ok(v1::GuardrailState::Breached) => "breached",
                    Ok(v1::GuardrailState::InsufficientData) => "insufficient data",
                    _ => "unknown",
                };
                li data-guardrail=(guardrail.metric) data-variant=(guardrail.variant) data-state=(state) {
                    strong { (guardrail.metric) } " in " (guardrail.variant) ": " (state)
                    "; observed " (layout::percent(guardrail.relative_difference, 2))
                    " against a threshold of " (layout::percent(guardrail.threshold, 2))
                    "; always-valid p " (p_value(guardrail.always_valid_p_value))
                }
            }
        }
        @if view.results.guardrails.is_empty() { p { "No guardrails." } }
        @if !actions.is_empty() {
            h3 { "Actions the guardrail monitor took" }
            ul #guardrail-actions {
                @for (revision, action, reason) in actions {
                    li data-revision=(revision) {
                        "revision " (revision) ": " (layout::action_name(*action)) " — " (reason)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(lower: f64, upper: f64) -> v1::MetricResult {
        v1::MetricResult {
            metric: "add_to_cart_rate".into(),
            comparison_status: v1::ComparisonStatus::Computed as i32,
            absolute_interval: Some(v1::ConfidenceInterval {
                lower,
                upper,
                level: 0.95,
            }),
            ..Default::default()
        }
    }

    fn view(interval_kind: v1::IntervalKind, correction: &str) -> ResultsView {
        ResultsView {
            results: v1::GetResultsResponse {
                alpha: 0.05,
                interval_kind: interval_kind as i32,
                multiple_comparison_correction: correction.into(),
                variants: vec![
                    v1::VariantResult {
                        variant: "control".into(),
                        is_control: true,
                        ..Default::default()
                    },
                    v1::VariantResult {
                        variant: "treatment".into(),
                        metrics: vec![metric(-0.05, 0.05)],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            timeline: v1::GetResultsTimelineResponse::default(),
            computed_at: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_metrics_table_says_which_intervals_it_shows_and_how_p_is_corrected() {
        let experiment = exp_core::examples::seed_experiment();
        let fixed =
            metric_table(&experiment, &view(v1::IntervalKind::FixedHorizon, "holm")).into_string();
        assert!(fixed.contains(r#"data-kind="fixed_horizon""#), "{fixed}");
        assert!(
            fixed.contains("Fixed-horizon intervals and p-values."),
            "{fixed}"
        );
        assert!(
            fixed.contains("by Holm across the 1 treatment(s)"),
            "{fixed}"
        );
        assert!(!fixed.contains("Always-valid"), "{fixed}");
        let sequential = metric_table(
            &experiment,
            &view(v1::IntervalKind::Sequential, "benjamini_hochberg"),
        )
        .into_string();
        assert!(
            sequential.contains(r#"data-kind="sequential""#),
            "{sequential}"
        );
        assert!(
            sequential.contains("Always-valid (sequential) intervals and p-values."),
            "{sequential}"
        );
        assert!(
            sequential.contains("Always-valid interval</th>"),
            "{sequential}"
        );
        assert!(
            sequential.contains(r#"data-correction="benjamini_hochberg""#),
            "{sequential}"
        );
        assert!(
            sequential.contains("by Benjamini-Hochberg across every secondary metric"),
            "{sequential}"
        );
    }

    #[test]
    fn an_adjusted_metric_shows_the_variance_removed_and_the_unadjusted_difference() {
        let experiment = exp_core::examples::seed_experiment();
        let mut adjusted = view(v1::IntervalKind::FixedHorizon, "holm");
        let cuped = v1::CupedResult {
            applied: true,
            pre_period_days: 14,
            variance_reduction: 0.372,
            unadjusted_status: v1::ComparisonStatus::Computed as i32,
            unadjusted_absolute_difference: 0.025,
            unadjusted_absolute_interval: Some(v1::ConfidenceInterval {
                lower: -0.01,
                upper: 0.06,
                level: 0.95,
            }),
            ..Default::default()
        };
        adjusted.results.variants[0].metrics = vec![v1::MetricResult {
            metric: "add_to_cart_rate".into(),
            comparison_status: v1::ComparisonStatus::Control as i32,
            ..Default::default()
        }];
        adjusted.results.variants[1].metrics[0].cuped = Some(cuped);
        let page = metric_table(&experiment, &adjusted).into_string();
        assert!(page.contains(r#"data-state="applied""#), "{page}");
        assert!(page.contains("over the 14 whole UTC days"), "{page}");
        assert!(
            page.contains(r#"data-variance-reduction="0.372""#),
            "{page}"
        );
        assert!(page.contains(r#"data-unadjusted-lower="-0.01""#), "{page}");
        assert!(page.contains("variance removed"), "{page}");
        // On but without a pre-period yet: said, and no cell content.
        adjusted.results.variants[1].metrics[0].cuped = Some(v1::CupedResult {
            applied: false,
            ..cuped
        });
        let page = metric_table(&experiment, &adjusted).into_string();
        assert!(page.contains(r#"data-state="not_applied""#), "{page}");
        assert!(!page.contains("variance removed"), "{page}");
        // Off: nothing about CUPED but the column.
        let page =
            metric_table(&experiment, &view(v1::IntervalKind::FixedHorizon, "holm")).into_string();
        assert!(!page.contains(r#"id="cuped""#), "{page}");
    }

    #[test]
    fn the_mde_of_an_always_valid_interval_is_its_half_width_and_0_84_standard_errors() {
        let mut wide = metric(-0.05, 0.05);
        wide.standard_error = 0.01;
        let found = mde(&wide, 0.05).expect("computed");
        // z(0.8) = 0.841621 (scipy.stats.norm.ppf).
        assert!((found - (0.05 + 0.008_416_21)).abs() < 1e-7, "{found}");
    }

    #[test]
    fn the_mde_is_2_8_standard_errors_implied_by_the_interval() {
        // A 95% interval 2 * 1.96 * 0.01 wide: a standard error of 0.01.
        let z = normal_critical(0.05);
        let found = mde(&metric(-z * 0.01, z * 0.01), 0.05).expect("computed");
        assert!((found - 0.028_015_85).abs() < 1e-7, "{found}");
        let mut not_computed = metric(-1.0, 1.0);
        not_computed.comparison_status = v1::ComparisonStatus::TooFewUnits as i32;
        assert_eq!(mde(&not_computed, 0.05), None);
    }

    #[test]
    fn the_chart_data_holds_the_primary_lift_per_treatment_and_units_per_variant() {
        let variant = |name: &str, is_control: bool, units: u64, lift: f64| v1::VariantResult {
            variant: name.into(),
            is_control,
            exposed_units: units,
            metrics: vec![v1::MetricResult {
                relative_difference: lift,
                relative_interval: Some(v1::ConfidenceInterval {
                    lower: lift - 0.01,
                    upper: lift + 0.01,
                    level: 0.95,
                }),
                comparison_status: if is_control {
                    v1::ComparisonStatus::Control as i32
                } else {
                    v1::ComparisonStatus::Computed as i32
                },
                ..metric(0.0, 0.0)
            }],
        };
        let point = |seconds: i64, units: u64, lift: f64| v1::TimelinePoint {
            time: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            variants: vec![
                variant("control", true, units, 0.0),
                variant("treatment", false, units, lift),
            ],
            ..Default::default()
        };
        let timeline = v1::GetResultsTimelineResponse {
            points: vec![point(3_600, 10, 0.05), point(7_200, 25, 0.03)],
            ..Default::default()
        };
        let data = chart_data(&timeline, "add_to_cart_rate");
        assert_eq!(data["times"], json!([3_600, 7_200]));
        assert_eq!(data["treatments"][0]["variant"], "treatment");
        assert_eq!(data["treatments"][0]["lift"], json!([0.05, 0.03]));
        assert_eq!(data["treatments"][0]["lower"][1], json!(0.03 - 0.01));
        assert_eq!(data["treatments"].as_array().map(Vec::len), Some(1));
        assert_eq!(data["exposures"][0]["units"], json!([10, 25]));
    }
}
