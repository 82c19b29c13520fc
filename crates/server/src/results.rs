//! Wiring of results: the analyzer fed from the event log (rebuilt from a
//! scan at start, then following every committed group), the
//! `ResultsService` that reads it, and the guardrail monitor that pauses
//! or stops an experiment through the admin's own transition path.

use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

use exp_admin::{Admin, Authenticator, Principal, Role};
use exp_analysis::{
    Analyzer, Catalog, ExposureFact, GuardrailState, OutcomeFact, Refresh, Report,
    Role as MetricRole, report,
};
use exp_core::{
    Error, GuardrailAction, Status as ExperimentStatus, UnitType, lifecycle::Transition,
};
use exp_ingest::{Committed, Event, LogSlot, Share, Yielder, set_background_share};
use exp_proto::{
    convert::outcome_type_from_proto,
    to_status,
    v1::{self, results_service_server::ResultsService},
};
use tokio::{sync::broadcast, task::JoinHandle};
use tracing::{error, info, warn};

/// Significance level of GetResults when the request names none, and of
/// the guardrail monitor.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// How often the follower re-reads experiment definitions.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// How often an idle follower looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(10);
/// Events applied under one hold of the analyzer's lock: about 40 us of
/// work, between which the follower yields the CPU.
const FOLLOW_CHUNK: usize = 32;
/// Identity recorded on revisions the guardrail monitor writes.
pub const GUARDRAIL_AUTHOR: &str = "guardrail";

#[derive(Debug)]
struct Shared {
    analyzer: Mutex<Analyzer>,
    ready: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    fn analyzer(&self) -> MutexGuard<'_, Analyzer> {
        self.analyzer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running results side of `expd`.
#[derive(Debug)]
pub struct Results {
    shared: Arc<Shared>,
    follower: Option<std::thread::JoinHandle<()>>,
    monitor: JoinHandle<()>,
}

impl Results {
    /// Starts following the log in `slot` (once it opens) and the
    /// guardrail monitor, judging every `guardrail_interval`.
    pub fn start(admin: Admin, slot: LogSlot, guardrail_interval: Duration) -> Self {
        let shared = Arc::new(Shared {
            analyzer: Mutex::new(Analyzer::new(catalog(&admin))),
            ready: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let follower = {
            let shared = shared.clone();
            let admin = admin.clone();
            std::thread::Builder::new()
                .name("results-follower".into())
                .spawn(move || follow(&shared, &slot, &admin))
                .map_err(|error| {
                    error!(%error, "cannot start the results follower; GetResults stays UNAVAILABLE")
                })
                .ok()
        };
        let monitor = tokio::spawn(monitor(shared.clone(), admin, guardrail_interval));
        Self {
            shared,
            follower,
            monitor,
        }
    }

    /// The `ResultsService` over this state.
    pub fn grpc(
        &self,
        admin: Admin,
        auth: Authenticator,
    ) -> v1::results_service_server::ResultsServiceServer<ResultsGrpc> {
        v1::results_service_server::ResultsServiceServer::new(ResultsGrpc {
            shared: self.shared.clone(),
            admin,
            auth,
        })
    }

    /// Stops the follower and the monitor.
    pub async fn close(self) {
        self.shared.stop.store(true, Ordering::Release);
        self.monitor.abort();
        if let Some(follower) = self.follower {
            let _ = tokio::task::spawn_blocking(move || follower.join()).await;
        }
    }
}

/// Experiments as the admin has them now.
fn catalog(admin: &Admin) -> Catalog {
    let admin = admin.clone();
    Box::new(move |id| admin.get(id).ok())
}

/// What the relay passes on from the log's broadcast.
enum Relayed {
    Group(Committed),
    Lagged(u64),
}

/// Moves committed groups from the log's bounded broadcast into an
/// unbounded queue, so a rebuild or a slow report never makes the
/// follower miss a group (it would have to rebuild again). Ends when the
/// follower drops the queue or the log closes.
fn relay(mut receiver: broadcast::Receiver<Committed>) -> std_mpsc::Receiver<Relayed> {
    let (sender, relayed) = std_mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("results-relay".into())
        .spawn(move || {
            set_background_share("results-relay", Share::Smallest);
            loop {
                let message = match receiver.blocking_recv() {
                    Ok(group) => Relayed::Group(group),
                    Err(broadcast::error::RecvError::Lagged(missed)) => Relayed::Lagged(missed),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if sender.send(message).is_err() {
                    return;
                }
            }
        });
    if let Err(error) = spawned {
        error!(%error, "cannot start the results relay");
    }
    relayed
}

/// Sleeps `duration` in short naps, returning early when asked to stop.
fn nap(shared: &Shared, duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until && !shared.stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rebuilds from a scan, then follows the log; rebuilds again when it
/// falls behind or a metric config changes what is measured. A rebuild
/// fills a fresh analyzer and swaps it in, so readers keep the previous
/// state meanwhile instead of waiting.
fn follow(shared: &Shared, slot: &LogSlot, admin: &Admin) {
    // Nice 19, not the leftover share: the guardrails must keep up on a
    // busy machine. It yields instead (see below).
    set_background_share("results-follower", Share::Smallest);
    let log = loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        if let Some(log) = slot.get() {
            break log.clone();
        }
        nap(shared, Duration::from_millis(50));
    };
    'rebuild: loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let started = Instant::now();
        let (scan, receiver) = match log.scan_and_subscribe() {
            Ok(both) => both,
            Err(error) => {
                warn!(%error, "results cannot read the event log; retrying in 5 s");
                nap(shared, Duration::from_secs(5));
                continue;
            }
        };
        let groups = relay(receiver);
        let mut fresh = Analyzer::new(catalog(admin));
        let mut events = 0_u64;
        let mut yielder = Yielder::default();
        for event in scan.events() {
            apply(&mut fresh, event);
            events += 1;
            yielder.tick();
        }
        drop(scan);
        *shared.analyzer() = fresh;
        shared.ready.store(true, Ordering::Release);
        info!(
            events,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "results rebuilt from the event log"
        );
        let mut refreshed = Instant::now();
        loop {
            match groups.recv_timeout(FOLLOW_POLL) {
                Ok(Relayed::Group(group)) => {
                    // A group can be a thousand events, a millisecond of
                    // work: applied in chunks, yielding the CPU between
                    // them with the analyzer unlocked (see
                    // `exp_ingest::yielding`). A report read meanwhile
                    // counts part of the group, as one read a moment
                    // earlier counts none of it.
                    yielder.restart();
                    for chunk in group.chunks(FOLLOW_CHUNK) {
                        let mut analyzer = shared.analyzer();
                        for event in chunk {
                            apply(&mut analyzer, event);
                        }
                        drop(analyzer);
                        yielder.tick();
                    }
                }
                Ok(Relayed::Lagged(missed)) => {
                    warn!(missed, "results fell behind the event log; rebuilding");
                    continue 'rebuild;
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            if refreshed.elapsed() >= REFRESH_EVERY {
                refreshed = Instant::now();
                if shared.analyzer().refresh() == Refresh::NeedsRebuild {
                    info!("a metric config or the variants changed; rebuilding results");
                    continue 'rebuild;
                }
            }
        }
    }
}

fn apply(analyzer: &mut Analyzer, event: &Event) {
    match event {
        Event::Exposure(exposure) => {
            let unit_type = match v1::UnitType::try_from(exposure.unit_type) {
                Ok(v1::UnitType::User) => UnitType::User,
                Ok(v1::UnitType::Session) => UnitType::Session,
                // Validation refuses the others.
                _ => return,
            };
            analyzer.exposure(&ExposureFact {
                experiment_id: &exposure.experiment_id,
                variant: &exposure.variant,
                unit_type,
                user_id: &exposure.user_id,
                session_id: &exposure.session_id,
                revision: exposure.revision,
                time_micros: event.time_micros(),
            });
        }
        Event::Outcome(outcome) => {
            let Some(outcome_type) = v1::OutcomeType::try_from(outcome.r#type)
                .ok()
                .and_then(outcome_type_from_proto)
            else {
                return;
            };
            analyzer.outcome(&OutcomeFact {
                outcome_type,
                user_id: &outcome.user_id,
                session_id: &outcome.session_id,
                placement: &outcome.placement,
                source_placement: &outcome.source_placement,
                item_id: &outcome.item_id,
                item_ids: &outcome.item_ids,
                from_recommendation: outcome.from_recommendation,
                value: outcome.value,
                quantity: outcome.quantity,
                latency_ms: outcome.latency_ms,
                time_micros: event.time_micros(),
            });
        }
    }
}

/// Every `interval`: each running experiment with guardrails is judged;
/// a breach applies the guardrail's action as a new revision by
/// `guardrail`, with the evidence in its reason.
async fn monitor(shared: Arc<Shared>, admin: Admin, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !shared.ready.load(Ordering::Acquire) {
            continue;
        }
        let (shared, admin) = (shared.clone(), admin.clone());
        // Reports and store reads block: off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || judge_all(&shared, &admin)).await;
    }
}

/// One look of the monitor at every running experiment with guardrails.
fn judge_all(shared: &Shared, admin: &Admin) {
    let ids = shared.analyzer().experiment_ids();
    for id in ids {
        let Ok(experiment) = admin.get(&id) else {
            continue;
        };
        if experiment.status != ExperimentStatus::Running
            || experiment.metrics.guardrails.is_empty()
        {
            continue;
        }
        let Some(report) = shared.analyzer().monitor(&id, DEFAULT_ALPHA) else {
            continue;
        };
        // The analyzer re-reads configs every few seconds; a look at an
        // older revision's thresholds waits for the next tick.
        if report.revision != experiment.revision {
            continue;
        }
        let Some((transition, reason)) = breach_action(&report) else {
            continue;
        };
        match admin.transition(
            &id,
            &transition,
            Some(experiment.revision),
            &Principal::system(GUARDRAIL_AUTHOR),
            &reason,
        ) {
            Ok(next) => warn!(
                experiment = %next.id,
                status = ?next.status,
                revision = next.revision,
                reason = %next.status_reason,
                "guardrail breached; experiment {}",
                if next.status == ExperimentStatus::Paused { "paused" } else { "stopped" }
            ),
            // Changed meanwhile (by a person, or the schedule): the next
            // look judges the new revision.
            Err(error) => warn!(experiment = %id, %error, "guardrail action not applied"),
        }
    }
}

/// The transition and reason a report's breaches call for: stop when any
/// breached guardrail says stop, else pause.
fn breach_action(report: &Report) -> Option<(Transition, String)> {
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
                guardrail.relative_difference * 100.0,
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

/// The tonic implementation of `ResultsService`.
#[derive(Debug, Clone)]
pub struct ResultsGrpc {
    shared: Arc<Shared>,
    admin: Admin,
    auth: Authenticator,
}

#[tonic::async_trait]
impl ResultsService for ResultsGrpc {
    async fn get_results(
        &self,
        request: tonic::Request<v1::GetResultsRequest>,
    ) -> Result<tonic::Response<v1::GetResultsResponse>, tonic::Status> {
        self.auth
            .authorize(request.metadata(), Role::Viewer, "GetResults")
            .map_err(to_status)?;
        let request = request.into_inner();
        if request.experiment_id.is_empty() {
            return Err(to_status(Error::invalid("experiment_id", "is required")));
        }
        let alpha = if request.alpha == 0.0 {
            DEFAULT_ALPHA
        } else {
            request.alpha
        };
        if !(alpha > 0.0 && alpha <= 0.5) {
            return Err(to_status(Error::invalid(
                "alpha",
                format!("must be above 0 and at most 0.5 (0 means 0.05), got {alpha}"),
            )));
        }
        let admin = self.admin.clone();
        let id = request.experiment_id.clone();
        let experiment = tokio::task::spawn_blocking(move || admin.get(&id))
            .await
            .map_err(|error| tonic::Status::internal(error.to_string()))?
            .map_err(to_status)?;
        if !self.shared.ready.load(Ordering::Acquire) {
            return Err(to_status(Error::Unavailable(
                "results are loading: the event log is still being read; retry shortly".into(),
            )));
        }
        let shared = self.shared.clone();
        let id = experiment.id.clone();
        let report = tokio::task::spawn_blocking(move || shared.analyzer().report(&id, alpha))
            .await
            .map_err(|error| tonic::Status::internal(error.to_string()))?;
        let mut response = match report {
            Some(report) => to_proto(&report),
            None => v1::GetResultsResponse {
                experiment_id: experiment.id.clone(),
                alpha,
                multiple_comparison_correction: "holm".into(),
                ..Default::default()
            },
        };
        if response.revision == 0 {
            response.revision = experiment.revision;
        }
        Ok(tonic::Response::new(response))
    }
}

fn interval(bounds: (f64, f64), alpha: f64) -> v1::ConfidenceInterval {
    v1::ConfidenceInterval {
        lower: bounds.0,
        upper: bounds.1,
        level: 1.0 - alpha,
    }
}

/// The proto form of a report.
pub fn to_proto(report: &Report) -> v1::GetResultsResponse {
    let alpha = report.alpha;
    v1::GetResultsResponse {
        experiment_id: report.experiment_id.clone(),
        revision: report.revision,
        variants: report
            .variants
            .iter()
            .map(|variant| v1::VariantResult {
                variant: variant.variant.clone(),
                is_control: variant.is_control,
                exposed_units: variant.exposed_units,
                metrics: variant
                    .metrics
                    .iter()
                    .map(|metric| {
                        let comparison = metric.comparison;
                        v1::MetricResult {
                            metric: metric.metric.clone(),
                            role: match metric.role {
                                MetricRole::Primary => v1::MetricRole::Primary,
                                MetricRole::Secondary => v1::MetricRole::Secondary,
                                MetricRole::Guardrail => v1::MetricRole::Guardrail,
                            } as i32,
                            value: metric.value.unwrap_or(0.0),
                            absolute_difference: comparison.map_or(0.0, |c| c.absolute),
                            absolute_interval: comparison
                                .map(|c| interval(c.absolute_interval, alpha)),
                            relative_difference: comparison.map_or(0.0, |c| c.relative),
                            relative_interval: comparison
                                .map(|c| interval(c.relative_interval, alpha)),
                            p_value: comparison.map_or(1.0, |c| c.p_value),
                            adjusted_p_value: metric.adjusted_p_value.unwrap_or(1.0),
                            significant: metric.significant,
                        }
                    })
                    .collect(),
            })
            .collect(),
        sample_ratio: report.sample_ratio.map(|check| v1::SampleRatioCheck {
            chi_square: check.chi_square,
            p_value: check.p_value,
            mismatch: check.mismatch,
        }),
        sanity_checks: report
            .sanity_checks
            .iter()
            .map(|check| v1::SanityCheck {
                name: check.name.to_owned(),
                passed: check.passed,
                offending_count: check.offending,
                detail: check.detail.clone(),
            })
            .collect(),
        guardrails: report
            .guardrails
            .iter()
            .map(|guardrail| v1::GuardrailStatus {
                metric: guardrail.metric.clone(),
                variant: guardrail.variant.clone(),
                state: match guardrail.state {
                    GuardrailState::Ok => v1::GuardrailState::Ok,
                    GuardrailState::Breached => v1::GuardrailState::Breached,
                    GuardrailState::InsufficientData => v1::GuardrailState::InsufficientData,
                } as i32,
                relative_difference: guardrail.relative_difference,
                threshold: guardrail.threshold,
                always_valid_p_value: guardrail.always_valid_p_value,
                action: match guardrail.action {
                    Some(GuardrailAction::Pause) => v1::GuardrailAction::Pause,
                    Some(GuardrailAction::Stop) => v1::GuardrailAction::Stop,
                    None => v1::GuardrailAction::Unspecified,
                } as i32,
            })
            .collect(),
        data_freshness_time: (report.newest_event_micros > 0).then(|| {
            prost_types::Timestamp::from(
                SystemTime::UNIX_EPOCH + Duration::from_micros(report.newest_event_micros as u64),
            )
        }),
        multiple_comparison_correction: "holm".into(),
        alpha,
    }
}
