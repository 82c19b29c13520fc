//! The guardrail monitor: every `--guardrail-interval`, each running or
//! paused experiment's results view is kept for the console, and each
//! running experiment with guardrails is judged; a breach applies the guardrail's
//! action (pause or stop) through the admin's own transition, as a new
//! revision by [`GUARDRAIL_AUTHOR`] whose reason carries the evidence.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use exp_admin::{Admin, Principal};
use exp_analysis::{GuardrailState, Report, report};
use exp_core::{GuardrailAction, Status as ExperimentStatus, lifecycle::Transition};
use opentelemetry::{KeyValue, metrics::Counter};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{DEFAULT_ALPHA, GUARDRAIL_AUTHOR, Shared};

pub(crate) async fn run(
    shared: Arc<Shared>,
    admin: Admin,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ready = shared.progress.subscribe();
    tokio::select! {
        ready = ready.wait_for(|progress| progress.ready) => if ready.is_err() { return },
        () = shutdown.cancelled() => return,
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let (shared, admin) = (shared.clone(), admin.clone());
        // Reports and store reads block: off the runtime's workers.
        let stop = shutdown.clone();
        let _ = tokio::task::spawn_blocking(move || judge_all(&shared, &admin, &stop)).await;
    }
}

/// `expd.guardrail.looks`: judgements of an experiment's guardrails.
fn looks() -> &'static Counter<u64> {
    static LOOKS: OnceLock<Counter<u64>> = OnceLock::new();
    LOOKS.get_or_init(|| {
        opentelemetry::global::meter("expd")
            .u64_counter("expd.guardrail.looks")
            .with_description("Judgements of a running experiment's guardrails, by experiment")
            .build()
    })
}

/// `expd.guardrail.actions`: pauses and stops the monitor applied.
fn actions() -> &'static Counter<u64> {
    static ACTIONS: OnceLock<Counter<u64>> = OnceLock::new();
    ACTIONS.get_or_init(|| {
        opentelemetry::global::meter("expd")
            .u64_counter("expd.guardrail.actions")
            .with_description(
                "Pauses and stops applied by the guardrail monitor, by experiment and action",
            )
            .build()
    })
}

/// One look of the monitor at every running or paused experiment: a
/// running one's guardrails are judged, then every view is kept for the
/// console's pages (judging first, so a breach never waits for the
/// timelines of the others). Stops early when the process shuts down.
fn judge_all(shared: &Shared, admin: &Admin, shutdown: &CancellationToken) {
    let ids = shared.analysis().analyzer.experiment_ids();
    let mut looked = Vec::new();
    for id in ids {
        if shutdown.is_cancelled() {
            return;
        }
        let Ok(experiment) = admin.get(&id) else {
            continue;
        };
        if !matches!(
            experiment.status,
            ExperimentStatus::Running | ExperimentStatus::Paused
        ) {
            continue;
        }
        let (report, counted) = shared.report(&experiment, DEFAULT_ALPHA);
        judge(&experiment, report.as_ref(), admin);
        looked.push((experiment, report, counted));
    }
    for (experiment, report, counted) in looked {
        if shutdown.is_cancelled() {
            return;
        }
        shared.keep(&experiment, report.as_ref(), counted);
    }
}

/// Judges a running experiment's guardrails on `report`, pausing or
/// stopping it on a breach.
fn judge(experiment: &exp_core::Experiment, report: Option<&Report>, admin: &Admin) {
    let id = &experiment.id;
    if experiment.status != ExperimentStatus::Running || experiment.metrics.guardrails.is_empty() {
        return;
    }
    let Some(report) = report else {
        return;
    };
    // The analyzer takes new definitions as they are written; a look
    // at an older revision's thresholds waits for the next tick.
    if report.revision != experiment.revision {
        return;
    }
    looks().add(1, &[KeyValue::new("experiment", id.clone())]);
    let Some((transition, reason)) = breach_action(report) else {
        return;
    };
    match admin.transition(
        id,
        &transition,
        Some(experiment.revision),
        &Principal::system(GUARDRAIL_AUTHOR),
        &reason,
    ) {
        Ok(next) => {
            actions().add(
                1,
                &[
                    KeyValue::new("experiment", next.id.clone()),
                    KeyValue::new(
                        "action",
                        if next.status == ExperimentStatus::Paused {
                            "pause"
                        } else {
                            "stop"
                        },
                    ),
                ],
            );
            warn!(
            experiment = %next.id,
            status = ?next.status,
            revision = next.revision,
            reason = %next.status_reason,
            "guardrail breached; experiment {}",
                if next.status == ExperimentStatus::Paused { "paused" } else { "stopped" }
            );
        }
        // Changed meanwhile (by a person, or the schedule): the next
        // look judges the new revision.
        Err(error) => warn!(experiment = %id, %error, "guardrail action not applied"),
    }
}

/// The transition and reason a report's breaches call for: stop when any
/// breached guardrail says stop, else pause.
pub fn breach_action(report: &Report) -> Option<(Transition, String)> {
    let breached: Vec<&report::GuardrailReport> = report
        .guardrails
        .iter()
        .filter(|guardrail| guardrail.state == GuardrailState::Breached)
        .collect();
    if breached.is_empty() {
        return None;
    }
    let stop = breached
        .iter()
        .any(|guardrail| guardrail.action == Some(GuardrailAction::Stop));
    let units = |variant: &str| {
        report
            .variants
            .iter()
            .find(|result| result.variant == variant)
            .map_or(0, |result| result.exposed_units)
    };
    let control = report
        .variants
        .iter()
        .find(|variant| variant.is_control)
        .map_or(0, |variant| variant.exposed_units);
    let evidence: Vec<String> = breached
        .iter()
        .map(|guardrail| {
            format!(
                "{} of {:?} is {:+.1}% against control (tolerated {:.1}%), always-valid p = {:.2e} \
                 < alpha {} (mSPRT), {} treatment and {} control units",
                guardrail.metric,
                guardrail.variant,
                guardrail.relative_difference.unwrap_or(0.0) * 100.0,
                guardrail.threshold * 100.0,
                guardrail.always_valid_p_value,
                report.alpha,
                units(&guardrail.variant),
                control
            )
        })
        .collect();
    let reason = format!("guardrail breached: {}", evidence.join("; "));
    let transition = if stop {
        Transition::Stop { ship_variant: None }
    } else {
        Transition::Pause
    };
    Some((transition, reason))
}
