//! `experiments.v1.ResultsService`.

use std::{sync::Arc, time::Duration};

use exp_admin::{Access, Admin, Authenticator};
use exp_core::Error;
use exp_ingest::Position;
use exp_proto::{
    to_status,
    v1::{self, results_service_server::ResultsService},
};
use tonic::{Request, Response, Status, metadata::MetadataMap};

use exp_analysis::{
    plan::{Baseline, PlanRequest, detectable_now, observed_daily_units, plan},
    timeline::Granularity,
};

use crate::{DEFAULT_ALPHA, DEFAULT_POWER, Progress, Shared};

/// The tonic implementation of `ResultsService`.
#[derive(Debug, Clone)]
pub struct ResultsGrpc {
    shared: Arc<Shared>,
    admin: Admin,
    auth: Authenticator,
    request_timeout: Duration,
}

impl ResultsGrpc {
    pub(crate) fn new(
        shared: Arc<Shared>,
        admin: Admin,
        auth: Authenticator,
        request_timeout: Duration,
    ) -> Self {
        Self {
            shared,
            admin,
            auth,
            request_timeout,
        }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> v1::results_service_server::ResultsServiceServer<Self> {
        v1::results_service_server::ResultsServiceServer::new(self)
    }

    /// The experiment (or the comparison of a holdout's groups), after
    /// checking the caller may read it.
    async fn experiment(
        &self,
        metadata: &MetadataMap,
        method: &str,
        id: &str,
    ) -> Result<exp_core::Experiment, Status> {
        self.auth
            .authorize(metadata, Access::Read, method)
            .map_err(to_status)?;
        if id.is_empty() {
            return Err(to_status(Error::invalid("experiment_id", "is required")));
        }
        let admin = self.admin.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || admin.results_subject(&id))
            .await
            .map_err(|error| Status::internal(error.to_string()))?
            .map_err(to_status)
    }

    /// Waits until the analysis has counted through `min_position`, within
    /// the call's deadline.
    async fn counted_through(
        &self,
        min_position: Position,
        metadata: &MetadataMap,
    ) -> Result<Progress, Status> {
        let mut progress = self.shared.progress.subscribe();
        if min_position == Position::ZERO {
            let now = *progress.borrow();
            if !now.ready {
                return Err(to_status(Error::Unavailable(
                    "results are loading: the event log is still being read; retry shortly".into(),
                )));
            }
            return Ok(now);
        }
        // The log knows its tip; a stream's last sequence would take a
        // request, and a position past it is met by the deadline instead.
        if let Some(tip) = self.shared.source.tip()
            && min_position > tip
        {
            return Err(to_status(Error::invalid(
                "min_position",
                format!(
                    "{min_position} is past the newest event logged, {tip}: use a position an \
                     EventService answer gave"
                ),
            )));
        }
        let patience = patience(metadata, self.request_timeout);
        let wanted = |now: &Progress| now.ready && now.counted >= min_position;
        let waited = tokio::time::timeout(patience, progress.wait_for(wanted))
            .await
            .map(|now| now.map(|now| *now));
        match waited {
            Ok(Ok(now)) => Ok(now),
            Ok(Err(_)) | Err(_) => {
                let reached = *self.shared.progress.borrow();
                Err(to_status(Error::Unavailable(format!(
                    "results have counted through {} of min_position {min_position} after \
                     {patience:?}{}; retry",
                    reached.counted,
                    if reached.ready {
                        ""
                    } else {
                        " (still reading the log)"
                    },
                ))))
            }
        }
    }
}

/// The significance level of a request (0 means the default).
fn alpha_of(alpha: f64) -> Result<f64, Status> {
    let alpha = if alpha == 0.0 { DEFAULT_ALPHA } else { alpha };
    if !(alpha > 0.0 && alpha <= 0.5) {
        return Err(to_status(Error::invalid(
            "alpha",
            format!("must be above 0 and at most 0.5 (0 means 0.05), got {alpha}"),
        )));
    }
    Ok(alpha)
}

/// How long a call may wait for the analysis: a little less than the
/// sooner of the caller's deadline (`grpc-timeout`) and the server's own,
/// so the answer that it is not there yet still reaches the caller.
pub fn patience(metadata: &MetadataMap, request_timeout: Duration) -> Duration {
    let deadline = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(request_timeout, |caller| caller.min(request_timeout));
    deadline.saturating_sub((deadline / 10).min(Duration::from_millis(100)))
}

/// A `grpc-timeout` header value: up to 8 digits and a unit (H, M, S, m,
/// u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[tonic::async_trait]
impl ResultsService for ResultsGrpc {
    async fn plan_experiment(
        &self,
        request: Request<v1::PlanExperimentRequest>,
    ) -> Result<Response<v1::PlanExperimentResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        self.auth
            .authorize(&metadata, Access::Read, "PlanExperiment")
            .map_err(to_status)?;
        let started = if request.experiment_id.is_empty() {
            None
        } else {
            let experiment = self
                .experiment(&metadata, "PlanExperiment", &request.experiment_id)
                .await?;
            self.counted_through(Position::ZERO, &metadata).await?;
            let shared = self.shared.clone();
            let timeline = {
                let experiment = experiment.clone();
                tokio::task::spawn_blocking(move || {
                    shared.timeline(&experiment, Granularity::Hour, DEFAULT_ALPHA)
                })
                .await
                .map_err(|error| Status::internal(error.to_string()))?
            };
            Some((experiment, timeline))
        };
        let (weights_given, traffic_given) =
            (!request.weights.is_empty(), request.traffic_percent != 0);
        let placement = request.placement.clone();
        let mut planning = plan_request(request)?;
        let mut source = if planning.daily_units.is_some() {
            v1::DailyUnitsSource::Given
        } else {
            v1::DailyUnitsSource::Unspecified
        };
        let mut observed = None;
        let mut standing = None;
        if let Some((experiment, timeline)) = &started {
            // The experiment's own split and share, unless the request
            // names others.
            if !weights_given {
                planning.weights = weights_of(experiment);
            }
            if !traffic_given {
                planning.traffic_percent = experiment.traffic_percent.max(1);
            }
            let points: Vec<(f64, u64)> = timeline
                .points
                .iter()
                .filter_map(|point| {
                    let time = point.time?;
                    let units = point.variants.iter().map(|v| v.exposed_units).sum();
                    Some((time.seconds as f64 + f64::from(time.nanos) * 1e-9, units))
                })
                .collect();
            observed = observed_daily_units(&points, planning.traffic_percent);
            if planning.daily_units.is_none() && observed.is_some() {
                planning.daily_units = observed;
                source = v1::DailyUnitsSource::Experiment;
            }
            standing = timeline.points.last().map(|now| {
                let control = now
                    .variants
                    .iter()
                    .find(|variant| variant.is_control)
                    .map_or(0, |variant| variant.exposed_units);
                let smallest_treatment = now
                    .variants
                    .iter()
                    .filter(|variant| !variant.is_control)
                    .map(|variant| variant.exposed_units)
                    .min()
                    .unwrap_or(0);
                let exposed: u64 = now.variants.iter().map(|v| v.exposed_units).sum();
                (control, smallest_treatment, exposed)
            });
        }
        if planning.daily_units.is_none() && !placement.is_empty() {
            // Before launch: the placement's units a day, across
            // experiments. The request is checked first (everything but
            // the daily units), so a bad one says so whatever the
            // placement and without waiting for the analysis.
            plan(&planning).map_err(|violations| to_status(Error::InvalidArgument(violations)))?;
            self.counted_through(Position::ZERO, &metadata).await?;
            let shared = self.shared.clone();
            let asked = placement.clone();
            let daily = tokio::task::spawn_blocking(move || {
                shared.analysis().analyzer.placement_daily_units(&asked)
            })
            .await
            .map_err(|error| Status::internal(error.to_string()))?;
            let Some(daily) = daily else {
                return Err(to_status(Error::invalid(
                    "placement",
                    format!(
                        "no exposures on {placement:?} in the last 24 hours of event time, \
                         in any experiment: give daily_units"
                    ),
                )));
            };
            planning.daily_units = Some(daily as f64);
            source = v1::DailyUnitsSource::Placement;
        }
        let planned =
            plan(&planning).map_err(|violations| to_status(Error::InvalidArgument(violations)))?;
        let progress = started.as_ref().map(|_| {
            let (control, treatment, exposed) = standing.unwrap_or_default();
            let eligible_seen = exposed as f64 * 100.0 / f64::from(planning.traffic_percent);
            let days_left = planning
                .daily_units
                .map(|daily| ((planned.eligible_units as f64 - eligible_seen) / daily).max(0.0))
                .unwrap_or(0.0);
            v1::RunProgress {
                control_units: control,
                minimum_detectable_effect: detectable_now(&planning, control, treatment)
                    .unwrap_or(0.0),
                observed_daily_units: observed.unwrap_or(0.0),
                days_left,
            }
        });
        Ok(Response::new(v1::PlanExperimentResponse {
            absolute_effect: planned.absolute_effect,
            effect_size: planned.effect_size,
            control_units: planned.control_units,
            units_per_treatment: planned.units_per_treatment,
            total_units: planned.total_units,
            eligible_units: planned.eligible_units,
            days: planned.days.unwrap_or(0.0),
            alpha: planning.alpha,
            power: planning.power,
            progress,
            daily_units_source: source as i32,
            daily_units: planning.daily_units.unwrap_or(0.0),
        }))
    }

    async fn get_results(
        &self,
        request: Request<v1::GetResultsRequest>,
    ) -> Result<Response<v1::GetResultsResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        let alpha = alpha_of(request.alpha)?;
        let experiment = self
            .experiment(&metadata, "GetResults", &request.experiment_id)
            .await?;
        self.counted_through(Position::from_u64(request.min_position), &metadata)
            .await?;
        let shared = self.shared.clone();
        let response = tokio::task::spawn_blocking(move || shared.results(&experiment, alpha))
            .await
            .map_err(|error| Status::internal(error.to_string()))?;
        Ok(Response::new(response))
    }

    async fn get_results_timeline(
        &self,
        request: Request<v1::GetResultsTimelineRequest>,
    ) -> Result<Response<v1::GetResultsTimelineResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        let alpha = alpha_of(request.alpha)?;
        let granularity = match v1::TimelineGranularity::try_from(request.granularity) {
            Ok(v1::TimelineGranularity::Unspecified | v1::TimelineGranularity::Hour) => {
                Granularity::Hour
            }
            Ok(v1::TimelineGranularity::Day) => Granularity::Day,
            Err(_) => {
                return Err(to_status(Error::invalid(
                    "granularity",
                    format!(
                        "{} is not a granularity: TIMELINE_GRANULARITY_HOUR or _DAY",
                        request.granularity
                    ),
                )));
            }
        };
        let experiment = self
            .experiment(&metadata, "GetResultsTimeline", &request.experiment_id)
            .await?;
        self.counted_through(Position::ZERO, &metadata).await?;
        let shared = self.shared.clone();
        let response =
            tokio::task::spawn_blocking(move || shared.timeline(&experiment, granularity, alpha))
                .await
                .map_err(|error| Status::internal(error.to_string()))?;
        Ok(Response::new(response))
    }
}

/// The weights of a plan request that names none.
const DEFAULT_WEIGHTS: [u32; 2] = [50, 50];

/// An experiment's weights, control first.
fn weights_of(experiment: &exp_core::Experiment) -> Vec<u32> {
    let control = experiment
        .variants
        .iter()
        .filter(|variant| variant.name == experiment.control_variant);
    let treatments = experiment
        .variants
        .iter()
        .filter(|variant| variant.name != experiment.control_variant);
    control
        .chain(treatments)
        .map(|variant| variant.weight)
        .collect()
}

/// A plan request in the domain's terms, with the defaults the proto
/// names (alpha 0.05, power 0.8, 50/50, all traffic).
fn plan_request(request: v1::PlanExperimentRequest) -> Result<PlanRequest, Status> {
    use v1::plan_experiment_request::Baseline as ProtoBaseline;
    let baseline = match request.baseline {
        Some(ProtoBaseline::BaselineRate(rate)) => Baseline::Rate(rate),
        Some(ProtoBaseline::BaselineMean(baseline)) => Baseline::Mean {
            mean: baseline.mean,
            variance: baseline.variance,
        },
        None => {
            return Err(to_status(Error::invalid(
                "baseline",
                "is required: baseline_rate (a proportion) or baseline_mean (mean and variance)",
            )));
        }
    };
    let or = |value: f64, default: f64| if value == 0.0 { default } else { value };
    Ok(PlanRequest {
        baseline,
        minimum_detectable_effect: request.minimum_detectable_effect,
        alpha: or(request.alpha, DEFAULT_ALPHA),
        power: or(request.power, DEFAULT_POWER),
        weights: if request.weights.is_empty() {
            DEFAULT_WEIGHTS.to_vec()
        } else {
            request.weights
        },
        traffic_percent: if request.traffic_percent == 0 {
            100
        } else {
            request.traffic_percent
        },
        daily_units: (request.daily_units != 0.0).then_some(request.daily_units),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_waits_a_little_less_than_the_sooner_deadline() {
        let mut metadata = MetadataMap::new();
        let server = Duration::from_secs(10);
        assert_eq!(patience(&metadata, server), Duration::from_millis(9_900));
        metadata.insert("grpc-timeout", "500m".parse().expect("ascii"));
        assert_eq!(patience(&metadata, server), Duration::from_millis(450));
        metadata.insert("grpc-timeout", "1H".parse().expect("ascii"));
        assert_eq!(patience(&metadata, server), Duration::from_millis(9_900));
        metadata.insert("grpc-timeout", "soon".parse().expect("ascii"));
        assert_eq!(patience(&metadata, server), Duration::from_millis(9_900));
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_refuse_the_malformed() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse_grpc_timeout("123456789S"), None, "more than 8 digits");
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
    }
}
