//! Services of the v1 contract whose behaviour a later release brings.
//! The generated traits answer `UNIMPLEMENTED` for every method by default,
//! so clients can be written against the whole contract today.

use exp_proto::v1::{
    assignment_service_server::{AssignmentService, AssignmentServiceServer},
    config_service_server::{ConfigService, ConfigServiceServer},
    event_service_server::{EventService, EventServiceServer},
    results_service_server::{ResultsService, ResultsServiceServer},
};

/// `AssignmentService`, not yet implemented.
#[derive(Debug, Default, Clone, Copy)]
pub struct PendingAssignment;
impl AssignmentService for PendingAssignment {}

/// `ConfigService`, not yet implemented.
#[derive(Debug, Default, Clone, Copy)]
pub struct PendingConfig;
impl ConfigService for PendingConfig {}

/// `EventService`, not yet implemented.
#[derive(Debug, Default, Clone, Copy)]
pub struct PendingEvents;
impl EventService for PendingEvents {}

/// `ResultsService`, not yet implemented.
#[derive(Debug, Default, Clone, Copy)]
pub struct PendingResults;
impl ResultsService for PendingResults {}

/// The tonic servers of the pending services.
pub fn assignment() -> AssignmentServiceServer<PendingAssignment> {
    AssignmentServiceServer::new(PendingAssignment)
}

/// See [`assignment`].
pub fn config() -> ConfigServiceServer<PendingConfig> {
    ConfigServiceServer::new(PendingConfig)
}

/// See [`assignment`].
pub fn events() -> EventServiceServer<PendingEvents> {
    EventServiceServer::new(PendingEvents)
}

/// See [`assignment`].
pub fn results() -> ResultsServiceServer<PendingResults> {
    ResultsServiceServer::new(PendingResults)
}
