//! `experiments.v1.AssignmentService/Assign`.

use std::{sync::Arc, time::SystemTime};

use exp_core::{
    Clock, Error,
    evaluate::{
        Assignment, AssignmentReason, CompiledSnapshot, Evaluation, HoldoutMembership,
        RequestContext,
    },
};
use exp_proto::{
    serving::{evaluation_to_proto, request_context_from_proto},
    to_status,
    v1::{self, assignment_service_server::AssignmentService},
};
use tonic::{Request, Response, Status};

use crate::{ExposureQueue, ExposureRecord, SnapshotCell};

/// Evaluates requests on the current snapshot and offers exposures.
#[derive(Debug, Clone)]
pub struct Assigner {
    cell: SnapshotCell,
    exposures: ExposureQueue,
    clock: Arc<dyn Clock>,
}

impl Assigner {
    /// Evaluates on `cell`, offering exposures to `exposures`.
    pub fn new(cell: SnapshotCell, exposures: ExposureQueue, clock: Arc<dyn Clock>) -> Self {
        Self {
            cell,
            exposures,
            clock,
        }
    }

    /// The exposure queue's counters.
    pub fn exposure_counters(&self) -> crate::exposure::QueueCounters {
        self.exposures.counters()
    }

    /// Assigns one request; logs exposures of bucketed assignments, and of
    /// the unit's group in every holdout whose scope the request fell in,
    /// unless `defer_exposure`. `UNAVAILABLE` before any config has
    /// arrived.
    pub fn assign(
        &self,
        user_id: &str,
        session_id: &str,
        context: &RequestContext,
        defer_exposure: bool,
    ) -> Result<Evaluation, AssignError> {
        let evaluated = self.evaluate(user_id, session_id, context)?;
        for assignment in &evaluated.evaluation.assignments {
            count_assignment(assignment);
            if !defer_exposure {
                self.expose(assignment, user_id, session_id, context, evaluated.at);
            }
        }
        if !defer_exposure {
            for membership in &evaluated.evaluation.holdouts {
                self.expose_holdout(membership, user_id, session_id, context, evaluated.at);
            }
        }
        Ok(evaluated.evaluation)
    }

    /// Evaluates one request and logs nothing; the answer keeps the
    /// snapshot and the time it was evaluated with.
    pub fn evaluate(
        &self,
        user_id: &str,
        session_id: &str,
        context: &RequestContext,
    ) -> Result<Evaluated, AssignError> {
        let snapshot = self.cell.load().ok_or(AssignError::NoConfig)?;
        let at = self.clock.now();
        let evaluation = snapshot
            .evaluate(user_id, session_id, context, at)
            .map_err(AssignError::Invalid)?;
        Ok(Evaluated {
            evaluation,
            snapshot,
            at,
        })
    }

    /// Offers the exposure of `assignment` (of the request of `user_id`,
    /// `session_id` and `context`, evaluated at `at`) when it was bucketed:
    /// overrides and shipped variants measure nothing.
    pub fn expose(
        &self,
        assignment: &Assignment,
        user_id: &str,
        session_id: &str,
        context: &RequestContext,
        at: SystemTime,
    ) {
        if assignment.reason != AssignmentReason::Bucketed {
            return;
        }
        self.exposures.offer(ExposureRecord {
            experiment_id: assignment.experiment_id.clone(),
            variant: assignment.variant.clone(),
            user_id: user_id.to_owned(),
            session_id: session_id.to_owned(),
            unit_type: assignment.unit_type,
            placement: context.placement.clone(),
            page_type: context.page_type.clone(),
            revision: assignment.revision,
            timestamp: at,
        });
    }
}

impl Assigner {
    /// Offers the exposure of a unit to its group of a holdout: the
    /// holdout's id as the experiment, `holdout` or `rest` as the variant.
    /// Both groups are exposed by the same scope, so results compare like
    /// with like.
    pub fn expose_holdout(
        &self,
        membership: &HoldoutMembership,
        user_id: &str,
        session_id: &str,
        context: &RequestContext,
        at: SystemTime,
    ) {
        let group: Arc<str> = Arc::from(membership.group());
        self.exposures.offer(ExposureRecord {
            experiment_id: membership.holdout_id.clone(),
            variant: group,
            user_id: user_id.to_owned(),
            session_id: session_id.to_owned(),
            unit_type: membership.unit_type,
            placement: context.placement.clone(),
            page_type: context.page_type.clone(),
            revision: membership.revision,
            timestamp: at,
        });
    }
}

/// An evaluation with what it was evaluated on.
#[derive(Debug)]
pub struct Evaluated {
    /// The answer.
    pub evaluation: Evaluation,
    /// The snapshot that gave it.
    pub snapshot: Arc<CompiledSnapshot>,
    /// The time it was evaluated at.
    pub at: SystemTime,
}

/// `expd.assignments`: assignments answered, by `experiment` and `reason`
/// (`bucketed`, `override`, `shipped`, `holdout`: then `experiment` is the
/// holdout's id). One counter add per assignment
/// (its cost per call is in `benches/RESULTS.md`).
pub fn count_assignment(assignment: &exp_core::evaluate::Assignment) {
    static ASSIGNMENTS: std::sync::OnceLock<opentelemetry::metrics::Counter<u64>> =
        std::sync::OnceLock::new();
    let reason = assignment.reason.as_str();
    let experiment = assignment
        .holdout_id
        .clone()
        .unwrap_or_else(|| assignment.experiment_id.clone());
    ASSIGNMENTS
        .get_or_init(|| {
            opentelemetry::global::meter("expd")
                .u64_counter("expd.assignments")
                .with_description("Assignments answered, by experiment and reason")
                .build()
        })
        .add(
            1,
            &[
                opentelemetry::KeyValue::new(
                    "experiment",
                    opentelemetry::StringValue::from(experiment),
                ),
                opentelemetry::KeyValue::new("reason", reason),
            ],
        );
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum AssignError {
    /// No serving config has arrived yet (a sidecar's cold start with no
    /// saved config and no admin).
    NoConfig,
    /// The request is invalid.
    Invalid(Error),
}

impl From<AssignError> for Status {
    fn from(error: AssignError) -> Self {
        match error {
            AssignError::NoConfig => {
                Status::unavailable("no experiment config received yet; retry shortly")
            }
            AssignError::Invalid(error) => to_status(error),
        }
    }
}

/// The tonic implementation of `AssignmentService`.
#[derive(Debug, Clone)]
pub struct AssignGrpc {
    assigner: Assigner,
}

impl AssignGrpc {
    /// Serves `assigner`.
    pub fn new(assigner: Assigner) -> Self {
        Self { assigner }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> v1::assignment_service_server::AssignmentServiceServer<Self> {
        v1::assignment_service_server::AssignmentServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl AssignmentService for AssignGrpc {
    async fn assign(
        &self,
        request: Request<v1::AssignRequest>,
    ) -> Result<Response<v1::AssignResponse>, Status> {
        let request = request.into_inner();
        let context = request_context_from_proto(request.context);
        let evaluation = self.assigner.assign(
            &request.user_id,
            &request.session_id,
            &context,
            request.defer_exposure,
        )?;
        Ok(Response::new(evaluation_to_proto(&evaluation)))
    }
}
