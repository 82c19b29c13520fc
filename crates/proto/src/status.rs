//! The one place where domain errors become what a caller sees, on both
//! edges: a gRPC status, or an HTTP status with a JSON body.
//!
//! [`ErrorCode`] is the table (as `quickwit-proto`'s `ServiceErrorCode`):
//! each domain error has one code, and each code one gRPC code and one
//! HTTP status (Google's mapping, as grpc-gateway and Envoy use it).
//!
//! | domain error | code | gRPC | HTTP |
//! |---|---|---|---|
//! | `InvalidArgument` | `INVALID_ARGUMENT`, with every field violation | 3 | 400 |
//! | `NotFound` | `NOT_FOUND` | 5 | 404 |
//! | `AlreadyExists` | `ALREADY_EXISTS` | 6 | 409 |
//! | `FailedPrecondition` | `FAILED_PRECONDITION` | 9 | 400 |
//! | `StaleRevision` | `ABORTED` | 10 | 409 |
//! | `Unauthenticated` | `UNAUTHENTICATED` | 16 | 401 |
//! | `PermissionDenied` | `PERMISSION_DENIED` | 7 | 403 |
//! | `Storage`, `Unavailable` | `UNAVAILABLE` (nothing was changed; retry later) | 14 | 503 |
//! | `Overloaded` | `RESOURCE_EXHAUSTED`, with when to retry | 8 | 429 |
//! | `RequestTimeout` | `DEADLINE_EXCEEDED` (the request did not arrive in time) | 4 | 408 |
//! | `TooLarge` | `OUT_OF_RANGE` (over the method's size limit) | 11 | 413 |

use exp_core::{Error, FieldViolation};
use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// What a caller can do about an error: the service's error codes, the
/// same on the gRPC and the HTTP edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Fix the named fields.
    InvalidArgument,
    /// The named resource does not exist.
    NotFound,
    /// The id is taken.
    AlreadyExists,
    /// Not allowed in the resource's current state.
    FailedPrecondition,
    /// Based on a stale revision: read again and reapply.
    Aborted,
    /// No valid credentials.
    Unauthenticated,
    /// Credentials without the needed role.
    PermissionDenied,
    /// Nothing was done; retry later.
    Unavailable,
    /// At capacity; retry after the delay given.
    ResourceExhausted,
    /// The request did not arrive in time.
    DeadlineExceeded,
    /// The request is over its method's size limit.
    OutOfRange,
}

impl ErrorCode {
    /// Every code, with its gRPC code and HTTP status.
    pub const TABLE: [(Self, Code, u16); 11] = [
        (Self::InvalidArgument, Code::InvalidArgument, 400),
        (Self::NotFound, Code::NotFound, 404),
        (Self::AlreadyExists, Code::AlreadyExists, 409),
        (Self::FailedPrecondition, Code::FailedPrecondition, 400),
        (Self::Aborted, Code::Aborted, 409),
        (Self::Unauthenticated, Code::Unauthenticated, 401),
        (Self::PermissionDenied, Code::PermissionDenied, 403),
        (Self::Unavailable, Code::Unavailable, 503),
        (Self::ResourceExhausted, Code::ResourceExhausted, 429),
        (Self::DeadlineExceeded, Code::DeadlineExceeded, 408),
        (Self::OutOfRange, Code::OutOfRange, 413),
    ];

    /// The code of a domain error.
    pub fn of(error: &Error) -> Self {
        match error {
            Error::InvalidArgument(_) => Self::InvalidArgument,
            Error::NotFound { .. } => Self::NotFound,
            Error::AlreadyExists { .. } => Self::AlreadyExists,
            Error::FailedPrecondition(_) => Self::FailedPrecondition,
            Error::StaleRevision { .. } => Self::Aborted,
            Error::Unauthenticated(_) => Self::Unauthenticated,
            Error::PermissionDenied(_) => Self::PermissionDenied,
            Error::Storage(_) | Error::Unavailable(_) => Self::Unavailable,
            Error::Overloaded { .. } => Self::ResourceExhausted,
            Error::RequestTimeout(_) => Self::DeadlineExceeded,
            Error::TooLarge(_) => Self::OutOfRange,
        }
    }

    fn row(self) -> (Self, Code, u16) {
        Self::TABLE
            .into_iter()
            .find(|(code, _, _)| *code == self)
            .unwrap_or((self, Code::Internal, 500))
    }

    /// Its gRPC code.
    pub fn grpc(self) -> Code {
        self.row().1
    }

    /// Its HTTP status.
    pub fn http(self) -> http::StatusCode {
        http::StatusCode::from_u16(self.row().2).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Its name, as both edges spell it (`INVALID_ARGUMENT`).
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::Unavailable => "UNAVAILABLE",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::OutOfRange => "OUT_OF_RANGE",
        }
    }

    /// The code a gRPC code comes from (`None` for codes the service does
    /// not answer with).
    pub fn from_grpc(code: Code) -> Option<Self> {
        Self::TABLE
            .into_iter()
            .find(|(_, grpc, _)| *grpc == code)
            .map(|(code, _, _)| code)
    }
}

/// Most field violations an answer carries; the rest are counted in its
/// message. With [`MAX_FIELD_CHARS`], [`MAX_DESCRIPTION_CHARS`] and
/// [`MAX_MESSAGE_CHARS`] this keeps a refusal's status and details (sent
/// in trailers, the details base64-encoded) under 6 KB whatever the
/// request echoed: under the 8 KB of metadata gRPC C-core clients (Python,
/// C++) accept for sure (past it they refuse more and more often, all of
/// it past 16 KB).
pub const MAX_VIOLATIONS: usize = 10;
/// Longest field path carried, in characters.
pub const MAX_FIELD_CHARS: usize = 100;
/// Longest description carried, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 160;
/// Longest message carried, in characters.
pub const MAX_MESSAGE_CHARS: usize = 512;
/// `text`, cut to `max` characters with a note of what was cut: how an
/// answer carries what a request echoes.
pub fn bounded(text: &str, max: usize) -> String {
    let length = text.chars().count();
    if length <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max).collect();
    format!("{kept}… ({} more characters)", length - max)
}

/// The violations an answer carries, each bounded, and how many were left
/// out.
fn carried(violations: &[FieldViolation]) -> (Vec<FieldViolation>, usize) {
    let kept = violations
        .iter()
        .take(MAX_VIOLATIONS)
        .map(|violation| {
            FieldViolation::new(
                bounded(&violation.field, MAX_FIELD_CHARS),
                bounded(&violation.description, MAX_DESCRIPTION_CHARS),
            )
        })
        .collect();
    (kept, violations.len().saturating_sub(MAX_VIOLATIONS))
}

/// The message of an error, bounded: an invalid argument spells out as
/// many of its violations as fit and counts the others.
fn message_of(error: &Error) -> String {
    let message = match error {
        Error::InvalidArgument(violations) => {
            // As many violations as fit, then a count of the others.
            let (kept, _) = carried(violations);
            let mut listed = String::new();
            let mut named = 0;
            for violation in &kept {
                let next = violation.to_string();
                if named > 0 && listed.len() + next.len() + 2 > MAX_MESSAGE_CHARS - 100 {
                    break;
                }
                if named > 0 {
                    listed.push_str("; ");
                }
                listed.push_str(&next);
                named += 1;
            }
            if named < violations.len() {
                listed.push_str(&format!(
                    "; and {} more problems ({} listed in the details)",
                    violations.len() - named,
                    kept.len() - named
                ));
            }
            return listed;
        }
        other => other.to_string(),
    };
    bounded(&message, MAX_MESSAGE_CHARS)
}

/// Maps a domain error to the status a client sees. The message names the
/// offending fields (as many as fit in [`MAX_MESSAGE_CHARS`]; the details
/// list up to [`MAX_VIOLATIONS`]), so a grpcurl user reads the problem
/// without decoding details; nothing a request echoes makes it unbounded.
pub fn to_status(error: Error) -> Status {
    let message = message_of(&error);
    let code = ErrorCode::of(&error).grpc();
    match error {
        Error::InvalidArgument(violations) => {
            let (kept, _) = carried(&violations);
            let details = ErrorDetails::with_bad_request(
                kept.into_iter()
                    .map(|v| tonic_types::FieldViolation::new(v.field, v.description))
                    .collect::<Vec<_>>(),
            );
            Status::with_error_details(code, message, details)
        }
        Error::Overloaded { retry_after, .. } => Status::with_error_details(
            code,
            message,
            ErrorDetails::with_retry_info(Some(retry_after)),
        ),
        _ => Status::new(code, message),
    }
}

/// Maps a domain error to the HTTP status and JSON body of the HTTP edge:
/// `{"error": {"code", "message", "field_violations": [{"field",
/// "description"}]}}`, with `retry_after_ms` when the call may be retried
/// after a delay.
pub fn to_http(error: &Error) -> (http::StatusCode, Value) {
    let code = ErrorCode::of(error);
    let field_violations: Vec<Value> = match error {
        Error::InvalidArgument(violations) => carried(violations)
            .0
            .iter()
            .map(|v| json!({"field": v.field, "description": v.description}))
            .collect(),
        _ => Vec::new(),
    };
    let mut body = json!({
        "code": code.name(),
        "message": message_of(error),
        "field_violations": field_violations,
    });
    if let Error::Overloaded { retry_after, .. } = error {
        body["retry_after_ms"] = json!(retry_after.as_millis() as u64);
    }
    (code.http(), json!({ "error": body }))
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
            (Error::RequestTimeout("slow".into()), Code::DeadlineExceeded),
            (Error::TooLarge("big".into()), Code::OutOfRange),
        ];
        for (error, code) in cases {
            assert_eq!(to_status(error).code(), code);
        }
    }

    #[test]
    fn every_code_maps_to_one_grpc_code_and_back_and_has_an_http_status() {
        for (code, grpc, http) in ErrorCode::TABLE {
            assert_eq!(code.grpc(), grpc);
            assert_eq!(ErrorCode::from_grpc(grpc), Some(code), "{code:?}");
            assert_eq!(code.http().as_u16(), http);
            assert_eq!(
                format!("{:?}", code.grpc()).to_uppercase(),
                code.name().replace('_', ""),
                "the name is the gRPC code's"
            );
        }
        assert_eq!(ErrorCode::from_grpc(Code::Internal), None);
    }

    #[test]
    fn the_http_edge_answers_the_same_code_with_every_field() {
        let (status, body) = to_http(&Error::InvalidArgument(vec![FieldViolation::new(
            "context.placement",
            "too long",
        )]));
        assert_eq!(status.as_u16(), 400);
        assert_eq!(body["error"]["code"], "INVALID_ARGUMENT");
        assert_eq!(
            body["error"]["field_violations"][0]["field"],
            "context.placement"
        );
        let (status, body) = to_http(&Error::Overloaded {
            message: "busy".into(),
            retry_after: std::time::Duration::from_millis(200),
        });
        assert_eq!(
            (status.as_u16(), body["error"]["retry_after_ms"].as_u64()),
            (429, Some(200))
        );
        let (status, body) = to_http(&Error::Unavailable("loading".into()));
        assert_eq!(
            (status.as_u16(), body["error"]["code"].as_str()),
            (503, Some("UNAVAILABLE"))
        );
    }

    #[test]
    fn an_answer_stays_bounded_whatever_the_request_echoed() {
        let huge = "x".repeat(10_000);
        let violations: Vec<FieldViolation> = (0..1_000)
            .map(|index| {
                FieldViolation::new(
                    format!("variants[0].params.{huge}{index}"),
                    format!("unknown parameter {huge:?}"),
                )
            })
            .collect();
        let status = to_status(Error::InvalidArgument(violations));
        assert!(status.message().chars().count() <= MAX_MESSAGE_CHARS + 40);
        assert!(
            status
                .message()
                .contains("and 999 more problems (9 listed in the details)"),
            "{}",
            status.message()
        );
        let details = status.get_details_bad_request().expect("details");
        assert_eq!(details.field_violations.len(), MAX_VIOLATIONS);
        assert!(
            details.field_violations[0]
                .field
                .starts_with("variants[0].params.xxx")
        );
        assert!(
            details.field_violations[0]
                .field
                .ends_with("more characters)")
        );
        let size = status.message().len() + status.details().len() * 4 / 3;
        assert!(size < 6 * 1024, "{size} bytes of trailers");
        let (_, body) = to_http(&Error::invalid(huge.clone(), huge));
        assert!(
            body.to_string().len() < 2 * 1024,
            "{} bytes",
            body.to_string().len()
        );
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
