//! `experiments.v1.EventService`: validates each event of a batch, appends
//! the valid ones to the durable log and answers once they are fsynced,
//! with the log position they reached; or, with `--events-sink nats://`,
//! publishes them to the JetStream stream and answers once JetStream has
//! acknowledged every one, with the stream sequence they reached.
//!
//! A batch is never half-applied silently: invalid events are listed in
//! `rejections` with their index, field and reason; all valid events are
//! written; `accepted_count` and `duplicate_count` count them. A batch
//! over [`MAX_BATCH`] events is refused whole (INVALID_ARGUMENT); an
//! overloaded log refuses it whole with RESOURCE_EXHAUSTED and a retry
//! delay; a failed write, or NATS unreachable or not acknowledging,
//! refuses it whole with UNAVAILABLE. In every
//! refused case nothing of the batch was acknowledged, and a retry with the
//! same event ids is safe.

use std::{sync::Arc, time::Duration};

use exp_core::{Clock, Error, event::Event};
use exp_proto::{
    status::{MAX_DESCRIPTION_CHARS, MAX_FIELD_CHARS, bounded},
    to_status,
    v1::{self, event_service_server::EventService},
};
use tonic::{Request, Response, Status};

use crate::{
    Batch, LogError, LogSlot, Position,
    jetstream::StreamPublisher,
    validate::{self, MAX_BATCH, Rejection, SharedCatalog},
};

/// How long an overloaded caller is asked to wait before retrying.
pub const RETRY_AFTER_OVERLOAD: Duration = Duration::from_millis(200);

/// Where `EventService` puts what it acknowledges.
#[derive(Debug, Clone)]
pub enum EventDestination {
    /// The embedded log of this process (UNAVAILABLE until it is open).
    Log(LogSlot),
    /// The JetStream stream (UNAVAILABLE while NATS is unreachable).
    Stream(StreamPublisher),
}

/// The tonic implementation of `EventService`.
#[derive(Debug, Clone)]
pub struct EventGrpc {
    destination: EventDestination,
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
    /// Serves `destination`, checking exposures against `catalog`.
    pub fn new(
        destination: EventDestination,
        catalog: SharedCatalog,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            destination,
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
        let mut rejections = Vec::new();
        let mut valid = Vec::with_capacity(events.len());
        for (index, event) in events.into_iter().enumerate() {
            match check(event) {
                Ok(event) => valid.push(event.into()),
                // Cut as an error's field violations are: an answer lists
                // up to MAX_BATCH rejections, whatever their events echo.
                Err(rejection) => rejections.push(v1::EventRejection {
                    index: index as u32,
                    field: bounded(&rejection.field, MAX_FIELD_CHARS),
                    reason: bounded(&rejection.reason, MAX_DESCRIPTION_CHARS),
                }),
            }
        }
        let (fresh, position) = match &self.destination {
            EventDestination::Log(slot) => append(slot, valid).await?,
            EventDestination::Stream(publisher) => {
                let published = publisher
                    .publish(&valid)
                    .await
                    .map_err(|error| to_status(Error::Unavailable(error.to_string())))?;
                (published.fresh, published.position)
            }
        };
        let accepted = fresh.iter().filter(|fresh| **fresh).count() as u32;
        Ok(Logged {
            accepted,
            duplicates: fresh.len() as u32 - accepted,
            rejections,
            position: position.as_u64(),
        })
    }
}

/// Appends `events` to the log in `slot`: each event's freshness and the
/// position reached.
async fn append(slot: &LogSlot, events: Vec<Event>) -> Result<(Vec<bool>, Position), Status> {
    let log = slot.get().ok_or_else(|| {
        Status::unavailable(
            "the event log is still opening (replaying after a restart); retry shortly",
        )
    })?;
    let batch: Batch = events.into_iter().collect();
    let appended = log.append(batch).await.map_err(|refused| {
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
    Ok((appended.fresh, appended.position))
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

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::SystemTime};

    use exp_core::ManualClock;

    use super::*;
    use crate::{Catalog, EventLog, LogOptions};

    #[tokio::test]
    async fn a_rejection_stays_bounded_whatever_its_event_echoes() {
        // Found by the fuzz suite: rejections carried their events'
        // strings whole (Debug-escaped, so a control character took six
        // characters), and a number's whole decimal expansion (-7.6e-172
        // in 190 digits).
        let dir = tempfile::tempdir().expect("dir");
        let log = EventLog::open(LogOptions {
            dir: dir.path().to_owned(),
            flush_interval: Duration::from_secs(3600),
            max_pending_events: 10_000,
            dedup_window: Duration::from_secs(24 * 3600),
        })
        .expect("open");
        let slot = LogSlot::default();
        slot.set(Arc::new(log));
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let catalog = Arc::new(arc_swap::ArcSwap::from_pointee(Catalog::new([])));
        let service = EventGrpc::new(
            EventDestination::Log(slot),
            catalog,
            Arc::new(ManualClock::new(now)),
        );
        let exposure = v1::Exposure {
            event_id: "e-1".into(),
            experiment_id: "\u{1}".repeat(70_000),
            variant: "control".into(),
            session_id: "s-1".into(),
            timestamp: Some(now.into()),
            ..Default::default()
        };
        let outcome = v1::Outcome {
            event_id: "o-1".into(),
            r#type: v1::OutcomeType::Impression as i32,
            session_id: "s-1".into(),
            item_ids: vec!["sku-1".into()],
            timestamp: Some(now.into()),
            ..Default::default()
        };
        let tiny_negative = v1::Outcome {
            value: -7.634569775093599e-172,
            ..outcome.clone()
        };
        let long_key = v1::Outcome {
            attributes: HashMap::from([("k".repeat(70_000), String::new())]),
            ..outcome
        };
        let exposures = service
            .log_exposures(Request::new(v1::LogExposuresRequest {
                exposures: vec![exposure],
            }))
            .await
            .expect("answered")
            .into_inner();
        let outcomes = service
            .log_outcomes(Request::new(v1::LogOutcomesRequest {
                outcomes: vec![tiny_negative, long_key],
            }))
            .await
            .expect("answered")
            .into_inner();
        let rejections: Vec<_> = exposures
            .rejections
            .iter()
            .chain(&outcomes.rejections)
            .collect();
        let fields: Vec<&str> = rejections
            .iter()
            .map(|r| r.field.split('[').next().unwrap_or_default())
            .collect();
        assert_eq!(fields, ["experiment_id", "value", "attributes"]);
        for rejection in rejections {
            let (field, reason) = (&rejection.field, &rejection.reason);
            assert!(field.chars().count() <= MAX_FIELD_CHARS + 40, "{field}");
            assert!(
                reason.chars().count() <= MAX_DESCRIPTION_CHARS + 40,
                "{reason}"
            );
        }
    }
}
