//! Services of the v1 contract whose behaviour a later release brings.
//! The generated traits answer `UNIMPLEMENTED` for every method by default,
//! so clients can be written against the whole contract today.

use exp_proto::v1::results_service_server::{ResultsService, ResultsServiceServer};

/// `ResultsService`, not yet implemented.
#[derive(Debug, Default, Clone, Copy)]
pub struct PendingResults;
impl ResultsService for PendingResults {}

/// The tonic server of the pending `ResultsService`.
pub fn results() -> ResultsServiceServer<PendingResults> {
    ResultsServiceServer::new(PendingResults)
}
