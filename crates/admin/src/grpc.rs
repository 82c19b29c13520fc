//! `experiments.v1.AdminService` over [`Admin`]: authorise, convert the
//! request at the edge, run the use case (writes on the blocking pool, as
//! they wait for the disk), convert the answer, map errors in one place.

use exp_core::{
    Error, Experiment, FieldViolation,
    lifecycle::{Transition, Update},
};
use exp_proto::{
    convert::{
        experiment_from_proto, experiment_to_proto, qa_override_from_proto, qa_override_to_proto,
        revision_to_proto, status_from_proto, unit_type_from_proto, violation_to_proto,
    },
    holdout::{holdout_from_proto, holdout_status_from_proto, holdout_to_proto},
    to_status,
    v1::{self, admin_service_server::AdminService},
};
use tonic::{Request, Response, Status};

use crate::{Access, Admin, Authenticator, Principal, admin::ListFilter};

/// The tonic implementation of `AdminService`.
#[derive(Debug, Clone)]
pub struct AdminGrpc {
    admin: Admin,
    auth: Authenticator,
}

impl AdminGrpc {
    /// Serves `admin`, checking callers with `auth`.
    pub fn new(admin: Admin, auth: Authenticator) -> Self {
        Self { admin, auth }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> v1::admin_service_server::AdminServiceServer<Self> {
        v1::admin_service_server::AdminServiceServer::new(self)
    }

    fn authorize<T>(
        &self,
        request: &Request<T>,
        access: Access,
        method: &str,
    ) -> Result<Principal, Status> {
        self.auth
            .authorize(request.metadata(), access, method)
            .map_err(to_status)
    }

    async fn transition(
        &self,
        principal: Principal,
        id: String,
        transition: Transition,
        revision: u64,
        reason: String,
    ) -> Result<v1::Experiment, Status> {
        let admin = self.admin.clone();
        let expected = (revision != 0).then_some(revision);
        let experiment =
            blocking(move || admin.transition(&id, &transition, expected, &principal, &reason))
                .await?;
        Ok(experiment_to_proto(&experiment))
    }
}

/// Runs a blocking use case off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Status::internal(format!("request task failed: {err}")))?
        .map_err(to_status)
}

fn required_experiment(experiment: Option<v1::Experiment>) -> Result<Experiment, Status> {
    let experiment =
        experiment.ok_or_else(|| to_status(Error::invalid("experiment", "is required")))?;
    experiment_from_proto(experiment).map_err(invalid)
}

/// `error` with its field violations nested under `prefix`, as the
/// request names them (`holdout.id`).
fn nested(error: Error, prefix: &str) -> Error {
    match error {
        Error::InvalidArgument(violations) => {
            Error::InvalidArgument(violations.into_iter().map(|v| v.under(prefix)).collect())
        }
        other => other,
    }
}

fn invalid(violations: Vec<FieldViolation>) -> Status {
    to_status(Error::InvalidArgument(violations))
}

fn mask_paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|mask| mask.paths).unwrap_or_default()
}

fn page_size(size: u32) -> usize {
    usize::try_from(size).unwrap_or(usize::MAX)
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn create_experiment(
        &self,
        request: Request<v1::CreateExperimentRequest>,
    ) -> Result<Response<v1::CreateExperimentResponse>, Status> {
        let principal = self.authorize(&request, Access::Change, "CreateExperiment")?;
        let request = request.into_inner();
        let experiment = required_experiment(request.experiment)?;
        let admin = self.admin.clone();
        let created =
            blocking(move || admin.create(&experiment, &principal, &request.reason)).await?;
        Ok(Response::new(v1::CreateExperimentResponse {
            experiment: Some(experiment_to_proto(&created)),
        }))
    }

    async fn get_experiment(
        &self,
        request: Request<v1::GetExperimentRequest>,
    ) -> Result<Response<v1::GetExperimentResponse>, Status> {
        self.authorize(&request, Access::Read, "GetExperiment")?;
        let experiment = self.admin.get(&request.get_ref().id).map_err(to_status)?;
        Ok(Response::new(v1::GetExperimentResponse {
            experiment: Some(experiment_to_proto(&experiment)),
        }))
    }

    async fn list_experiments(
        &self,
        request: Request<v1::ListExperimentsRequest>,
    ) -> Result<Response<v1::ListExperimentsResponse>, Status> {
        self.authorize(&request, Access::Read, "ListExperiments")?;
        let request = request.into_inner();
        let status = status_from_proto(request.status, "status").map_err(|v| invalid(vec![v]))?;
        let non_empty = |text: String| (!text.is_empty()).then_some(text);
        let filter = ListFilter {
            status,
            placement: non_empty(request.placement),
            owner: non_empty(request.owner),
        };
        let page = self
            .admin
            .list(&filter, page_size(request.page_size), &request.page_token)
            .map_err(to_status)?;
        Ok(Response::new(v1::ListExperimentsResponse {
            experiments: page.items.iter().map(experiment_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_experiment(
        &self,
        request: Request<v1::UpdateExperimentRequest>,
    ) -> Result<Response<v1::UpdateExperimentResponse>, Status> {
        let principal = self.authorize(&request, Access::Change, "UpdateExperiment")?;
        let request = request.into_inner();
        let proposed = required_experiment(request.experiment)?;
        let mask = mask_paths(request.update_mask);
        let admin = self.admin.clone();
        let updated = blocking(move || {
            let update = Update {
                proposed: &proposed,
                mask: &mask,
                rerandomize: request.rerandomize,
            };
            admin.update(update, &principal, &request.reason)
        })
        .await?;
        Ok(Response::new(v1::UpdateExperimentResponse {
            experiment: Some(experiment_to_proto(&updated)),
        }))
    }

    async fn validate_experiment(
        &self,
        request: Request<v1::ValidateExperimentRequest>,
    ) -> Result<Response<v1::ValidateExperimentResponse>, Status> {
        self.authorize(&request, Access::Read, "ValidateExperiment")?;
        let request = request.into_inner();
        let experiment = request
            .experiment
            .ok_or_else(|| to_status(Error::invalid("experiment", "is required")))?;
        let violations = match experiment_from_proto(experiment) {
            Err(violations) => violations,
            Ok(proposed) => {
                let mask = mask_paths(request.update_mask);
                self.admin
                    .validate(Update {
                        proposed: &proposed,
                        mask: &mask,
                        rerandomize: request.rerandomize,
                    })
                    .map_err(to_status)?
            }
        };
        Ok(Response::new(v1::ValidateExperimentResponse {
            valid: violations.is_empty(),
            violations: violations.iter().map(violation_to_proto).collect(),
        }))
    }

    async fn start_experiment(
        &self,
        request: Request<v1::StartExperimentRequest>,
    ) -> Result<Response<v1::StartExperimentResponse>, Status> {
        let principal = self.authorize(&request, Access::Change, "StartExperiment")?;
        let r = request.into_inner();
        let experiment = self
            .transition(principal, r.id, Transition::Start, r.revision, r.reason)
            .await?;
        Ok(Response::new(v1::StartExperimentResponse {
            experiment: Some(experiment),
        }))
    }

    async fn pause_experiment(
        &self,
        request: Request<v1::PauseExperimentRequest>,
    ) -> Result<Response<v1::PauseExperimentResponse>, Status> {
        let principal = self.authorize(&request, Access::Change, "PauseExperiment")?;
        let r = request.into_inner();
        let experiment = self
            .transition(principal, r.id, Transition::Pause, r.revision, r.reason)
            .await?;
        Ok(Response::new(v1::PauseExperimentResponse {
            experiment: Some(experiment),
        }))
    }

    async fn resume_experiment(
        &self,
        request: Request<v1::ResumeExperimentRequest>,
    ) -> Result<Response<v1::ResumeExperimentResponse>, Status> {
        let principal = self.authorize(&request, Access::Change, "ResumeExperiment")?;
        let r = request.into_inner();
        let experiment = self
            .transition(principal, r.id, Transition::Resume, r.revision, r.reason)
            .await?;
        Ok(Response::new(v1::ResumeExperimentResponse {
            experiment: Some(experiment),
        }))
    }

    async fn stop_experiment(
        &self,
        request: Request<v1::StopExperimentRequest>,
    ) -> Result<Response<v1::StopExperimentResponse>, Status> {
        let principal = self.authorize(&request, Access::Change, "StopExperiment")?;
        let r = request.into_inner();
        let ship_variant = (!r.ship_variant.is_empty()).then_some(r.ship_variant);
        let experiment = self
            .transition(
                principal,
                r.id,
                Transition::Stop { ship_variant },
                r.revision,
                r.reason,
            )
            .await?;
        Ok(Response::new(v1::StopExperimentResponse {
            experiment: Some(experiment),
        }))
    }

    async fn archive_experiment(
        &self,
        request: Request<v1::ArchiveExperimentRequest>,
    ) -> Result<Response<v1::ArchiveExperimentResponse>, Status> {
        let principal = self.authorize(&request, Access::Change, "ArchiveExperiment")?;
        let r = request.into_inner();
        let experiment = self
            .transition(principal, r.id, Transition::Archive, r.revision, r.reason)
            .await?;
        Ok(Response::new(v1::ArchiveExperimentResponse {
            experiment: Some(experiment),
        }))
    }

    async fn list_experiment_revisions(
        &self,
        request: Request<v1::ListExperimentRevisionsRequest>,
    ) -> Result<Response<v1::ListExperimentRevisionsResponse>, Status> {
        self.authorize(&request, Access::Read, "ListExperimentRevisions")?;
        let r = request.into_inner();
        let page = self
            .admin
            .revisions(&r.id, page_size(r.page_size), &r.page_token)
            .map_err(to_status)?;
        Ok(Response::new(v1::ListExperimentRevisionsResponse {
            revisions: page.items.iter().map(revision_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn rollback_experiment(
        &self,
        request: Request<v1::RollbackExperimentRequest>,
    ) -> Result<Response<v1::RollbackExperimentResponse>, Status> {
        let principal = self.authorize(&request, Access::Change, "RollbackExperiment")?;
        let r = request.into_inner();
        let admin = self.admin.clone();
        let expected = (r.revision != 0).then_some(r.revision);
        let experiment = blocking(move || {
            admin.rollback(
                &r.id,
                r.to_revision,
                r.rerandomize,
                expected,
                &principal,
                &r.reason,
            )
        })
        .await?;
        Ok(Response::new(v1::RollbackExperimentResponse {
            experiment: Some(experiment_to_proto(&experiment)),
        }))
    }

    async fn set_override(
        &self,
        request: Request<v1::SetOverrideRequest>,
    ) -> Result<Response<v1::SetOverrideResponse>, Status> {
        let principal = self.authorize(&request, Access::Change, "SetOverride")?;
        let proto = request
            .into_inner()
            .qa_override
            .ok_or_else(|| to_status(Error::invalid("qa_override", "is required")))?;
        let qa_override =
            // The creation time is set by `Admin::set_override` from its clock.
            qa_override_from_proto(proto, std::time::SystemTime::UNIX_EPOCH, &principal.identity)
                .map_err(|violations| {
                    invalid(
                        violations
                            .into_iter()
                            .map(|v| v.under("qa_override"))
                            .collect(),
                    )
                })?;
        let admin = self.admin.clone();
        let stored = blocking(move || {
            admin.set_override(qa_override).map_err(|err| match err {
                Error::InvalidArgument(violations) => Error::InvalidArgument(
                    violations
                        .into_iter()
                        .map(|v| v.under("qa_override"))
                        .collect(),
                ),
                other => other,
            })
        })
        .await?;
        Ok(Response::new(v1::SetOverrideResponse {
            qa_override: Some(qa_override_to_proto(&stored)),
        }))
    }

    async fn delete_override(
        &self,
        request: Request<v1::DeleteOverrideRequest>,
    ) -> Result<Response<v1::DeleteOverrideResponse>, Status> {
        self.authorize(&request, Access::Change, "DeleteOverride")?;
        let r = request.into_inner();
        let unit_type =
            unit_type_from_proto(r.unit_type, "unit_type").map_err(|v| invalid(vec![v]))?;
        let admin = self.admin.clone();
        blocking(move || admin.delete_override(&r.experiment_id, unit_type, &r.unit_id)).await?;
        Ok(Response::new(v1::DeleteOverrideResponse {}))
    }

    async fn list_overrides(
        &self,
        request: Request<v1::ListOverridesRequest>,
    ) -> Result<Response<v1::ListOverridesResponse>, Status> {
        self.authorize(&request, Access::Read, "ListOverrides")?;
        let r = request.into_inner();
        let experiment_id = (!r.experiment_id.is_empty()).then_some(r.experiment_id.as_str());
        let overrides = self
            .admin
            .overrides(experiment_id, r.include_expired)
            .map_err(to_status)?;
        Ok(Response::new(v1::ListOverridesResponse {
            qa_overrides: overrides.iter().map(qa_override_to_proto).collect(),
        }))
    }

    async fn create_holdout(
        &self,
        request: Request<v1::CreateHoldoutRequest>,
    ) -> Result<Response<v1::CreateHoldoutResponse>, Status> {
        let principal = self.authorize(&request, Access::Change, "CreateHoldout")?;
        let proto = request
            .into_inner()
            .holdout
            .ok_or_else(|| to_status(Error::invalid("holdout", "is required")))?;
        let proposed = holdout_from_proto(proto);
        let admin = self.admin.clone();
        let created = blocking(move || {
            admin
                .create_holdout(&proposed, &principal)
                .map_err(|err| nested(err, "holdout"))
        })
        .await?;
        Ok(Response::new(v1::CreateHoldoutResponse {
            holdout: Some(holdout_to_proto(&created)),
        }))
    }

    async fn get_holdout(
        &self,
        request: Request<v1::GetHoldoutRequest>,
    ) -> Result<Response<v1::GetHoldoutResponse>, Status> {
        self.authorize(&request, Access::Read, "GetHoldout")?;
        let holdout = self
            .admin
            .holdout(&request.get_ref().id)
            .map_err(to_status)?;
        Ok(Response::new(v1::GetHoldoutResponse {
            holdout: Some(holdout_to_proto(&holdout)),
        }))
    }

    async fn list_holdouts(
        &self,
        request: Request<v1::ListHoldoutsRequest>,
    ) -> Result<Response<v1::ListHoldoutsResponse>, Status> {
        self.authorize(&request, Access::Read, "ListHoldouts")?;
        let status = holdout_status_from_proto(request.get_ref().status, "status")
            .map_err(|v| invalid(vec![v]))?;
        let holdouts = self.admin.holdouts(status).map_err(to_status)?;
        Ok(Response::new(v1::ListHoldoutsResponse {
            holdouts: holdouts.iter().map(holdout_to_proto).collect(),
        }))
    }

    async fn update_holdout(
        &self,
        request: Request<v1::UpdateHoldoutRequest>,
    ) -> Result<Response<v1::UpdateHoldoutResponse>, Status> {
        let principal = self.authorize(&request, Access::Change, "UpdateHoldout")?;
        let request = request.into_inner();
        let proto = request
            .holdout
            .ok_or_else(|| to_status(Error::invalid("holdout", "is required")))?;
        let proposed = holdout_from_proto(proto);
        let mask = mask_paths(request.update_mask);
        let admin = self.admin.clone();
        let updated = blocking(move || {
            admin
                .update_holdout(&proposed, &mask, &principal)
                .map_err(|err| match err {
                    // The mask is the request's own field, not the holdout's.
                    Error::InvalidArgument(violations)
                        if violations.iter().all(|v| v.field == "update_mask") =>
                    {
                        Error::InvalidArgument(violations)
                    }
                    other => nested(other, "holdout"),
                })
        })
        .await?;
        Ok(Response::new(v1::UpdateHoldoutResponse {
            holdout: Some(holdout_to_proto(&updated)),
        }))
    }

    async fn end_holdout(
        &self,
        request: Request<v1::EndHoldoutRequest>,
    ) -> Result<Response<v1::EndHoldoutResponse>, Status> {
        let principal = self.authorize(&request, Access::Change, "EndHoldout")?;
        let r = request.into_inner();
        let admin = self.admin.clone();
        let ended = blocking(move || admin.end_holdout(&r.id, r.revision, &principal)).await?;
        Ok(Response::new(v1::EndHoldoutResponse {
            holdout: Some(holdout_to_proto(&ended)),
        }))
    }
}
