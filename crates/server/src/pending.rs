//! Services of the v1 contract whose behaviour a later release brings.
//! The generated traits answer `UNIMPLEMENTED` for every method by default,
//! so clients can be written against the whole contract today.

use exp_proto::v1::{
    event_service_server::{EventService, EventServiceServer},
    results_service_server::{ResultsService, ResultsServiceServer},
};

/// `EventService`, not yet implemented.
#[derive(Debug, Default, Clone, Copy)]
pub struct PendingEvents;
impl EventService for PendingEvents {}

/// `ResultsService`, not yet implemented.
#[derive(Debug, Default, Clone, Copy)]
pub struct PendingResults;
impl ResultsService for PendingResults {}

/// The tonic server of the pending `EventService`.
pub fn events() -> EventServiceServer<PendingEvents> {
    EventServiceServer::new(PendingEvents)
}

/// The tonic server of the pending `ResultsService`.
pub fn results() -> ResultsServiceServer<PendingResults> {
    ResultsServiceServer::new(PendingResults)
}
