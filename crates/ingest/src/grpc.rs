//! `experiments.v1.EventService`: validates each event of a batch, appends
//! the valid ones to the durable log and answers once they are fsynced,
//! with the log position they reached.
//!
//! A batch is never half-applied silently: invalid events are listed in
//! `rejections` with their index, field and reason; all valid events are
//! written; `accepted_count` and `duplicate_count` count them. A batch
//! over [`MAX_BATCH`] events is refused whole (INVALID_ARGUMENT); an
//! overloaded log refuses it whole with RESOURCE_EXHAUSTED and a retry
//! delay; a failed write refuses it whole with UNAVAILABLE. In every
//! refused case nothing of the batch was acknowledged, and a retry with the
//! same event ids is safe.

use std::{sync::Arc, time::Duration};

use exp_core::{Clock, Error, event::Event};
use exp_proto::{
    to_status,
    v1::{self, event_service_server::EventService},
};
use tonic::{Request, Response, Status};

use crate::{
    Batch, LogError, LogSlot,
    validate::{self, MAX_BATCH, Rejection, SharedCatalog},
};

/// How long an overloaded caller is asked to wait before retrying.
pub const RETRY_AFTER_OVERLOAD: Duration = Duration::from_millis(200);

/// The tonic implementation of `EventService`.
#[derive(Debug, Clone)]
pub struct EventGrpc {
    log: LogSlot,
    catalog: SharedCatalog,
    clock: Arc<dyn Clock>,
}

/// What a logged batch comes to.
struct Logged {
    accepted: u32,
    duplicates: u32,
    rejections: Vec<v1::EventRejection>,
    position: u64,
}

impl EventGrpc {
    /// Serves the log in `log` (UNAVAILABLE until it is open), checking
    /// exposures against `catalog`.
    pub fn new(log: LogSlot, catalog: SharedCatalog, clock: Arc<dyn Clock>) -> Self {
        Self {
            log,
            catalog,
            clock,
        }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> v1::event_service_server::EventServiceServer<Self> {
        v1::event_service_server::EventServiceServer::new(self)
    }

    /// Validates `events` one by one (each valid one becomes its domain
    /// event, encoded for the log as it is added), then appends the batch.
    async fn log_batch<T, E: Into<Event>>(
        &self,
        field: &str,
        events: Vec<T>,
        check: impl Fn(T) -> Result<E, Rejection>,
    ) -> Result<Logged, Status> {
        if events.len() > MAX_BATCH {
            return Err(to_status(Error::invalid(
                field,
                format!(
                    "at most {MAX_BATCH} events per call, got {}; split the batch",
                    events.len()
                ),
            )));
        }
        let log = self.log.get().ok_or_else(|| {
            Status::unavailable(
                "the event log is still opening (replaying after a restart); retry shortly",
            )
        })?;
        let mut rejections = Vec::new();
        let mut valid = Batch::with_capacity(events.len());
        for (index, event) in events.into_iter().enumerate() {
            match check(event) {
                Ok(event) => valid.push(event),
                Err(rejection) => rejections.push(v1::EventRejection {
                    index: index as u32,
                    field: rejection.field,
                    reason: rejection.reason,
                }),
            }
        }
        let appended = log.append(valid).await.map_err(|refused| {
            let error = refused.error;
            to_status(match error {
                LogError::Overloaded { .. } => Error::Overloaded {
                    message: error.to_string(),
                    retry_after: RETRY_AFTER_OVERLOAD,
                },
                LogError::Io(_) | LogError::Closed => Error::Storage(format!(
                    "{error}; nothing in this batch was acknowledged, retry it"
                )),
            })
        })?;
        let accepted = appended.fresh.iter().filter(|fresh| **fresh).count() as u32;
        Ok(Logged {
            accepted,
            duplicates: appended.fresh.len() as u32 - accepted,
            rejections,
            position: appended.position.as_u64(),
        })
    }
}

#[tonic::async_trait]
impl EventService for EventGrpc {
    async fn log_exposures(
        &self,
        request: Request<v1::LogExposuresRequest>,
    ) -> Result<Response<v1::LogExposuresResponse>, Status> {
        let now = self.clock.now();
        let catalog = self.catalog.load();
        if !catalog.is_loaded() {
            return Err(Status::unavailable(
                "the experiments exposures are checked against are still loading; retry shortly",
            ));
        }
        let logged = self
            .log_batch("exposures", request.into_inner().exposures, |exposure| {
                validate::exposure(exposure, &catalog, now)
            })
            .await?;
        Ok(Response::new(v1::LogExposuresResponse {
            accepted_count: logged.accepted,
            duplicate_count: logged.duplicates,
            rejections: logged.rejections,
            position: logged.position,
        }))
    }

    async fn log_outcomes(
        &self,
        request: Request<v1::LogOutcomesRequest>,
    ) -> Result<Response<v1::LogOutcomesResponse>, Status> {
        let now = self.clock.now();
        let logged = self
            .log_batch("outcomes", request.into_inner().outcomes, |outcome| {
                validate::outcome(outcome, now)
            })
            .await?;
        Ok(Response::new(v1::LogOutcomesResponse {
            accepted_count: logged.accepted,
            duplicate_count: logged.duplicates,
            rejections: logged.rejections,
            position: logged.position,
        }))
    }
}
