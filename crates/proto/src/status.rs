//! The one place where domain errors become gRPC statuses.
//!
//! | domain error | gRPC code |
//! |---|---|
//! | `InvalidArgument` | `INVALID_ARGUMENT`, with `google.rpc.BadRequest` field violations |
//! | `NotFound` | `NOT_FOUND` |
//! | `AlreadyExists` | `ALREADY_EXISTS` |
//! | `FailedPrecondition` | `FAILED_PRECONDITION` |
//! | `StaleRevision` | `ABORTED` |
//! | `Unauthenticated` | `UNAUTHENTICATED` |
//! | `PermissionDenied` | `PERMISSION_DENIED` |
//! | `Storage` | `UNAVAILABLE` (nothing was changed; retry later) |
//! | `Unavailable` | `UNAVAILABLE` (not ready yet; retry later) |
//! | `Overloaded` | `RESOURCE_EXHAUSTED`, with `google.rpc.RetryInfo` saying when to retry |

use exp_core::Error;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Maps a domain error to the status a client sees. The message names
/// every offending field, so a grpcurl user reads the problem without
/// decoding details.
pub fn to_status(error: Error) -> Status {
    let message = error.to_string();
    match error {
        Error::InvalidArgument(violations) => {
            let details = ErrorDetails::with_bad_request(
                violations
                    .into_iter()
                    .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
                    .collect::<Vec<_>>(),
            );
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        Error::NotFound { .. } => Status::not_found(message),
        Error::AlreadyExists { .. } => Status::already_exists(message),
        Error::FailedPrecondition(_) => Status::failed_precondition(message),
        Error::StaleRevision { .. } => Status::aborted(message),
        Error::Unauthenticated(_) => Status::unauthenticated(message),
        Error::PermissionDenied(_) => Status::permission_denied(message),
        Error::Storage(_) | Error::Unavailable(_) => Status::unavailable(message),
        Error::Overloaded { retry_after, .. } => Status::with_error_details(
            Code::ResourceExhausted,
            message,
            ErrorDetails::with_retry_info(Some(retry_after)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use exp_core::FieldViolation;

    use super::*;

    #[test]
    fn invalid_argument_carries_every_field_path_in_message_and_details() {
        let status = to_status(Error::InvalidArgument(vec![
            FieldViolation::new("id", "bad"),
            FieldViolation::new("variants[1].params.rerank_weight_price", "too big"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("id: bad"));
        assert!(
            status
                .message()
                .contains("variants[1].params.rerank_weight_price: too big")
        );
        let details = status
            .get_details_bad_request()
            .expect("bad request details");
        let fields: Vec<_> = details
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["id", "variants[1].params.rerank_weight_price"]);
    }

    #[test]
    fn each_error_kind_maps_to_its_code() {
        let cases = [
            (
                Error::NotFound {
                    kind: "experiment",
                    id: "x".into(),
                },
                Code::NotFound,
            ),
            (
                Error::AlreadyExists {
                    kind: "experiment",
                    id: "x".into(),
                },
                Code::AlreadyExists,
            ),
            (
                Error::FailedPrecondition("no".into()),
                Code::FailedPrecondition,
            ),
            (
                Error::StaleRevision {
                    based_on: 1,
                    current: 2,
                },
                Code::Aborted,
            ),
            (Error::Unauthenticated("who".into()), Code::Unauthenticated),
            (Error::PermissionDenied("no".into()), Code::PermissionDenied),
            (Error::Storage("disk".into()), Code::Unavailable),
            (Error::Unavailable("loading".into()), Code::Unavailable),
            (
                Error::Overloaded {
                    message: "busy".into(),
                    retry_after: std::time::Duration::from_millis(200),
                },
                Code::ResourceExhausted,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(to_status(error).code(), code);
        }
    }

    #[test]
    fn overloaded_says_when_to_retry() {
        let status = to_status(Error::Overloaded {
            message: "the event log is busy".into(),
            retry_after: std::time::Duration::from_millis(250),
        });
        assert_eq!(status.message(), "the event log is busy");
        let retry = status.get_details_retry_info().expect("retry info");
        assert_eq!(
            retry.retry_delay,
            Some(std::time::Duration::from_millis(250))
        );
    }
}
